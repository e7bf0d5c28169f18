package amqp

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// unacked is a delivery the client has not settled yet.
type unacked struct {
	q        *queueDef
	offset   uint64
	phys     uint64
	consumer *consumer // nil for basic.get
}

type settleKind int

const (
	settleAck     settleKind = iota
	settleRequeue            // back to the queue, redelivered=true
	settleDrop               // dead-lettered through the queue's DLX, or dropped
)

// settleOp is a basic.ack, nack or reject (kept until tx.commit in a
// transaction).
type settleOp struct {
	tag      uint64
	multiple bool
	kind     settleKind
}

// maxDeliverBatch bounds one Deliver call of a consumer.
const maxDeliverBatch = 256

// consumer feeds one basic.consume from its queue's subscription.
type consumer struct {
	ch       *channel
	tag      string
	q        *queueDef
	noAck    bool
	prefetch uint16
	unacked  int // under ch.mu

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// byServer: the queue was deleted; the client gets basic.cancel.
	byServer atomic.Bool
}

func (ch *channel) consume(m *frame.BasicConsume) error {
	s := ch.c.s
	if err := ch.c.allow(ch.c.perms(), auth.Read, kindQueueObj, ch.queueName(m.Queue)); err != nil {
		return err
	}
	q, err := ch.usableQueue(m.Queue)
	if err != nil {
		return err
	}
	name := q.Name
	tag := m.ConsumerTag
	if tag == "" {
		tag = "amq.ctag-" + randHex(11)
	}
	ch.mu.Lock()
	_, dup := ch.consumers[tag]
	ch.mu.Unlock()
	if dup {
		return hardErr(codeNotAllowed, "attempt to reuse consumer tag '%s'", tag)
	}
	ctx, cancel := context.WithCancel(ch.c.ctx)
	k := &consumer{ch: ch, tag: tag, q: q, noAck: m.NoAck, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if !s.addConsumer(k, m.Exclusive) {
		cancel()
		return softErr(codeAccessRefused, "queue '%s' in vhost '%s' in exclusive use", name, ch.c.vhost)
	}
	ch.mu.Lock()
	k.prefetch = ch.prefetch
	ch.consumers[tag] = k
	ch.mu.Unlock()
	// consume-ok goes out before the first delivery (a write error ends
	// the connection, whose cleanup stops the consumer).
	err = ch.replyUnless(m.NoWait, &frame.BasicConsumeOk{ConsumerTag: tag})
	ch.c.consuming.Add(1)
	go k.run()
	return err
}

func (ch *channel) cancel(m *frame.BasicCancel) error {
	ch.mu.Lock()
	k := ch.consumers[m.ConsumerTag]
	delete(ch.consumers, m.ConsumerTag)
	ch.mu.Unlock()
	if k != nil {
		k.stop()
	}
	return ch.replyUnless(m.NoWait, &frame.BasicCancelOk{ConsumerTag: m.ConsumerTag})
}

// stop ends the consumer and waits for its goroutine: nothing is
// delivered after basic.cancel-ok. Its unacked deliveries stay with the
// channel.
func (k *consumer) stop() {
	k.cancel()
	<-k.done
}

func (k *consumer) run() {
	s := k.ch.c.s
	defer func() {
		left := s.removeConsumer(k)
		if k.byServer.Load() {
			k.ch.mu.Lock()
			if k.ch.consumers[k.tag] == k {
				delete(k.ch.consumers, k.tag)
			}
			k.ch.mu.Unlock()
			if k.ch.c.capability("consumer_cancel_notify") {
				_ = k.ch.sendMethod(&frame.BasicCancel{ConsumerTag: k.tag, NoWait: true})
			}
		} else if left == 0 && k.q.AutoDelete {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
			if _, err := s.deleteQueue(ctx, k.q.VHost, k.q.Name); err != nil {
				s.log.Warn("auto-delete queue not deleted", "queue", k.q.Name, "err", err)
			}
			cancel()
		}
		k.ch.c.consuming.Add(-1)
		close(k.done)
	}()
	sub := k.q.topic()
	for k.ctx.Err() == nil {
		n, wait := k.credit()
		if n == 0 {
			select {
			case <-wait:
			case <-k.ctx.Done():
			}
			continue
		}
		ds, err := s.b.Deliver(k.ctx, sub, n)
		if err != nil || len(ds) == 0 {
			k.unreserve(n)
		}
		switch {
		case errors.Is(err, broker.ErrNoSubscription):
			k.byServer.Store(true)
			return
		case err != nil:
			// No leader here (or a moment without one): look again soon.
			if k.ctx.Err() == nil && !errors.Is(err, broker.ErrNotLeader) {
				s.log.Warn("amqp delivery failed", "queue", k.q.Name, "err", err)
			}
			k.pause(200 * time.Millisecond)
			continue
		case len(ds) == 0:
			k.waitForWork(sub)
			continue
		}
		if ds = s.dropExpired(k.ctx, k.q, ds); len(ds) == 0 {
			k.unreserve(n)
			continue
		}
		k.deliver(ds, n)
	}
}

// credit is how many messages the consumer may get now (prefetch limits),
// or a channel that signals when that may have changed. The credit is
// reserved on the channel until deliver takes it, so two consumers of a
// channel with a global prefetch cannot both spend it.
func (k *consumer) credit() (int, <-chan struct{}) {
	ch := k.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	n := maxDeliverBatch
	if k.prefetch > 0 && !k.noAck {
		n = min(n, int(k.prefetch)-k.unacked)
	}
	if ch.prefetchChan > 0 && !k.noAck {
		n = min(n, int(ch.prefetchChan)-len(ch.unacked)-ch.reserved)
	}
	if n <= 0 {
		return 0, ch.credit
	}
	ch.reserved += n
	return n, nil
}

// unreserve gives back credit that Deliver did not use.
func (k *consumer) unreserve(n int) {
	k.ch.mu.Lock()
	k.ch.reserved -= n
	k.ch.wakeLocked()
	k.ch.mu.Unlock()
}

func (k *consumer) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-k.ctx.Done():
	}
}

// waitForWork waits for a new message in the queue, a delivery handed
// back on this node, or a second (leases that ran out elsewhere).
func (k *consumer) waitForWork(topic string) {
	s := k.ch.c.s
	rel := s.releasedCh()
	_, end := s.b.QueueRange(topic, 0)
	ctx, cancel := context.WithTimeout(k.ctx, time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		_ = s.b.WaitForMessages(ctx, topic, 0, end)
		close(done)
	}()
	select {
	case <-done:
	case <-rel:
	case <-k.ctx.Done():
	}
	cancel()
	<-done
}

// deliverFlushBytes bounds the bytes one write of deliveries holds.
const deliverFlushBytes = 1 << 20

// deliver writes deliveries to the client, tracking those to be acked.
// reserved is the credit credit() set aside for them. Tags are taken and
// written under the channel's delivery lock, so the client sees them in
// increasing order (an ack with multiple=true covers only what it has).
func (k *consumer) deliver(ds []broker.Delivery, reserved int) {
	ch, c := k.ch, k.ch.c
	var out []byte
	var auto []uint64
	ch.dmu.Lock()
	defer ch.dmu.Unlock()
	ch.mu.Lock()
	ch.reserved -= reserved
	ch.mu.Unlock()
	for _, d := range ds {
		ch.mu.Lock()
		ch.deliveryTag++
		tag := ch.deliveryTag
		if k.noAck {
			auto = append(auto, d.Offset)
		} else {
			ch.unacked[tag] = &unacked{q: k.q, offset: d.Offset, phys: d.PhysOffset, consumer: k}
			k.unacked++
		}
		ch.mu.Unlock()
		exch, key, props := contentOf(&d.Fetched)
		out = frame.AppendMethodFrame(out, ch.id, &frame.BasicDeliver{ConsumerTag: k.tag, DeliveryTag: tag,
			Redelivered: d.Redelivered, Exchange: exch, RoutingKey: key})
		out = appendContent(out, ch.id, props, d.Body(), c.frameMax)
		d.Release()
		if len(out) >= deliverFlushBytes {
			_ = c.send(out)
			out = out[:0]
		}
	}
	if len(out) > 0 {
		_ = c.send(out)
	}
	if len(auto) > 0 {
		c.s.ack(k.q.topic(), auto)
	}
}

// contentOf returns a stored message's exchange, routing key and content
// header properties. A message stored by another door gets properties
// made from its own: message-id, timestamp and its user properties as
// headers. Every message shows its one id as message-id.
func contentOf(m *broker.Fetched) (exchange, key string, props []byte) {
	var raw []byte
	haveRaw := false
	var user frame.Table
	for k, v := range m.Properties {
		switch string(k) {
		case PropProps:
			raw, haveRaw = v, true
		case PropExchange:
			exchange = string(v)
		case PropRoutingKey:
			key = string(v)
		default:
			if user == nil {
				user = frame.Table{}
			}
			user[string(k)] = string(v)
		}
	}
	id := m.ID()
	msgID := strings.ToUpper(hex.EncodeToString(id[:]))
	var p frame.Properties
	if haveRaw {
		dec, err := frame.DecodeProperties(raw)
		if err != nil || dec.Flags&frame.FlagMessageID != 0 {
			return exchange, key, raw
		}
		p = dec
	} else {
		exchange = foreignExchange
		mqttTopic, _ := user[propMQTTTopic].(string)
		key = foreignKey(string(m.Topic()), string(m.Tags()), mqttTopic)
		p.Headers = user
		if user != nil {
			p.Flags |= frame.FlagHeaders
		}
		p.Timestamp = time.UnixMilli(m.BornUnixMs()).UTC()
		p.Flags |= frame.FlagTimestamp
	}
	p.MessageID = msgID
	p.Flags |= frame.FlagMessageID
	out, err := frame.AppendProperties(nil, &p)
	if err != nil {
		return exchange, key, raw
	}
	return exchange, key, out
}

func (ch *channel) get(m *frame.BasicGet) error {
	s := ch.c.s
	if err := ch.c.allow(ch.c.perms(), auth.Read, kindQueueObj, ch.queueName(m.Queue)); err != nil {
		return err
	}
	q, err := ch.usableQueue(m.Queue)
	if err != nil {
		return err
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	var ds []broker.Delivery
	for range 1000 { // expired heads are removed on the way (bounded: a get answers soon)
		if ds, err = s.b.Deliver(ctx, q.topic(), 1); err != nil {
			return internalErr(err)
		}
		if len(ds) == 0 {
			break
		}
		if ds = s.dropExpired(ctx, q, ds); len(ds) > 0 {
			break
		}
	}
	if len(ds) == 0 {
		return ch.sendMethod(&frame.BasicGetEmpty{})
	}
	d := ds[0]
	defer d.Release()
	ready, _ := s.b.ReadyCount(q.topic())
	ch.dmu.Lock()
	defer ch.dmu.Unlock()
	ch.mu.Lock()
	ch.deliveryTag++
	tag := ch.deliveryTag
	if !m.NoAck {
		ch.unacked[tag] = &unacked{q: q, offset: d.Offset, phys: d.PhysOffset}
	}
	ch.mu.Unlock()
	exch, key, props := contentOf(&d.Fetched)
	out := frame.AppendMethodFrame(nil, ch.id, &frame.BasicGetOk{DeliveryTag: tag, Redelivered: d.Redelivered,
		Exchange: exch, RoutingKey: key, MessageCount: clampU32(ready)})
	out = appendContent(out, ch.id, props, d.Body(), ch.c.frameMax)
	if err := ch.c.send(out); err != nil {
		return err
	}
	if m.NoAck {
		s.ack(q.topic(), []uint64{d.Offset})
	}
	return nil
}

// settle runs basic.ack, nack or reject (or keeps it for tx.commit).
func (ch *channel) settle(tag uint64, multiple bool, kind settleKind) error {
	op := settleOp{tag: tag, multiple: multiple, kind: kind}
	if ch.tx {
		ch.txAcks = append(ch.txAcks, op)
		return nil
	}
	return ch.apply(op)
}

func (ch *channel) apply(op settleOp) error {
	ch.mu.Lock()
	var got []*unacked
	if op.multiple {
		for t, u := range ch.unacked {
			if op.tag == 0 || t <= op.tag {
				got = append(got, u)
				delete(ch.unacked, t)
			}
		}
	} else if u, ok := ch.unacked[op.tag]; ok {
		got = append(got, u)
		delete(ch.unacked, op.tag)
	}
	for _, u := range got {
		if u.consumer != nil {
			u.consumer.unacked--
		}
	}
	ch.wakeLocked()
	ch.mu.Unlock()
	if len(got) == 0 && (op.tag != 0 || !op.multiple) {
		return softErr(codePreconditionFailed, "unknown delivery tag %d", op.tag)
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	return ch.c.s.settleDeliveries(ctx, got, op.kind)
}

// settleDeliveries acks, requeues or dead-letters deliveries. If a
// dead-letter publish fails, that queue's deliveries and every one not
// settled yet go back to their queues rather than stay leased.
func (s *Server) settleDeliveries(ctx context.Context, us []*unacked, kind settleKind) error {
	var order []*queueDef
	by := map[*queueDef][]uint64{}
	for _, u := range us {
		if _, ok := by[u.q]; !ok {
			order = append(order, u.q)
		}
		by[u.q] = append(by[u.q], u.offset)
	}
	for i, q := range order {
		offs := by[q]
		switch kind {
		case settleAck:
			s.ack(q.topic(), offs)
		case settleRequeue:
			s.release(q.topic(), offs)
		case settleDrop:
			if q.HasDLX {
				var phys []uint64
				for _, u := range us {
					if u.q == q {
						phys = append(phys, u.phys)
					}
				}
				if err := s.deadLetter(ctx, q, phys, "rejected"); err != nil {
					for _, rest := range order[i:] {
						s.release(rest.topic(), by[rest])
					}
					if errors.Is(err, broker.ErrDiskFull) {
						return diskFullErr("not dead-lettered, requeued", err)
					}
					return internalErr(err)
				}
			}
			s.ack(q.topic(), offs)
		}
	}
	return nil
}

// recover hands every unacknowledged delivery of the channel back.
func (ch *channel) recover() { ch.requeueAll() }

func (ch *channel) requeueAll() {
	ch.mu.Lock()
	us := make([]*unacked, 0, len(ch.unacked))
	for t, u := range ch.unacked {
		us = append(us, u)
		if u.consumer != nil {
			u.consumer.unacked--
		}
		delete(ch.unacked, t)
	}
	ch.wakeLocked()
	ch.mu.Unlock()
	_ = ch.c.s.settleDeliveries(context.Background(), us, settleRequeue)
}
