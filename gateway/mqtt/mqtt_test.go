package mqtt

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// TestPublishSubscribeQoS: paho 3.1.1 clients over TCP; every QoS, in
// order, with many publishes in flight; the messages are in the log
// under core topic "site1", tag = second level, MQTT_TOPIC = full topic.
func TestPublishSubscribeQoS(t *testing.T) {
	n := startNode(t, nil)
	sub := v3(t, n.addr, "sub", true, nil)
	var in inbox
	wait(t, sub.Subscribe("site1/#", 2, in.handler), "subscribe")
	pub := v3(t, n.addr, "pub", true, nil)
	const per = 200
	for qos := byte(0); qos <= 2; qos++ {
		var toks []interface{ Wait() bool }
		for i := range per {
			tok := pub.Publish(fmt.Sprintf("site1/dev42/q%d", qos), qos, false, fmt.Sprintf("%d-%d", qos, i))
			toks = append(toks, tok)
		}
		for _, tok := range toks { // all in flight at once: acked batch by batch
			tok.Wait()
		}
	}
	in.waitN(t, 3*per, "all QoS")
	got := in.payloads()
	for qos := 0; qos <= 2; qos++ { // per topic, publish order
		var seq []string
		for _, p := range got {
			if p[0] == byte('0'+qos) {
				seq = append(seq, p)
			}
		}
		for i := range per {
			if seq[i] != fmt.Sprintf("%d-%d", qos, i) {
				t.Fatalf("qos %d: message %d is %q", qos, i, seq[i])
			}
		}
	}
	// The log has them: a RocketMQ-side reader sees topic, tag, MQTT_TOPIC.
	total := 0
	tp, ok := n.b.Topic("site1")
	if !ok {
		t.Fatal("core topic site1 not created")
	}
	for q := range tp.Queues {
		msgs, _, err := n.b.Fetch("site1", q, 0, broker.FetchOptions{MaxMessages: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			props := map[string]string{}
			for k, v := range m.Properties {
				props[string(k)] = string(v)
			}
			if string(m.Tags()) != "dev42" || !slices.Contains([]string{"site1/dev42/q0", "site1/dev42/q1", "site1/dev42/q2"}, props[PropTopic]) {
				t.Fatalf("stored message: tags %q, props %v", m.Tags(), props)
			}
			m.Release()
			total++
		}
	}
	if total != 3*per {
		t.Fatalf("%d messages in the log, want %d", total, 3*per)
	}
}

// TestOtherProtocolToMQTT: a message produced straight to the core
// (as the RocketMQ door does) without MQTT_TOPIC reaches "site1/#" as
// "site1/<tag>", and a RocketMQ property shows as a user property only
// when it is not a system one.
func TestOtherProtocolToMQTT(t *testing.T) {
	n := startNode(t, nil)
	sub := v3(t, n.addr, "sub", true, nil)
	var in inbox
	wait(t, sub.Subscribe("site1/#", 1, in.handler), "subscribe")
	m := broker.Message{Queue: -1}
	m.Topic, m.Tags, m.Body = "site1", "alarm", []byte("from rocketmq")
	m.Properties = []batch.Property{{Key: "KEYS", Value: "k1"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.b.Produce(ctx, []broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	in.waitN(t, 1, "the RocketMQ-side message")
	in.mu.Lock()
	got := in.msgs[0]
	in.mu.Unlock()
	if got.Topic() != "site1/alarm" || string(got.Payload()) != "from rocketmq" || got.Qos() != 1 {
		t.Fatalf("got topic %q payload %q qos %d", got.Topic(), got.Payload(), got.Qos())
	}
}
