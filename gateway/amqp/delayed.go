package amqp

import (
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// delayedTopic holds the messages published to delayed-message exchanges
// with an x-delay: stored with DeliverAt, they wait in the core's timers
// (replicated, surviving a failover) and come back to this topic when
// due, when routeForeign routes them through their exchange's
// x-delayed-type against the bindings of that moment, as RabbitMQ's
// plugin does. A delayed publish is confirmed once its timer is stored;
// mandatory does not apply to it (its route is not known yet).
const delayedTopic = "AMQP_DELAYED"

// delay marks a publish to a delayed-message exchange with a positive
// x-delay header (milliseconds) as delayed.
func (ch *channel) delay(p *publishing, e *exchangeDef, headers frame.Table) error {
	if e.Type != kindDelayed {
		return nil
	}
	ms, ok := asInt(headers["x-delay"])
	if !ok || ms <= 0 {
		return nil // routed now, by x-delayed-type
	}
	s := ch.c.s
	d := time.Duration(ms) * time.Millisecond
	if d > s.b.MaxDelay() {
		return softErr(codePreconditionFailed, "x-delay %d ms is longer than the longest delay, %s", ms, s.b.MaxDelay())
	}
	if _, ok := s.b.Topic(delayedTopic); !ok {
		ctx, cancel := ch.opCtx()
		defer cancel()
		if err := s.b.CreateTopic(ctx, broker.Topic{Name: delayedTopic, Queues: 1}); err != nil {
			return internalErr(err)
		}
	}
	p.delay, p.due, p.vhost = d, time.Now().Add(d), ch.c.vhost
	return nil
}

// routeDelayed routes a delayed message that came due.
func (s *Server) routeDelayed(m *broker.Message) []broker.Route {
	var vhost, exchange, key string
	var raw []byte
	for _, p := range m.Properties {
		switch p.Key {
		case PropVHost:
			vhost = p.Value
		case PropExchange:
			exchange = p.Value
		case PropRoutingKey:
			key = p.Value
		case PropProps:
			raw = []byte(p.Value)
		}
	}
	props, err := frame.DecodeProperties(raw)
	if err != nil {
		return nil
	}
	return coreRoutes(s.topo.get().route(vhost, exchange, key, props.Headers))
}
