// Package log is Conflux's commit log: a segmented, append-only file of Raft
// entries that is at the same time the message store consumers read from
// (RocketMQ's DLedger idea: the Raft log *is* the commit log, so every message
// is written once). It implements the storage half of raft.Storage
// (Entries, Term, FirstIndex, LastIndex) with etcd raft's exact semantics, and
// the Dispatcher builds consume queues and the key/id index from it.
//
// # Files
//
//	<Dir>/commitlog/<base:%020d>.seg   segment: header + records, preallocated to SegmentSizeBytes
//	<Dir>/commitlog/<base:%020d>.idx   entry index of a sealed segment (absent for the tail)
//	<Dir>/consumequeue/...             consume queues (package cq)
//	<Dir>/index/...                    key/id index (package index)
//	<Dir>/dispatch.ckpt                how far the dispatcher got (Dispatcher)
//
// A segment's name is its base: the log offset of its byte 0. Bases are
// multiples of SegmentSizeBytes and segment k+1's base is segment k's base +
// SegmentSizeBytes, so a byte's log offset ("physical offset", RocketMQ's
// commit-log offset) is base + position in file.
// All integers are little-endian.
//
// # Segment header (64 bytes at position 0)
//
//	off size field
//	  0    4 magic "CFXS"
//	  4    2 version = 1
//	  6    2 reserved, zero
//	  8    8 base: log offset of byte 0 (equals the file name)
//	 16    8 segment size in bytes (must equal SegmentSizeBytes)
//	 24    8 first Raft index stored in this segment
//	 32    8 term of the entry just before it (first-1), 0 if none
//	 40    8 creation time, unix ms (used for age-based retention)
//	 48    8 start: position of the first record (64, or more when the log
//	         was reset to continue after a snapshot at a given log offset)
//	 56    4 reserved, zero
//	 60    4 CRC32C of bytes [0, 60)
//
// # Record (one Raft entry, 8-byte aligned, starts at the segment's start or after the previous record)
//
//	off size field
//	  0    2 magic "CX"
//	  2    1 record type: 1 = entry (0 never appears in a record: zeros end the log)
//	  3    1 raftpb.EntryType of the entry
//	  4    4 CRC32C of bytes [8, 32+length)
//	  8    4 length of the entry data in bytes (≤ MaxEntryBytes)
//	 12    4 reserved, zero
//	 16    8 Raft index
//	 24    8 Raft term
//	 32  len entry data, verbatim (a message batch, package batch, for normal entries)
//	  …  0-7 zero padding to a multiple of 8
//
// The length sits in the same 8-byte word as the CRC and is never torn alone:
// a torn record fails its CRC. The data of a record starts 32 bytes after it,
// so a message inside a batch has a log offset that is identical on every
// replica that holds the same entries.
//
// # Deterministic roll
//
// A record goes at the current write position if it fits before the end of
// the segment; otherwise the segment is sealed and the record is the first of
// a new segment at position 64. The write position is always "just after the
// record of the last entry", also after a truncation or a recovery, so the
// layout is a pure function of the sequence of entries: replicas with the same
// entries have the same bytes at the same offsets. Unused space at the end of a
// segment stays zero.
//
// # Entry index of a sealed segment (.idx)
//
//	off size field
//	  0    4 magic "CFXI"
//	  4    4 version = 1
//	  8    8 first Raft index (equals the segment's)
//	 16    8 count of entries
//	 24    4 CRC32C of the entry table
//	 28    4 CRC32C of bytes [0, 28)
//	 32 16×n entries: position in segment u32, data length u32, term u64
//
// The .idx is written and synced once, when its segment is sealed, and is
// removed before a sealed segment is ever modified again (truncation). A
// missing or damaged .idx is rebuilt by scanning its segment. The tail segment
// has none: its index lives in memory and is rebuilt by the recovery scan.
//
// # Durability
//
// Append writes records with pwrite; Sync makes them durable with one
// fdatasync (group commit). Sealing a segment syncs it and its .idx; creating
// a segment preallocates it, writes and syncs its header, then syncs the
// directory before any record goes in. Reads go through a read-only shared
// mapping of each segment: data at or below the committed and durable index is
// returned without a copy, data above it is copied, because a deposed leader
// may overwrite its uncommitted tail while a reader still holds the bytes.
//
// The format assumes powersafe overwrite, as hashicorp's raft-wal and
// SQLite's default do: a power cut during a write may lose or garble the
// bytes that write changed, in any sector order, but never bytes of the same
// sector that it did not change. The next record after a sync shares a
// sector with the last synced one, and that must not endanger it.
//
// # Recovery (Open)
//
//   - Segments must be contiguous and agree with SegmentSizeBytes; a
//     last segment whose header never became durable (crash while rolling) and
//     that holds no record is removed.
//   - Sealed segments are trusted through their .idx (rebuilt when missing or
//     damaged; a damaged record found while rebuilding is an ErrCorrupt).
//   - The tail segment is scanned record by record and cut at the first record
//     that is not valid: bad magic or type, a length over MaxEntryBytes or past
//     the end, a CRC mismatch, an index that is not the next one, or a term
//     lower than the previous one. Every nonzero byte in the window that the
//     unsynced appends could have reached (two maximum-size records past the
//     cut) is zeroed and synced, so a record after a torn one does not come
//     back. Only bytes that were never synced can be lost this way; the owner
//     checks that the log still reaches its durable commit index.
//   - The tail is then synced: records that a killed process wrote but never
//     synced are still in the page cache, the scan finds them, and from now
//     on they count as durable (raft acknowledges every stored entry).
//
// # Full disk
//
// A write refused for lack of space (vfs.IsNoSpace) returns an error that
// says so and leaves the log usable: the owner frees space and calls Append
// again with the same first index, which replaces whatever the failed call
// left. A segment or .idx file whose creation failed is removed at once. A
// failed fsync is different: the Log refuses every later write
// (ErrSyncFailed) and must be reopened. The Dispatcher refuses every later
// write after a failure that may have left part of an entry in the queues
// or the index, or a failed sync (a failed checkpoint write excepted); it
// recovers when opened again.
//
// # Concurrency
//
// One goroutine (the Raft loop) writes: Append, Sync, CompactTo, ApplyRetention,
// Reset. Any goroutine may read: Entries, Term, ReadAt, Scan. Removed segments
// are unmapped only after their last reader releases them.
package log
