package amqp

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// The disk alarm (core/broker/disk.go) as RabbitMQ clients know it. While
// the broker refuses producers, every connection whose client announced
// the connection.blocked capability is told so once, with
// connection.unblocked when the episode ends; RabbitMQ tells only the
// connections that publish, but a consumer's connection learns nothing
// wrong from it and a client that is about to publish learns it sooner.
//
// Unlike RabbitMQ, Conflux does not stop reading a blocked connection:
// reading goes on so acks, gets and declares keep working on every
// channel. What a publish meets instead is the broker's own refusal
// (Produce fails with broker.ErrDiskFull), and the only source of truth
// for it is that error, so a publish that raced the alarm is treated
// like any other:
//   - on a channel in confirm mode the message gets basic.nack, in its
//     place in the tag order (publish.go);
//   - on a channel without confirms there is no way to refuse one message,
//     so the channel is closed with 506 RESOURCE_ERROR (never a silent
//     drop); the pipe stops storing that channel's later publishes, so
//     nothing after the refused one is stored either;
//   - tx.commit fails with 506 and stores nothing: a transaction is one
//     Produce call, which the alarm refuses whole.

// alarmState is the alarm as the door last saw it; nil when clear.
type alarmState struct {
	reason string // connection.blocked's reason
}

// watchDisk follows the broker's alarm and tells the connections.
func (s *Server) watchDisk() {
	defer s.wg.Done()
	for {
		// Taken before the status is read, so no change falls between.
		changed := s.b.DiskAlarmChanged()
		st := s.b.DiskStatus()
		if st.Blocked {
			s.alarm.Store(&alarmState{reason: s.blockedReason(st)})
		} else {
			s.alarm.Store(nil)
		}
		s.mu.Lock()
		cs := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			cs = append(cs, c)
		}
		s.mu.Unlock()
		for _, c := range cs {
			// One goroutine each: a client that does not read must not
			// hold up the others' notice for the write timeout.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c.syncBlocked()
			}()
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return
		}
	}
}

// blockedReason names the node, or the quorum of nodes, short of space,
// in RabbitMQ's words ("low on disk space").
func (s *Server) blockedReason(st broker.DiskStatus) string {
	if st.Local || len(st.Nodes) == 0 {
		return fmt.Sprintf("low on disk space (disk alarm on node %d)", s.b.Status().ID)
	}
	ids := make([]string, len(st.Nodes))
	for i, id := range st.Nodes {
		ids[i] = strconv.FormatUint(id, 10)
	}
	return shortText(fmt.Sprintf("low on disk space (disk alarm on nodes %s, a quorum)", strings.Join(ids, ", ")))
}

// syncBlocked sends connection.blocked or unblocked if the client has not
// been told the alarm's current state. The watcher and the connection
// itself (once open) call it; whoever comes last sees the last state, so
// each episode gives one blocked and one unblocked.
func (c *conn) syncBlocked() {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	// caps is written by the handshake before open is set under bmu.
	if !c.open || c.closing.Load() || !c.capability("connection.blocked") {
		return
	}
	a := c.s.alarm.Load()
	if (a != nil) == c.blocked {
		return
	}
	c.blocked = a != nil
	if a != nil {
		_ = c.sendMethod(0, &frame.ConnectionBlocked{Reason: a.reason})
	} else {
		_ = c.sendMethod(0, &frame.ConnectionUnblocked{})
	}
}

// diskFullErr is the channel error for what the disk alarm refused, with
// the broker's words (the node, its free bytes, the setting to change).
func diskFullErr(what string, err error) *amqpError {
	return softErr(codeResourceError, "%s: %v", what, err)
}

// refuse is the pipe's side of a refused publish on a channel without
// confirms: it records the error for the connection's reader, which owns
// the channel, and wakes it to close the channel.
func (ch *channel) refuse(e *amqpError) {
	if ch.refused.CompareAndSwap(nil, e) {
		ch.c.refusals.Store(true)
		ch.c.wake()
	}
}

// failRefused closes, on the reader, every channel whose pipe refused a
// publish and that is not closing already.
func (c *conn) failRefused() error {
	if c.closing.Load() {
		return nil // connection.close went out: no channel.close after it
	}
	for _, ch := range c.chans {
		if e := ch.refused.Load(); e != nil && !ch.closing {
			if err := ch.fail(e); err != nil {
				return err
			}
		}
	}
	return nil
}
