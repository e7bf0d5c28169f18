package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
)

// Server is the AMQP 0-9-1 front door of one node.
type Server struct {
	cfg  Config
	b    *broker.Broker
	log  *slog.Logger
	topo *topo

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	lns   []net.Listener
	conns map[*conn]struct{}
	// proxied: connections handed to the leader's door (client → upstream).
	proxied map[net.Conn]net.Conn
	closed  bool
	wg      sync.WaitGroup

	seq atomic.Uint64
	// consumers are this node's consumers per queue topic (consumer
	// counts, exclusive consume, auto-delete, cancel on delete).
	consumers   map[string]map[*consumer]bool
	exclusiveOn map[string]bool
	acks        chan ackReq
	// removeRouter stops routing other doors' messages to AMQP queues.
	removeRouter func()
	// released is closed (and replaced) when this node hands deliveries
	// back, so idle consumers look again at once.
	released chan struct{}
	// alarm is the broker's disk alarm as watchDisk last saw it (nil:
	// clear), for connection.blocked (alarm.go).
	alarm atomic.Pointer[alarmState]
}

// New checks cfg and builds a server; Serve starts it on a listener.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, b: cfg.Broker, log: cfg.Logger, topo: &topo{b: cfg.Broker},
		ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{}, proxied: map[net.Conn]net.Conn{}, consumers: map[string]map[*consumer]bool{},
		exclusiveOn: map[string]bool{}, released: make(chan struct{}), acks: make(chan ackReq, 1024)}
	s.wg.Add(1)
	go s.ackLoop()
	s.removeRouter = cfg.Broker.AddRouter(s.routeForeign)
	s.wg.Add(3)
	go s.announce()
	go s.watchLeadership()
	go s.watchDisk()
	return s, nil
}

// Serve accepts connections on ln in the background until Close. Call it
// once per listener: the plain door, and AMQPS as tls.NewListener over
// another (the TLS handshake runs within HandshakeTimeout, in the
// connection's own goroutine, so a slow handshake holds up no one else).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amqp: server closed")
	}
	s.lns = append(s.lns, ln)
	s.wg.Add(1)
	go s.accept(ln)
	return nil
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("amqp accept failed", "err", err)
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if nc = s.handOn(nc); nc != nil {
				s.serveConn(nc)
			}
		}()
	}
}

// serveConn runs one connection here.
func (s *Server) serveConn(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, closes every connection with 320
// CONNECTION_FORCED and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.removeRouter()
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	for down, up := range s.proxied {
		_ = down.Close()
		_ = up.Close()
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown(hardErr(codeConnectionForced, "broker shutting down"))
	}
	// Give clients a moment to answer close-ok, then cut the rest.
	deadline := time.Now().Add(closeOkWait)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		left := len(s.conns)
		s.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.cancel()
	for _, c := range conns {
		_ = c.nc.Close()
	}
	s.wg.Wait()
	return nil
}

// newID returns a name unique in the cluster for this node's objects.
func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%s%d.%d.%s", prefix, s.cfg.NodeID, s.seq.Add(1), randHex(4))
}

// addConsumer registers a consumer of its queue on this node; false if
// exclusivity forbids it (an exclusive consumer wants the queue alone).
func (s *Server) addConsumer(k *consumer, exclusive bool) bool {
	topic := k.q.topic()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.consumers[topic]
	if s.exclusiveOn[topic] || exclusive && len(ks) > 0 {
		return false
	}
	if ks == nil {
		ks = map[*consumer]bool{}
		s.consumers[topic] = ks
	}
	ks[k] = true
	if exclusive {
		s.exclusiveOn[topic] = true
	}
	return true
}

// removeConsumer returns how many consumers the queue has left here.
func (s *Server) removeConsumer(k *consumer) int {
	topic := k.q.topic()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.consumers[topic]
	if ks[k] {
		delete(ks, k)
		if len(ks) == 0 {
			delete(s.consumers, topic)
			delete(s.exclusiveOn, topic)
		}
	}
	return len(ks)
}

func (s *Server) consumerCount(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.consumers[topic])
}

// cancelConsumers ends this node's consumers of a deleted queue; each
// tells its client with basic.cancel.
func (s *Server) cancelConsumers(topic string) {
	s.mu.Lock()
	ks := make([]*consumer, 0, len(s.consumers[topic]))
	for k := range s.consumers[topic] {
		ks = append(ks, k)
	}
	s.mu.Unlock()
	for _, k := range ks {
		k.byServer.Store(true)
		k.cancel()
	}
}

// release hands deliveries back and wakes idle consumers.
func (s *Server) release(sub string, offsets []uint64) {
	if len(offsets) == 0 {
		return
	}
	s.b.Release(sub, offsets...)
	s.mu.Lock()
	close(s.released)
	s.released = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) releasedCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.released
}
