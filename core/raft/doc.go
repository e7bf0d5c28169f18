// Package raft replicates the commit log (core/log) with etcd raft v3.5,
// in the spirit of RocketMQ's DLedger mode: the Raft log is the commit log,
// so a message is written once per replica.
//
// # One loop
//
// A Node drives a raft.RawNode from one goroutine (Run). That goroutine owns
// the RawNode, the log's write side and the state machine; transports,
// proposers and status readers reach it through channels and atomics. Time
// enters only as Tick calls, so a simulation (sim_test.go) can drive the
// same code deterministically from a seed.
//
// Each Ready is handled in the order written on handleReady (loop.go):
// persist a changed term/vote (synced) → leader sends → install a snapshot →
// append entries and fdatasync once → follower sends → note the commit
// index → apply committed entries → Advance. Entries are applied (and
// producers acknowledged) only after they are durable locally, which etcd
// raft v3.5 does not ensure by itself on a single node.
//
// # Proposals
//
// Any node accepts proposals. A follower hands them to raft, which forwards
// them to the leader as MsgProp. The leader intercepts incoming MsgProp and
// proposes the entries itself, so every proposal passes Config.Prepare on
// the leader (the broker stamps queue offsets there) and waits while the
// leader has not yet applied its whole log (Status.LeaderReady), because
// offsets derived from a partly applied log could repeat. The proposer
// finds its entry when it is applied by the id in its data
// (Config.ProposalID). If a proposer gives up (context), the outcome is
// unknown: the entry may still commit; producers retry with the same
// message id.
//
// # Storage
//
//	<Dir>/commitlog/...   the entries (package core/log)
//	<Dir>/meta.db         bbolt, bucket "raft":
//	    hardstate   raftpb.HardState   term and vote synced before any message
//	                                   that depends on them; the commit index
//	                                   lazily (at most once per tick)
//	    confstate   raftpb.ConfState   synced when a ConfChange applies
//	    snapshot    raftpb.Snapshot    the latest snapshot (see below)
//	    peers       address book       id → address (peers.go)
//
// The applied index belongs to the state machine (StateMachine.AppliedIndex),
// which can store it atomically with its own state (for example in its own
// bucket of meta.db).
//
// # Restart
//
// A node restarts from whatever a stop left on disk, whether it was a clean
// Stop, kill -9, a power cut or a storage failure (a full disk) that ended
// the loop between two steps. The rules that make that always possible:
//
//   - Only durable entries are ever applied (step 7 comes after step 4), so
//     what the state machine has applied is in the recovered log. If it is
//     not, synced data was lost and the node refuses to start with a
//     message that says so.
//   - The saved commit index is only a lower bound: it is written lazily
//     and never beyond the durable log. The real one is the larger of it
//     and the state machine's applied index, and the log is told that
//     before anything reads it (LogUser.OpenLog may raise it).
//   - Entries past the commit index that a failed append left behind are
//     uncommitted; raft overwrites or keeps them as it does after any
//     crash. A segment whose creation failed holds nothing and is removed
//     by the log's recovery (core/log/doc.go).
//
// # Full disk
//
// Running out of space is not a storage failure: an append, a segment roll
// or a HardState save that fails with ENOSPC leaves the loop running. The
// Ready is not advanced, so raft hands the same unstable entries and
// committed entries out again, and the loop tries again at the next tick
// (Status.StorageFull says so meanwhile). Append's rule that a stored
// entry at or after the first new index is replaced makes the retry exact.
// A leader that cannot write hands leadership to its most up-to-date
// follower, and tries again while it waits if raft gives a transfer up.
//
// While a Ready waits, raft's commit index may cover entries not yet
// written: nothing saved meanwhile (on Stop, with a retention snapshot)
// claims more than the log was told at step 6. Raft reports a role change
// once, in the Ready that waits; the node takes it all the same, and a new
// leader takes writes only once its term's first entry is durable and
// applied.
//
// The broker's disk alarm (core/broker/disk.go) stops taking messages well
// before this point; this is the last line of defence. A failed apply or a
// failed fsync is still fatal: after a failed fsync the page cache cannot
// be trusted, and the node must restart (which the rules above allow). A
// membership change is applied with a meta.db write (its ConfState), so on
// a full disk it stops the node too.
//
// # Snapshots and compaction
//
// Messages never go into a snapshot: they stay in the log. When retention is
// about to delete old segments, the node saves a snapshot at the applied
// index: metadata, the log offset where the next entry goes, the address
// book and the state machine's bytes (storage.go, peers.go). A follower that
// needs removed entries receives it, resets its log to continue at that same
// offset (so physical offsets stay identical on every replica), restores its
// state machine, and then receives every retained entry as ordinary
// appends. meta.db is written before the log is reset; a crash in between
// is completed at the next start.
//
// # Membership
//
// ProposeConfChange adds or removes a node (ConfChange v1; one change at a
// time); an added node's address travels in cc.Context. A new node starts
// with Join set, so it does not bootstrap a cluster of its own, and catches
// up from the leader (by snapshot when the leader's log was compacted).
package raft
