package amqp

import (
	"context"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// A message's time to live is the smaller of its queue's x-message-ttl
// and its own expiration property (milliseconds, a decimal string). As in
// RabbitMQ, an expired message is removed when it reaches the head: here,
// when a consumer or basic.get would get it. It is then dead-lettered
// (reason "expired") through the queue's dead-letter exchange, or
// dropped. A queue nobody reads keeps its expired messages until someone
// does.

// messageTTL returns the expiration of raw properties, if they carry one.
func messageTTL(raw []byte) (time.Duration, bool) {
	if len(raw) < 2 || binary.BigEndian.Uint16(raw)&frame.FlagExpiration == 0 {
		return 0, false // the cheap test first: most messages have none
	}
	p, err := frame.DecodeProperties(raw)
	if err != nil {
		return 0, false
	}
	ms, err := strconv.ParseUint(p.Expiration, 10, 32)
	if err != nil {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// validExpiration: RabbitMQ refuses an expiration that is not a
// non-negative integer (406).
func validExpiration(raw []byte) bool {
	if len(raw) < 2 || binary.BigEndian.Uint16(raw)&frame.FlagExpiration == 0 {
		return true
	}
	p, err := frame.DecodeProperties(raw)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(p.Expiration, 10, 32)
	return err == nil
}

// expired reports whether a delivery outlived its time to live.
func (q *queueDef) expired(f *broker.Fetched, now time.Time) bool {
	ttl, ok := time.Duration(-1), false
	if q.TTLms >= 0 && q.HasTTL {
		ttl, ok = time.Duration(q.TTLms)*time.Millisecond, true
	}
	for k, v := range f.Properties {
		if string(k) == PropProps {
			if m, has := messageTTL(v); has && (!ok || m < ttl) {
				ttl, ok = m, true
			}
			break
		}
	}
	return ok && now.Sub(time.UnixMilli(f.BornUnixMs())) > ttl
}

// dropExpired takes the expired deliveries out of ds, dead-letters or
// drops them, and returns the rest.
func (s *Server) dropExpired(ctx context.Context, q *queueDef, ds []broker.Delivery) []broker.Delivery {
	if !q.HasTTL && !anyExpiration(ds) {
		return ds
	}
	now := time.Now()
	live := ds[:0]
	var offs, phys []uint64
	for _, d := range ds {
		if q.expired(&d.Fetched, now) {
			offs, phys = append(offs, d.Offset), append(phys, d.PhysOffset)
			d.Release()
			continue
		}
		live = append(live, d)
	}
	if len(offs) == 0 {
		return live
	}
	if q.HasDLX {
		if err := s.deadLetter(ctx, q, phys, "expired"); err != nil {
			s.log.Warn("expired messages not dead-lettered: they stay", "queue", q.Name, "err", err)
			s.release(q.topic(), offs)
			return live
		}
	}
	s.ack(q.topic(), offs)
	return live
}

func anyExpiration(ds []broker.Delivery) bool {
	for _, d := range ds {
		for k, v := range d.Properties {
			if string(k) == PropProps {
				if len(v) >= 2 && binary.BigEndian.Uint16(v)&frame.FlagExpiration != 0 {
					return true
				}
				break
			}
		}
	}
	return false
}
