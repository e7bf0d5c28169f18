package mqtt

import (
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

// tcpListener serves MQTT over TCP on a listener bound by the caller, like
// mochi's listeners.Net, but with its connections tracked (connTracker).
type tcpListener struct {
	id    string
	ln    net.Listener
	log   *slog.Logger
	conns connTracker
	once  sync.Once
}

var (
	_ listeners.Listener = (*tcpListener)(nil)
	_ drainer            = (*tcpListener)(nil)
)

func newTCPListener(id string, ln net.Listener) *tcpListener { return &tcpListener{id: id, ln: ln} }

func (l *tcpListener) ID() string                  { return l.id }
func (l *tcpListener) Address() string             { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string            { return "tcp" }
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
			if err := establish(l.id, conn); err != nil {
				l.log.Debug("client connection ended", "err", err)
			}
		}()
	}
}

func (l *tcpListener) stopAccepting() {
	l.once.Do(func() {
		l.conns.stop()
		_ = l.ln.Close()
	})
}

func (l *tcpListener) waitConns(d time.Duration) bool { return l.conns.wait(d) }

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	closeClients(l.id)
}
