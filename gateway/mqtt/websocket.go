package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket, or secure WebSocket when tls is
// set, on a listener bound by the caller (mochi's own Websocket listener
// binds its address itself, too late for serve's "bind every port before
// opening the data" rule). The HTTP server does the TLS handshake, within
// its ReadHeaderTimeout.
type wsListener struct {
	id       string
	ln       net.Listener
	tls      *tls.Config
	maxBytes int // largest CONNECT rewritten (connectConn)
	log      *slog.Logger
	srv      *http.Server
	upgrader websocket.Upgrader
	once     sync.Once

	mu        sync.Mutex
	establish listeners.EstablishFn
	conns     connTracker
}

var (
	_ listeners.Listener = (*wsListener)(nil)
	_ drainer            = (*wsListener)(nil)
)

func newWSListener(id string, ln net.Listener, tlsConf *tls.Config, maxBytes int) *wsListener {
	return &wsListener{id: id, ln: ln, tls: tlsConf, maxBytes: maxBytes, upgrader: websocket.Upgrader{
		Subprotocols: []string{"mqtt", "mqttv3.1"},
		// Devices and browser apps connect from anywhere; authentication,
		// not the Origin header, is what protects the broker.
		CheckOrigin: func(*http.Request) bool { return true },
	}}
}

func (l *wsListener) ID() string      { return l.id }
func (l *wsListener) Address() string { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string {
	if l.tls != nil {
		return "wss"
	}
	return "ws"
}

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		establish := l.establish
		l.mu.Unlock()
		if !l.conns.enter() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		defer l.conns.leave()
		c, err := l.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		// The underlying connection is the *tls.Conn on a secure
		// listener: peerCertificate finds the client certificate there.
		if err := establish(l.id, newConnectConn(&wsConn{Conn: c.UnderlyingConn(), c: c}, l.maxBytes)); err != nil {
			l.log.Debug("websocket client ended", "err", err)
		}
	})
	// Failed TLS handshakes (plain bytes on the secure port) are the
	// client's problem: debug, not net/http's line on stderr.
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
	ln := l.ln
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	go func() {
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("websocket listener failed", "err", err)
		}
	}()
}

func (l *wsListener) stopAccepting() {
	l.once.Do(func() {
		l.conns.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
		_ = l.ln.Close() // Shutdown before Serve leaves it open
	})
}

func (l *wsListener) waitConns(d time.Duration) bool { return l.conns.wait(d) }

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	closeClients(l.id)
}

// wsConn carries MQTT's byte stream in binary WebSocket messages.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read, or nil
}

var errTextFrame = errors.New("mqtt: websocket text frame (MQTT needs binary frames)")

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue // an empty message, or the end of one: read the next
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
