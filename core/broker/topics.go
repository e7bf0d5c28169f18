package broker

import (
	"context"
	"fmt"
	"sort"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// CreateTopic creates a topic or changes its queues and permissions. It
// returns once the change is applied on this node.
func (b *Broker) CreateTopic(ctx context.Context, t Topic) error {
	if !validTopic(t.Name) {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, t.Name)
	}
	if t.Queues < 1 || t.Queues > MaxQueues {
		return fmt.Errorf("%w: %d outside [1, %d]", ErrBadQueueCount, t.Queues, MaxQueues)
	}
	if t.Perm == 0 {
		t.Perm = PermRead | PermWrite
	}
	return b.command(ctx, &command.Command{Kind: command.KindCreateTopic, Topic: t.Name, Queues: t.Queues, Perm: t.Perm})
}

// DeleteTopic removes a topic's configuration. Its messages stay in the log
// until retention removes them.
func (b *Broker) DeleteTopic(ctx context.Context, name string) error {
	if _, ok := b.Topic(name); !ok {
		return fmt.Errorf("%w: %s", ErrNoTopic, name)
	}
	return b.command(ctx, &command.Command{Kind: command.KindDeleteTopic, Topic: name})
}

// Topic returns a topic's configuration as applied on this node.
func (b *Broker) Topic(name string) (Topic, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	t, ok := b.sm.st.Topics[name]
	return t, ok
}

// Topics lists every topic, sorted by name.
func (b *Broker) Topics() []Topic {
	b.sm.mu.RLock()
	out := make([]Topic, 0, len(b.sm.st.Topics))
	for _, t := range b.sm.st.Topics {
		out = append(out, t)
	}
	b.sm.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DefaultQueues is the queue count of a topic created on first produce.
func (b *Broker) DefaultQueues() int { return b.cfg.DefaultQueues }

// topicForWrite returns the topic, creating it on first use when allowed.
func (b *Broker) topicForWrite(ctx context.Context, name string) (Topic, error) {
	t, ok := b.Topic(name)
	if !ok {
		if !*b.cfg.AutoCreateTopics {
			return Topic{}, fmt.Errorf("%w: %s", ErrNoTopic, name)
		}
		if err := b.CreateTopic(ctx, Topic{Name: name, Queues: uint32(b.cfg.DefaultQueues)}); err != nil {
			return Topic{}, err
		}
		if t, ok = b.Topic(name); !ok {
			return Topic{}, fmt.Errorf("%w: %s (deleted while being created)", ErrNoTopic, name)
		}
	}
	if t.Perm&PermWrite == 0 {
		return Topic{}, fmt.Errorf("%w: %s", ErrNotWritable, name)
	}
	return t, nil
}

// command proposes a control entry and waits until it is applied here.
func (b *Broker) command(ctx context.Context, c *command.Command) error {
	c.ID = b.node.NewProposalID()
	data, err := command.Encode(nil, c)
	if err != nil {
		return err
	}
	_, err = b.propose(ctx, data)
	return err
}
