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
