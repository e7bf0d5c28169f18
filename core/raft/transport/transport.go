package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// Handler receives what the transport has to tell the Raft loop. Its
// methods are called from transport goroutines only, never from inside
// Send, so they may hand their argument to the goroutine that calls Send.
//
// Process is called from the reader goroutine of the sender's connection,
// one message at a time and in order; while it runs, that sender's
// connection is not read. ReportUnreachable and ReportSnapshot are called
// from one reporter goroutine. None of them should block for long. Nothing
// is reported for messages discarded by RemovePeer or Close.
type Handler interface {
	// Process delivers an incoming message addressed to this node; hand it
	// to raft.RawNode.Step. The transport keeps no reference to m.
	Process(m raftpb.Message)
	// ReportUnreachable says that messages to id were dropped
	// (raft.RawNode.ReportUnreachable). One call may stand for many drops,
	// and comes shortly after them, not during Send.
	ReportUnreachable(id uint64)
	// ReportSnapshot says what became of one MsgSnap to id: failed is false
	// once it was written and flushed to the connection, true if it was
	// dropped (raft.RawNode.ReportSnapshot). Exactly one call per MsgSnap
	// given to Send, unless RemovePeer or Close discarded it first.
	ReportSnapshot(id uint64, failed bool)
}

// PeerStats counts the frames exchanged with one peer, for tests and
// debugging. The counters only grow.
type PeerStats struct {
	// SentFrames were flushed to the peer's connection.
	SentFrames uint64
	// DroppedFrames were given to Send for the peer and never flushed: the
	// queue was full, the peer unknown, the message too large, or the
	// connection failed before the flush.
	DroppedFrames uint64
	// ReceivedFrames came from the peer and went to Handler.Process.
	ReceivedFrames uint64
}

// counters is the live form of PeerStats.
type counters struct {
	sent, dropped, received atomic.Uint64
}

// Transport sends and receives Raft messages for one node. See doc.go.
type Transport struct {
	cfg Config
	h   Handler
	rep *reporter
	log *slog.Logger

	// ctx is cancelled by Close; every peer's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg tracks every goroutine the transport starts, so Close can wait.
	wg sync.WaitGroup

	// peers is an immutable map, replaced whole under mu by AddPeer,
	// RemovePeer and Close, so that Send looks peers up without a lock.
	peers  atomic.Pointer[map[uint64]*peer]
	closed atomic.Bool

	// mu guards the fields below. It is never held across I/O or a
	// Handler call.
	mu struct {
		sync.Mutex
		started bool
		ln      net.Listener
		// conns holds every accepted connection still being served, with
		// its sender once the handshake is through (0 before).
		conns map[net.Conn]uint64
		// handshaking counts the conns entries still at 0.
		handshaking int
		// bySender is the current connection from each sender.
		bySender map[uint64]net.Conn
		// stats holds one entry per node id ever seen; never shrinks.
		stats map[uint64]*counters
	}
}

// New checks cfg (after WithDefaults) and returns a Transport that does
// nothing until Start. h must not be nil.
func New(cfg Config, h Handler) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("transport: nil Handler")
	}
	t := &Transport{cfg: cfg, h: h, rep: newReporter(h)}
	t.log = cfg.Logger.With("component", "raft-transport")
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.mu.conns = make(map[net.Conn]uint64)
	t.mu.bySender = make(map[uint64]net.Conn)
	t.mu.stats = make(map[uint64]*counters)
	t.mu.Lock()
	defer t.mu.Unlock()
	peers := make(map[uint64]*peer, len(cfg.Peers))
	for id, addr := range cfg.Peers {
		if id != cfg.ID {
			peers[id] = t.newPeer(id, addr)
		}
	}
	t.peers.Store(&peers)
	return t, nil
}

// Start listens on ListenAddr and starts the peers' writers. Messages given
// to Send before Start wait in the queues.
func (t *Transport) Start() error {
	errStarted := errors.New("transport: Start after Start or Close")
	// Checked once before listening, for a clear error rather than
	// "address in use" on a second Start, and again after, for real.
	if t.startedOrClosed() {
		return errStarted
	}
	ln, err := net.Listen("tcp", t.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("transport: listening on %s: %w", t.cfg.ListenAddr, err)
	}
	if t.cfg.ServerTLS != nil {
		ln = tls.NewListener(ln, t.cfg.ServerTLS)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.started || t.closed.Load() {
		ln.Close()
		return errStarted
	}
	t.mu.started = true
	t.mu.ln = ln
	t.wg.Go(func() { t.acceptLoop(ln) })
	t.wg.Go(func() { t.rep.run(t.ctx.Done()) })
	for _, p := range *t.peers.Load() {
		t.wg.Go(p.run)
	}
	t.log.Info("listening", "addr", ln.Addr().String())
	return nil
}

func (t *Transport) startedOrClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.started || t.closed.Load()
}

// Addr is the address the transport listens on; nil before Start.
func (t *Transport) Addr() net.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.ln == nil {
		return nil
	}
	return t.mu.ln.Addr()
}

// Send queues msgs for their recipients and returns without blocking. See
// the package comment for why it marshals here and drops when full. Drops
// are reported to the Handler later, from the transport's own goroutine.
// After Close, Send does nothing.
func (t *Transport) Send(msgs []raftpb.Message) {
	if t.closed.Load() {
		return
	}
	peers := *t.peers.Load()
	for i := range msgs {
		t.enqueue(peers[msgs[i].To], &msgs[i])
	}
}

// enqueue marshals m onto p's queue, or counts and reports it as dropped.
func (t *Transport) enqueue(p *peer, m *raftpb.Message) {
	var c *counters
	if p != nil {
		c = p.stats
		if f, ok := t.frame(m); ok && p.offer(f) {
			return
		}
	} else {
		c = t.counters(m.To)
	}
	c.dropped.Add(1)
	snaps := 0
	if m.Type == raftpb.MsgSnap {
		snaps = 1
	}
	t.rep.lost(m.To, 1, snaps)
}

// frame marshals m; a message too large to send is logged and refused.
func (t *Transport) frame(m *raftpb.Message) (outFrame, bool) {
	buf, err := encodeFrame(m, t.cfg.MaxFrameBytes)
	if err != nil {
		// Only a misconfiguration gets here (MaxSizePerMsg or a snapshot
		// above MaxFrameBytes), so it is worth an error every time.
		t.log.Error("dropping message", "to", m.To, "err", err)
		return outFrame{}, false
	}
	return outFrame{buf: buf, snap: m.Type == raftpb.MsgSnap}, true
}

// AddPeer adds a peer or changes its address; adding a known peer at the
// same address does nothing. On a new address the writer drops its current
// connection after the burst it is writing and dials the new one; queued
// messages stay queued, so none is lost or reordered by the change.
func (t *Transport) AddPeer(id uint64, addr string) {
	if id == t.cfg.ID || id == 0 || addr == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return
	}
	if p := (*t.peers.Load())[id]; p != nil {
		p.setAddr(addr)
		return
	}
	p := t.newPeer(id, addr)
	t.replacePeer(id, p)
	if t.mu.started {
		t.wg.Go(p.run)
	}
}

// RemovePeer stops sending to id; its queued messages are discarded without
// reports. Connections from id are still accepted: a removed node may still
// have things to say until it learns it was removed.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := (*t.peers.Load())[id]; p != nil {
		t.replacePeer(id, nil)
		p.cancel()
	}
}

// replacePeer publishes a copy of the peer map with id set to p, or removed
// if p is nil. t.mu must be held.
func (t *Transport) replacePeer(id uint64, p *peer) {
	peers := maps.Clone(*t.peers.Load())
	if p == nil {
		delete(peers, id)
	} else {
		peers[id] = p
	}
	t.peers.Store(&peers)
}

// Close stops the listener, every connection and every goroutine, and
// returns once they have all exited. Later calls return nil.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed.Swap(true) {
		t.mu.Unlock()
		return nil
	}
	empty := map[uint64]*peer{}
	t.peers.Store(&empty)
	ln := t.mu.ln
	conns := make([]net.Conn, 0, len(t.mu.conns))
	for c := range t.mu.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()

	t.cancel() // writers close their connections and exit
	var err error
	if ln != nil {
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("transport: closing listener: %w", cerr)
		}
	}
	for _, c := range conns {
		c.Close() // unblocks its reader
	}
	t.wg.Wait()
	t.log.Info("closed")
	return err
}

// Stats returns the counters of every node id the transport has dealt with.
func (t *Transport) Stats() map[uint64]PeerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]PeerStats, len(t.mu.stats))
	for id, c := range t.mu.stats {
		out[id] = PeerStats{
			SentFrames:     c.sent.Load(),
			DroppedFrames:  c.dropped.Load(),
			ReceivedFrames: c.received.Load(),
		}
	}
	return out
}

// counters returns id's counters, creating them on first use.
func (t *Transport) counters(id uint64) *counters {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.countersLocked(id)
}

func (t *Transport) countersLocked(id uint64) *counters {
	c := t.mu.stats[id]
	if c == nil {
		c = new(counters)
		t.mu.stats[id] = c
	}
	return c
}
