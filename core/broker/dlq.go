package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// Dead letters: RocketMQ's %DLQ%<group> (gateway/remoting) and a
// subscription's dead-letter topic (deliver.go) keep where a message came
// from in properties. ResendDeadLetter puts one back on that topic for
// another round of consumption: the operator's "replay" after fixing what
// made consumers fail.

// Properties naming a dead letter's origin, most specific first: RocketMQ
// 5's DLQ_ORIGIN_TOPIC, RocketMQ's RETRY_TOPIC, the core's ORIGIN_TOPIC.
var deadLetterOrigins = []string{"DLQ_ORIGIN_TOPIC", "RETRY_TOPIC", PropOriginTopic}

// Bookkeeping properties a resent message drops (it starts afresh).
var deadLetterDropped = []string{"DLQ_ORIGIN_TOPIC", "DLQ_ORIGIN_MESSAGE_ID", "RETRY_TOPIC", PropOriginTopic, PropDeliveries, PropDelay}

// ErrNotDeadLetter: the message names no origin topic.
var ErrNotDeadLetter = errors.New("broker: not a dead letter (no origin topic property)")

// deadLetterRecords remembers resent dead letters (records.go), so that a
// repeated request does not deliver the message twice.
const deadLetterRecords = "broker.dlq.resent"

// ErrAlreadyResent: this dead letter was resent before.
var ErrAlreadyResent = errors.New("broker: dead letter already resent")

// ResendDeadLetter produces the message at (dlq, queue, offset) again to
// its original topic (returned with where it went), with its id, body, tags, keys and flags, a reconsume
// count of 0 and without the dead-letter bookkeeping properties
// (ORIGIN_MESSAGE_ID stays). Each dead letter is resent at most once.
//
// The caller's context decides whether to start. From the claim on, the
// resend runs on its own deadline: a caller giving up half way could
// otherwise leave a claim without a resend, or give a claim back for a
// produce that still commits.
func (b *Broker) ResendDeadLetter(ctx context.Context, dlq string, queue uint32, offset uint64) (string, Result, error) {
	key := dlq + "/" + strconv.FormatUint(uint64(queue), 10) + "/" + strconv.FormatUint(offset, 10)
	if _, done := b.Record(deadLetterRecords, key); done {
		return "", Result{}, fmt.Errorf("%w: %s/%d@%d", ErrAlreadyResent, dlq, queue, offset)
	}
	if err := ctx.Err(); err != nil {
		return "", Result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*b.cfg.ProposeTimeout)
	defer cancel()
	// Claim the resend through the log before producing: of two requests
	// racing (on any nodes) exactly one wins, so the message goes back at
	// most once.
	claim := fmt.Sprintf("claim:%d:%d", b.cfg.NodeID, b.node.NewProposalID())
	won, err := b.PutRecordIfAbsent(ctx, deadLetterRecords, key, []byte(claim))
	if err != nil {
		// The claim may have committed all the same.
		if v, ok := b.Record(deadLetterRecords, key); !ok || string(v) != claim {
			return "", Result{}, err
		}
		won = true
	}
	if !won {
		return "", Result{}, fmt.Errorf("%w: %s/%d@%d", ErrAlreadyResent, dlq, queue, offset)
	}
	// A produce refused before it reached the log gives the claim back;
	// one whose outcome is unknown keeps it (it may have committed).
	resent := false
	defer func() {
		if !resent {
			dctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProposeTimeout)
			defer cancel()
			if err := b.DeleteRecord(dctx, deadLetterRecords, key); err != nil {
				b.cfg.Logger.Warn("cannot release a dead-letter resend claim", "key", key, "err", err)
			}
		}
	}()
	ms, _, err := b.Fetch(dlq, queue, offset, FetchOptions{MaxMessages: 1})
	if err != nil {
		return "", Result{}, err
	}
	defer releaseAll(ms)
	if len(ms) == 0 || ms[0].QueueOffset != offset {
		return "", Result{}, fmt.Errorf("%w: no message at %s/%d@%d", ErrOffsetTooHigh, dlq, queue, offset)
	}
	m := ms[0]
	msg := batch.Message{ID: m.ID(), Flag: m.Flag(), SysFlag: m.SysFlag(), BornUnixMs: m.BornUnixMs(),
		BornHost: string(m.BornHost()), Tags: string(m.Tags()), Body: bytes.Clone(m.Body())}
	for k := range m.Keys {
		msg.Keys = append(msg.Keys, string(k))
	}
	origins := map[string]string{}
	for k, v := range m.Properties {
		ks := string(k)
		if slices.Contains(deadLetterOrigins, ks) {
			if _, seen := origins[ks]; !seen {
				origins[ks] = string(v)
			}
		}
		if slices.Contains(deadLetterDropped, ks) {
			continue
		}
		msg.Properties = append(msg.Properties, batch.Property{Key: ks, Value: string(v)})
	}
	for _, k := range deadLetterOrigins {
		if msg.Topic = origins[k]; msg.Topic != "" {
			break
		}
	}
	if msg.Topic == "" {
		return "", Result{}, ErrNotDeadLetter
	}
	res, err := b.Produce(ctx, []Message{{Message: msg, Queue: -1}})
	if err != nil {
		if !permanentProduceError(err) {
			resent = true
			return "", Result{}, fmt.Errorf("broker: resend of %s/%d@%d to %s has an unknown outcome and is recorded as done (message id %x): %w",
				dlq, queue, offset, msg.Topic, msg.ID, err)
		}
		return "", Result{}, err
	}
	resent = true
	// The claim stays (the message is back); the topic replaces it, for
	// whoever looks at the record.
	if err := b.PutRecord(ctx, deadLetterRecords, key, []byte(msg.Topic)); err != nil {
		b.cfg.Logger.Warn("dead letter resent; its record keeps the claim", "key", key, "err", err)
	}
	return msg.Topic, res[0], nil
}
