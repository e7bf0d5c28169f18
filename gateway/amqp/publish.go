package amqp

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// Properties of a message stored by the AMQP door.
const (
	PropProps      = "AMQP_PROPS"       // the content header's property flags and list, as sent
	PropExchange   = "AMQP_EXCHANGE"    // the exchange it was published to
	PropRoutingKey = "AMQP_ROUTING_KEY" // its routing key
	PropVHost      = "AMQP_VHOST"       // a delayed message's vhost (routed when due)
)

// publishing is one basic.publish with its content.
type publishing struct {
	m       *frame.BasicPublish
	size    uint64
	haveHdr bool
	props   []byte
	body    []byte
	tag     uint64 // confirm mode: its delivery tag
	queues  []*queueDef
	delay   time.Duration // x-delay on a delayed-message exchange
	due     time.Time
	vhost   string
	barrier chan struct{} // a method waiting for everything before it
	// tx: a committed transaction's publishes, stored by the pipe with
	// its barrier in one Produce call; produced is that call's error.
	tx       []*publishing
	produced error
}

func (ch *channel) startPublish(m *frame.BasicPublish) error {
	if m.Immediate {
		return hardErr(codeNotImplemented, "immediate=true is not supported")
	}
	ch.pub = &publishing{m: m}
	return nil
}

// content takes a header or body frame of the publish in progress.
func (ch *channel) content(f frame.Frame) error {
	if ch.closing {
		return nil
	}
	p := ch.pub
	if p == nil {
		return hardErr(codeUnexpectedFrame, "content frame without a publish on channel %d", ch.id)
	}
	switch f.Type {
	case frame.TypeHeader:
		if p.haveHdr {
			return hardErr(codeUnexpectedFrame, "second content header on channel %d", ch.id)
		}
		class, size, props, err := frame.ParseHeader(f.Payload)
		if err != nil {
			return frameErr(err)
		}
		if class != 60 {
			return hardErr(codeFrameError, "content header of class %d", class)
		}
		if max := uint64(ch.c.s.maxBody()); size > max {
			ch.pub = nil
			e := softErr(codePreconditionFailed, "message size %d is larger than the configured max size %d", size, max)
			e.classID, e.methodID = 60, 40
			return ch.fail(e)
		}
		p.haveHdr, p.size, p.props = true, size, props
		// Grown as body frames come: a header alone must not make the
		// server allocate what it announces.
		p.body = make([]byte, 0, min(size, 64<<10))
	case frame.TypeBody:
		if !p.haveHdr {
			return hardErr(codeUnexpectedFrame, "content body before its header on channel %d", ch.id)
		}
		if uint64(len(p.body))+uint64(len(f.Payload)) > p.size {
			return hardErr(codeFrameError, "content body longer than its header says")
		}
		p.body = append(p.body, f.Payload...)
	default:
		return hardErr(codeUnexpectedFrame, "frame type %d on channel %d", f.Type, ch.id)
	}
	if uint64(len(p.body)) < p.size {
		return nil
	}
	ch.pub = nil
	err := ch.publish(p)
	if ae, ok := err.(*amqpError); ok {
		if ae.classID == 0 {
			ae.classID, ae.methodID = 60, 40
		}
		if ae.hard {
			return ae
		}
		return ch.fail(ae)
	}
	return err
}

// maxBody bounds a publish's body at its header; publish checks the
// whole stored size once the properties are known too.
func (s *Server) maxBody() int { return max(s.b.MaxMessageBytes()-1024, 0) }

// publish routes a complete publish and hands it to the pipe (or the
// transaction).
func (ch *channel) publish(p *publishing) error {
	s, vhost := ch.c.s, ch.c.vhost
	if err := ch.allowPublish(p); err != nil {
		return err
	}
	t := s.topo.get()
	e, ok := t.exchange(vhost, p.m.Exchange)
	if !ok {
		return softErr(codeNotFound, "no exchange '%s' in vhost '%s'", p.m.Exchange, vhost)
	}
	if e.Internal {
		return softErr(codeAccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", p.m.Exchange, vhost)
	}
	var headers frame.Table
	if t.headersBound || e.Type == kindDelayed {
		props, err := frame.DecodeProperties(p.props)
		if err != nil {
			return frameErr(err)
		}
		headers = props.Headers
	}
	if err := ch.delay(p, e, headers); err != nil {
		return err
	}
	if p.delay == 0 {
		p.queues = t.route(vhost, p.m.Exchange, p.m.RoutingKey, headers)
	}
	// Refuse here what Produce would refuse, so one bad publish cannot
	// fail the batch it would share with others.
	if size := len(p.body) + len(p.props) + len(p.m.Exchange) + len(p.m.RoutingKey) + 512; size > s.b.MaxMessageBytes() ||
		len(p.props) > batch.MaxStringBytes {
		return softErr(codePreconditionFailed, "message of %d bytes (properties %d) is larger than the configured max size %d",
			size, len(p.props), s.b.MaxMessageBytes())
	}
	if !validExpiration(p.props) {
		return softErr(codePreconditionFailed, "invalid expiration: not a number of milliseconds")
	}
	if len(p.queues) > batch.MaxDestinations {
		return softErr(codePreconditionFailed, "message routed to %d queues, more than %d", len(p.queues), batch.MaxDestinations)
	}
	if ch.confirm {
		ch.publishSeq++
		p.tag = ch.publishSeq
	}
	if ch.tx {
		if len(ch.txPubs) >= maxTxMessages || ch.txBytes+len(p.body) > maxTxBytes {
			return softErr(codePreconditionFailed, "transaction larger than %d messages or %d bytes", maxTxMessages, maxTxBytes)
		}
		ch.txPubs = append(ch.txPubs, p)
		ch.txBytes += len(p.body)
		return nil
	}
	ch.pipeFor().push(p)
	return nil
}

// allowPublish is RabbitMQ's check of basic.publish: write on the
// exchange (before its existence is looked at, so a refused user learns
// nothing of it); in the address space shared with MQTT, a publish the
// user's MQTT rules allow; and a user-id property, if set, that is the
// user's own name.
func (ch *channel) allowPublish(p *publishing) error {
	c := ch.c
	u := c.perms()
	if u == nil {
		return nil
	}
	if err := c.allow(u, auth.Write, kindExchangeObj, p.m.Exchange); err != nil {
		return err
	}
	if c.sharedSpace(p.m.Exchange) {
		if err := c.allowTopic(u, p.m.RoutingKey, false, false); err != nil {
			return err
		}
	}
	return c.checkUserID(p.props)
}

// Transaction limits: a transaction is held in memory until tx.commit.
const (
	maxTxMessages = 16384
	maxTxBytes    = 64 << 20
)

func (ch *channel) pipeFor() *pipe {
	if ch.pipe == nil {
		ch.pipe = newPipe(ch)
	}
	return ch.pipe
}

// message builds the core message of a routed publish: stored once, in
// the first queue's topic, indexed in the others too.
func (p *publishing) message() broker.Message {
	m := broker.Message{Queue: 0}
	if p.delay > 0 {
		// Routed when due (routeForeign), against the bindings of then.
		m.Topic, m.DeliverAt = delayedTopic, p.due
	} else {
		m.Topic, m.Also = p.queues[0].topic(), coreRoutes(p.queues[1:])
	}
	m.Body = p.body
	m.Tags = p.m.RoutingKey
	m.Properties = []batch.Property{
		{Key: PropProps, Value: string(p.props)},
		{Key: PropExchange, Value: p.m.Exchange},
		{Key: PropRoutingKey, Value: p.m.RoutingKey},
	}
	if p.delay > 0 {
		m.Properties = append(m.Properties, batch.Property{Key: PropVHost, Value: p.vhost})
	}
	return m
}

// pipe stores one channel's publishes in order, a batch per Produce
// call, and sends their returns and confirms in the same order.
type pipe struct {
	ch *channel
	// refused: the disk alarm refused a publish without confirms and the
	// channel is closing for it (alarm.go); nothing after it is stored.
	refused error
	// pushed and finished count publishes in and answered: equal when
	// nothing is in the pipe.
	pushed, finished atomic.Uint64
	in               chan *publishing
	done             chan struct{}
	once             sync.Once
}

const pipeBatch = 512

func newPipe(ch *channel) *pipe {
	p := &pipe{ch: ch, in: make(chan *publishing, ch.c.s.cfg.MaxUnconfirmedMessages), done: make(chan struct{})}
	go p.run()
	return p
}

// push queues a publish; a full pipe blocks the connection's reader,
// which is AMQP's back-pressure (TCP).
func (p *pipe) push(x *publishing) {
	c := p.ch.c
	if n := x.weight(); n > 0 && c.unconfirmed.Acquire(c.ctx, n) != nil {
		return // the connection is going away
	}
	p.pushed.Add(1)
	select {
	case p.in <- x:
	case <-c.ctx.Done():
	}
}

// weight is what a publish counts against its connection's
// MaxUnconfirmedBytes while it waits in a pipe.
func (x *publishing) weight() int64 { return int64(len(x.body) + len(x.props)) }

// wait returns once everything pushed before is stored and answered.
func (p *pipe) wait(ctx context.Context) error {
	if p.pushed.Load() == p.finished.Load() {
		return nil
	}
	b := &publishing{barrier: make(chan struct{})}
	p.push(b)
	select {
	case <-b.barrier:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close waits until everything pushed is stored and confirmed.
func (p *pipe) close() {
	p.once.Do(func() { close(p.in) })
	<-p.done
}

func (p *pipe) run() {
	defer close(p.done)
	batch := make([]*publishing, 0, pipeBatch)
	for x := range p.in {
		batch = append(batch[:0], x)
	fill:
		for len(batch) < pipeBatch && x.barrier == nil {
			select {
			case y, ok := <-p.in:
				if !ok {
					break fill
				}
				batch = append(batch, y)
				if y.barrier != nil {
					break fill
				}
			default:
				break fill
			}
		}
		p.produce(batch)
	}
}

// routed: the publish has somewhere to be stored.
func (x *publishing) routed() bool { return len(x.queues) > 0 || x.delay > 0 }

func (p *pipe) produce(batch []*publishing) {
	c := p.ch.c
	// A transaction's publishes go into the same Produce call as what
	// came before its barrier: the disk alarm refuses a call whole, so
	// a transaction is stored whole or not at all.
	pubs := make([]*publishing, 0, len(batch))
	for _, x := range batch {
		if x.barrier == nil {
			pubs = append(pubs, x)
		}
		pubs = append(pubs, x.tx...)
	}
	msgs := make([]broker.Message, 0, len(pubs))
	for _, x := range pubs {
		if x.routed() {
			msgs = append(msgs, x.message())
		}
	}
	var err error
	switch {
	case len(msgs) == 0:
	case p.refused != nil:
		err = p.refused
	default:
		ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.CommitTimeout)
		_, err = c.s.b.Produce(ctx, msgs)
		cancel()
		switch {
		case errors.Is(err, broker.ErrDiskFull):
			// The broker logged the alarm; every refused batch would flood.
			c.s.log.Debug("amqp publish refused by the disk alarm", "conn", c.id, "messages", len(msgs), "err", err)
		case err != nil:
			c.s.log.Warn("amqp publish not stored", "conn", c.id, "messages", len(msgs), "err", err)
		}
	}
	if errors.Is(err, broker.ErrDiskFull) && p.refused == nil {
		// Without confirms the client cannot be told which message was
		// refused: its channel closes, the pipe stores nothing more.
		for _, x := range batch {
			if x.barrier == nil && x.tag == 0 && x.routed() {
				p.refused = err
				e := diskFullErr("publish refused", err)
				e.classID, e.methodID = 60, 40
				p.ch.refuse(e)
				break
			}
		}
	}
	var out []byte
	var ackTo uint64
	flushAcks := func() {
		if ackTo > 0 {
			out = frame.AppendMethodFrame(out, p.ch.id, &frame.BasicAck{DeliveryTag: ackTo, Multiple: true})
			ackTo = 0
		}
	}
	for _, x := range pubs {
		if !x.routed() && x.m.Mandatory && err == nil {
			flushAcks()
			out = frame.AppendMethodFrame(out, p.ch.id, &frame.BasicReturn{ReplyCode: codeNoRoute, ReplyText: "NO_ROUTE",
				Exchange: x.m.Exchange, RoutingKey: x.m.RoutingKey})
			out = appendContent(out, p.ch.id, x.props, x.body, c.frameMax)
		}
		if x.tag == 0 {
			continue
		}
		if err != nil {
			flushAcks()
			out = frame.AppendMethodFrame(out, p.ch.id, &frame.BasicNack{DeliveryTag: x.tag})
			continue
		}
		ackTo = x.tag
	}
	flushAcks()
	if len(out) > 0 {
		_ = c.send(out)
	}
	for _, x := range batch {
		if x.barrier != nil {
			x.produced = err
			close(x.barrier)
		}
	}
	var w int64
	for _, x := range batch {
		w += x.weight()
	}
	c.unconfirmed.Release(w)
	p.finished.Add(uint64(len(batch)))
}

// appendContent appends a content header and the body frames.
func appendContent(out []byte, ch uint16, props, body []byte, frameMax uint32) []byte {
	out = frame.AppendHeaderFrame(out, ch, 60, uint64(len(body)), props)
	max := int(frameMax) - frame.Overhead
	for len(body) > 0 {
		n := min(len(body), max)
		out = frame.AppendFrame(out, frame.TypeBody, ch, body[:n])
		body = body[n:]
	}
	return out
}

// commitTx stores the transaction's publishes (in one Produce call of
// the pipe, after everything published before) and settles its acks.
// The transaction's bytes were bounded as it grew (maxTxBytes), so its
// barrier weighs nothing against MaxUnconfirmedBytes, and the reader
// waits for it anyway.
func (ch *channel) commitTx() error {
	pubs, acks := ch.txPubs, ch.txAcks
	ch.txPubs, ch.txAcks, ch.txBytes = nil, nil, 0
	if len(pubs) > 0 {
		b := &publishing{barrier: make(chan struct{}), tx: pubs}
		ch.pipeFor().push(b)
		select {
		case <-b.barrier:
		case <-ch.c.ctx.Done():
			return ch.c.ctx.Err()
		}
		switch {
		case errors.Is(b.produced, broker.ErrDiskFull):
			return diskFullErr("tx.commit refused, nothing stored", b.produced)
		case b.produced != nil:
			return internalErr(b.produced)
		}
	}
	for _, a := range acks {
		if err := ch.apply(a); err != nil {
			return err
		}
	}
	return nil
}
