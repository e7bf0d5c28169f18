package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/rlog"
	"github.com/eclipse/paho.golang/paho"

	"github.com/conflux-mq/conflux/gateway/mqtt"
	"github.com/conflux-mq/conflux/gateway/remoting"
)

// TestMQTTToRocketMQ: one message, two protocols. A paho.golang (MQTT 5)
// client publishes to site1/dev42/temp with a user property; a
// rocketmq-client-go push consumer of topic site1 with tag dev42 receives
// it, with MQTT_TOPIC and the user property as message properties.
func TestMQTTToRocketMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("runs rocketmq-client-go and paho against an in-process broker")
	}
	b := inProcessBroker(t)
	nsLn, brLn, ln := localListener(t), localListener(t), localListener(t)
	nsAddr := nsLn.Addr().String()
	rcfg := remoting.Config{Broker: b, BrokerAddr: brLn.Addr().String(), AutoCreateTopics: true}
	ns, br := remoting.NewNameServer(rcfg), remoting.NewBroker(rcfg)
	go func() { _ = ns.Serve(nsLn) }()
	go func() { _ = br.Serve(brLn) }()
	t.Cleanup(func() {
		_ = ns.Close()
		_ = br.Close()
	})
	s, err := mqtt.New(mqtt.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "dev42"})
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "dev42", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Disconnect(&paho.Disconnect{}) }()
	publish := func(body string) {
		t.Helper()
		if _, err := pc.Publish(ctx, &paho.Publish{Topic: "site1/dev42/temp", QoS: 1, Payload: []byte(body),
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "unit", Value: "C"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	publish("first") // creates the core topic "site1"

	quietRlogOnce.Do(func() { rlog.SetLogger(quietRlog{}) })
	var mu sync.Mutex
	var got []*primitive.MessageExt
	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver([]string{nsAddr})),
		consumer.WithGroupName("cg_mqtt_view"), consumer.WithInstance("mqtt-view"),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Subscribe("site1", consumer.MessageSelector{Type: consumer.TAG, Expression: "dev42"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			got = append(got, msgs...)
			mu.Unlock()
			return consumer.ConsumeSuccess, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Shutdown() }()
	publish("second")

	deadline := time.Now().Add(45 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the RocketMQ consumer got %d of 2 messages", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range got {
		if m.Topic != "site1" || m.GetTags() != "dev42" || m.GetProperty(mqtt.PropTopic) != "site1/dev42/temp" ||
			m.GetProperty("unit") != "C" {
			t.Fatalf("message: topic %q tags %q MQTT_TOPIC %q unit %q body %q", m.Topic, m.GetTags(),
				m.GetProperty(mqtt.PropTopic), m.GetProperty("unit"), m.Body)
		}
	}
}
