// Package cq stores consume queues, RocketMQ style.
//
// A consume queue is an index into the commit log for one (topic, queue id).
// It is a dense array of fixed-size units: unit k (the queue offset) says
// where message k of that queue sits in the commit log. A consumer that wants
// messages [k, k+n) reads n units and then reads the log at the offsets they
// give; nothing is copied out of the log. The dispatcher builds the queues
// from committed log entries only, so a queue never points at uncommitted
// data.
//
// # Unit (20 bytes, little-endian)
//
//	off size field
//	  0    8 physical offset (u64): log offset of the message's first byte
//	  8    4 size (u32): the message's length in bytes
//	 12    8 tag hash (i64): hash of the message tag, for server-side filtering
//
// A real message never has physical offset 0 (the log starts with a segment
// header), so a unit whose physical offset is 0 is not a message: it is a
// hole, "not written". Preallocated files read as zeros, so every unit that
// was never written is a hole.
//
// # Files
//
//	<Dir>/<topic>/<queue id>/<first queue offset as %020d>.cq
//
// The topic is one path component: not empty, not "." or "..", no '/' or NUL,
// at most 255 bytes. The queue id is a uint32 in canonical decimal (no sign,
// no leading zeros). Every file of a store has exactly UnitsPerFile × 20
// bytes; it is preallocated when created and read through a read-only shared
// mapping. Unit k lives in the file whose name is f = k - k%UnitsPerFile, at
// byte (k-f)×20, and is written with a positional write. Addressing by
// position makes replay idempotent: writing unit k twice with the same value
// changes nothing (Put does not even write when the bytes already match).
//
// # Reading and writing
//
// Put writes one unit at a queue offset, creating the queue, its directory
// and files on demand. A new queue's min is the offset of its first Put (its
// first file is the one holding that offset). Put refuses offsets below min
// and offsets more than UnitsPerFile past next: a bigger gap means the
// dispatcher lost track, and refusing it bounds the files one Put creates
// (at most two). Get returns the units in [offset, next), stopping early
// before a hole (only a crash leaves holes below next), so it never returns
// a unit with physical offset 0.
//
// # Invariants
//
//   - A queue's files are contiguous: their first offsets are consecutive
//     multiples of UnitsPerFile. A gap is corruption.
//   - min ≤ next. Units in [min, next) are the queue's content; every unit at
//     or past next is a hole. min is at least the first file's first offset
//     and next is at most the last file's end.
//   - Within a queue, messages are dispatched in log order, so the physical
//     offsets of the written units increase with the queue offset. Holes
//     (physical offset 0) can break this only transiently, after a crash.
//   - The last file is never removed by retention, so next survives it.
//
// # Concurrency
//
// One writer goroutine (Put, Sync, TruncateAbove, TruncateQueue,
// DeleteBefore, Close) and any number of readers (Get, Range, Queues). The
// mapping is shared memory: readers only read units below next and copy them
// out while holding the read lock; the writer writes units at or past next
// without any lock and then publishes next with an atomic store. Anything
// that rewrites a unit below next, shrinks next or unmaps a file first takes
// the write lock, which waits for every reader still copying.
//
// # Durability
//
// Nothing is durable until Sync. Sync fdatasyncs every file written since the
// previous Sync, then syncs the directories whose entries changed (queue
// directories before their topic directory before Dir). Files go first so
// that a name never becomes durable before the size and bytes behind it.
// Sync holds no lock while it waits for the disk. A failed Sync must be
// treated as fatal by the caller: after a failed fdatasync the kernel may
// have dropped the dirty pages, so retrying can report success falsely.
//
// TruncateAbove, TruncateQueue and DeleteBefore are durable only after the
// next Sync too. They only undo or forget things, and recovery redoes them
// after a restart, so losing them to a crash is harmless.
//
// # Recovery (Open)
//
// Open walks Dir. Every topic directory name must be a valid topic, every
// queue directory name a canonical uint32, and every file name in a queue
// directory a %020d.cq name whose offset is a multiple of UnitsPerFile;
// anything else is an ErrCorrupt naming the path. Files must be contiguous
// and exactly UnitsPerFile×20 bytes long. One exception: files of size 0
// are ignored (and recreated by Put if needed), because on some file systems
// a crash can make the name of a just-created file durable before its
// preallocated size; such a file never held a synced unit, since Sync syncs
// a file before its directory. The other files must still be contiguous. A
// queue directory without files (a crash between mkdir and the first file)
// is ignored too.
//
// For each queue, next = 1 + the position of the last unit that has any
// nonzero byte, scanning backwards from the end of the last file (and on into
// earlier files while they are all zero); next = the first file's offset if
// every unit is zero. min = the first file's first offset: min is not
// persisted, so a min raised by DeleteBefore falls back after a restart, and
// the caller (core/log) calls DeleteBefore again after Open.
//
// What a crash leaves. A unit that was synced and not rewritten since
// survives intact: the store assumes powersafe overwrite (a torn write only
// damages the bytes it changes), as ext4 and xfs on current disks give and
// as vfs.MemFS models. A unit written since the last Sync may be there,
// missing (a hole, possibly below later units that did reach the disk), torn
// (a mix of old and new bytes) or garbage in the bytes the write changed.
// Garbage lands only in the bytes the write changed, which for a unit put
// over zeros are the low-order bytes of its fields, so a garbage unit looks
// like a plausible one, pointing below the log's end: cq cannot tell it from
// a good one (the RocketMQ format has no checksum), and no test on physical
// offsets can. The caller knows better, so after Open it must:
//
//  1. call TruncateAbove(end of the recovered commit log), which drops the
//     trailing units that are holes or point at or past the log's end;
//  2. call DeleteBefore(start of the log), which recomputes min;
//  3. replay (re-dispatch) the log from the dispatcher's checkpoint, which
//     must be no later than where dispatch stood at the last successful Sync
//     of the queues, with the per-queue offsets saved in that checkpoint;
//     replay rewrites every unit it covers with its true value, filling
//     holes and replacing torn units;
//  4. call TruncateQueue(queue, max(min, next)) for every queue, with the
//     next that the replay ended at (the checkpoint's, for a queue the
//     replay did not touch; 0 for a queue the checkpoint does not know):
//     this drops what replay did not cover, torn units past each queue's
//     true end;
//  5. Sync.
//
// Without torn sectors (a crash that only loses unsynced writes), steps 1
// and 3 alone restore the queues exactly. Until recovery has run, Get may
// return torn units.
package cq
