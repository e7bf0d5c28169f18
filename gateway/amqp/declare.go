package amqp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

func (ch *channel) exchangeDeclare(m *frame.ExchangeDeclare) error {
	s, vhost := ch.c.s, ch.c.vhost
	if !validName(m.Exchange) {
		return softErr(codePreconditionFailed, "bad exchange name")
	}
	t := s.topo.get()
	e, exists := t.exchange(vhost, m.Exchange)
	if m.Passive {
		if !exists {
			return softErr(codeNotFound, "no exchange '%s' in vhost '%s'", m.Exchange, vhost)
		}
		return ch.replyUnless(m.NoWait, &frame.ExchangeDeclareOk{}) // RabbitMQ checks no permission for a passive declare
	}
	if err := ch.c.allow(ch.c.perms(), auth.Configure, kindExchangeObj, m.Exchange); err != nil {
		return err
	}
	if m.Exchange == "" || strings.HasPrefix(m.Exchange, "amq.") {
		return softErr(codeAccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", m.Exchange)
	}
	switch m.Type {
	case kindDirect, kindFanout, kindTopic, kindHeaders:
	case kindDelayed:
		switch m.Arguments["x-delayed-type"] {
		case kindDirect, kindFanout, kindTopic, kindHeaders:
		default:
			return softErr(codePreconditionFailed, "invalid arg 'x-delayed-type' for exchange '%s': %v", m.Exchange, m.Arguments["x-delayed-type"])
		}
	default:
		return hardErr(codeCommandInvalid, "unknown exchange type '%s'", m.Type)
	}
	def := &exchangeDef{VHost: vhost, Name: m.Exchange, Type: m.Type, Durable: m.Durable, AutoDelete: m.AutoDelete,
		Internal: m.Internal, ArgsJSON: canonical(m.Arguments)}
	if exists {
		if e.Type != def.Type || e.Durable != def.Durable || e.AutoDelete != def.AutoDelete ||
			e.Internal != def.Internal || e.ArgsJSON != def.ArgsJSON {
			return softErr(codePreconditionFailed, "inequivalent arg for exchange '%s' in vhost '%s'", m.Exchange, vhost)
		}
		return ch.replyUnless(m.NoWait, &frame.ExchangeDeclareOk{})
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	if err := s.topo.change(ctx, putRec(exchangeKey(vhost, m.Exchange), def)); err != nil {
		return internalErr(err)
	}
	return ch.replyUnless(m.NoWait, &frame.ExchangeDeclareOk{})
}

func (ch *channel) exchangeDelete(m *frame.ExchangeDelete) error {
	s, vhost := ch.c.s, ch.c.vhost
	if err := ch.c.allow(ch.c.perms(), auth.Configure, kindExchangeObj, m.Exchange); err != nil {
		return err
	}
	if m.Exchange == "" || strings.HasPrefix(m.Exchange, "amq.") {
		return softErr(codeAccessRefused, "cannot delete exchange '%s'", m.Exchange)
	}
	t := s.topo.get()
	if _, ok := t.exchanges[vkey(vhost, m.Exchange)]; !ok {
		return ch.replyUnless(m.NoWait, &frame.ExchangeDeleteOk{}) // deleting nothing is fine (RabbitMQ)
	}
	src := t.bindings[vkey(vhost, m.Exchange)]
	if m.IfUnused && len(src) > 0 {
		return softErr(codePreconditionFailed, "exchange '%s' in vhost '%s' in use", m.Exchange, vhost)
	}
	rs := []command.Record{delRec(exchangeKey(vhost, m.Exchange))}
	for _, b := range append(src, t.bindingsTo(vhost, m.Exchange, true)...) {
		rs = append(rs, delRec(b.key()))
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	if err := s.topo.change(ctx, rs...); err != nil {
		return internalErr(err)
	}
	return ch.replyUnless(m.NoWait, &frame.ExchangeDeleteOk{})
}

// bind adds or removes a binding from exchange source to a queue or an
// exchange.
func (ch *channel) bind(dest string, destIsExch bool, source, key string, args frame.Table, noWait, unbind bool, ok frame.Method) error {
	s, vhost := ch.c.s, ch.c.vhost
	if source == "" || destIsExch && dest == "" {
		return softErr(codeAccessRefused, "operation not permitted on the default exchange")
	}
	t := s.topo.get()
	if err := ch.allowBind(t, dest, destIsExch, source, key, unbind); err != nil {
		return err
	}
	b := &bindingDef{VHost: vhost, Source: source, Dest: dest, DestIsExch: destIsExch, Key: key, ArgsJSON: canonical(args)}
	if unbind {
		ctx, cancel := ch.opCtx()
		defer cancel()
		if err := s.topo.change(ctx, delRec(b.key())); err != nil {
			return internalErr(err)
		}
		return ch.replyUnless(noWait, ok)
	}
	if _, ok := t.exchange(vhost, source); !ok {
		return softErr(codeNotFound, "no exchange '%s' in vhost '%s'", source, vhost)
	}
	if destIsExch {
		if _, ok := t.exchange(vhost, dest); !ok {
			return softErr(codeNotFound, "no exchange '%s' in vhost '%s'", dest, vhost)
		}
	} else {
		q, ok := t.queue(vhost, dest)
		if !ok {
			return softErr(codeNotFound, "no queue '%s' in vhost '%s'", dest, vhost)
		}
		if err := ch.c.owns(q); err != nil {
			return err
		}
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	if err := s.topo.change(ctx, putRec(b.key(), b)); err != nil {
		return internalErr(err)
	}
	return ch.replyUnless(noWait, ok)
}

// allowBind is RabbitMQ's check of queue.bind, exchange.bind and their
// unbinds: write on the destination, read on the source. In the address
// space shared with MQTT (amq.topic of vhost "/") the binding key must
// also be a subscription the user's MQTT rules allow (unbinds too, as
// RabbitMQ checks its topic permissions), and what a new binding lets
// into that space a publish they allow (an unbind lets nothing in).
func (ch *channel) allowBind(t *topology, dest string, destIsExch bool, source, key string, unbind bool) error {
	c := ch.c
	u := c.perms()
	if u == nil {
		return nil
	}
	destKind := kindQueueObj
	if destIsExch {
		destKind = kindExchangeObj
	}
	if err := c.allow(u, auth.Write, destKind, dest); err != nil {
		return err
	}
	if err := c.allow(u, auth.Read, kindExchangeObj, source); err != nil {
		return err
	}
	if c.sharedSpace(source) {
		if err := c.allowTopic(u, key, true, true); err != nil {
			return err
		}
	}
	if destIsExch && !unbind && c.sharedSpace(dest) {
		if e, ok := t.exchange(c.vhost, source); ok {
			return c.allowPublishThrough(u, e.routeKind(), key)
		}
	}
	return nil
}

// usableQueue resolves a queue name of a method ("" is the channel's last
// declared queue): 404 if it does not exist, 405 if another connection
// holds it exclusively.
func (ch *channel) usableQueue(name string) (*queueDef, error) {
	name = ch.queueName(name)
	q, ok := ch.c.s.topo.get().queue(ch.c.vhost, name)
	if !ok {
		return nil, softErr(codeNotFound, "no queue '%s' in vhost '%s'", name, ch.c.vhost)
	}
	if err := ch.c.owns(q); err != nil {
		return nil, err
	}
	return q, nil
}

// owns refuses a queue exclusive to another live connection (405). An
// owner of this node that is gone (its cleanup failed, or the node
// restarted) no longer holds the queue, so it can be deleted.
func (c *conn) owns(q *queueDef) error {
	if q.Owner != "" && q.Owner != c.id && c.s.ownerLive(q.Owner) {
		return softErr(codeResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'", q.Name, q.VHost)
	}
	return nil
}

func (ch *channel) queueDeclare(m *frame.QueueDeclare) error {
	s, vhost := ch.c.s, ch.c.vhost
	name := m.Queue
	if !validName(name) {
		return softErr(codePreconditionFailed, "bad queue name")
	}
	t := s.topo.get()
	if m.Passive {
		q, err := ch.usableQueue(name)
		if err != nil {
			return err
		}
		ch.lastQueue = q.Name
		return ch.declareOk(q, m.NoWait)
	}
	if name == "" {
		name = "amq.gen-" + randHex(11)
	} else if strings.HasPrefix(name, "amq.") {
		return softErr(codeAccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	def := &queueDef{VHost: vhost, Name: name, Durable: m.Durable, AutoDelete: m.AutoDelete, ArgsJSON: canonical(m.Arguments)}
	if m.Exclusive {
		def.Owner = ch.c.id
	}
	if err := def.readArgs(m.Arguments); err != nil {
		return err
	}
	if err := ch.allowDeclareQueue(def); err != nil {
		return err
	}
	if q, ok := t.queue(vhost, name); ok {
		if err := ch.c.owns(q); err != nil {
			return err
		}
		if q.Durable != def.Durable || q.AutoDelete != def.AutoDelete || (q.Owner != "") != m.Exclusive || q.ArgsJSON != def.ArgsJSON {
			return softErr(codePreconditionFailed, "inequivalent arg for queue '%s' in vhost '%s'", name, vhost)
		}
		ch.lastQueue = name
		return ch.declareOk(q, m.NoWait)
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	topic := def.topic()
	if err := s.b.CreateTopic(ctx, broker.Topic{Name: topic, Queues: 1}); err != nil {
		return internalErr(err)
	}
	// FromLatest: a queue of the same name deleted before left its
	// messages in the log; the new queue starts empty.
	err := s.b.Subscribe(ctx, broker.SubscriptionConfig{Name: topic, Topic: topic, Queue: 0, FromLatest: true,
		AckWait: s.cfg.ConsumerTimeout, MaxDeliveries: math.MaxUint32 - 1})
	if err != nil {
		return internalErr(err)
	}
	if def.Owner != "" {
		ch.c.mu.Lock()
		ch.c.exclusive[name] = true
		ch.c.mu.Unlock()
	}
	if err := s.topo.change(ctx, putRec(queueKey(vhost, name), def)); err != nil {
		return internalErr(err)
	}
	ch.lastQueue = name
	return ch.declareOk(def, m.NoWait)
}

// allowDeclareQueue is RabbitMQ's check of a queue.declare (not passive):
// configure on the queue; with a dead-letter exchange also write on that
// exchange and read on the queue. Dead letters sent to amq.topic of vhost
// "/" enter the address space shared with MQTT, so the user's MQTT rules
// must allow publishing with their routing key (x-dead-letter-routing-key,
// or without it any key: the messages keep their own).
func (ch *channel) allowDeclareQueue(q *queueDef) error {
	c := ch.c
	u := c.perms()
	if u == nil {
		return nil
	}
	if err := c.allow(u, auth.Configure, kindQueueObj, q.Name); err != nil {
		return err
	}
	if !q.HasDLX {
		return nil
	}
	if err := c.allow(u, auth.Write, kindExchangeObj, q.DLX); err != nil {
		return err
	}
	if err := c.allow(u, auth.Read, kindQueueObj, q.Name); err != nil {
		return err
	}
	if c.sharedSpace(q.DLX) {
		if q.HasDLRK {
			return c.allowTopic(u, q.DLRoutingKey, false, false)
		}
		return c.allowTopic(u, "#", true, false)
	}
	return nil
}

// readArgs validates the queue arguments Conflux acts on; others are
// kept (they take part in equivalence) and ignored.
func (q *queueDef) readArgs(args frame.Table) error {
	if v, ok := args["x-dead-letter-exchange"]; ok {
		s, ok := v.(string)
		if !ok {
			return softErr(codePreconditionFailed, "invalid arg 'x-dead-letter-exchange' for queue '%s': not a string", q.Name)
		}
		q.DLX, q.HasDLX = s, true
	}
	if v, ok := args["x-dead-letter-routing-key"]; ok {
		s, ok := v.(string)
		if !ok {
			return softErr(codePreconditionFailed, "invalid arg 'x-dead-letter-routing-key' for queue '%s': not a string", q.Name)
		}
		q.DLRoutingKey, q.HasDLRK = s, true
	}
	if v, ok := args["x-message-ttl"]; ok {
		n, isInt := asInt(v)
		if !isInt || n < 0 || n > 1<<32-1 {
			return softErr(codePreconditionFailed, "invalid arg 'x-message-ttl' for queue '%s': %v", q.Name, v)
		}
		q.TTLms, q.HasTTL = n, true
	}
	if v, ok := args["x-queue-type"]; ok {
		switch v {
		case "classic":
		case "quorum":
			if !q.Durable || q.Owner != "" {
				return softErr(codePreconditionFailed, "invalid property for quorum queue '%s': it must be durable and not exclusive", q.Name)
			}
		default:
			return softErr(codePreconditionFailed, "invalid arg 'x-queue-type' for queue '%s': %v is not supported", q.Name, v)
		}
	}
	return nil
}

func (ch *channel) declareOk(q *queueDef, noWait bool) error {
	s := ch.c.s
	ready, _ := s.b.ReadyCount(q.topic())
	return ch.replyUnless(noWait, &frame.QueueDeclareOk{Queue: q.Name, MessageCount: clampU32(ready),
		ConsumerCount: uint32(s.consumerCount(q.topic()))})
}

func (ch *channel) queuePurge(m *frame.QueuePurge) error {
	if err := ch.c.allow(ch.c.perms(), auth.Read, kindQueueObj, ch.queueName(m.Queue)); err != nil {
		return err
	}
	q, err := ch.usableQueue(m.Queue)
	if err != nil {
		return err
	}
	s := ch.c.s
	ctx, cancel := ch.opCtx()
	defer cancel()
	n, err := s.b.Purge(ctx, q.topic())
	if err != nil {
		return internalErr(err)
	}
	return ch.replyUnless(m.NoWait, &frame.QueuePurgeOk{MessageCount: clampU32(n)})
}

func (ch *channel) queueDelete(m *frame.QueueDelete) error {
	s, vhost := ch.c.s, ch.c.vhost
	name := ch.queueName(m.Queue)
	if err := ch.c.allow(ch.c.perms(), auth.Configure, kindQueueObj, name); err != nil {
		return err
	}
	q, ok := s.topo.get().queue(vhost, name)
	if !ok {
		return ch.replyUnless(m.NoWait, &frame.QueueDeleteOk{}) // RabbitMQ: deleting nothing is fine
	}
	if err := ch.c.owns(q); err != nil {
		return err
	}
	if m.IfUnused && s.consumerCount(q.topic()) > 0 {
		return softErr(codePreconditionFailed, "queue '%s' in vhost '%s' in use", name, vhost)
	}
	ready, _ := s.b.ReadyCount(q.topic())
	if m.IfEmpty && ready > 0 {
		return softErr(codePreconditionFailed, "queue '%s' in vhost '%s' is not empty", name, vhost)
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	n, err := s.deleteQueue(ctx, vhost, name)
	if err != nil {
		return internalErr(err)
	}
	return ch.replyUnless(m.NoWait, &frame.QueueDeleteOk{MessageCount: clampU32(n)})
}

// deleteQueue removes a queue, its bindings, its subscription and topic,
// and cancels this node's consumers of it. It returns the ready count it
// had.
func (s *Server) deleteQueue(ctx context.Context, vhost, name string) (uint64, error) {
	t := s.topo.get()
	q, ok := t.queue(vhost, name)
	if !ok {
		return 0, nil
	}
	topic := q.topic()
	ready, _ := s.b.ReadyCount(topic)
	rs := []command.Record{delRec(queueKey(vhost, name))}
	for _, b := range t.bindingsTo(vhost, name, false) {
		rs = append(rs, delRec(b.key()))
	}
	if err := s.topo.change(ctx, rs...); err != nil {
		return 0, err
	}
	s.cancelConsumers(topic)
	if err := s.b.Unsubscribe(ctx, topic); err != nil && !errors.Is(err, broker.ErrNoSubscription) {
		return 0, err
	}
	if err := s.b.DeleteTopic(ctx, topic); err != nil && !errors.Is(err, broker.ErrNoTopic) {
		return 0, err
	}
	if q.Owner != "" {
		s.mu.Lock()
		for c := range s.conns {
			if c.id == q.Owner {
				c.mu.Lock()
				delete(c.exclusive, name)
				c.mu.Unlock()
			}
		}
		s.mu.Unlock()
	}
	return ready, nil
}

func (ch *channel) replyUnless(noWait bool, m frame.Method) error {
	if noWait {
		return nil
	}
	return ch.sendMethod(m)
}

// internalErr reports a failure of the core (no leader, timeout) as a
// channel error the client can retry after.
func internalErr(err error) error {
	return softErr(codeInternalError, "%v", fmt.Errorf("broker: %w", err))
}

func clampU32(n uint64) uint32 {
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// ownerLive reports whether an exclusive queue's owner may still be
// connected: a connection of another node is assumed live; one of this
// node must be among its connections.
func (s *Server) ownerLive(owner string) bool {
	if !strings.HasPrefix(owner, fmt.Sprintf("conn-%d.", s.cfg.NodeID)) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.id == owner {
			return true
		}
	}
	return false
}
