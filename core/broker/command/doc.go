// Package command is the binary codec for the broker's control entries:
// the Raft entries that change replicated metadata (topics, consumer
// offsets) rather than carry messages. It is a leaf package.
//
// A command shares the first 16 bytes of its layout with a message batch
// (core/log/batch), so one function finds the proposal id of any entry and
// the dispatcher tells the two apart by the magic:
//
//	off size field
//	  0    2 magic 0x4343 ("CC")
//	  2    1 version = 1
//	  3    1 kind: 1 create/update topic, 2 delete topic, 3 commit offsets,
//	         4 settle deliveries, 5 subscribe, 6 unsubscribe, 7 records,
//	         8 schedule, 9 lock queues
//	  4    4 reserved, zero
//	  8    8 proposal id (the proposer finds its entry by it)
//	 16      body, by kind; integers little-endian, strings u16 length + bytes
//
// Bodies:
//
//	create topic:    name, u32 queues, u32 perm (RocketMQ bits: 4 read, 2 write)
//	delete topic:    name
//	commit offsets:  group, u32 n, n × (topic, u32 queue id, u64 offset)
//	settle:          subscription, u32 n, n × (u64 offset, u8 outcome)
//	                 outcome 1 acked, 2 failed (delivery count +1, retry),
//	                 3 dead-lettered
//	subscribe:       subscription, topic, u32 queue id, u64 start offset,
//	                 u32 ack wait ms, u32 max deliveries, dead-letter topic
//	unsubscribe:     subscription
//	records:         u32 n (1..4096), n × (u8 op, namespace,
//	                 u16 key length + key (at most 32512 bytes, so the
//	                 broker.db key fits bbolt), u32 value length + value)
//	                 op 1 put, 2 delete, 3 put if absent; a value is at
//	                 most 4 MiB. Records are the replicated key/value
//	                 store that features without a bucket of their own use
//	                 (the cluster's node view, MQTT retained messages).
//	schedule:        u32 n (0..65536), n × (u8 op, u64 physical offset,
//	                 i64 unix ms). Ops on a half message (transaction) or
//	                 a timer stored at that physical offset: 1 commit,
//	                 2 rollback, 3 checked (a check-back was sent at ms),
//	                 4 drop (an undeliverable timer). n = 0 is a barrier:
//	                 a new leader's scheduler waits for one to apply
//	                 before it trusts its view of the schedule.
//	lock queues:     u8 op (1 acquire, 2 release), group, owner,
//	                 i64 unix ms (the proposer's clock), u32 lease ms,
//	                 u32 n (0..4096), n × (topic, broker name, u32 queue).
//	                 Orderly consumers' queue locks: every replica grants
//	                 or refuses alike from the times in the entry.
//
// Decoding checks every length against the remaining bytes and the limits
// before allocating, rejects trailing bytes, and never panics.
package command
