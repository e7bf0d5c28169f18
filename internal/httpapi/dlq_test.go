package httpapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// TestResendDeadLetter: a dead letter goes back to its original topic
// (RETRY_TOPIC), once, with its id and a fresh reconsume count.
func TestResendDeadLetter(t *testing.T) {
	reg := NewRegistry()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	base, _ := serve(t, Config{Broker: b, Gatherer: reg, NodeID: 1})
	waitReady(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tp := range []broker.Topic{{Name: "orders", Queues: 1}, {Name: "%DLQ%g", Queues: 1}} {
		if err := b.CreateTopic(ctx, tp); err != nil {
			t.Fatal(err)
		}
	}
	dead := batch.Message{Topic: "%DLQ%g", Body: []byte("poison"), ReconsumeTimes: 17, Tags: "T",
		Properties: []batch.Property{{Key: "RETRY_TOPIC", Value: "orders"}, {Key: "ORIGIN_MESSAGE_ID", Value: "X1"}}}
	res, err := b.Produce(ctx, []broker.Message{{Message: dead, Queue: 0}, {Message: batch.Message{Topic: "%DLQ%g", Body: []byte("orphan")}, Queue: 0}})
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", base+"/api/v1/dlq/resend", `{"topic":"%DLQ%g","queue":0,"offset":0}`)
	if r.code != http.StatusOK {
		t.Fatalf("resend: %+v", r)
	}
	if got := decode[ResendDeadLetterResult](t, r); got.Topic != "orders" || got.QueueOffset != 0 {
		t.Fatalf("resend result %+v", got)
	}
	ms, _, err := b.Fetch("orders", 0, 0, broker.FetchOptions{MaxMessages: 2})
	if err != nil || len(ms) != 1 {
		t.Fatalf("orders: %d messages, %v", len(ms), err)
	}
	m := ms[0]
	props := map[string]string{}
	for k, v := range m.Properties {
		props[string(k)] = string(v)
	}
	if string(m.Body()) != "poison" || m.ID() != res[0].ID || m.ReconsumeTimes() != 0 || string(m.Tags()) != "T" ||
		props["RETRY_TOPIC"] != "" || props["ORIGIN_MESSAGE_ID"] != "X1" {
		t.Fatalf("resent message %q id %x reconsume %d props %v", m.Body(), m.ID(), m.ReconsumeTimes(), props)
	}
	m.Release()
	for _, c := range []struct {
		body string
		code int
	}{
		{`{"topic":"%DLQ%g","queue":0,"offset":0}`, http.StatusConflict},   // resent already
		{`{"topic":"%DLQ%g","queue":0,"offset":1}`, http.StatusBadRequest}, // no origin
		{`{"topic":"%DLQ%g","queue":0,"offset":9}`, http.StatusNotFound},
		{`{"topic":"%DLQ%none","queue":0,"offset":0}`, http.StatusNotFound},
		{`{"topic":"%DLQ%g","offset":"x"}`, http.StatusBadRequest},
	} {
		if r := do(t, "POST", base+"/api/v1/dlq/resend", c.body); r.code != c.code {
			t.Errorf("%s: %d %s, want %d", c.body, r.code, r.body, c.code)
		}
	}
}
