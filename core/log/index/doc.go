// Package index is a persistent hash index from a message key (any bytes) to
// the commit-log physical offsets of the messages that carry it. It serves
// "query a message by id or by key", like RocketMQ's IndexFile: a hash table of
// slots per file, each slot heading a chain of entries linked newest first.
//
// Lookup returns candidates: the offsets of entries whose 64-bit key hash
// matches and whose store time is in the window. Two keys can share a hash, so
// a candidate may be a false positive; the caller reads the message and checks
// its real key. A stored key is never missed: every entry is linked into the
// chain of its slot, a lookup walks that whole chain in every file, and a file
// is skipped only when its store-time range does not meet the window.
//
// # Files
//
//	<Dir>/<first physical offset as %020d>.kix
//
// The name is the physical offset of the file's entry 0. Files are fixed-size,
// preallocated when created and read through a read-only shared mapping;
// every write is a positional write. All integers are little-endian.
//
//	offset                    size      content
//	0                         64        header
//	64                        4×S       slot table, S = slot count
//	64 + 4×S                  32×N      entries, N = entry capacity
//	64 + 4×S + 32×N           64        footer (written when the file fills)
//	file size = 128 + 4×S + 32×N
//
// With the defaults (S = N = 1<<20) a file is 36 MiB + 128 bytes.
//
// # Header (64 bytes, written once, before the file gets its name)
//
//	off size field
//	  0    8 magic "CFLXKIXH"
//	  8    4 format version (u32) = 1
//	 12    4 slot count S (u32), 1 ≤ S ≤ 1<<26
//	 16    4 entry capacity N (u32), 1 ≤ N ≤ 1<<26
//	 20    4 reserved, zero
//	 24    8 first physical offset (u64), equal to the number in the name
//	 32   28 reserved, zero
//	 60    4 CRC-32C (Castagnoli) of bytes 0..59
//
// Each file carries its own geometry, so changing SlotCount or EntriesPerFile
// in Config affects new files only.
//
// # Slot (4 bytes)
//
//	off size field
//	  0    4 head (u32): 1 + number of the newest entry whose key hash
//	         falls in this slot; 0 = empty
//
// The slot of a key hash h is the high 64 bits of h×S (the multiply-shift
// range reduction), so it depends on the high bits of h and S need not be a
// power of two.
//
// # Entry (32 bytes)
//
//	off size field
//	  0    8 key hash (u64): fmix64(FNV-1a-64(key)), see below
//	  8    8 physical offset (u64) of the message in the commit log
//	 16    8 store time (i64), unix milliseconds
//	 24    4 prev (u32): 1 + number of the previous (older) entry of the same
//	         slot in this file; 0 = end of the chain
//	 28    4 CRC-32C of bytes 0..27
//
// The key hash is FNV-1a 64 (offset basis 14695981039346656037, prime
// 1099511628211) followed by MurmurHash3's 64-bit finalizer fmix64, so that
// keys differing only in their last bytes still spread over the slots. Both
// are fixed functions: the hash is stable across processes and versions.
//
// An entry is 32 bytes rather than RocketMQ's 20 because of the CRC, which
// tells a torn or garbage entry from a real one (an all-zero entry never has
// a valid CRC), and the full millisecond store time, which makes the time
// window exact.
//
// # Footer (64 bytes, written once, when the file is full, before it is synced)
//
//	off size field
//	  0    8 magic "CFLXKIXF"
//	  8    4 entries used (u32), always N
//	 12    4 reserved, zero
//	 16    8 first physical offset (u64), equal to the header's
//	 24    8 last physical offset (u64): that of entry N-1
//	 32    8 smallest store time (i64) of the file's entries, unix ms
//	 40    8 largest store time (i64) of the file's entries, unix ms
//	 48   12 reserved, zero
//	 60    4 CRC-32C of bytes 0..59
//
// The footer lets Open trust a full file without reading its entries, and
// lets Lookup skip files whose time range does not meet the window.
//
// # Invariants
//
//   - Entries are appended in order; their physical offsets never decrease,
//     within a file and across files (the dispatcher indexes the log in
//     order). Several entries may share an offset: one message has several
//     keys. Entry 0 of a file has the offset in the file's name.
//   - Entry numbers in a chain strictly decrease: a slot or prev value is
//     1 + the number of an older entry. Lookup stops with ErrCorrupt at a
//     value that is out of range or not smaller than the one before it, so
//     corrupt data can neither loop nor read out of bounds.
//   - Every file but the last is full, has a valid footer and was synced
//     before the next file's name existed. Files do not overlap: a file's last
//     offset is at most the next file's first.
//   - Only the last file (the tail) is written to. Its live entry count is
//     kept in memory and never stored: Open recomputes it.
//   - A file is named by the first offset it holds, so one offset cannot fill
//     a whole file: Add fails with ErrTooManyKeys when a message has more keys
//     than EntriesPerFile.
//
// # Durability
//
// Nothing is durable until Sync, which fdatasyncs every file written since
// the previous Sync and then the directory if a name changed. Files go first
// so a name never becomes durable before the bytes behind it. Sync holds no
// lock that readers take while it waits for the disk. A failed write or sync
// makes the Index refuse further writes (after a failed fdatasync the kernel
// may have dropped the dirty pages, so a retry can report success falsely):
// close it, reopen and replay.
//
// A new file is created as <name>.tmp, preallocated, given its header,
// synced, then renamed: its name never exists without a valid header and the
// full size. Before that, the full file gets its footer and is synced.
//
// DeleteBefore is durable at the next Sync; losing it to a crash only keeps
// old files, and the owner calls it again. TruncateAbove syncs the directory
// before it touches the new tail when it removes files (so a file without a
// footer can never end up before another one); the rest of it is durable at
// the next Sync, and the owner redoes it after a crash (see Recovery).
//
// The format assumes powersafe overwrite, as the commit log does: a power cut
// may lose or garble the bytes a write changed, but not the bytes of the same
// sector that it left alone. Appending entry k+1 next to a synced entry k
// therefore cannot damage entry k.
//
// # Recovery (Open)
//
//  1. A file named *.tmp is the leftover of an interrupted creation and is
//     removed. Any other name that is not %020d.kix is an ErrCorrupt naming
//     the file.
//  2. Every file must have a valid header (magic, version, CRC, geometry in
//     range, first offset equal to its name) and exactly the size its
//     geometry gives. Every file but the last must have a valid footer that
//     agrees with the header and does not overlap the next file. Any failure
//     is an ErrCorrupt naming the file; nothing panics on bad data.
//  3. The tail's slots and count are never trusted: a crash may have
//     persisted a slot pointing at an entry that did not survive, or an entry
//     whose slot update was lost. Its entries are scanned from 0; the live
//     count is the length of the longest prefix in which every entry has a
//     valid CRC, an offset not below the previous one (entry 0: exactly the
//     file's first offset), and a prev equal to the newest earlier entry of
//     its slot. Everything after the prefix is zeroed (a torn entry after a
//     lost one can never come back), the footer is zeroed unless the file is
//     full, and the slot table is rebuilt from the prefix. A tail with no
//     valid entry is removed and the file before it becomes the tail.
//
// The recovered index always holds a prefix of the sequence of Adds, and
// that prefix includes every Add made before the last successful Sync. It can
// also hold later Adds that happened to reach the disk. So the owner
// (core/log), after Open:
//
//  1. calls TruncateAbove(checkpoint), where checkpoint is a commit-log
//     offset no later than where dispatch stood when the last successful
//     index Sync began (and no later than the end of the recovered log), then
//  2. replays (re-dispatches) the log from checkpoint, then
//  3. Syncs.
//
// This restores exactly the contents of an index that never crashed: entries
// below checkpoint were synced and survived, entries at or above it are
// dropped and re-added once, without duplicates. Because the index is always
// a prefix, min(checkpoint, LastOffset()) is an equally exact starting point
// that does not depend on the checkpoint being honest, at the cost of a
// slightly longer replay.
//
// # Concurrency
//
// One writer goroutine (Add, Sync, TruncateAbove, DeleteBefore, Close) and
// any number of readers (Lookup, LastOffset). Readers hold a read lock while
// they read the mapping. The writer writes entry k (past the published count)
// without that lock, then takes the write lock to update the slot and publish
// the count, so readers never see a slot pointing at an unwritten entry. The
// write lock is also taken before anything that readers can see changes or
// before a file is unmapped. Writer methods are serialized by their own
// mutex, so misuse from several goroutines is safe, just not concurrent.
package index
