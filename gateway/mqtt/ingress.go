package mqtt

import (
	"context"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/broker/command"
)

// pipeBatchMessages bounds the publishes one pipe produces in one call.
const pipeBatchMessages = 512

// pending is one inbound publish waiting for its commit.
type pending struct {
	msg      broker.Message
	qos      byte
	pid      uint16
	retained *command.Record // the retained-store change it carries, if any
	// ackOnly: a resent QoS 2 PUBLISH already stored; only the PUBREC
	// goes again (in order with the acks before it).
	ackOnly bool
	// refused: not stored; its ack carries this reason code (MQTT 5,
	// QoS 1/2), or the connection is closed with it.
	refused byte
	reason  string // the reason string sent with refused (MQTT 5)
}

// diskFullReason tells an MQTT 5 publisher why the disk alarm refused its
// publish. It says nothing of the node's paths or sizes: those are for
// the operator's log.
const diskFullReason = "the broker's disk is full: publishing is paused until space is freed; retry later"

// maxDiskFullLogs bounds the clients remembered as logged during one disk
// alarm, so clients that keep reconnecting with new ids cannot grow it.
const maxDiskFullLogs = 1024

// pipe produces one connection's publishes in receive order and writes
// their acks as each batch commits. One Produce call per batch keeps the
// order; the batch grows with whatever arrived meanwhile, so a client
// with many publishes in flight gets them acknowledged a batch at a time
// rather than one per commit.
type pipe struct {
	s    *Server
	cl   *mqtt.Client
	in   chan pending
	stop chan struct{}
	done chan struct{}
	once sync.Once
	// gone (run goroutine only): the pipe closed the connection over a
	// refused publish. What the client sent after it is dropped without
	// an ack: the client resends it after the refused one, so it is not
	// stored ahead of it (the alarm may clear meanwhile) nor twice.
	gone bool
}

func newPipe(s *Server, cl *mqtt.Client) *pipe {
	p := &pipe{s: s, cl: cl, in: make(chan pending, int(s.cfg.ReceiveMaximumMessages)+64),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// push queues a publish; it blocks while the pipe is full, which stops
// reading from the connection (TCP back-pressure).
func (p *pipe) push(x pending) {
	select {
	case p.in <- x:
	case <-p.stop:
	}
}

// close stops the pipe after it has produced what is queued.
func (p *pipe) close() {
	p.once.Do(func() { close(p.stop) })
}

func (p *pipe) run() {
	defer close(p.done)
	batch := make([]pending, 0, pipeBatchMessages)
	for {
		batch = batch[:0]
		select {
		case x := <-p.in:
			batch = append(batch, x)
		case <-p.stop:
			// Produce what the client already handed us before going.
			for {
				select {
				case x := <-p.in:
					batch = append(batch, x)
					if len(batch) < pipeBatchMessages {
						continue
					}
				default:
				}
				if len(batch) == 0 {
					return
				}
				p.produce(batch)
				batch = batch[:0]
			}
		}
	fill:
		for len(batch) < pipeBatchMessages {
			select {
			case x := <-p.in:
				batch = append(batch, x)
			default:
				break fill
			}
		}
		p.produce(batch)
	}
}

// produce commits a batch, then its retained-store changes, then acks.
// A failure closes the connection: the client resends what it did not
// get acknowledged (with DUP), which is MQTT's answer to a lost ack.
//
// Under the disk alarm nothing of the batch is stored, and each publish
// is refused on its own with 0x97 (quota exceeded): MQTT 5 QoS 1/2
// publishers get it in their PUBACK/PUBREC and keep the connection, the
// others are disconnected (see the ack loop).
func (p *pipe) produce(batch []pending) {
	if p.gone {
		return
	}
	msgs := make([]broker.Message, 0, len(batch))
	var recs []command.Record
	for i := range batch {
		if batch[i].ackOnly || batch[i].refused != 0 {
			continue
		}
		msgs = append(msgs, batch[i].msg)
		if batch[i].retained != nil {
			recs = append(recs, *batch[i].retained)
		}
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.CommitTimeout)
	defer cancel()
	var err error
	if len(msgs) > 0 {
		_, err = p.s.b.Produce(ctx, msgs)
	}
	if errors.Is(err, broker.ErrDiskFull) {
		p.s.logDiskFull(p.cl, err)
		for i := range batch {
			if !batch[i].ackOnly && batch[i].refused == 0 {
				batch[i].refused, batch[i].reason = packets.ErrQuotaExceeded.Code, diskFullReason
			}
		}
		recs, err = nil, nil // their retained changes go with them
	}
	now := time.Now().Unix()
	retained := len(recs)
	var ss *session
	if err == nil {
		recs, ss, err = p.inboundQoS2(batch, recs, now)
	}
	if err == nil && len(recs) > 0 {
		err = p.s.b.ChangeRecords(ctx, recs...)
	}
	if err != nil {
		p.s.log.Warn("publish not committed: closing the connection", "client", p.cl.ID, "messages", len(batch), "err", err)
		_ = p.s.mochi.DisconnectClient(p.cl, packets.ErrServerUnavailable)
		return
	}
	if retained > 0 {
		// Read your writes: this node's index answers a SUBSCRIBE with
		// the new retained message as soon as the publisher has its ack.
		p.s.lockRetained()
		for _, r := range recs[:retained] {
			p.s.resetRetainedLocked(r.Key)
		}
		p.s.unlockRetained()
	}
	if len(recs) > retained {
		ss.markSaved(recs[retained])
	}
	p.s.dl.kick()
	for i := range batch {
		x := &batch[i]
		if x.refused != 0 {
			reason := x.reason
			if reason == "" {
				reason = "publish refused"
			}
			if p.cl.Properties.ProtocolVersion < 5 || x.qos == 0 {
				// 3.1.1 has no refusal but an unacknowledged publish; a
				// QoS 0 one has no ack to carry it (MQTT 5 allows a
				// DISCONNECT 0x97). Either way nothing is dropped silently.
				p.gone = true
				code := packets.Code{Code: x.refused, Reason: reason}
				if p.cl.Properties.ProtocolVersion < 5 {
					// 3.1.1 has no DISCONNECT from the server (mosquitto
					// calls one a protocol error): only close.
					p.cl.Stop(code)
				} else {
					_ = p.s.mochi.DisconnectClient(p.cl, code)
				}
				return
			}
			t := packets.Puback
			if x.qos == 2 {
				// A reason code >= 0x80 ends the exchange: no PUBREC record
				// is kept, so the client may reuse the packet id at once.
				t = packets.Pubrec
			}
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: t}, PacketID: x.pid, ReasonCode: x.refused}
			ack.Properties.ReasonString = x.reason
			_ = p.cl.WritePacket(ack)
			p.cl.State.Inflight.IncreaseReceiveQuota()
			continue
		}
		switch x.qos {
		case 1:
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: x.pid}
			_ = p.cl.WritePacket(ack)
			p.cl.State.Inflight.IncreaseReceiveQuota()
		case 2:
			// The PUBREC record lets mochi answer the PUBREL with PUBCOMP
			// (and restore the receive quota then), and answers a
			// duplicate PUBLISH of the same id with 0x91 instead of
			// producing it twice.
			ack := pubrecFor(p.s, x.pid, now)
			p.cl.State.Inflight.Set(ack)
			_ = p.cl.WritePacket(ack)
		}
	}
}

func pubrecFor(s *Server, pid uint16, now int64) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pid,
		Created: now, Expiry: now + s.mochi.Options.Capabilities.MaximumMessageExpiryInterval}
}

// inboundQoS2 adds to recs the session record of a persistent session
// with QoS 2 publishes in the batch, their PUBRECs pending in it: saved
// with the batch's retained changes, before the PUBRECs go out, so a
// resume on any node acknowledges a resent PUBLISH instead of storing it
// again.
func (p *pipe) inboundQoS2(batch []pending, recs []command.Record, now int64) ([]command.Record, *session, error) {
	ss := p.s.hook.session(p.cl)
	if ss == nil || !ss.persistent {
		return recs, nil, nil
	}
	stored := false
	for i := range batch {
		if batch[i].qos == 2 && !batch[i].ackOnly && batch[i].refused == 0 {
			stored = true
			p.cl.State.Inflight.Set(pubrecFor(p.s, batch[i].pid, now))
		}
	}
	if !stored {
		return recs, nil, nil
	}
	if !p.s.ownsSession(p.cl) {
		return recs, nil, errNotOwner
	}
	if r, ok := p.s.sessionChange(ss, false); ok {
		recs = append(recs, r)
	}
	return recs, ss, nil
}

// diskFullLogs remembers the clients whose publishes the current disk
// alarm refused, so an alarm is logged once per client rather than once
// per publish (or per reconnect of a 3.1.1 client).
type diskFullLogs struct {
	mu      sync.Mutex
	episode <-chan struct{} // Broker.DiskAlarmChanged() when logged: one per alarm
	clients map[string]bool
}

// logDiskFull logs a refusal by the disk alarm if cl has none logged in
// this alarm yet. err says which node is short and how much is free.
func (s *Server) logDiskFull(cl *mqtt.Client, err error) {
	d := &s.diskLogs
	episode := s.b.DiskAlarmChanged()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.episode != episode {
		d.episode, d.clients = episode, map[string]bool{}
	}
	switch n := len(d.clients); {
	case d.clients[cl.ID] || n > maxDiskFullLogs:
		return
	case n == maxDiskFullLogs:
		d.clients[cl.ID] = true
		s.log.Warn("publishes refused by the disk alarm: more clients refused, not logged one by one until the alarm changes",
			"clients", n)
		return
	}
	d.clients[cl.ID] = true
	s.log.Warn("publishes refused by the disk alarm (MQTT 5 QoS 1/2: 0x97 in the ack; otherwise the connection is closed)",
		"client", cl.ID, "mqtt_version", cl.Properties.ProtocolVersion, "err", err)
}
