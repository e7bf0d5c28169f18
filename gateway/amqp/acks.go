package amqp

import (
	"context"
)

// ackReq settles offsets of one subscription as consumed.
type ackReq struct {
	sub     string
	offsets []uint64
}

// ack queues an acknowledgement. basic.ack has no reply, so acks are
// settled in the background, many per Raft entry; one lost in a crash
// only means a redelivery (at-least-once, as RabbitMQ).
func (s *Server) ack(sub string, offsets []uint64) {
	select {
	case s.acks <- ackReq{sub: sub, offsets: offsets}:
	case <-s.ctx.Done():
	}
}

// ackLoop gathers waiting acks per subscription and settles them.
func (s *Server) ackLoop() {
	defer s.wg.Done()
	for {
		var first ackReq
		select {
		case first = <-s.acks:
		case <-s.ctx.Done():
			return
		}
		by := map[string][]uint64{first.sub: first.offsets}
	gather:
		for range 1024 {
			select {
			case r := <-s.acks:
				by[r.sub] = append(by[r.sub], r.offsets...)
			default:
				break gather
			}
		}
		for sub, offs := range by {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
			if err := s.b.Ack(ctx, sub, offs...); err != nil && s.ctx.Err() == nil {
				s.log.Warn("amqp acks not settled: they will be delivered again", "queue", sub, "messages", len(offs), "err", err)
			}
			cancel()
		}
	}
}
