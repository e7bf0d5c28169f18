package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/gateway/amqp"
	"github.com/conflux-mq/conflux/gateway/mqtt"
)

// TestMQTTToAMQP: the AMQP view of the shared address space (docs/architecture.md). An AMQP queue bound to amq.topic
// with "site1.*.temp" receives a paho.golang (MQTT 5) publish to
// site1/dev42/temp, with routing key site1.dev42.temp, the MQTT user
// property as a header and the message id as message-id; site1/dev42/hum
// does not match.
func TestMQTTToAMQP(t *testing.T) {
	if testing.Short() {
		t.Skip("runs paho and amqp091-go against an in-process broker")
	}
	b := inProcessBroker(t)
	mqttLn, amqpLn := localListener(t), localListener(t)
	ms, err := mqtt.New(mqtt.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := ms.Start(mqttLn, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ms.Close() })
	as, err := amqp.New(amqp.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Serve(amqpLn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = as.Close() })

	ac, err := amqp091.Dial("amqp://guest:guest@" + amqpLn.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ch, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("temps", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("temps", "site1.*.temp", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	in, err := ch.Consume("temps", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := net.Dial("tcp", mqttLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "dev42"})
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "dev42", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Disconnect(&paho.Disconnect{}) }()
	for _, p := range []struct{ topic, body string }{{"site1/dev42/hum", "55%"}, {"site1/dev42/temp", "21.5"}} {
		if _, err := pc.Publish(ctx, &paho.Publish{Topic: p.topic, QoS: 1, Payload: []byte(p.body),
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "unit", Value: "C"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case d := <-in:
		if string(d.Body) != "21.5" || d.RoutingKey != "site1.dev42.temp" || d.Exchange != "amq.topic" ||
			d.Headers["unit"] != "C" || d.Headers[mqtt.PropTopic] != "site1/dev42/temp" || len(d.MessageId) != 32 {
			t.Fatalf("delivery: body %q key %q exchange %q headers %v message-id %q", d.Body, d.RoutingKey, d.Exchange, d.Headers, d.MessageId)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the AMQP consumer got nothing")
	}
	// The humidity reading matched nothing: the queue is empty now.
	if q, err := ch.QueueDeclarePassive("temps", true, false, false, false, nil); err != nil || q.Messages != 0 {
		t.Fatalf("queue after the one delivery: %+v %v", q, err)
	}
}
