// Package batch is the binary codec for a batch of messages: the data of one
// Raft entry, and therefore the unit of Conflux's commit log.
//
// A producer request becomes one batch. The broker encodes it with an
// Encoder, stamps queue offsets into it in place with SetQueueOffset, and
// proposes the bytes. Every replica applies the entry by walking it with an
// Iterator, which validates each message fully before exposing it as a View:
// zero-copy accessors into the batch bytes. A message read back later by its
// physical offset is decoded with DecodeMessage.
//
// The package is a leaf: it imports only the standard library.
//
// # Encoding
//
// All integers are little-endian. Strings are raw bytes, written as given
// (the codec does not require UTF-8). Lengths marked u16 limit a string to
// MaxStringBytes.
//
// # Batch
//
// A batch is a 24-byte header followed by Count messages back to back:
//
//	off  size  field
//	  0     2  magic 0x4243: the bytes 'C','B'
//	  2     1  version, 1
//	  3     1  kind: 1 = messages. Every other value is reserved (for
//	           instance for future control records) and rejected with
//	           ErrUnknownKind.
//	  4     4  count: number of messages (u32, may be 0)
//	  8     8  batch id (u64), opaque to the codec: the proposer uses it to
//	           find the producers waiting on the batch
//	 16     8  store time, unix milliseconds (i64), set once by the proposer
//	 24        first message
//
// Each message starts at a multiple of 8 bytes from the batch start (the
// header is 24 bytes, a multiple of 8). After every message, including the
// last, come 0 to 7 zero bytes of padding up to the next multiple of 8. So if
// a batch is stored at an 8-aligned position, every message's physical offset
// is 8-aligned, and so is the position right after the batch.
//
// Nothing may follow the padding of the last message. A batch is at most
// MaxBatchBytes long.
//
// # Message
//
// A message is a 48-byte fixed part followed by variable fields. Offsets are
// from the start of the message:
//
//	off  size  field
//	  0     4  total length of the message in bytes (u32): the fixed part and
//	           the variable fields, without the trailing padding. At most
//	           MaxMessageBytes.
//	  4     4  CRC-32C (Castagnoli) of the body bytes only
//	  8    16  message id: 16 raw bytes (e.g. a RocketMQ UNIQ_KEY in binary)
//	 24     4  flag (u32): RocketMQ's user flag
//	 28     4  sys flag (u32): RocketMQ sys flag bits (transaction type,
//	           compression...)
//	 32     8  born time, unix milliseconds (i64)
//	 40     4  reconsume times (u32)
//	 44     4  reserved, must be zero
//	 48        variable fields
//
// The variable fields follow in this order, with no gaps:
//
//	size          field
//	2 + n         born host: u16 n, then n bytes (e.g. "10.0.0.1:5555"; may be empty)
//	2 + n         topic the producer sent to: u16 n, then n bytes
//	2 + n         tags: u16 n, then n bytes (may be empty)
//	2 + ...       keys: u16 count (at most MaxKeys), then per key:
//	                u16 n, n bytes
//	2 + ...       properties: u16 count (at most MaxProperties), then per
//	              property, in the producer's order, duplicates kept:
//	                u16 k, k key bytes, u32 v, v value bytes
//	2 + ...       destinations: u16 count (1 to MaxDestinations), then per
//	              destination:
//	                u16 n, n topic bytes,
//	                u32 queue id, u64 queue offset, i64 tag hash
//	4 + n         body: u32 n, then n bytes
//
// A destination is a (topic, queue) whose consume queue indexes the message.
// One stored message can have many (fan-out). The broker fills in the queue
// offset and the tag hash (see JavaStringHash) before proposing.
//
// The variable fields must end exactly at the total length. The smallest
// message (empty strings, no keys or properties, one destination with an
// empty topic, empty body) is 86 bytes, 88 with padding.
//
// # Checksum
//
// The CRC covers the body alone, so that SetQueueOffset can patch a
// destination without recomputing it; the Raft log protects the entry as a
// whole. The Iterator validates structure but does not check the CRC: call
// View.VerifyBody, or View.Decode and DecodeMessage, which do.
//
// # Canonical form
//
// Decoding is strict: reserved bytes and padding must be zero, counts and
// lengths must be within the limits, and no byte may be unaccounted for. As a
// result, every batch that iterates without error, and whose messages all
// pass View.Decode, is exactly what the Encoder produces for the decoded
// header and messages. FuzzIterator checks this.
package batch
