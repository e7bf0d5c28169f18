package amqp

import (
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

func publishN(t *testing.T, ch *amqp091.Channel, exchange, key string, n int, prefix string) {
	t.Helper()
	for i := range n {
		if err := ch.PublishWithContext(ctx(t), exchange, key, false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(prefix, i))}); err != nil {
			t.Fatal(err)
		}
	}
}

func waitReady(t *testing.T, n *node, queue string, want uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d ready in %s", want, queue), func() bool {
		r, _ := n.b.ReadyCount(queueTopic("/", queue))
		return r == want
	})
}

// TestDeadLetterExchange: a rejected message goes through the queue's
// x-dead-letter-exchange with an x-death array, as amqp091-go's own
// integration test expects.
func TestDeadLetterExchange(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if err := ch.ExchangeDeclare("dlx", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("dead", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("dead", "", "dlx", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("live", true, false, false, false, amqp091.Table{"x-dead-letter-exchange": "dlx"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx(t), "", "live", false, false, amqp091.Publishing{Body: []byte("poison"),
		Expiration: "100000", Headers: amqp091.Table{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "live", 1)
	d, ok, err := ch.Get("live", false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "dead", 1)
	dd, ok, err := ch.Get("dead", true)
	if err != nil || !ok || string(dd.Body) != "poison" {
		t.Fatalf("dead-lettered: %v %v %q", ok, err, dd.Body)
	}
	deaths, ok := dd.Headers["x-death"].([]any)
	if !ok || len(deaths) != 1 {
		t.Fatalf("x-death: %#v", dd.Headers["x-death"])
	}
	death := deaths[0].(amqp091.Table)
	if death["queue"] != "live" || death["reason"] != "rejected" || death["count"] != int64(1) ||
		death["original-expiration"] != "100000" || dd.Expiration != "" || dd.Headers["k"] != "v" ||
		dd.Headers["x-first-death-reason"] != "rejected" {
		t.Fatalf("dead-letter headers: %#v, expiration %q", dd.Headers, dd.Expiration)
	}
	waitReady(t, n, "live", 0)
}

// TestPrefetch: basic.qos bounds the unacked deliveries of a consumer;
// each ack lets one more through.
func TestPrefetch(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("p", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", "p", 10, "m")
	waitReady(t, n, "p", 10)
	cons := openCh(t, c)
	if err := cons.Qos(3, 0, false); err != nil {
		t.Fatal(err)
	}
	in, err := cons.Consume("p", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	got.run(in, false)
	ds := got.waitN(t, 3)
	// Three out, seven ready: the server holds the rest back.
	waitReady(t, n, "p", 7)
	if got.len() != 3 {
		t.Fatalf("%d deliveries with prefetch 3", got.len())
	}
	if err := ds[0].Ack(false); err != nil {
		t.Fatal(err)
	}
	got.waitN(t, 4)
	waitReady(t, n, "p", 6)
	if got.len() != 4 {
		t.Fatalf("%d deliveries after one ack", got.len())
	}
	// Multiple ack of everything so far lets the rest through, in order.
	all := got.all()
	if err := all[3].Ack(true); err != nil {
		t.Fatal(err)
	}
	ds = got.waitN(t, 7)
	for i, d := range ds {
		if string(d.Body) != fmt.Sprint("m", i) {
			t.Fatalf("delivery %d is %q", i, d.Body)
		}
	}
}

// TestTransactions: tx publishes are stored at commit, not before, and
// a rollback drops them; acks in a transaction settle at commit.
func TestTransactions(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if _, err := ch.QueueDeclare("tx", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", "tx", 2, "rolled-back-")
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", "tx", 3, "kept-")
	if r, _ := n.b.ReadyCount(queueTopic("/", "tx")); r != 0 {
		t.Fatalf("%d messages visible before the commit", r)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	// Committed means stored: no waiting needed.
	if r, _ := n.b.ReadyCount(queueTopic("/", "tx")); r != 3 {
		t.Fatalf("%d ready after the commit, want 3", r)
	}
	d, ok, err := ch.Get("tx", false)
	if err != nil || !ok || string(d.Body) != "kept-0" {
		t.Fatalf("get: %v %v %q", ok, err, d.Body)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxRollback(); err != nil { // the ack is undone: still unacked
		t.Fatal(err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the ack settled", func() bool {
		st, _ := n.b.SubscriptionState(queueTopic("/", "tx"))
		return st.Floor == 1
	})
}

// TestQueueLifecycle: purge drops ready messages, delete cancels the
// consumers (basic.cancel to the client), auto-delete goes with the last
// consumer.
func TestQueueLifecycle(t *testing.T) {
	n := startNode(t, nil)
	c := dial(t, n.url)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("life", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, "", "life", 5, "m")
	waitReady(t, n, "life", 5)
	if got, err := ch.QueuePurge("life", false); err != nil || got != 5 {
		t.Fatalf("purge: %d %v", got, err)
	}
	if _, ok, _ := ch.Get("life", true); ok {
		t.Fatal("a purged message was delivered")
	}
	cons := openCh(t, c)
	cancels := cons.NotifyCancel(make(chan string, 1))
	if _, err := cons.Consume("life", "watcher", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete("life", false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case tag := <-cancels:
		if tag != "watcher" {
			t.Fatalf("cancelled %q", tag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no basic.cancel after the queue was deleted")
	}
	// auto-delete: the queue lives while it has a consumer.
	if _, err := ch.QueueDeclare("auto", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Consume("auto", "a1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := cons.Cancel("a1", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.srv.topo.get().queue("/", "auto"); ok {
		t.Fatal("auto-delete queue still there after its last consumer left")
	}
}

// TestGetSeesEarlierPublish: a channel's methods run in order, so a
// basic.get right after a publish on the same channel finds it (the
// publish is stored in the background; amqp091-go's TestIntegrationGetOk
// caught this).
func TestGetSeesEarlierPublish(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if _, err := ch.QueueDeclare("ordered", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		body := fmt.Sprint("m", i)
		if err := ch.PublishWithContext(ctx(t), "", "ordered", false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		d, ok, err := ch.Get("ordered", true)
		if err != nil || !ok || string(d.Body) != body {
			t.Fatalf("get right after publish %d: ok %v err %v body %q", i, ok, err, d.Body)
		}
	}
}

// TestMessageTTL: a message past its time to live (the queue's
// x-message-ttl or its own expiration, the smaller) is not delivered; it
// goes through the dead-letter exchange with reason "expired". A bad
// expiration is refused with 406.
func TestMessageTTL(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if _, err := ch.QueueDeclare("expired", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("short", false, false, false, false, amqp091.Table{
		"x-message-ttl": int32(60000), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "expired"}); err != nil {
		t.Fatal(err)
	}
	// The message's own 50 ms beats the queue's minute.
	if err := ch.PublishWithContext(ctx(t), "", "short", false, false, amqp091.Publishing{Body: []byte("brief"), Expiration: "50"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx(t), "", "short", false, false, amqp091.Publishing{Body: []byte("lasting")}); err != nil {
		t.Fatal(err)
	}
	// Until it expires a get returns it (handed back each time); then
	// the head is the lasting one.
	waitFor(t, 10*time.Second, "the 50 ms message to expire", func() bool {
		d, ok, err := ch.Get("short", false)
		if err != nil {
			t.Fatal(err)
		}
		if ok && string(d.Body) == "lasting" {
			return true
		}
		if ok {
			_ = d.Nack(false, true)
		}
		return false
	})
	d, ok, err := ch.Get("expired", true)
	if err != nil || !ok || string(d.Body) != "brief" {
		t.Fatalf("dead-lettered: ok %v err %v body %q", ok, err, d.Body)
	}
	death := d.Headers["x-death"].([]any)[0].(amqp091.Table)
	if death["reason"] != "expired" || death["queue"] != "short" || death["original-expiration"] != "50" {
		t.Fatalf("x-death %v", death)
	}
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.PublishWithContext(ctx(t), "", "short", false, false, amqp091.Publishing{Body: []byte("x"), Expiration: "soon"}); err != nil {
		t.Fatal(err)
	}
	if e := closeErr(t, closed); e.Code != 406 {
		t.Fatalf("bad expiration: %v", e)
	}
}

// TestOtherDoorsViaAmqTopic: a message stored by another door (here
// straight through the core, as the RocketMQ door does: topic "orders",
// tag "paid") reaches a queue bound to amq.topic with "orders.#", once,
// as routing key "orders.paid"; a transactional half message does not,
// until it is committed.
func TestOtherDoorsViaAmqTopic(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if _, err := ch.QueueDeclare("rmq-view", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("rmq-view", "orders.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	m := broker.Message{Queue: -1}
	m.Topic, m.Tags, m.Body = "orders", "paid", []byte("order 7")
	m.Properties = []batch.Property{{Key: "KEYS", Value: "7"}}
	half := broker.Message{Queue: -1, Half: true}
	half.Topic, half.Tags, half.Body = "orders", "pending", []byte("not yet")
	res, err := n.b.Produce(ctx(t), []broker.Message{m, half})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "rmq-view", 1)
	d, ok, err := ch.Get("rmq-view", true)
	if err != nil || !ok || string(d.Body) != "order 7" || d.RoutingKey != "orders.paid" || d.Exchange != "amq.topic" {
		t.Fatalf("get: ok %v err %v body %q key %q", ok, err, d.Body, d.RoutingKey)
	}
	if err := n.b.EndTransaction(ctx(t), res[1].PhysOffset, true); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "rmq-view", 1)
	d, ok, err = ch.Get("rmq-view", true)
	if err != nil || !ok || string(d.Body) != "not yet" || d.RoutingKey != "orders.pending" {
		t.Fatalf("committed half message: ok %v err %v body %q key %q", ok, err, d.Body, d.RoutingKey)
	}
}

// TestDelayedExchange: RabbitMQ's x-delayed-message exchange on the
// core's timers. A publish with x-delay is confirmed but invisible until
// due, then routed by x-delayed-type against the bindings of that moment
// (a queue bound after the publish gets it too); without x-delay it is
// routed at once.
func TestDelayedExchange(t *testing.T) {
	n := startNode(t, nil)
	ch := openCh(t, dial(t, n.url))
	if err := ch.ExchangeDeclare("later", "x-delayed-message", true, false, false, false,
		amqp091.Table{"x-delayed-type": "direct"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"early-bound", "late-bound"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.QueueBind("early-bound", "k", "later", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publish := func(body string, h amqp091.Table) {
		t.Helper()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx(t), "later", "k", false, false, amqp091.Publishing{Body: []byte(body), Headers: h})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx(t)); !ok || err != nil {
			t.Fatalf("%s not confirmed: %v", body, err)
		}
	}
	publish("delayed", amqp091.Table{"x-delay": int32(5000)}) // long enough that the checks below come first
	publish("now", nil)
	// Confirmed, but only the undelayed one is routed yet.
	waitReady(t, n, "early-bound", 1)
	d, ok, err := ch.Get("early-bound", true)
	if err != nil || !ok || string(d.Body) != "now" {
		t.Fatalf("before the delay: ok %v err %v body %q", ok, err, d.Body)
	}
	if err := ch.QueueBind("late-bound", "k", "later", false, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := n.b.ReadyCount(queueTopic("/", "late-bound")); r != 0 {
		t.Fatalf("%d messages in late-bound before the delay ran out", r)
	}
	for _, q := range []string{"early-bound", "late-bound"} {
		waitReady(t, n, q, 1)
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok || string(d.Body) != "delayed" || d.Headers["x-delay"] != int32(5000) {
			t.Fatalf("%s after the delay: ok %v err %v body %q headers %v", q, ok, err, d.Body, d.Headers)
		}
	}
}
