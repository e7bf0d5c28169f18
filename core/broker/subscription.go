package broker

import (
	"encoding/json"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// Subscription is a named cursor over one queue with per-message delivery
// state: the one delivery state machine every door shares (ready → in flight →
// acked / retried / dead-lettered) that AMQP queues and MQTT sessions use.
// Its settled state is replicated; in-flight leases are the leader's soft
// state, so after a failover every unsettled message is delivered again.
type Subscription struct {
	Name          string `json:"name"`
	Topic         string `json:"topic"`
	Queue         uint32 `json:"queue"`
	AckWaitMs     uint32 `json:"ackWaitMs"`
	MaxDeliveries uint32 `json:"maxDeliveries"`
	DeadLetter    string `json:"deadLetter"`
	// Floor: every offset below it is settled.
	Floor uint64 `json:"floor"`
	// Settled lists settled offsets at or above Floor (acks out of order).
	Settled []uint64 `json:"settled,omitempty"`
	// Failures counts failed deliveries of unsettled offsets.
	Failures map[uint64]uint32 `json:"failures,omitempty"`

	settled map[uint64]bool
}

var bucketSubs = []byte("subscriptions")

func (s *Subscription) init() {
	s.settled = make(map[uint64]bool, len(s.Settled))
	for _, o := range s.Settled {
		s.settled[o] = true
	}
	if s.Failures == nil {
		s.Failures = map[uint64]uint32{}
	}
}

// isSettled reports whether offset needs no more delivery.
func (s *Subscription) isSettled(off uint64) bool { return off < s.Floor || s.settled[off] }

// settle applies one outcome and moves the floor past settled offsets.
func (s *Subscription) settle(st command.Settle) {
	if st.Offset < s.Floor {
		return
	}
	switch st.Outcome {
	case command.Acked, command.DeadLettered:
		s.settled[st.Offset] = true
		delete(s.Failures, st.Offset)
	case command.Failed:
		if !s.settled[st.Offset] {
			s.Failures[st.Offset]++
		}
	}
	for s.settled[s.Floor] {
		delete(s.settled, s.Floor)
		s.Floor++
	}
}

// clone copies s for readers outside the state machine's lock.
func (s *Subscription) clone() Subscription {
	c := *s
	c.Settled = nil // the set below is the truth; the list is for encoding
	c.Failures = make(map[uint64]uint32, len(s.Failures))
	for k, v := range s.Failures {
		c.Failures[k] = v
	}
	c.settled = make(map[uint64]bool, len(s.settled))
	for k := range s.settled {
		c.settled[k] = true
	}
	return c
}

// encodable returns a copy with the settled list filled in, for JSON. It
// only reads s, so it may run beside readers of s.
func (s *Subscription) encodable() Subscription {
	c := *s
	c.Settled = make([]uint64, 0, len(s.settled))
	for o := range s.settled {
		c.Settled = append(c.Settled, o)
	}
	sort.Slice(c.Settled, func(i, j int) bool { return c.Settled[i] < c.Settled[j] })
	return c
}

// applySubCommand applies a subscription command to the in-memory state.
func (st *metaState) applySubCommand(c command.Command) {
	switch c.Kind {
	case command.KindSubscribe:
		s := st.Subs[c.Subscription]
		if s == nil || s.Topic != c.Topic || s.Queue != c.Queue {
			s = &Subscription{Name: c.Subscription, Topic: c.Topic, Queue: c.Queue, Floor: c.StartOffset}
			s.init()
			st.Subs[c.Subscription] = s
		}
		s.AckWaitMs, s.MaxDeliveries, s.DeadLetter = c.AckWaitMs, c.MaxDeliveries, c.DeadLetter
	case command.KindUnsubscribe:
		delete(st.Subs, c.Subscription)
	case command.KindSettle:
		if s := st.Subs[c.Subscription]; s != nil {
			for _, x := range c.Settles {
				s.settle(x)
			}
		}
	}
}

// saveSub writes (or, when gone, deletes) one subscription in tx.
func saveSub(tx *bolt.Tx, st *metaState, name string) error {
	b := tx.Bucket(bucketSubs)
	s := st.Subs[name]
	if s == nil {
		return b.Delete([]byte(name))
	}
	c := s.encodable()
	v, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	return b.Put([]byte(name), v)
}

func loadSubs(tx *bolt.Tx, st *metaState) error {
	return tx.Bucket(bucketSubs).ForEach(func(k, v []byte) error {
		var s Subscription
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("subscription %q: %w", k, err)
		}
		s.init()
		st.Subs[s.Name] = &s
		return nil
	})
}
