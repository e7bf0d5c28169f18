package amqp

import (
	"context"
	"fmt"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// deadLetter republishes messages of q (by physical offset) through its
// dead-letter exchange, with RabbitMQ's x-death history for reason
// ("rejected", "expired"), and returns once they are stored. The caller
// then settles the originals: a crash in between leaves a duplicate,
// never a loss.
func (s *Server) deadLetter(ctx context.Context, q *queueDef, phys []uint64, reason string) error {
	t := s.topo.get()
	var msgs []broker.Message
	for _, ph := range phys {
		m, err := s.b.ReadMessage(ph)
		if err != nil {
			return fmt.Errorf("read dead message: %w", err)
		}
		f := broker.Fetched{Message: m}
		exch, key, raw := contentOf(&f)
		body := append([]byte(nil), m.Body()...)
		m.Release()
		props, err := frame.DecodeProperties(raw)
		if err != nil {
			return err
		}
		addDeath(&props, q, exch, key, reason)
		newRaw, err := frame.AppendProperties(nil, &props)
		if err != nil {
			return err
		}
		dlKey := key
		if q.HasDLRK {
			dlKey = q.DLRoutingKey
		}
		targets := t.route(q.VHost, q.DLX, dlKey, props.Headers)
		if len(targets) == 0 {
			continue // nowhere to go: dropped, as RabbitMQ does
		}
		p := &publishing{m: &frame.BasicPublish{Exchange: q.DLX, RoutingKey: dlKey}, props: newRaw, body: body, queues: targets}
		msgs = append(msgs, p.message())
	}
	if len(msgs) == 0 {
		return nil
	}
	// Dead letters are copies of stored messages: the disk alarm does not
	// refuse them (core/broker's ProduceCopies), so rejects and expiries
	// go on while publishers are blocked, as in RabbitMQ.
	_, err := s.b.ProduceCopies(ctx, msgs)
	return err
}

// addDeath records a death in the x-death header: an array of tables,
// the latest first, one per (queue, reason) with a count, and the
// x-first-death-* headers set once.
func addDeath(p *frame.Properties, q *queueDef, exchange, key, reason string) {
	if p.Headers == nil {
		p.Headers = frame.Table{}
	}
	p.Flags |= frame.FlagHeaders
	h := p.Headers
	deaths, _ := h["x-death"].([]any)
	count := int64(1)
	rest := make([]any, 0, len(deaths)+1)
	for _, d := range deaths {
		dt, ok := d.(frame.Table)
		if ok && dt["queue"] == q.Name && dt["reason"] == reason {
			if n, ok := asInt(dt["count"]); ok {
				count = n + 1
			}
			continue
		}
		rest = append(rest, d)
	}
	entry := frame.Table{
		"queue": q.Name, "reason": reason, "count": count, "time": time.Now().UTC().Truncate(time.Second),
		"exchange": exchange, "routing-keys": []any{key},
	}
	if p.Flags&frame.FlagExpiration != 0 {
		entry["original-expiration"] = p.Expiration
		p.Expiration = ""
		p.Flags &^= frame.FlagExpiration
	}
	h["x-death"] = append([]any{entry}, rest...)
	for k, v := range map[string]string{"x-first-death-queue": q.Name, "x-first-death-reason": reason, "x-first-death-exchange": exchange} {
		if _, ok := h[k]; !ok {
			h[k] = v
		}
	}
	h["x-last-death-queue"], h["x-last-death-reason"], h["x-last-death-exchange"] = q.Name, reason, exchange
}
