package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"
)

const (
	// writeBufferBytes is the bufio.Writer size per peer connection: a burst
	// of small messages (heartbeats, append responses) leaves in one
	// syscall, and a large frame goes out mostly straight from its own
	// buffer.
	writeBufferBytes = 64 << 10
	// writeChunkBytes bounds one conn.Write, so WriteTimeout measures a
	// stalled peer, not a large frame on a slow link.
	writeChunkBytes = 1 << 20
)

// outFrame is one marshalled message on its way to a peer.
type outFrame struct {
	buf  []byte
	snap bool // a MsgSnap: its fate goes to Handler.ReportSnapshot
}

// peer is the sending side towards one node. Send offers frames to queue;
// the writer goroutine (run) takes them. Everything else about the
// connection lives in a writer, which only that goroutine sees.
type peer struct {
	t     *Transport
	id    uint64
	queue chan outFrame
	stats *counters

	// addr is set by AddPeer and read by the writer before each dial; a
	// change also signals redial, so that the writer drops a connection to
	// the old address between two bursts. The queue survives the change,
	// so no message is lost or reordered by it.
	addr   atomic.Pointer[string]
	redial chan struct{}

	ctx    context.Context // cancelled by RemovePeer or Close
	cancel context.CancelFunc
}

// newPeer builds a peer; t.mu must be held (or t not yet shared).
func (t *Transport) newPeer(id uint64, addr string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	p := &peer{
		t:      t,
		id:     id,
		queue:  make(chan outFrame, t.cfg.PeerQueueMessages),
		stats:  t.countersLocked(id),
		redial: make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	p.addr.Store(&addr)
	return p
}

// setAddr points the peer at a new address.
func (p *peer) setAddr(addr string) {
	if *p.addr.Load() == addr {
		return
	}
	p.addr.Store(&addr)
	select {
	case p.redial <- struct{}{}:
	default: // a redial is pending already
	}
}

// offer puts f on the queue unless it is full.
func (p *peer) offer(f outFrame) bool {
	select {
	case p.queue <- f:
		return true
	default:
		return false
	}
}

// poll takes a frame from the queue if one is there.
func (p *peer) poll() (outFrame, bool) {
	select {
	case f := <-p.queue:
		return f, true
	default:
		return outFrame{}, false
	}
}

// run is the writer goroutine. Frames still queued when it stops are
// discarded without a report (see Handler).
func (p *peer) run() {
	w := &writer{p: p, log: p.t.log.With("peer", p.id)}
	defer w.disconnect()
	for {
		select {
		case f := <-p.queue:
			w.sendBurst(f)
		case <-p.redial:
			// Between bursts nothing is pending, so nothing is lost here.
			w.disconnect()
			w.failures, w.backoff, w.retryAt = 0, 0, time.Time{}
		case <-p.ctx.Done():
			return
		}
	}
}

// writer is the state of a peer's writer goroutine; nothing else touches it.
type writer struct {
	p   *peer
	log *slog.Logger

	conn      net.Conn // nil while disconnected
	bw        *bufio.Writer
	stopClose func() bool // unregisters the AfterFunc that closes conn on cancel

	connectedAt time.Time
	retryAt     time.Time     // no dial before this
	backoff     time.Duration // the wait after the next failure, before jitter
	failures    int           // since the last connection that stayed up BackoffMax

	// Frames written since the last flush, and frames lost since the last
	// report, with the MsgSnaps among them.
	pending, pendingSnaps int
	lost, lostSnaps       int
}

// sendBurst writes f and whatever else is queued right now, then flushes:
// under load the queue refills while a flush is in the kernel, so bursts
// grow by themselves and the syscall count per message falls. The burst is
// capped at one queue's worth so that reports and counters keep flowing.
func (w *writer) sendBurst(f outFrame) {
	if w.conn == nil && !w.connect() {
		w.dropQueued(f)
		return
	}
	w.write(f)
	for range cap(w.p.queue) {
		f, ok := w.p.poll()
		if !ok {
			break
		}
		w.write(f)
	}
	w.flush()
	w.reportLost()
}

// dropQueued loses f and everything queued behind it: while the peer is
// unreachable, fresher messages from Raft beat stale ones sent later.
func (w *writer) dropQueued(f outFrame) {
	w.lose(f)
	for range cap(w.p.queue) {
		f, ok := w.p.poll()
		if !ok {
			break
		}
		w.lose(f)
	}
	w.reportLost()
}

func (w *writer) write(f outFrame) {
	if w.conn == nil { // an earlier frame of this burst failed
		w.lose(f)
		return
	}
	w.pending++
	if f.snap {
		w.pendingSnaps++
	}
	if _, err := w.bw.Write(f.buf); err != nil {
		w.fail(err)
	}
}

func (w *writer) flush() {
	if w.conn == nil {
		return
	}
	if err := w.bw.Flush(); err != nil {
		w.fail(err)
		return
	}
	w.p.stats.sent.Add(uint64(w.pending))
	w.p.t.rep.snapsSent(w.p.id, w.pendingSnaps)
	w.pending, w.pendingSnaps = 0, 0
	if w.failures > 0 && time.Since(w.connectedAt) >= w.p.t.cfg.BackoffMax {
		w.log.Info("peer reachable again", "failures", w.failures)
		w.failures, w.backoff = 0, 0
	}
}

func (w *writer) lose(f outFrame) {
	w.lost++
	if f.snap {
		w.lostSnaps++
	}
}

// reportLost counts the frames lost since the last report and hands them to
// the reporter. Once the peer is removed or the transport closed, the
// losses are only counted: Raft no longer tracks the peer, or is stopping.
func (w *writer) reportLost() {
	w.p.stats.dropped.Add(uint64(w.lost))
	if w.p.ctx.Err() == nil {
		w.p.t.rep.lost(w.p.id, w.lost, w.lostSnaps)
	}
	w.lost, w.lostSnaps = 0, 0
}

// connect dials the peer unless it is backing off, and buffers the
// handshake so that it leaves with the first frame.
func (w *writer) connect() bool {
	now := time.Now()
	if now.Before(w.retryAt) {
		return false
	}
	cfg := &w.p.t.cfg
	addr := *w.p.addr.Load()
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(w.p.ctx, "tcp", addr)
	if err != nil {
		w.logFailure("dial failed", "addr", addr, "err", err)
		w.scheduleRetry()
		return false
	}
	if cfg.ClientTLS != nil {
		tc := tls.Client(conn, cfg.ClientTLS)
		hctx, cancel := context.WithTimeout(w.p.ctx, cfg.DialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = conn.Close()
			w.logFailure("TLS handshake failed", "addr", addr, "err", err)
			w.scheduleRetry()
			return false
		}
		conn = tc
	}
	// Close (or RemovePeer) must be able to interrupt a Write that waits
	// for a stalled peer; closing the connection is the only way.
	w.stopClose = context.AfterFunc(w.p.ctx, func() { conn.Close() })
	w.conn, w.connectedAt = conn, now
	dw := deadlineWriter{conn: conn, timeout: cfg.WriteTimeout}
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(dw, writeBufferBytes)
	} else {
		w.bw.Reset(dw) // also clears the error of the previous connection
	}
	hs := handshake{clusterID: cfg.ClusterID, from: cfg.ID, to: w.p.id}
	if _, err := w.bw.Write(appendHandshake(make([]byte, 0, handshakeBytes), hs)); err != nil {
		w.fail(err)
		return false
	}
	level := slog.LevelInfo
	if w.failures > 1 {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, "connected", "addr", addr, "local", conn.LocalAddr().String())
	return true
}

// fail drops the connection after an I/O error; what was written since the
// last flush counts as lost, since there is no telling what the peer got.
func (w *writer) fail(err error) {
	healthy := time.Since(w.connectedAt) >= w.p.t.cfg.BackoffMax
	if healthy {
		w.failures, w.backoff = 0, 0
	}
	w.logFailure("connection failed", "err", err)
	w.lost += w.pending
	w.lostSnaps += w.pendingSnaps
	w.pending, w.pendingSnaps = 0, 0
	w.disconnect()
	if healthy {
		// A connection that had been fine is worth one immediate redial:
		// the usual cause is a restarted peer, which is back already.
		w.failures++
		return
	}
	w.scheduleRetry()
}

func (w *writer) disconnect() {
	if w.conn == nil {
		return
	}
	w.stopClose()
	w.conn.Close()
	w.conn, w.stopClose = nil, nil
}

// scheduleRetry sets the earliest next dial: the backoff doubles up to
// BackoffMax, and the actual wait is drawn from [backoff/2, backoff] so that
// nodes restarted together do not redial in lockstep.
func (w *writer) scheduleRetry() {
	cfg := &w.p.t.cfg
	if w.backoff == 0 {
		w.backoff = cfg.BackoffMin
	}
	w.retryAt = time.Now().Add(w.backoff/2 + rand.N(w.backoff/2+1))
	w.backoff = min(2*w.backoff, cfg.BackoffMax)
	w.failures++
}

// logFailure logs the first failure of a streak as a warning and the rest at
// debug level: a peer that is down for an hour should not fill the log.
// Failures caused by RemovePeer or Close are not worth a line.
func (w *writer) logFailure(msg string, args ...any) {
	if w.p.ctx.Err() != nil {
		return
	}
	level := slog.LevelWarn
	if w.failures > 0 {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg, args...)
}

// deadlineWriter gives each write of at most writeChunkBytes WriteTimeout to
// complete. It sits under the bufio.Writer, so it runs once per syscall,
// not once per frame.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
			return written, err
		}
		n, err := d.conn.Write(b[:min(len(b), writeChunkBytes)])
		written += n
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
