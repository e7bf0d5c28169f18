// Package remoting serves RocketMQ's "remoting" protocol over TCP: a name
// server and a broker front door, both backed by core/broker, so unchanged
// rocketmq-client-go v2 applications can produce and consume. The wire
// codec lives in gateway/remoting/command; this package owns connections
// and maps requests onto the broker.
package remoting

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
	"github.com/conflux-mq/conflux/internal/tlsconf"
)

// Processor answers one request. It returns the reply, or nil for none.
// It may block (long polling): ctx ends when the connection closes.
type Processor func(ctx context.Context, c *Conn, req *command.RemotingCommand) *command.RemotingCommand

// Guard vets a request whose code has a processor, before the processor
// runs: it returns the context the processor gets (which may carry who the
// caller is), or a reply that refuses the request instead.
type Guard func(ctx context.Context, c *Conn, req *command.RemotingCommand) (context.Context, *command.RemotingCommand)

// Server limits and defaults.
const (
	// DefaultOutboundQueue is how many encoded replies a connection may
	// have waiting for its writer before handlers block.
	DefaultOutboundQueue = 256
	// DefaultMaxInflight bounds the requests one connection may have in
	// progress at once (held pulls count); reading waits beyond it.
	DefaultMaxInflight = 256
	writeTimeout       = 30 * time.Second
	// DefaultHandshakeTimeout bounds how long a new connection to a TLS
	// port may take to show whether it speaks TLS and, if it does, to
	// finish the handshake.
	DefaultHandshakeTimeout = 10 * time.Second
)

// Server accepts connections and dispatches their requests by code.
type Server struct {
	name          string
	log           *slog.Logger
	maxFrameBytes int
	processors    map[int32]Processor
	onClose       []func(*Conn)
	guard         Guard

	// TLS (SetTLS): nil serves plain connections only.
	tls              *tls.Config
	tlsOnly          bool
	handshakeTimeout time.Duration

	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[*Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer returns a server with no processors. maxFrameBytes bounds an
// incoming frame (<= 0: command.DefaultMaxFrameBytes).
func NewServer(name string, log *slog.Logger, maxFrameBytes int) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		name: name, log: log, maxFrameBytes: maxFrameBytes,
		processors: map[int32]Processor{},
		lns:        map[net.Listener]struct{}{},
		conns:      map[*Conn]struct{}{},
	}
}

// Handle registers p for a request code. Call before Serve.
func (s *Server) Handle(code command.RequestCode, p Processor) { s.processors[int32(code)] = p }

// OnClose registers f to run when a connection ends. Call before Serve.
func (s *Server) OnClose(f func(*Conn)) { s.onClose = append(s.onClose, f) }

// SetGuard makes g vet every request that has a processor. Call before
// Serve.
func (s *Server) SetGuard(g Guard) { s.guard = g }

// SetTLS serves TLS on the server's ports. Like RocketMQ's "permissive"
// TLS mode, a port then takes TLS and plain connections alike, told apart
// by their first bytes (a TLS ClientHello starts 0x16 0x03; a remoting
// frame starting so would announce over 369 MB, far beyond the 16 MiB
// frame limit, so no valid frame is mistaken for TLS). only refuses plain
// connections ("enforcing"). timeout bounds the wait for those first bytes
// and, again, the handshake (<= 0: DefaultHandshakeTimeout), so a client
// that connects and stays silent does not hold a goroutine. Call before
// Serve.
func (s *Server) SetTLS(cfg *tls.Config, only bool, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	s.tls, s.tlsOnly, s.handshakeTimeout = cfg, only, timeout
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.run()
	}
}

// Close stops accepting, closes every connection and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		_ = ln.Close()
	}
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// Conn is one client connection.
type Conn struct {
	s *Server
	// nc is the accepted socket: closing it ends the connection, TLS or
	// not. rw is what requests are read from and replies written to: nc
	// itself, or the TLS session over it. rw is set by run before the
	// reader and writer start, and only they use it.
	nc     net.Conn
	rw     net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	out    chan []byte
	sem    chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // handlers and the writer
	// aclLogged: a failed authentication was logged at info level already.
	aclLogged atomic.Bool
}

func (s *Server) newConn(nc net.Conn) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &Conn{
		s: s, nc: nc, ctx: ctx, cancel: cancel,
		out: make(chan []byte, DefaultOutboundQueue),
		sem: make(chan struct{}, DefaultMaxInflight),
	}
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Close closes the connection; handlers see their ctx end.
func (c *Conn) Close() {
	c.once.Do(func() {
		c.cancel()
		_ = c.nc.Close()
	})
}

// Send queues cmd for writing. It blocks while the outbound queue is full
// and returns false once the connection is closed.
func (c *Conn) Send(cmd *command.RemotingCommand) bool {
	frame, err := command.AppendFrame(nil, cmd)
	if err != nil {
		c.s.log.Warn("cannot encode reply", "server", c.s.name, "cmd", cmd.String(), "err", err)
		return false
	}
	select {
	case c.out <- frame:
		return true
	case <-c.ctx.Done():
		return false
	}
}

func (c *Conn) run() {
	defer c.s.wg.Done()
	if c.open() {
		c.wg.Add(1)
		go c.writeLoop()
		c.readLoop()
	}
	c.Close()
	c.wg.Wait()
	for _, f := range c.s.onClose {
		f(c)
	}
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}

// open sets rw: on a TLS port it tells TLS from plain by the first bytes
// and completes the handshake. It reports false for a connection to drop:
// silent past the timeout, a failed handshake, or plain on a TLS-only port.
// Those are logged at debug level only, since anyone who can reach the
// port can cause them at will.
func (c *Conn) open() bool {
	s := c.s
	c.rw = c.nc
	if s.tls == nil {
		return true
	}
	isTLS, conn, err := tlsconf.Sniff(c.nc, s.handshakeTimeout)
	if err != nil {
		s.log.Debug("connection closed before it started", "server", s.name, "remote", c.nc.RemoteAddr().String(), "err", err)
		return false
	}
	if !isTLS {
		if s.tlsOnly {
			s.log.Debug("plain connection refused: TLS only", "server", s.name, "remote", c.nc.RemoteAddr().String())
			return false
		}
		c.rw = conn
		return true
	}
	tc := tls.Server(conn, s.tls)
	ctx, cancel := context.WithTimeout(c.ctx, s.handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Debug("TLS handshake failed", "server", s.name, "remote", c.nc.RemoteAddr().String(), "err", err)
		return false
	}
	c.rw = tc
	return true
}

func (c *Conn) readLoop() {
	r := bufio.NewReaderSize(c.rw, 64<<10)
	for {
		req, err := command.ReadFrame(r, c.s.maxFrameBytes)
		if err != nil {
			if !errors.Is(err, io.EOF) && c.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				c.s.log.Info("closing connection", "server", c.s.name, "remote", c.nc.RemoteAddr().String(), "err", err)
			}
			return
		}
		if req.IsResponse() {
			continue // replies to broker->client requests: nothing waits for them
		}
		select {
		case c.sem <- struct{}{}:
		case <-c.ctx.Done():
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-c.sem }()
			if resp := c.s.dispatch(c, req); resp != nil {
				c.Send(resp)
			}
		}()
	}
}

func (c *Conn) writeLoop() {
	defer c.wg.Done()
	w := bufio.NewWriterSize(c.rw, 64<<10)
	for {
		var frame []byte
		select {
		case frame = <-c.out:
		case <-c.ctx.Done():
			return
		}
		_ = c.rw.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(frame); err != nil {
			c.Close()
			return
		}
		// Batch whatever else is already queued into the same flush.
	drain:
		for {
			select {
			case frame = <-c.out:
				if _, err := w.Write(frame); err != nil {
					c.Close()
					return
				}
			default:
				break drain
			}
		}
		if err := w.Flush(); err != nil {
			c.Close()
			return
		}
	}
}

func (s *Server) dispatch(c *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	p, ok := s.processors[req.Code]
	if !ok {
		s.log.Debug("request code not supported", "server", s.name, "code", req.Code, "name", req.CodeName(),
			"remote", c.nc.RemoteAddr().String())
		return command.NewResponse(req, command.RequestCodeNotSupported,
			"request type "+strconv.Itoa(int(req.Code))+" ("+req.CodeName()+") not supported")
	}
	ctx := c.ctx
	var resp *command.RemotingCommand
	if s.guard != nil {
		ctx, resp = s.guard(ctx, c, req)
	}
	if resp == nil {
		resp = p(ctx, c, req)
	}
	if resp != nil && resp.Version == 0 {
		resp.Version = brokerVersion
	}
	return resp
}

// brokerVersion is the MQVersion ordinal replies carry (V4_9_4; any
// non-negative value satisfies the Go client).
const brokerVersion = 401
