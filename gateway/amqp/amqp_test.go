package amqp

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestPublishConsumeWithConfirms: a durable queue on the default
// exchange; confirmed publishes (acked only once committed) arrive in
// order with their properties and headers unchanged, and an acked
// message is not delivered again.
func TestPublishConsumeWithConfirms(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)
	ch := openCh(t, c)
	q, err := ch.QueueDeclare("orders", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != "orders" || q.Messages != 0 {
		t.Fatalf("declare-ok %+v", q)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const total = 300
	headers := amqp091.Table{"i32": int32(-7), "u": uint16(9), "l": int64(1 << 40), "s": "text", "t": true,
		"f": 1.5, "x": []byte{0, 1, 2}, "nested": amqp091.Table{"a": []any{int32(1), "b"}},
		"d": amqp091.Decimal{Scale: 2, Value: 12345}, "ts": time.Unix(1700000000, 0).UTC()}
	var confs []*amqp091.DeferredConfirmation
	for i := range total {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx(t), "", "orders", false, false, amqp091.Publishing{
			ContentType: "text/plain", DeliveryMode: amqp091.Persistent, Priority: 3, CorrelationId: "c1",
			ReplyTo: "r", Expiration: "60000", MessageId: fmt.Sprint("m-", i), Timestamp: time.Unix(1600000000, 0),
			Type: "t", AppId: "app", Headers: headers, Body: []byte(fmt.Sprint("msg-", i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, dc)
	}
	for i, dc := range confs {
		ok, err := dc.WaitContext(ctx(t))
		if err != nil || !ok {
			t.Fatalf("publish %d: confirmed %v, err %v", i, ok, err)
		}
	}
	// Confirmed means stored: the declare now counts them all.
	q, err = ch.QueueDeclarePassive("orders", true, false, false, false, nil)
	if err != nil || q.Messages != total {
		t.Fatalf("passive declare: %+v, %v", q, err)
	}
	cons := openCh(t, c)
	if err := cons.Qos(50, 0, false); err != nil {
		t.Fatal(err)
	}
	in, err := cons.Consume("orders", "c1", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	got.run(in, true)
	ds := got.waitN(t, total)
	for i, d := range ds {
		if string(d.Body) != fmt.Sprint("msg-", i) || d.MessageId != fmt.Sprint("m-", i) || d.Redelivered {
			t.Fatalf("delivery %d: body %q id %q redelivered %v", i, d.Body, d.MessageId, d.Redelivered)
		}
		if d.ContentType != "text/plain" || d.DeliveryMode != 2 || d.Priority != 3 || d.CorrelationId != "c1" ||
			d.ReplyTo != "r" || d.Expiration != "60000" || !d.Timestamp.Equal(time.Unix(1600000000, 0)) ||
			d.Type != "t" || d.AppId != "app" || d.ConsumerTag != "c1" || d.RoutingKey != "orders" || d.Exchange != "" {
			t.Fatalf("delivery %d properties: %+v", i, d)
		}
		if fmt.Sprint(d.Headers) != fmt.Sprint(headers) {
			t.Fatalf("headers changed:\n got %v\nwant %v", d.Headers, headers)
		}
	}
	waitFor(t, 10*time.Second, "the acks settled", func() bool {
		r, _ := n.b.ReadyCount(queueTopic("/", "orders"))
		st, _ := n.b.SubscriptionState(queueTopic("/", "orders"))
		return r == 0 && st.Floor == total
	})
	if err := cons.Cancel("c1", false); err != nil {
		t.Fatal(err)
	}
	// Nothing more: a get finds the queue empty.
	if _, ok, err := cons.Get("orders", false); err != nil || ok {
		t.Fatalf("get after acking everything: ok %v err %v", ok, err)
	}
}

// TestExchangesRoute: direct, fanout, topic and headers exchanges, an
// exchange-to-exchange binding, and one stored message reaching several
// queues; an unroutable mandatory publish comes back as basic.return
// before its confirm.
func TestExchangesRoute(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)
	ch := openCh(t, c)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"qd", "qf1", "qf2", "qt", "qh", "qe"} {
		_, err := ch.QueueDeclare(q, false, false, false, false, nil)
		must(err)
	}
	must(ch.ExchangeDeclare("xd", "direct", false, false, false, false, nil))
	must(ch.ExchangeDeclare("xf", "fanout", false, false, false, false, nil))
	must(ch.ExchangeDeclare("xt", "topic", false, false, false, false, nil))
	must(ch.ExchangeDeclare("xh", "headers", false, false, false, false, nil))
	must(ch.ExchangeDeclare("xe", "fanout", false, false, false, false, nil))
	must(ch.QueueBind("qd", "k1", "xd", false, nil))
	must(ch.QueueBind("qf1", "", "xf", false, nil))
	must(ch.QueueBind("qf2", "", "xf", false, nil))
	must(ch.QueueBind("qt", "site1.*.temp", "xt", false, nil))
	must(ch.QueueBind("qt", "alarm.#", "xt", false, nil))
	must(ch.QueueBind("qh", "", "xh", false, amqp091.Table{"x-match": "all", "kind": "a", "n": int32(1)}))
	must(ch.ExchangeBind("xe", "", "xf", false, nil)) // xf → xe → qe
	must(ch.QueueBind("qe", "", "xe", false, nil))
	must(ch.Confirm(false))
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1))
	pub := func(x, key string, mandatory bool, h amqp091.Table, body string) {
		t.Helper()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx(t), x, key, mandatory, false, amqp091.Publishing{Headers: h, Body: []byte(body)})
		must(err)
		if ok, err := dc.WaitContext(ctx(t)); !ok || err != nil {
			t.Fatalf("publish %q not confirmed: %v", body, err)
		}
	}
	pub("xd", "k1", false, nil, "direct")
	pub("xd", "k2", false, nil, "direct-miss")
	pub("xf", "", false, nil, "fanout")
	pub("xt", "site1.dev42.temp", false, nil, "topic1")
	pub("xt", "site1.dev42.hum", false, nil, "topic-miss")
	pub("xt", "alarm", false, nil, "topic2")
	pub("xh", "", false, amqp091.Table{"kind": "a", "n": int64(1), "other": "x"}, "headers")
	pub("xh", "", false, amqp091.Table{"kind": "a"}, "headers-miss")
	pub("xd", "nobody", true, nil, "returned")
	select {
	case r := <-returns:
		if r.ReplyCode != 312 || string(r.Body) != "returned" || r.RoutingKey != "nobody" {
			t.Fatalf("return: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no basic.return for the unroutable mandatory publish")
	}
	want := map[string][]string{"qd": {"direct"}, "qf1": {"fanout"}, "qf2": {"fanout"}, "qt": {"topic1", "topic2"},
		"qh": {"headers"}, "qe": {"fanout"}}
	for q, bodies := range want {
		var got []string
		for {
			d, ok, err := ch.Get(q, true)
			must(err)
			if !ok {
				break
			}
			got = append(got, string(d.Body))
		}
		if fmt.Sprint(got) != fmt.Sprint(bodies) {
			t.Fatalf("queue %s holds %v, want %v", q, got, bodies)
		}
	}
}

// TestRequeueAndRedelivery: nack with requeue and a channel closed with
// unacked deliveries both bring messages back, marked redelivered; reject
// without requeue drops.
func TestRequeueAndRedelivery(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("work", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := ch.PublishWithContext(ctx(t), "", "work", false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "3 ready", func() bool { r, _ := n.b.ReadyCount(queueTopic("/", "work")); return r == 3 })
	d0, ok, err := ch.Get("work", false)
	if err != nil || !ok || string(d0.Body) != "0" || d0.Redelivered {
		t.Fatalf("get: %v %v %q %v", ok, err, d0.Body, d0.Redelivered)
	}
	if err := d0.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	d0, ok, err = ch.Get("work", false)
	if err != nil || !ok || string(d0.Body) != "0" || !d0.Redelivered {
		t.Fatalf("after requeue: %v %v %q redelivered %v", ok, err, d0.Body, d0.Redelivered)
	}
	if err := d0.Reject(false); err != nil { // dropped: no dead-letter exchange
		t.Fatal(err)
	}
	// Two deliveries left unacked when their channel closes come back.
	ch2 := openCh(t, c)
	for range 2 {
		if _, ok, err := ch2.Get("work", false); err != nil || !ok {
			t.Fatalf("get: %v %v", ok, err)
		}
	}
	if err := ch2.Close(); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for range 2 {
		d, ok, err := ch.Get("work", false)
		if err != nil || !ok || !d.Redelivered {
			t.Fatalf("after channel close: ok %v err %v", ok, err)
		}
		bodies = append(bodies, string(d.Body))
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(bodies) != "[1 2]" {
		t.Fatalf("redelivered %v", bodies)
	}
	if _, ok, _ := ch.Get("work", false); ok {
		t.Fatal("the rejected message came back")
	}
}

// TestErrors: the protocol's own errors, and the connection or channel
// goes on where RabbitMQ's would.
func TestErrors(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)

	ch := openCh(t, c)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
	if e, ok := err.(*amqp091.Error); !ok || e.Code != 404 {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
	if e := closeErr(t, closed); e.Code != 404 {
		t.Fatalf("close %v", e)
	}

	ch = openCh(t, c)
	if _, err := ch.QueueDeclare("q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclare("q", false, false, false, false, nil)
	if e, ok := err.(*amqp091.Error); !ok || e.Code != 406 {
		t.Fatalf("inequivalent redeclare: %v", err)
	}

	ch = openCh(t, c)
	closed = ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.PublishWithContext(ctx(t), "no-such-exchange", "k", false, false, amqp091.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if e := closeErr(t, closed); e.Code != 404 {
		t.Fatalf("publish to a missing exchange: %v", e)
	}

	ch = openCh(t, c)
	closed = ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.Ack(42, false); err != nil {
		t.Fatal(err)
	}
	if e := closeErr(t, closed); e.Code != 406 {
		t.Fatalf("ack of an unknown tag: %v", e)
	}

	ch = openCh(t, c)
	if err := ch.ExchangeDeclare("amq.mine", "direct", false, false, false, false, nil); err == nil {
		t.Fatal("declared an amq. exchange")
	} else if e, ok := err.(*amqp091.Error); !ok || e.Code != 403 {
		t.Fatalf("amq. exchange: %v", err)
	}

	// The connection survived all of that.
	ch = openCh(t, c)
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
	// Another connection may not touch an exclusive queue.
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := openCh(t, dial(t, n.url))
	if _, err := other.Consume(q.Name, "", false, false, false, false, nil); err == nil {
		t.Fatal("consumed another connection's exclusive queue")
	} else if e, ok := err.(*amqp091.Error); !ok || e.Code != 405 {
		t.Fatalf("exclusive queue from another connection: %v", err)
	}
	// The exclusive queue goes with its connection.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the exclusive queue deleted", func() bool {
		_, ok := n.srv.topo.get().queue("/", q.Name)
		return !ok
	})
}
