package amqp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// writeTimeout bounds one write to a client: a client that stops reading
// is dropped instead of stalling its channels' goroutines forever.
const writeTimeout = 30 * time.Second

// conn is one client connection. One goroutine reads and runs the
// methods in order; consumers and publish pipes write through send.
type conn struct {
	s  *Server
	nc net.Conn
	id string
	r  *bufio.Reader

	ctx    context.Context
	cancel context.CancelFunc

	wmu       sync.Mutex
	lastWrite atomic.Int64 // unix nanoseconds

	frameMax  uint32
	heartbeat time.Duration
	vhost     string
	caps      frame.Table // the client's capabilities
	// user is who logged in (nil: the broker does not check
	// credentials); perms reads its permissions again at each check.
	user *auth.User
	// permsUser is the user as perms last read it, good until the broker
	// applies anything more (permsValid closes). Read goroutine only.
	permsUser  *auth.User
	permsValid <-chan struct{}
	// from is the client's address named by the door that handed the
	// connection on (cluster.go); nil: the socket's peer.
	from atomic.Pointer[net.TCPAddr]

	chans map[uint16]*channel // read goroutine only
	// closing: connection.close was sent; only close and close-ok count.
	closing   atomic.Bool
	closeOnce sync.Once

	// consuming counts the connection's consumers: a node that stops
	// leading closes the connections that consume.
	consuming atomic.Int32

	mu        sync.Mutex
	exclusive map[string]bool // names of exclusive queues this connection owns

	// unconfirmed bounds the bytes of publishes waiting in the
	// connection's pipes (MaxUnconfirmedBytes): a full budget stops
	// reading the socket.
	unconfirmed *semaphore.Weighted

	// bmu orders connection.blocked and unblocked (alarm.go): open is set
	// once the handshake is over, blocked says what the client was told.
	bmu     sync.Mutex
	open    bool
	blocked bool

	// refusals: a pipe refused a publish of a channel without confirms;
	// the reader closes that channel (alarm.go). wake interrupts the
	// reader's wait for the next frame so it does not wait for the client.
	refusals atomic.Bool
	idleMu   sync.Mutex
	idle     bool // the reader waits for a frame's first byte
	woken    bool // wake moved the read deadline to cut that wait short
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(s.ctx)
	return &conn{s: s, nc: nc, id: s.newID("conn-"), r: bufio.NewReaderSize(nc, 64<<10), ctx: ctx, cancel: cancel,
		frameMax: frame.MinFrameMax, chans: map[uint16]*channel{}, exclusive: map[string]bool{},
		unconfirmed: semaphore.NewWeighted(s.cfg.MaxUnconfirmedBytes)}
}

// send writes bytes (whole frames) to the client.
func (c *conn) send(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(b)
	c.lastWrite.Store(time.Now().UnixNano())
	if err != nil {
		c.cancel()
		_ = c.nc.Close()
	}
	return err
}

func (c *conn) sendMethod(ch uint16, m frame.Method) error {
	return c.send(frame.AppendMethodFrame(nil, ch, m))
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.cleanup()
	if err := c.handshake(); err != nil {
		var ae *amqpError
		if errors.As(err, &ae) {
			c.shutdown(ae)
			c.drain(ae.desync)
		}
		c.s.log.Debug("amqp handshake failed", "remote", c.remoteAddr().String(), "err", err)
		return
	}
	if c.heartbeat > 0 {
		go c.heartbeats()
	}
	c.bmu.Lock()
	c.open = true
	c.bmu.Unlock()
	c.syncBlocked() // an alarm on before open-ok
	err := c.readLoop()
	var ae *amqpError
	if errors.As(err, &ae) {
		c.shutdown(ae)
		c.drain(ae.desync)
		return
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
		c.s.log.Debug("amqp connection ended", "remote", c.remoteAddr().String(), "err", err)
	}
}

// closeOkWait bounds the wait for the client's connection.close-ok.
const closeOkWait = time.Second

// drain waits, after our connection.close, for the client's close-ok (or
// its close), so the socket ends without a reset. When the frame stream
// lost its footing (desync) the bytes are only discarded.
func (c *conn) drain(desync bool) {
	_ = c.nc.SetReadDeadline(time.Now().Add(closeOkWait))
	if desync {
		_, _ = io.Copy(io.Discard, c.r)
		return
	}
	for {
		f, err := frame.ReadFrame(c.r, c.frameMax)
		if err != nil {
			return
		}
		if f.Type != frame.TypeMethod || f.Channel != 0 {
			continue
		}
		switch m, _ := frame.DecodeMethod(f.Payload); m.(type) {
		case *frame.ConnectionCloseOk:
			return
		case *frame.ConnectionClose:
			_ = c.sendMethod(0, &frame.ConnectionCloseOk{})
			return
		}
	}
}

// handshake: protocol header, start/start-ok, tune/tune-ok, open/open-ok.
func (c *conn) handshake() error {
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	var hdr [8]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return err
	}
	if hdr == proxyMarker || hdr == proxyMarkerFrom { // handed on by another door: the client's header follows
		if hdr == proxyMarkerFrom {
			if err := c.readHandOff(); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return err
		}
	}
	if hdr != frame.ProtocolHeader {
		// The spec's answer to another protocol or version: our header, then close.
		_, _ = c.nc.Write(frame.ProtocolHeader[:])
		return fmt.Errorf("amqp: bad protocol header %q", hdr[:])
	}
	caps := frame.Table{
		"publisher_confirms": true, "exchange_exchange_bindings": true, "basic.nack": true,
		"consumer_cancel_notify": true, "authentication_failure_close": true, "per_consumer_qos": true,
		"connection.blocked": true, // sent on the disk alarm (alarm.go)
	}
	start := &frame.ConnectionStart{VersionMajor: 0, VersionMinor: 9, ServerProperties: frame.Table{
		"product": "Conflux", "version": "0.1", "platform": "Go " + runtime.Version(),
		"information": "https://github.com/conflux-mq/conflux", "capabilities": caps,
	}, Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US"}
	if err := c.sendMethod(0, start); err != nil {
		return err
	}
	m, err := c.readMethod0()
	if err != nil {
		return err
	}
	so, ok := m.(*frame.ConnectionStartOk)
	if !ok {
		return hardErr(codeCommandInvalid, "expected connection.start-ok, got %s", m.Name())
	}
	if t, ok := so.ClientProperties["capabilities"].(frame.Table); ok {
		c.caps = t
	}
	if so.Mechanism != "PLAIN" && so.Mechanism != "AMQPLAIN" {
		return hardErr(codeAccessRefused, "unsupported authentication mechanism %q", so.Mechanism)
	}
	if err := c.login(so); err != nil {
		return err
	}
	tune := &frame.ConnectionTune{ChannelMax: c.s.cfg.ChannelMax, FrameMax: c.s.cfg.FrameMaxBytes, Heartbeat: c.s.cfg.HeartbeatSeconds}
	if err := c.sendMethod(0, tune); err != nil {
		return err
	}
	if m, err = c.readMethod0(); err != nil {
		return err
	}
	to, ok := m.(*frame.ConnectionTuneOk)
	if !ok {
		return hardErr(codeCommandInvalid, "expected connection.tune-ok, got %s", m.Name())
	}
	switch {
	case to.FrameMax == 0:
		c.frameMax = c.s.cfg.FrameMaxBytes
	case to.FrameMax < frame.MinFrameMax || to.FrameMax > c.s.cfg.FrameMaxBytes:
		return hardErr(codeNotAllowed, "frame_max %d outside [%d, %d]", to.FrameMax, frame.MinFrameMax, c.s.cfg.FrameMaxBytes)
	default:
		c.frameMax = to.FrameMax
	}
	c.heartbeat = time.Duration(to.Heartbeat) * time.Second
	if m, err = c.readMethod0(); err != nil {
		return err
	}
	op, ok := m.(*frame.ConnectionOpen)
	if !ok {
		return hardErr(codeCommandInvalid, "expected connection.open, got %s", m.Name())
	}
	c.vhost = op.VirtualHost
	if c.vhost == "" {
		c.vhost = "/"
	}
	// Vhosts need not be created: any name is a namespace of its own, and
	// a user may open those it has permissions on.
	if u := c.perms(); u != nil && !u.CanOpenVHost(c.vhost) {
		return withMethod(hardErr(codeNotAllowed, "access to vhost '%s' refused for user '%s'", c.vhost, u.Name), op)
	}
	_ = c.nc.SetDeadline(time.Time{})
	return c.sendMethod(0, &frame.ConnectionOpenOk{})
}

// remoteAddr is the client's address: the socket's peer, or the client
// of the door that handed the connection on.
func (c *conn) remoteAddr() net.Addr {
	if a := c.from.Load(); a != nil {
		return a
	}
	return c.nc.RemoteAddr()
}

// readMethod0 reads the next frame of the handshake: a method on channel 0.
func (c *conn) readMethod0() (frame.Method, error) {
	f, err := frame.ReadFrame(c.r, c.frameMax)
	if err != nil {
		return nil, frameErr(err)
	}
	if f.Type != frame.TypeMethod || f.Channel != 0 {
		return nil, hardErr(codeUnexpectedFrame, "expected a method frame on channel 0 during the handshake")
	}
	m, err := frame.DecodeMethod(f.Payload)
	if err != nil {
		return nil, frameErr(err)
	}
	return m, nil
}

// frameErr turns a codec error into the protocol's connection error.
func frameErr(err error) error {
	switch {
	case errors.Is(err, frame.ErrFrameEnd), errors.Is(err, frame.ErrFrameTooLarge):
		e := hardErr(codeFrameError, "%v", err)
		e.desync = true
		return e
	case errors.Is(err, frame.ErrUnknownMethod):
		return hardErr(codeNotImplemented, "%v", err)
	case errors.Is(err, frame.ErrSyntax):
		return hardErr(codeSyntaxError, "%v", err)
	}
	return err
}

// heartbeats writes a heartbeat frame when nothing was written for half
// the negotiated interval.
func (c *conn) heartbeats() {
	t := time.NewTicker(c.heartbeat / 2)
	defer t.Stop()
	hb := frame.AppendFrame(nil, frame.TypeHeartbeat, 0, nil)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, c.lastWrite.Load())) >= c.heartbeat/2 {
				if c.send(hb) != nil {
					return
				}
			}
		}
	}
}

func (c *conn) readLoop() error {
	woken := false
	for {
		if c.refusals.Load() && c.refusals.Swap(false) {
			if err := c.failRefused(); err != nil {
				return err
			}
		}
		if c.heartbeat > 0 {
			// Two missed heartbeats (any frame counts) and the peer is gone.
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * c.heartbeat))
		} else if woken {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		var err error
		if woken, err = c.awaitFrame(); err != nil {
			return frameErr(err)
		}
		if woken {
			continue
		}
		f, err := frame.ReadFrame(c.r, c.frameMax)
		if err != nil {
			return frameErr(err)
		}
		if err := c.dispatch(f); err != nil {
			return err
		}
	}
}

// awaitFrame waits for the first byte of the next frame, unless wake cuts
// the wait short (woken). Only this wait may be cut: a deadline that hit
// inside ReadFrame would lose half a frame, so wake moves the deadline
// only while the reader is idle here, and the caller sets it again before
// reading on.
func (c *conn) awaitFrame() (woken bool, err error) {
	if c.r.Buffered() > 0 {
		return false, nil
	}
	c.idleMu.Lock()
	if c.refusals.Load() { // set before a wake that found us busy
		c.idleMu.Unlock()
		return true, nil
	}
	c.idle = true
	c.idleMu.Unlock()
	_, err = c.r.Peek(1)
	c.idleMu.Lock()
	c.idle = false
	woken, c.woken = c.woken, false
	c.idleMu.Unlock()
	if woken {
		// The error is our own deadline, or one the next wait meets again.
		return true, nil
	}
	return false, err
}

// wake makes the reader look at refusals now, not at the client's next
// frame: the client may be waiting for us.
func (c *conn) wake() {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	if c.idle && !c.woken {
		c.woken = true
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// errClosedByClient ends the read loop after a client's connection.close.
var errClosedByClient = errors.New("amqp: closed by the client")

func (c *conn) dispatch(f frame.Frame) error {
	if f.Type == frame.TypeHeartbeat {
		if f.Channel != 0 {
			return hardErr(codeFrameError, "heartbeat on channel %d", f.Channel)
		}
		return nil
	}
	if f.Channel == 0 {
		if f.Type != frame.TypeMethod {
			return hardErr(codeUnexpectedFrame, "content frame on channel 0")
		}
		m, err := frame.DecodeMethod(f.Payload)
		if err != nil {
			return frameErr(err)
		}
		return c.connectionMethod(m)
	}
	if c.closing.Load() {
		return nil // only close-ok matters now (channel 0)
	}
	ch := c.chans[f.Channel]
	if f.Type != frame.TypeMethod {
		if ch == nil {
			return hardErr(codeChannelError, "content on channel %d, which is not open", f.Channel)
		}
		return ch.content(f)
	}
	m, err := frame.DecodeMethod(f.Payload)
	if err != nil {
		return frameErr(err)
	}
	if ch == nil {
		if _, ok := m.(*frame.ChannelOpen); !ok {
			return withMethod(hardErr(codeChannelError, "channel %d is not open", f.Channel), m)
		}
		if f.Channel > c.s.cfg.ChannelMax {
			return withMethod(hardErr(codeChannelError, "channel %d above channel_max %d", f.Channel, c.s.cfg.ChannelMax), m)
		}
		ch = newChannel(c, f.Channel)
		c.chans[f.Channel] = ch
		return c.sendMethod(f.Channel, &frame.ChannelOpenOk{})
	}
	return ch.method(m)
}

func withMethod(e *amqpError, m frame.Method) *amqpError {
	if m != nil {
		e.classID, e.methodID = m.ClassID(), m.MethodID()
	}
	return e
}

func (c *conn) connectionMethod(m frame.Method) error {
	switch m := m.(type) {
	case *frame.ConnectionClose:
		c.closeChannels()
		_ = c.sendMethod(0, &frame.ConnectionCloseOk{})
		return errClosedByClient
	case *frame.ConnectionCloseOk:
		if c.closing.Load() {
			return errClosedByClient
		}
		return withMethod(hardErr(codeCommandInvalid, "connection.close-ok without a close"), m)
	case *frame.ConnectionBlocked, *frame.ConnectionUnblocked:
		return nil
	case *frame.ConnectionUpdateSecret:
		return c.sendMethod(0, &frame.ConnectionUpdateSecretOk{})
	default:
		if c.closing.Load() {
			return nil
		}
		return withMethod(hardErr(codeCommandInvalid, "%s not allowed on channel 0", m.Name()), m)
	}
}

// shutdown sends connection.close with the error (once); from then on
// only close and close-ok count. The read goroutine drains until the
// client's close-ok; Server.Close waits for that, then cuts what is left.
func (c *conn) shutdown(e *amqpError) {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		if e.code != codeConnectionForced {
			c.s.log.Debug("amqp connection error", "remote", c.remoteAddr().String(), "code", e.code, "text", e.text)
		}
		_ = c.sendMethod(0, &frame.ConnectionClose{ReplyCode: e.code, ReplyText: e.replyText(), FailedClassID: e.classID, FailedMethodID: e.methodID})
	})
}

// closeChannels ends every channel: consumers stop, pipes drain,
// unacknowledged deliveries go back to their queues.
func (c *conn) closeChannels() {
	for id, ch := range c.chans {
		ch.close()
		delete(c.chans, id)
	}
}

// cleanup runs when the connection is over: channels closed, exclusive
// queues deleted.
func (c *conn) cleanup() {
	c.closeChannels()
	c.cancel()
	_ = c.nc.Close()
	c.mu.Lock()
	names := make([]string, 0, len(c.exclusive))
	for n := range c.exclusive {
		names = append(names, n)
	}
	c.mu.Unlock()
	for _, n := range names {
		// Not the server's context: a shutdown must still delete them.
		ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.CommitTimeout)
		if _, err := c.s.deleteQueue(ctx, c.vhost, n); err != nil {
			c.s.log.Warn("exclusive queue not deleted", "queue", n, "err", err)
		}
		cancel()
	}
}

// capability reports a client capability from start-ok.
func (c *conn) capability(name string) bool {
	v, _ := c.caps[name].(bool)
	return v
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func validName(s string) bool { return len(s) <= 255 && !strings.ContainsRune(s, 0) }
