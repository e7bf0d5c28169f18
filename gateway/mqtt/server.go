package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
)

// Listener ids; also the value of mqtt.Client.Net.Listener.
const (
	listenerTCP = "mqtt-tcp"
	listenerWS  = "mqtt-ws"
	listenerTLS = "mqtt-tls"
	listenerWSS = "mqtt-wss"
	// applyListener marks the inline clients through which delivery injects
	// committed messages: OnPublish lets them through to mochi's fan-out.
	applyListener = "conflux-apply"
)

// closeWait bounds how long Close waits for clients to finish
// disconnecting (and persistent sessions to be saved).
const closeWait = 10 * time.Second

// Server is the MQTT front door of one node.
type Server struct {
	cfg   Config
	b     *broker.Broker
	log   *slog.Logger
	mochi *mqtt.Server
	hook  *hook
	dl    *deliverer
	ret   retainedMirror
	// retainLock works around a data race in mochi v2.7.9: the topic
	// trie's retained paths are read without a lock while a SUBSCRIBE
	// collects retained messages. Subscribes hold it shared, retained
	// updates exclusively; a subscriber whose SUBACK write is stuck
	// while an update waits is disconnected (lockRetainIndex).
	retainLock sync.RWMutex
	diskLogs   diskFullLogs

	lastSweep time.Time // checkpointLoop only

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	started bool
	closed  bool
	lns     []drainerListener // the client listeners, drained before mochi's Close
}

// New builds a server; Start serves it.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSizeBytes
	caps.ReceiveMaximum = cfg.ReceiveMaximumMessages
	// mochi's own bound sits above ours so that our veto (which keeps the
	// message for a later replay) runs first.
	caps.MaximumInflight = cfg.MaxInflightMessages + 64
	caps.MaximumClientWritesPending = cfg.MaxQueuedMessages
	caps.MaximumSessionExpiryInterval = uint32(cfg.MaxSessionExpiry / time.Second)
	// paho's conformance suites need this (reference/mqtt.md §1.7).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// mochi's name for it: it changes only the SUBACK code of a filter
	// the user may not subscribe to (and of one over MaxTopicBytes).
	caps.Compatibilities.ObscureNotAuthorized = cfg.ObscureNotAuthorized
	ms := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       cfg.Logger.With("component", "mochi"),
		// $SYS is node-local and would be misleading in a cluster; publish it rarely.
		SysTopicResendInterval: 60,
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, b: cfg.Broker, log: cfg.Logger, mochi: ms, ctx: ctx, cancel: cancel}
	s.dl = newDeliverer(s)
	s.hook = newHook(s)
	if err := ms.AddHook(s.hook, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqtt: add hook: %w", err)
	}
	return s, nil
}

// Listeners are the sockets a server serves, bound by the caller; nil
// ones are off.
type Listeners struct {
	TCP net.Listener // MQTT over TCP (1883)
	WS  net.Listener // MQTT over WebSocket (8083)
	TLS net.Listener // MQTT over TLS (8883); needs Config.TLS
	WSS net.Listener // MQTT over secure WebSocket (8084); needs Config.TLS
}

// Start serves MQTT over TCP on tcp and over WebSocket on ws (either may
// be nil); StartListeners serves the TLS listeners too.
func (s *Server) Start(tcp, ws net.Listener) error {
	return s.StartListeners(Listeners{TCP: tcp, WS: ws})
}

// StartListeners serves MQTT on the listeners that are not nil and
// starts delivery; it returns at once.
func (s *Server) StartListeners(ls Listeners) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("mqtt: server already started or closed")
	}
	if (ls.TLS != nil || ls.WSS != nil) && s.cfg.TLS == nil {
		return errors.New("mqtt: TLS listeners need Config.TLS")
	}
	s.started = true
	maxBytes := int(s.cfg.MaxPacketSizeBytes)
	for _, l := range []struct {
		ln  net.Listener
		id  string
		tls *tls.Config
		ws  bool
	}{
		{ls.TCP, listenerTCP, nil, false},
		{ls.WS, listenerWS, nil, true},
		{ls.TLS, listenerTLS, s.cfg.TLS, false},
		{ls.WSS, listenerWSS, s.cfg.TLS, true},
	} {
		if l.ln == nil {
			continue
		}
		var dl drainerListener
		if l.ws {
			dl = newWSListener(l.id, l.ln, l.tls, maxBytes)
		} else {
			dl = newTCPListener(l.id, l.ln, l.tls, maxBytes)
		}
		if err := s.mochi.AddListener(dl); err != nil {
			return fmt.Errorf("mqtt: listener %s: %w", l.id, err)
		}
		s.lns = append(s.lns, dl)
	}
	s.loadRetained()
	if err := s.mochi.Serve(); err != nil {
		return fmt.Errorf("mqtt: serve: %w", err)
	}
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.dl.run(s.ctx) }()
	go func() { defer s.wg.Done(); s.watch(s.ctx) }()
	go func() { defer s.wg.Done(); s.checkpointLoop(s.ctx) }()
	return nil
}

// Close disconnects every client (persistent sessions save their
// positions first) and stops delivery.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	lns := s.lns
	s.mu.Unlock()
	var err error
	if started {
		// Stop taking connections, disconnect every client and wait for
		// their goroutines before mochi's Close (see connTracker). Their
		// OnDisconnect saves persistent sessions, with the broker open.
		for _, l := range lns {
			l.stopAccepting()
		}
		// Not mochi's Clients.GetByListener: it takes the clients' read
		// lock twice (its Len inside), which deadlocks against a
		// Delete waiting in between, as a disconnecting client's
		// endSession does. GetAll copies under one read lock.
		ours := map[string]bool{listenerTCP: true, listenerWS: true, listenerTLS: true, listenerWSS: true}
		for _, cl := range s.mochi.Clients.GetAll() {
			if ours[cl.Net.Listener] && !cl.Closed() {
				_ = s.mochi.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
		deadline := time.Now().Add(closeWait)
		for _, l := range lns {
			if !l.waitConns(time.Until(deadline)) {
				s.log.Warn("client connections still open at close", "waited", closeWait.String())
				break
			}
		}
		err = s.mochi.Close()
		// mochi only tells the clients to go; their OnDisconnect saves
		// persistent sessions, which needs the broker still open.
		done := make(chan struct{})
		go func() {
			s.mochi.Listeners.ClientsWg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeWait):
			s.log.Warn("clients still disconnecting at close", "waited", closeWait.String())
		}
	}
	s.cancel()
	s.wg.Wait()
	s.hook.closePipes()
	return err
}

// Mochi exposes the embedded mochi server, for tests and the $SYS view.
func (s *Server) Mochi() *mqtt.Server { return s.mochi }
