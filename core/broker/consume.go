package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/conflux-mq/conflux/core/broker/command"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/cq"
)

// Fetched is one message read from a queue. Its bytes alias the commit
// log's mapping: call Release when done with it.
type Fetched struct {
	clog.Message
	QueueOffset uint64
	TagHash     int64
}

// FetchOptions bound and filter a Fetch.
type FetchOptions struct {
	MaxMessages int // at least 1
	MaxBytes    int // 0: no byte bound beyond MaxMessages
	// TagHashes keeps only messages whose tag hash is in the set (RocketMQ
	// tag filtering); empty keeps all.
	TagHashes map[int64]bool
}

// Fetch reads messages of one queue from offset on. next is the offset
// to ask for next time: past the messages returned and past any skipped by
// the tag filter. Messages below the queue's minimum (removed by
// retention) are skipped, and next says where the queue starts now.
func (b *Broker) Fetch(topic string, queue uint32, offset uint64, o FetchOptions) (msgs []Fetched, next uint64, err error) {
	t, ok := b.Topic(topic)
	switch {
	case !ok:
		return nil, offset, fmt.Errorf("%w: %s", ErrNoTopic, topic)
	case t.Perm&PermRead == 0:
		return nil, offset, fmt.Errorf("%w: %s", ErrNotReadable, topic)
	case queue >= t.Queues:
		return nil, offset, fmt.Errorf("%w: %s/%d", ErrBadQueue, topic, queue)
	}
	lo, hi := b.sm.queueRange(topic, queue)
	if offset < lo {
		offset = lo
	}
	if offset > hi {
		return nil, hi, fmt.Errorf("%w: %d > %d", ErrOffsetTooHigh, offset, hi)
	}
	units, err := b.sm.disp.Units(topic, queue, offset, max(o.MaxMessages, 1)*4)
	if err != nil && !errors.Is(err, cq.ErrUnknownQueue) {
		return nil, offset, err
	}
	next = offset
	bytes := 0
	for _, u := range units {
		if len(msgs) >= max(o.MaxMessages, 1) || (o.MaxBytes > 0 && len(msgs) > 0 && bytes+int(u.Size) > o.MaxBytes) {
			break
		}
		if len(o.TagHashes) > 0 && !o.TagHashes[u.TagHash] {
			next++
			continue
		}
		m, err := b.sm.disp.ReadMessage(u.PhysOffset)
		if err != nil {
			if errors.Is(err, clog.ErrNotReadable) {
				next++ // removed by retention under our feet
				continue
			}
			releaseAll(msgs)
			return nil, offset, err
		}
		msgs = append(msgs, Fetched{Message: m, QueueOffset: next, TagHash: u.TagHash})
		bytes += int(u.Size)
		next++
	}
	b.m.consumed(len(msgs))
	return msgs, next, nil
}

func releaseAll(ms []Fetched) {
	for _, m := range ms {
		m.Release()
	}
}

// QueueRange returns the first retained offset and the next offset to be
// written of a queue (0, 0 for a queue never written).
func (b *Broker) QueueRange(topic string, queue uint32) (min, next uint64) {
	return b.sm.queueRange(topic, queue)
}

// WaitForMessages blocks until the queue holds a message at offset or
// beyond, or ctx ends (long polling). It returns ctx's error then.
func (b *Broker) WaitForMessages(ctx context.Context, topic string, queue uint32, offset uint64) error {
	for {
		ch := b.sm.changed()
		if _, next := b.sm.queueRange(topic, queue); next > offset {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CommitOffsets stores a consumer group's offsets (replicated). It returns
// once they are applied on this node.
func (b *Broker) CommitOffsets(ctx context.Context, group string, offsets []command.Offset) error {
	if group == "" || len(offsets) == 0 {
		return errors.New("broker: commit needs a group and offsets")
	}
	return b.command(ctx, &command.Command{Kind: command.KindCommitOffsets, Group: group, Offsets: offsets})
}

// Offset returns a group's committed offset for a queue.
func (b *Broker) Offset(group, topic string, queue uint32) (uint64, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	v, ok := b.sm.st.offsets[offsetKey{group: group, topic: topic, queue: queue}]
	return v, ok
}

// QueryByID finds a stored message by its id. Release it when done.
func (b *Broker) QueryByID(id [16]byte) (clog.Message, error) { return b.sm.disp.QueryByID(id) }

// QueryByKey finds up to max messages of topic with key, newest first.
// Release each when done.
func (b *Broker) QueryByKey(topic, key string, beginMs, endMs int64, max int) ([]clog.Message, error) {
	return b.sm.disp.QueryByKey(topic, key, beginMs, endMs, max)
}

// ReadMessage reads the message stored at physical offset physOffset (a
// Result's PhysOffset, the offset RocketMQ ids carry). An offset that is not
// the start of a retained message is an error: the message found there must
// be the one its first destination's consume queue points at. Release the
// message when done.
func (b *Broker) ReadMessage(physOffset uint64) (clog.Message, error) {
	m, err := b.sm.disp.ReadMessage(physOffset)
	if err != nil {
		return clog.Message{}, err
	}
	if m.NumDestinations() > 0 {
		d := m.Destination(0)
		units, err := b.sm.disp.Units(string(d.Topic), d.QueueID, d.QueueOffset, 1)
		if err == nil && len(units) == 1 && units[0].PhysOffset == physOffset {
			return m, nil
		}
	}
	m.Release()
	return clog.Message{}, fmt.Errorf("%w: no message starts at %d", clog.ErrNotFound, physOffset)
}
