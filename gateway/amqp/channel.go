package amqp

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// channel is one AMQP channel. The connection's read goroutine runs its
// methods; its consumers and its publish pipe run in their own
// goroutines and share the delivery state under mu.
type channel struct {
	c  *conn
	id uint16

	// closing: channel.close was sent; frames other than close and
	// close-ok are dropped until the client's close-ok.
	closing bool

	// Content being assembled: a publish, then its header, then bodies.
	pub *publishing

	lastQueue string // "the queue last declared on this channel"

	confirm    bool
	publishSeq uint64 // confirm mode: the tag of the last publish
	pipe       *pipe
	// refused: the pipe refused a publish without confirms (the disk
	// alarm); the channel closes with this error (alarm.go).
	refused atomic.Pointer[amqpError]

	tx      bool
	txPubs  []*publishing
	txAcks  []settleOp
	txBytes int

	// dmu is held from taking delivery tags to writing them, so tags
	// reach the client in order; taken before mu.
	dmu sync.Mutex

	mu           sync.Mutex
	reserved     int // credit handed to consumers, not delivered yet
	deliveryTag  uint64
	unacked      map[uint64]*unacked // by delivery tag
	consumers    map[string]*consumer
	prefetch     uint16        // for consumers created from now on (global=false)
	prefetchChan uint16        // shared by the channel (global=true)
	credit       chan struct{} // closed (and replaced) when an ack frees credit
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{c: c, id: id, unacked: map[uint64]*unacked{}, consumers: map[string]*consumer{},
		credit: make(chan struct{})}
}

// method runs one method frame of this channel.
func (ch *channel) method(m frame.Method) error {
	if ch.closing {
		switch m.(type) {
		case *frame.ChannelClose:
			return ch.sendMethod(&frame.ChannelCloseOk{})
		case *frame.ChannelCloseOk:
			ch.finishClose()
		}
		return nil
	}
	if ch.pub != nil {
		return withMethod(hardErr(codeUnexpectedFrame, "%s while a publish waits for its content", m.Name()), m)
	}
	if err := ch.afterPublishes(m); err != nil {
		return err
	}
	// A publish before this method was refused: the client hears of it
	// before any answer to what followed (unless it is closing anyway).
	if e := ch.refused.Load(); e != nil {
		if _, closing := m.(*frame.ChannelClose); !closing {
			return ch.fail(e)
		}
	}
	err := ch.run(m)
	var ae *amqpError
	if errors.As(err, &ae) {
		if ae.classID == 0 {
			ae.classID, ae.methodID = m.ClassID(), m.MethodID()
		}
		if ae.hard {
			return ae
		}
		return ch.fail(ae)
	}
	return err
}

// afterPublishes keeps a channel's methods in order: AMQP runs them one
// after another, so a basic.get (or a declare's message count, a purge)
// must see what the channel published before it, although publishes are
// stored in the background. Acks and further publishes need not wait.
func (ch *channel) afterPublishes(m frame.Method) error {
	if ch.pipe == nil {
		return nil
	}
	switch m.(type) {
	case *frame.BasicPublish, *frame.BasicAck, *frame.BasicNack, *frame.BasicReject:
		return nil
	}
	ctx, cancel := ch.opCtx()
	defer cancel()
	if err := ch.pipe.wait(ctx); err != nil && ch.c.ctx.Err() == nil {
		return withMethod(softErr(codeInternalError, "earlier publishes not stored in time: %v", err), m)
	}
	return nil
}

// fail closes the channel with a soft error. The pipe finishes first, so
// the confirms of what it stored go out before channel.close and nothing
// of this channel follows the client's close-ok.
func (ch *channel) fail(e *amqpError) error {
	ch.closing = true
	ch.close()
	return ch.sendMethod(&frame.ChannelClose{ReplyCode: e.code, ReplyText: e.replyText(), FailedClassID: e.classID, FailedMethodID: e.methodID})
}

func (ch *channel) sendMethod(m frame.Method) error { return ch.c.sendMethod(ch.id, m) }

func (ch *channel) run(m frame.Method) error {
	switch m := m.(type) {
	case *frame.ChannelClose:
		ch.close()
		delete(ch.c.chans, ch.id)
		return ch.sendMethod(&frame.ChannelCloseOk{})
	case *frame.ChannelCloseOk:
		return nil
	case *frame.ChannelFlow:
		if !m.Active {
			return hardErr(codeNotImplemented, "channel.flow active=false is not supported")
		}
		return ch.sendMethod(&frame.ChannelFlowOk{Active: true})
	case *frame.ChannelFlowOk:
		return nil
	case *frame.ChannelOpen:
		return hardErr(codeChannelError, "channel %d is already open", ch.id)

	case *frame.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *frame.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *frame.ExchangeBind:
		return ch.bind(m.Destination, true, m.Source, m.RoutingKey, m.Arguments, m.NoWait, false, &frame.ExchangeBindOk{})
	case *frame.ExchangeUnbind:
		return ch.bind(m.Destination, true, m.Source, m.RoutingKey, m.Arguments, m.NoWait, true, &frame.ExchangeUnbindOk{})
	case *frame.QueueDeclare:
		return ch.queueDeclare(m)
	case *frame.QueueBind:
		return ch.bind(ch.queueName(m.Queue), false, m.Exchange, m.RoutingKey, m.Arguments, m.NoWait, false, &frame.QueueBindOk{})
	case *frame.QueueUnbind:
		return ch.bind(ch.queueName(m.Queue), false, m.Exchange, m.RoutingKey, m.Arguments, false, true, &frame.QueueUnbindOk{})
	case *frame.QueuePurge:
		return ch.queuePurge(m)
	case *frame.QueueDelete:
		return ch.queueDelete(m)

	case *frame.BasicQos:
		if m.PrefetchSize != 0 {
			return hardErr(codeNotImplemented, "prefetch_size is not supported")
		}
		ch.mu.Lock()
		if m.Global {
			ch.prefetchChan = m.PrefetchCount
		} else {
			ch.prefetch = m.PrefetchCount
		}
		ch.wakeLocked()
		ch.mu.Unlock()
		return ch.sendMethod(&frame.BasicQosOk{})
	case *frame.BasicConsume:
		return ch.consume(m)
	case *frame.BasicCancel:
		return ch.cancel(m)
	case *frame.BasicGet:
		return ch.get(m)
	case *frame.BasicPublish:
		return ch.startPublish(m)
	case *frame.BasicAck:
		return ch.settle(m.DeliveryTag, m.Multiple, settleAck)
	case *frame.BasicNack:
		op := settleDrop
		if m.Requeue {
			op = settleRequeue
		}
		return ch.settle(m.DeliveryTag, m.Multiple, op)
	case *frame.BasicReject:
		op := settleDrop
		if m.Requeue {
			op = settleRequeue
		}
		return ch.settle(m.DeliveryTag, false, op)
	case *frame.BasicRecover:
		if !m.Requeue {
			return hardErr(codeNotImplemented, "basic.recover requeue=false is not supported")
		}
		ch.recover()
		return ch.sendMethod(&frame.BasicRecoverOk{})
	case *frame.BasicRecoverAsync:
		if !m.Requeue {
			return hardErr(codeNotImplemented, "basic.recover-async requeue=false is not supported")
		}
		ch.recover()
		return nil

	case *frame.ConfirmSelect:
		if ch.tx {
			return softErr(codePreconditionFailed, "cannot switch from tx to confirm mode")
		}
		ch.confirm = true
		if m.NoWait {
			return nil
		}
		return ch.sendMethod(&frame.ConfirmSelectOk{})
	case *frame.TxSelect:
		if ch.confirm {
			return softErr(codePreconditionFailed, "cannot switch from confirm to tx mode")
		}
		ch.tx = true
		return ch.sendMethod(&frame.TxSelectOk{})
	case *frame.TxCommit:
		if !ch.tx {
			return softErr(codePreconditionFailed, "channel is not transactional")
		}
		if err := ch.commitTx(); err != nil {
			return err
		}
		return ch.sendMethod(&frame.TxCommitOk{})
	case *frame.TxRollback:
		if !ch.tx {
			return softErr(codePreconditionFailed, "channel is not transactional")
		}
		ch.txPubs, ch.txAcks, ch.txBytes = nil, nil, 0
		return ch.sendMethod(&frame.TxRollbackOk{})
	}
	return hardErr(codeNotImplemented, "%s is not supported", m.Name())
}

// queueName resolves "" to the queue last declared on this channel.
func (ch *channel) queueName(name string) string {
	if name == "" {
		return ch.lastQueue
	}
	return name
}

// stop ends the channel's consumers and hands back what it has
// unacknowledged (a soft error or a close).
func (ch *channel) stop() {
	ch.mu.Lock()
	cs := make([]*consumer, 0, len(ch.consumers))
	for _, k := range ch.consumers {
		cs = append(cs, k)
	}
	ch.consumers = map[string]*consumer{}
	ch.mu.Unlock()
	for _, k := range cs {
		k.stop()
	}
	ch.requeueAll()
	ch.pub = nil
}

// close: stop, then let the pipe finish what it was given (its confirms
// go out before channel.close-ok).
func (ch *channel) close() {
	ch.stop()
	if ch.pipe != nil {
		ch.pipe.close()
		ch.pipe = nil
	}
}

// finishClose: the client confirmed our channel.close; the id is free.
func (ch *channel) finishClose() {
	ch.close()
	delete(ch.c.chans, ch.id)
}

// wakeLocked tells waiting consumers that credit may have changed.
func (ch *channel) wakeLocked() {
	close(ch.credit)
	ch.credit = make(chan struct{})
}

func (ch *channel) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(ch.c.ctx, ch.c.s.cfg.CommitTimeout)
}
