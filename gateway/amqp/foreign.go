package amqp

import (
	"strings"

	"github.com/conflux-mq/conflux/core/broker"
)

// Messages of the other doors reach AMQP queues through exchange
// amq.topic of vhost "/" (DESIGN.md, cross-protocol model): an MQTT
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

// foreignKey is the amq.topic routing key of another door's message.
func foreignKey(topic, tags, mqttTopic string) string {
	switch {
	case mqttTopic != "":
		return strings.ReplaceAll(mqttTopic, "/", ".")
	case tags != "":
		return topic + "." + tags
	}
	return topic
}
