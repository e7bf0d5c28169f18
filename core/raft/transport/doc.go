// Package transport carries raftpb.Messages between the nodes of one Raft
// group over TCP.
//
// The Raft loop hands each Ready's messages to Send, which never blocks: it
// marshals every message on the caller's goroutine (entries may alias an mmap
// that the log reuses once the loop moves on, so no background goroutine may
// read them later) and puts the bytes on the recipient's bounded queue. When
// the queue is full, the peer is unknown or the connection fails, the message
// is dropped and the Handler hears ReportUnreachable: Raft treats the network
// as lossy and retransmits through probing, so dropping is always safe and
// blocking the loop never is.
//
// # Connections
//
// Each node dials each of its peers and uses that connection only to send;
// it only reads from connections it accepted. A pair of nodes therefore holds
// two connections, one per direction. That costs a socket but removes every
// question of who owns a duplex connection, who redials it and in which
// order both sides see its messages.
//
// A connection carries one handshake and then frames, until either side
// closes it. Messages from one sender to one recipient arrive in the order
// Send saw them, as long as they travel on one connection. After a
// reconnection the new connection replaces the old one at the receiver (a
// newer handshake from the same sender closes the older connection), so a
// message still in flight on the old one may be lost, or be delivered after
// a newer message from the new one. Raft copes with loss and reordering: it
// relies on the transport for progress, not for correctness.
//
// Snapshots travel on the same connection as every other message. Conflux
// snapshots hold metadata only (the log itself is never copied, see
// raft.md §2.5), so they are small and a separate connection would buy
// nothing; MaxFrameBytes bounds them like any frame.
//
// # Encoding
//
// All integers are little-endian.
//
// A connection starts with a 32-byte handshake from the dialler:
//
//	off  size  field
//	  0     8  magic "CFXRAFT1" (the trailing '1' is the wire version)
//	  8     8  cluster id (u64)
//	 16     8  sender node id (u64)
//	 24     8  recipient node id (u64)
//
// The receiver closes the connection, and logs why, when the magic is wrong,
// the cluster id is not its own or the recipient is not itself. Nothing is
// sent back: the sender learns of the rejection from the closed connection.
//
// Frames follow back to back, with no padding:
//
//	off  size  field
//	  0     4  length n of the payload in bytes (u32), at most MaxFrameBytes
//	  4     n  the raftpb.Message, protobuf-encoded (raftpb.Message.Marshal)
//
// The receiver checks n against MaxFrameBytes before it allocates anything
// and closes the connection if n is larger, or if the payload does not
// decode, or if the message's To is not the receiver or its From is not the
// sender named in the handshake. A sender never writes a frame larger than
// MaxFrameBytes; it drops such a message instead. A length of zero is a valid
// frame: the empty message.
//
// # Goroutines
//
// Every goroutine is started through Transport's WaitGroup, so Close returns
// only after all of them have exited:
//
//   - one accept loop;
//   - per accepted connection, one reader: it owns the connection and a
//     bufio.Reader, and calls Handler.Process for each frame in order;
//   - per peer, one writer: it owns the outgoing connection, dials lazily
//     when there is something to send, writes frames through a
//     bufio.Writer and flushes when its queue is momentarily empty (so a burst
//     of messages costs one syscall, not one per message), and redials after
//     a failure with exponential backoff and jitter. While it backs off it
//     drops what reaches its queue, rather than send stale messages later;
//   - one reporter, which makes every ReportUnreachable and ReportSnapshot
//     call. Send only records a drop: its caller is usually the very Raft
//     loop the Handler forwards reports to, so a call from inside Send could
//     wait for itself.
//
// A writer whose peer stops reading blocks in Write for at most WriteTimeout
// (per chunk of at most 1 MiB), then drops the connection. A reader whose
// Handler blocks stops reading, so TCP pushes back on the sender, whose
// writes then time out: a slow Handler costs messages, never memory.
package transport
