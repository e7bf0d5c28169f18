package amqp

import (
	"strings"

	"github.com/conflux-mq/conflux/core/broker"
)

// Messages of the other doors reach AMQP queues through exchange
// amq.topic of vhost "/" (docs/architecture.md, "One address space"): an MQTT
// publish to site1/dev42/temp has routing key "site1.dev42.temp"; a
// RocketMQ message has "<topic>.<tag>" (or "<topic>" without a tag). The
// broker asks routeForeign as it stores such a message, so it is stored
// once and indexed in every AMQP queue whose amq.topic binding matches.

// foreignExchange and foreignVHost are where other doors' messages are
// routed.
const (
	foreignExchange = "amq.topic"
	foreignVHost    = "/"
	propMQTTTopic   = "MQTT_TOPIC" // set by the MQTT door: the full MQTT topic
)

// routeForeign is the broker Router of this door.
func (s *Server) routeForeign(m *broker.Message) []broker.Route {
	if m.Topic == delayedTopic {
		return s.routeDelayed(m) // our own delayed message, now due
	}
	// Our own messages are routed already; system topics (%RETRY%,
	// %DLQ%, timers) are not messages of a door; a transaction's half
	// message is routed when its commit copies it.
	if m.Half || strings.HasPrefix(m.Topic, "AMQP%") || strings.HasPrefix(m.Topic, "%") ||
		strings.HasPrefix(m.Topic, "rmq_sys_") {
		return nil
	}
	t := s.topo.get()
	if len(t.bindings[vkey(foreignVHost, foreignExchange)]) == 0 {
		return nil
	}
	mqttTopic := ""
	for _, p := range m.Properties {
		if p.Key == propMQTTTopic {
			mqttTopic = p.Value
		}
	}
	return coreRoutes(t.route(foreignVHost, foreignExchange, foreignKey(m.Topic, m.Tags, mqttTopic), nil))
}

// coreRoutes names the core topics of AMQP queues.
func coreRoutes(qs []*queueDef) []broker.Route {
	out := make([]broker.Route, 0, len(qs))
	for _, q := range qs {
		out = append(out, broker.Route{Topic: q.topic(), Queue: 0})
	}
	return out
}

// foreignKey is the amq.topic routing key of another door's message: its
// MQTT topic (a RocketMQ message's is "<topic>/<tag>") with '/' and '.'
// swapped, as RabbitMQ's MQTT plugin maps them. The swap keeps the mapping
// one to one, which the permission checks rely on (auth.go, mqttView):
// replacing '/' alone would give site1/bob.x/temp and site1/bob/x/temp the
// same key, so a binding allowed for site1/bob/# would also receive what
// the rules keep for site1/bob.x/#.
func foreignKey(topic, tags, mqttTopic string) string {
	switch {
	case mqttTopic != "":
		return swapDotSlash(mqttTopic)
	case tags != "":
		return topic + "." + swapDotSlash(tags)
	}
	return topic
}

// swapDotSlash exchanges '/' and '.'.
func swapDotSlash(s string) string {
	if !strings.ContainsAny(s, "./") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}
