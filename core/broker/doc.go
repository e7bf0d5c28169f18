// Package broker is the produce/consume API that every protocol gateway
// calls: MQTT, AMQP and RocketMQ remoting all become calls on a *Broker.
//
// # Entries
//
// The broker writes two kinds of Raft entries, told apart by their magic:
// message batches (core/log/batch, "CB") and control commands
// (core/broker/command, "CC": topics, consumer offsets, subscriptions).
// Both keep their proposal id at bytes 8..16, so the proposing node finds
// its entry when it is applied (command.ProposalID).
//
// # Produce
//
// Produce resolves each message's destination (topic, created on first use
// when AutoCreateTopics; queue by explicit id, sharding-key hash, or round
// robin), and a batcher groups concurrent calls into one entry (group
// commit) with MaxInflightBatches entries in flight. On the leader, in the
// raft loop just before proposing, prepare stamps each destination's queue
// offset into the batch from counters that start at the consume queues'
// ends (the leader has applied its whole log then) and restart every term.
// The producer is answered after the entry is committed on a majority,
// durable, and applied on the proposing node, with the message id, its
// physical offset (the same on every replica) and its queue offset.
//
// # Consume
//
// Every replica builds identical consume queues from committed entries
// (core/log Dispatcher), so Fetch reads locally, zero-copy from the log's
// mapping; WaitForMessages long-polls until the next apply. Consumer-group
// offsets (RocketMQ) are replicated commands.
//
// # Subscriptions: one delivery state machine
//
// A Subscription is a cursor over one queue with per-message state: ready →
// in flight (a lease of AckWait) → acked, or failed and retried after a
// backoff, or dead-lettered into DeadLetter ("%DLQ%<name>") after
// MaxDeliveries, with ORIGIN_TOPIC, ORIGIN_MESSAGE_ID and DELIVERY_COUNT
// properties. Acks, failures and dead-lettering are replicated (settle
// commands; the floor below which everything is settled, plus the settled
// offsets and failure counts above it). Leases are the leader's soft state:
// only the leader delivers, and after a failover every unsettled message is
// delivered again (at-least-once). AMQP ack/nack/reject, MQTT PUBACK and
// RocketMQ CONSUME_SUCCESS/RECONSUME_LATER map onto Ack, Nack and Release.
//
// # Scheduled messages, transactions, queue locks
//
// Delayed messages and transactional half messages are stored once, in
// write-only system topics (TimerTopic, HalfTopic); every replica derives
// the schedule (timers, core/txn's half-message table) from the batches it
// applies, and transaction decisions and check-backs are schedule
// commands. The leader copies due timers and committed half messages to
// their real topic; the entry storing a copy (property CFX_SCHEDULED_FROM)
// removes its timer or half message everywhere, and a new leader commits a
// barrier before it plans, so a failover neither loses nor repeats one
// (sched.go, sched_run.go). Orderly consumers' queue locks are leases
// replicated by lock commands (qlocks.go). Dead letters can be resent to
// their original topic (dlq.go).
//
// # On disk
//
//	<DataDir>/commitlog, consumequeue, index, dispatch.ckpt   core/log
//	<DataDir>/meta.db                                          core/raft
//	<DataDir>/broker.db   bbolt: topics (name → JSON), offsets (group NUL
//	                      topic NUL u32 queue → u64), subscriptions (name →
//	                      JSON), meta/applied (last command index),
//	                      sched ('t'|'h' + u64 offset → timer due ms or
//	                      half message JSON), qlocks (group NUL topic NUL
//	                      broker NUL u32 queue → lease JSON)
//
// Message bodies exist once, in the commit log; broker.db holds metadata
// only and is updated in one synced transaction per applied run of
// commands. Snapshots carry the metadata as JSON (small and rare).
package broker
