package remoting

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	bcmd "github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Orderly consumption (remoting.md §4.11, §9). Per-queue order is the
// log's commit order; what an orderly consumer group needs from the broker
// is that two members never consume one queue at once. A member locks a
// queue (LOCK_BATCH_MQ) before it pulls it, renews every 20 s, treats its
// own lock as lost 30 s after the last renewal, and unlocks on rebalance
// and shutdown. The broker grants a lock that is free, already the
// caller's, or expired (60 s without renewal): broker expiry (60 s) >
// client expiry (30 s) > renewal (20 s), so a member that stopped renewing
// has stopped consuming before anyone else may lock its queue.
//
// The table is replicated (core/broker qlocks.go): every node grants or
// refuses alike, so the broker name of a dead node can move to another
// node, and the cluster can restart, without a second member getting a
// queue whose lease is live. Each LOCK_BATCH_MQ is one Raft command.

// lockExpiry is Java's rocketmq.broker.rebalance.lockMaxLiveTime. The Go
// client never unlocks a queue it loses in a rebalance (its
// removeUnnecessaryMessageQueue is a TODO for orderly consumers), so the
// new owner waits for this expiry. It must stay above the client's own
// 30 s; a variable only so that tests can shorten the hand-over.
var lockExpiry = 60 * time.Second

// maxLocks bounds the refused queues waiting for a notice.
const maxLocks = 1 << 16

// maxLockQueues bounds one request (the core's bound on a lock command).
const maxLockQueues = bcmd.MaxLockQueues

type messageQueue struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueID    int    `json:"queueId"`
}

type lockBody struct {
	ConsumerGroup string         `json:"consumerGroup"`
	ClientID      string         `json:"clientId"`
	MQSet         []messageQueue `json:"mqSet"`
}

// lockKey names a queue as the client does: the broker name is part of it
// (each node's broker name numbers its queues from 0).
type lockKey struct {
	group, topic, broker string
	queue                int
}

type locks struct {
	b      *broker.Broker
	log    *slog.Logger
	expiry time.Duration
	now    func() time.Time
	// notify tells a group's members to rebalance. The Go client retries a
	// refused lock only at its next rebalance (every 20 s), so when a
	// queue somebody was refused becomes free (unlocked or expired), the
	// group hears of it at once.
	notify func(group string)
	mu     sync.Mutex
	// waiting: refused queues, with the timer that fires when the lock
	// that refused them expires.
	waiting map[lockKey]*time.Timer
}

func newLocks(b *broker.Broker, log *slog.Logger, expiry time.Duration, notify func(group string)) *locks {
	return &locks{b: b, log: log, expiry: expiry, now: time.Now, notify: notify, waiting: map[lockKey]*time.Timer{}}
}

func (k lockKey) ref() broker.QueueRef {
	return broker.QueueRef{Topic: k.topic, Broker: k.broker, Queue: uint32(k.queue)}
}

// wait arranges a notification for when k's lock, held since at, expires
// (under mu).
func (l *locks) wait(k lockKey, at time.Time) {
	if _, ok := l.waiting[k]; ok || l.notify == nil || len(l.waiting) >= maxLocks {
		return
	}
	l.waiting[k] = time.AfterFunc(at.Add(l.expiry).Sub(l.now())+10*time.Millisecond, func() { l.freed(k) })
}

// freed notifies the group of k if k's lock is gone or expired.
func (l *locks) freed(k lockKey) {
	_, at, held := l.b.QueueLockHolder(k.group, k.ref())
	free := !held || l.now().Sub(at) > l.expiry
	l.mu.Lock()
	if t, ok := l.waiting[k]; ok && free {
		t.Stop()
		delete(l.waiting, k)
	} else if ok && held {
		// Renewed meanwhile: wait for the new expiry.
		delete(l.waiting, k)
		l.wait(k, at)
	}
	l.mu.Unlock()
	if free {
		l.notify(k.group)
	}
}

func (l *locks) lock(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	var lb lockBody
	if err := json.Unmarshal(req.Body, &lb); err != nil {
		return reply(req, command.SystemError, "bad lock body: "+err.Error())
	}
	if len(lb.MQSet) > maxLockQueues {
		return reply(req, command.SystemError, "too many queues in one lock request")
	}
	ok := []messageQueue{}
	refs := make([]broker.QueueRef, 0, len(lb.MQSet))
	for _, mq := range lb.MQSet {
		if mq.QueueID >= 0 {
			refs = append(refs, lockKey{lb.ConsumerGroup, mq.Topic, mq.BrokerName, mq.QueueID}.ref())
		}
	}
	lctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	// An error (no leader) grants nothing: the Go client reads only the
	// granted set and tries again.
	granted, err := l.b.LockQueues(lctx, lb.ConsumerGroup, lb.ClientID, l.now(), l.expiry, refs)
	if err != nil && l.log != nil {
		l.log.Warn("queue lock not replicated", "group", lb.ConsumerGroup, "err", err)
	}
	l.mu.Lock()
	for _, mq := range lb.MQSet {
		k := lockKey{lb.ConsumerGroup, mq.Topic, mq.BrokerName, mq.QueueID}
		if mq.QueueID >= 0 && slices.Contains(granted, k.ref()) {
			if t, waited := l.waiting[k]; waited {
				t.Stop()
				delete(l.waiting, k)
			}
			ok = append(ok, mq)
		} else if err == nil && mq.QueueID >= 0 {
			if _, at, held := l.b.QueueLockHolder(k.group, k.ref()); held {
				l.wait(k, at) // another member's live lock
			}
		}
	}
	l.mu.Unlock()
	body, _ := json.Marshal(map[string][]messageQueue{"lockOKMQSet": ok})
	r := reply(req, command.Success, "")
	r.Body = body
	return r
}

func (l *locks) unlock(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	var lb lockBody
	if err := json.Unmarshal(req.Body, &lb); err != nil {
		return reply(req, command.SystemError, "bad unlock body: "+err.Error())
	}
	if len(lb.MQSet) > maxLockQueues {
		return reply(req, command.SystemError, "too many queues in one unlock request")
	}
	refs := make([]broker.QueueRef, 0, len(lb.MQSet))
	var freed []lockKey
	l.mu.Lock()
	for _, mq := range lb.MQSet {
		if mq.QueueID < 0 {
			continue
		}
		k := lockKey{lb.ConsumerGroup, mq.Topic, mq.BrokerName, mq.QueueID}
		refs = append(refs, k.ref())
		if _, ok := l.waiting[k]; ok {
			freed = append(freed, k)
		}
	}
	l.mu.Unlock()
	uctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if err := l.b.UnlockQueues(uctx, lb.ConsumerGroup, lb.ClientID, refs); err != nil {
		return reply(req, command.SystemError, err.Error())
	}
	for _, k := range freed {
		l.freed(k)
	}
	return reply(req, command.Success, "")
}
