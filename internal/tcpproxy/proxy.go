// Package tcpproxy is a fault-injecting TCP proxy for tests that run Raft
// nodes (or any TCP peers) on one machine without root.
//
// A test points a node's peer address at a Proxy in front of the real
// listener. Cut then partitions that link: it closes every forwarded
// connection and refuses new ones (accepts and closes them at once) until
// Heal. SetDelay adds latency to every forwarded chunk. One Proxy is one
// direction of one link when the peers use one connection per direction, as
// core/raft/transport does, so a test can cut A→B and leave B→A up.
//
// Cut closes connections rather than black-holing them: both ends see the
// failure at once instead of after their timeouts, which keeps tests fast.
//
// Each forwarded connection runs four goroutines: per direction, a reader
// that stamps each chunk with the time it arrived, and a writer that sends
// it on no earlier than that time plus the current delay. So the delay is
// latency, not a throughput cap: chunks in flight overlap. The queue between
// them holds at most maxQueuedChunks, so a stalled reader side pushes back.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// dialTimeout bounds the connection to the target.
	dialTimeout = 2 * time.Second
	// chunkBytes is the largest read, hence the largest chunk delayed as
	// one.
	chunkBytes = 32 << 10
	// maxQueuedChunks bounds the chunks waiting out their delay per
	// direction: at most maxQueuedChunks × chunkBytes = 2 MiB.
	maxQueuedChunks = 64
	// acceptRetryDelay is the pause after an Accept error other than
	// Close, so the loop does not spin on it.
	acceptRetryDelay = 50 * time.Millisecond
)

// Proxy forwards TCP connections from its listener to one target address.
type Proxy struct {
	target string
	log    *slog.Logger
	ln     net.Listener

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine, so Close can wait

	delayNanos atomic.Int64
	bytes      atomic.Int64 // forwarded, both directions

	mu struct {
		sync.Mutex
		links  map[*link]struct{} // live connections
		cut    bool
		closed bool
	}
}

// New listens on listenAddr (e.g. "127.0.0.1:0") and forwards every
// connection to targetAddr. A nil logger discards.
func New(listenAddr, targetAddr string, logger *slog.Logger) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listening on %s: %w", listenAddr, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{target: targetAddr, ln: ln}
	p.log = logger.With("component", "tcpproxy", "listen", ln.Addr().String(), "target", targetAddr)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.links = make(map[*link]struct{})
	p.wg.Go(p.acceptLoop)
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.mu.cut = true
	links := p.linksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	p.log.Info("cut", "closed", len(links))
}

// Heal lets new connections through again. Connections closed by Cut stay
// closed: the peers redial, as after a real partition.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.mu.cut = false
	p.mu.Unlock()
	p.log.Info("healed")
}

// SetDelay sets the latency added to each forwarded chunk, counted from
// when the proxy read it; 0 disables it. It applies to every chunk not yet
// waiting out its delay, including queued ones.
func (p *Proxy) SetDelay(d time.Duration) {
	p.delayNanos.Store(int64(max(d, 0)))
}

func (p *Proxy) delay() time.Duration { return time.Duration(p.delayNanos.Load()) }

// Stats returns the number of connections being forwarded now and the bytes
// forwarded so far in both directions.
func (p *Proxy) Stats() (conns int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.links), p.bytes.Load()
}

// Close stops listening, closes every connection and waits for all
// goroutines. Later calls return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	links := p.linksLocked()
	p.mu.Unlock()

	p.cancel()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("tcpproxy: closing listener: %w", err)
	}
	return nil
}

func (p *Proxy) linksLocked() []*link {
	out := make([]*link, 0, len(p.mu.links))
	for l := range p.mu.links {
		out = append(out, l)
	}
	return out
}

func (p *Proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept failed", "err", err)
			select {
			case <-time.After(acceptRetryDelay):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		if l := p.admit(c); l != nil {
			p.wg.Go(func() { p.serve(l) })
		}
	}
}

// admit registers a new client connection, or closes it while cut.
func (p *Proxy) admit(c net.Conn) *link {
	p.mu.Lock()
	if p.mu.cut || p.mu.closed {
		p.mu.Unlock()
		c.Close()
		return nil
	}
	ctx, cancel := context.WithCancel(p.ctx)
	l := &link{client: c, ctx: ctx, cancel: cancel}
	p.mu.links[l] = struct{}{}
	p.mu.Unlock()
	return l
}

// serve dials the target and forwards both directions until both end.
func (p *Proxy) serve(l *link) {
	defer p.forget(l)
	d := net.Dialer{Timeout: dialTimeout}
	up, err := d.DialContext(l.ctx, "tcp", p.target)
	if err != nil {
		if l.ctx.Err() == nil {
			p.log.Warn("dialling target failed", "err", err)
		}
		return
	}
	if !l.setUpstream(up) {
		return // cut while dialling
	}
	p.log.Debug("forwarding", "client", l.client.RemoteAddr().String())
	var both sync.WaitGroup
	both.Go(func() { p.pipe(l, l.client, up) })
	p.pipe(l, up, l.client)
	both.Wait()
}

func (p *Proxy) forget(l *link) {
	l.close()
	p.mu.Lock()
	delete(p.mu.links, l)
	p.mu.Unlock()
}
