package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connTracker counts the goroutines that serve accepted connections, so
// Close can wait for them before it calls mochi's Close. mochi v2.7.9
// reads server state at the start of every connection (EstablishConnection)
// with nothing ordering that read before the writes of its Close: the race
// detector reports it whenever a client connected during the server's life.
// A goroutine that has returned is ordered before the wait that saw it go.
type connTracker struct {
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
}

// enter registers a connection's goroutine; false once closing.
func (t *connTracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *connTracker) leave() { t.wg.Done() }

// stop refuses new connections from now on.
func (t *connTracker) stop() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
}

// wait waits for the registered goroutines, at most d; false on timeout.
func (t *connTracker) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// drainer is a listener whose connections Close can drain before mochi's.
type drainer interface {
	stopAccepting()
	waitConns(time.Duration) bool
}

// drainerListener is one of our mochi listeners.
type drainerListener interface {
	listeners.Listener
	drainer
}

// tcpListener serves MQTT over TCP, or over TLS when tls is set, on a
// listener bound by the caller, like mochi's listeners.Net, but with its
// connections tracked (connTracker). A TLS handshake is completed (or
// fails, as plain MQTT bytes do) on the connection's own goroutine, within
// connectTimeout, before mochi sees the connection.
type tcpListener struct {
	id       string
	ln       net.Listener
	tls      *tls.Config
	maxBytes int // largest CONNECT rewritten (connectConn)
	log      *slog.Logger
	conns    connTracker
	once     sync.Once
	// ctx ends handshakes in progress when the listener stops.
	ctx    context.Context
	cancel context.CancelFunc
}

var (
	_ listeners.Listener = (*tcpListener)(nil)
	_ drainer            = (*tcpListener)(nil)
)

func newTCPListener(id string, ln net.Listener, tlsConf *tls.Config, maxBytes int) *tcpListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tcpListener{id: id, ln: ln, tls: tlsConf, maxBytes: maxBytes, ctx: ctx, cancel: cancel}
}

func (l *tcpListener) ID() string      { return l.id }
func (l *tcpListener) Address() string { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}
func (l *tcpListener) Init(log *slog.Logger) error { l.log = log; return nil }

// Serve accepts until the listener is closed (mochi runs it in its own
// goroutine).
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.conns.enter() {
			_ = conn.Close()
			continue
		}
		go func() {
			defer l.conns.leave()
			c, err := l.handshake(conn)
			if err != nil {
				_ = conn.Close()
				l.log.Debug("client connection refused", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
				return
			}
			if err := establish(l.id, c); err != nil {
				l.log.Debug("client connection ended", "err", err)
			}
		}()
	}
}

// handshake completes the TLS handshake on a TLS listener; both kinds get
// their CONNECT read through connectConn.
func (l *tcpListener) handshake(conn net.Conn) (net.Conn, error) {
	if l.tls == nil {
		return newConnectConn(conn, l.maxBytes), nil
	}
	tc := tls.Server(conn, l.tls)
	ctx, cancel := context.WithTimeout(l.ctx, connectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("mqtt: TLS handshake: %w", err)
	}
	return newConnectConn(tc, l.maxBytes), nil
}

func (l *tcpListener) stopAccepting() {
	l.once.Do(func() {
		l.conns.stop()
		l.cancel()
		_ = l.ln.Close()
	})
}

func (l *tcpListener) waitConns(d time.Duration) bool { return l.conns.wait(d) }

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	closeClients(l.id)
}
