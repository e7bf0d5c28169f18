package amqp

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// fakeDisk is a free-space probe a test can turn, as core/broker's tests
// have it.
type fakeDisk struct{ free atomic.Uint64 }

func (d *fakeDisk) FreeBytes(string) (uint64, error) { return d.free.Load(), nil }

// Free space on either side of the 100 MB limit startDiskNode sets.
const (
	diskLow  = 50e6
	diskRoom = 1e9
)

// startDiskNode starts a node whose disk alarm checks the returned probe
// against a 100 MB limit every 10ms; it starts with room.
func startDiskNode(t *testing.T) (*node, *fakeDisk) {
	t.Helper()
	d := &fakeDisk{}
	d.free.Store(diskRoom)
	n := startNodeWith(t, func(c *broker.Config) {
		c.Disk = broker.DiskConfig{FreeLimitBytes: 100e6, CheckInterval: 10 * time.Millisecond, FreeBytes: d.FreeBytes}
	}, nil)
	return n, d
}

func nextBlocking(t *testing.T, c <-chan amqp091.Blocking) amqp091.Blocking {
	t.Helper()
	select {
	case b := <-c:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.blocked or unblocked")
		return amqp091.Blocking{}
	}
}

// TestDiskAlarmBlocksPublishers: under the disk alarm a connection is told
// connection.blocked with the reason; a confirming publisher gets nacks,
// in tag order, for what it publishes; a publisher without confirms has
// its channel closed with 506, a tx.commit fails with 506; a consumer
// goes on receiving and acking, a declare works. When space is back the
// connection is unblocked and the same channel is acked again, and the
// queue holds exactly what was confirmed, in order.
func TestDiskAlarmBlocksPublishers(t *testing.T) {
	n, disk := startDiskNode(t)
	conn := dial(t, n.url)
	if caps, _ := conn.Properties["capabilities"].(amqp091.Table); caps["connection.blocked"] != true {
		t.Fatalf("server capabilities %v: connection.blocked not advertised", caps)
	}
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	pub := openCh(t, conn)
	if _, err := pub.QueueDeclare("alarm.q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pub.NotifyPublish(make(chan amqp091.Confirmation, 64))
	publish := func(ch *amqp091.Channel, body string) {
		t.Helper()
		if err := ch.Publish("", "alarm.q", false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			t.Fatalf("publish %s: %v", body, err)
		}
	}
	expect := func(from, to uint64, ack bool) {
		t.Helper()
		for tag := from; tag <= to; tag++ {
			select {
			case c := <-confirms:
				if c.DeliveryTag != tag || c.Ack != ack {
					t.Fatalf("confirm %+v, want tag %d ack %v", c, tag, ack)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no confirm for tag %d", tag)
			}
		}
	}
	for i := range 10 {
		publish(pub, fmt.Sprint("before-", i))
	}
	expect(1, 10, true)

	disk.free.Store(diskLow)
	if b := nextBlocking(t, blocked); !b.Active || b.Reason != "low on disk space (disk alarm on node 1)" {
		t.Fatalf("under the alarm: %+v", b)
	}
	for i := range 5 {
		publish(pub, fmt.Sprint("refused-", i))
	}
	expect(11, 15, false)

	// Declares, consumers and acks go on (prefetch 3: ten messages need acks).
	if _, err := pub.QueueDeclare("alarm.declared", true, false, false, false, nil); err != nil {
		t.Fatalf("declare under the alarm: %v", err)
	}
	cons := openCh(t, conn)
	if err := cons.Qos(3, 0, false); err != nil {
		t.Fatal(err)
	}
	in, err := cons.Consume("alarm.q", "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume under the alarm: %v", err)
	}
	var got collector
	got.run(in, true)
	for i, d := range got.waitN(t, 10) {
		if string(d.Body) != fmt.Sprint("before-", i) {
			t.Fatalf("delivery %d under the alarm: %q", i, d.Body)
		}
	}
	waitFor(t, 10*time.Second, "the acks settled in the log under the alarm", func() bool {
		st, ok := n.b.SubscriptionState(queueTopic("/", "alarm.q"))
		return ok && st.Floor >= 10
	})

	// Without confirms the channel is closed: no message is dropped unsaid.
	nc := openCh(t, conn)
	ncClosed := nc.NotifyClose(make(chan *amqp091.Error, 1))
	publish(nc, "no-confirm")
	if e := closeErr(t, ncClosed); e == nil || e.Code != amqp091.ResourceError || !strings.Contains(e.Reason, "disk alarm") {
		t.Fatalf("publish without confirms under the alarm: %v, want 506 naming the disk alarm", e)
	}
	tx := openCh(t, conn)
	if err := tx.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(tx, "tx-0")
	publish(tx, "tx-1")
	var ae *amqp091.Error
	if err := tx.TxCommit(); !errors.As(err, &ae) || ae.Code != amqp091.ResourceError {
		t.Fatalf("tx.commit under the alarm: %v, want 506", err)
	}
	if conn.IsClosed() {
		t.Fatal("the connection closed under the alarm")
	}

	disk.free.Store(diskRoom)
	if b := nextBlocking(t, blocked); b.Active {
		t.Fatalf("after the alarm: %+v, want unblocked", b)
	}
	for i := range 5 {
		publish(pub, fmt.Sprint("after-", i))
	}
	expect(16, 20, true)
	nc = openCh(t, conn)
	publish(nc, "after-no-confirm")
	if _, err := nc.QueueDeclarePassive("alarm.q", true, false, false, false, nil); err != nil {
		t.Fatal(err) // and the publish before it is stored
	}
	tx = openCh(t, conn)
	if err := tx.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(tx, "after-tx")
	if err := tx.TxCommit(); err != nil {
		t.Fatalf("tx.commit after the alarm: %v", err)
	}

	want := []string{"after-0", "after-1", "after-2", "after-3", "after-4", "after-no-confirm", "after-tx"}
	got.waitN(t, 10+len(want))
	if err := cons.Close(); err != nil { // no more deliveries: the count is final
		t.Fatal(err)
	}
	ds := got.all()
	if len(ds) != 10+len(want) {
		t.Fatalf("%d deliveries, want %d", len(ds), 10+len(want))
	}
	for i, w := range want {
		if b := string(ds[10+i].Body); b != w {
			t.Fatalf("delivery %d after the alarm: %q, want %q", 10+i, b, w)
		}
	}
	q, err := pub.QueueDeclarePassive("alarm.q", true, false, false, false, nil)
	if err != nil || q.Messages != 0 {
		t.Fatalf("left in the queue: %+v, %v", q, err)
	}
	if len(blocked) != 0 {
		t.Fatalf("more than one blocked and unblocked in the episode: %+v", <-blocked)
	}
}

// TestDiskAlarmConfirmsUnderLoad: the alarm turns on and off under a
// publisher that keeps 64 confirms outstanding, so publishes race it
// between their arrival and their Produce. Every tag is answered once, in
// order: acks, then only nacks while the alarm is on, then acks again;
// the queue then holds exactly the acknowledged messages, in order.
func TestDiskAlarmConfirmsUnderLoad(t *testing.T) {
	n, disk := startDiskNode(t)
	conn := dial(t, n.url)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("alarm.load", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 128))
	tokens := make(chan struct{}, 64) // outstanding confirms
	stop := make(chan struct{})
	published := make(chan uint64, 1) // how many, once stopped
	go func() {
		var tag uint64
		defer func() { published <- tag }()
		for {
			select {
			case tokens <- struct{}{}:
			case <-stop:
				return
			}
			if ch.Publish("", "alarm.load", false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(tag + 1))}) != nil {
				return
			}
			tag++
		}
	}()

	var acked []string
	var last uint64
	next := func() amqp091.Confirmation {
		t.Helper()
		select {
		case c := <-confirms:
			<-tokens
			if c.DeliveryTag != last+1 {
				t.Fatalf("confirm for tag %d after %d", c.DeliveryTag, last)
			}
			last = c.DeliveryTag
			if c.Ack {
				acked = append(acked, fmt.Sprint(c.DeliveryTag))
			}
			return c
		case <-time.After(15 * time.Second):
			t.Fatalf("no confirm after tag %d", last)
			return amqp091.Confirmation{}
		}
	}
	for range 200 {
		if c := next(); !c.Ack {
			t.Fatalf("nack for tag %d before the alarm", c.DeliveryTag)
		}
	}
	disk.free.Store(diskLow)
	for c := next(); c.Ack; c = next() { // what was on its way is stored
	}
	for range 200 {
		if c := next(); c.Ack {
			t.Fatalf("ack for tag %d under the alarm", c.DeliveryTag)
		}
	}
	disk.free.Store(diskRoom)
	for c := next(); !c.Ack; c = next() {
	}
	for range 200 {
		if c := next(); !c.Ack {
			t.Fatalf("nack for tag %d after the alarm", c.DeliveryTag)
		}
	}
	close(stop)
	var total uint64
	select {
	case total = <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher did not stop")
	}
	for last < total {
		if c := next(); !c.Ack {
			t.Fatalf("nack for tag %d after the alarm", c.DeliveryTag)
		}
	}
	cons := openCh(t, conn)
	in, err := cons.Consume("alarm.load", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	got.run(in, false)
	ds := got.waitN(t, len(acked))
	for i, d := range ds {
		if string(d.Body) != acked[i] {
			t.Fatalf("message %d: %q, want %q (the acknowledged ones, in order)", i, d.Body, acked[i])
		}
	}
	if q, err := ch.QueueDeclarePassive("alarm.load", true, false, false, false, nil); err != nil || q.Messages != 0 || got.len() != len(acked) {
		t.Fatalf("more than was acknowledged: %+v, %v, %d deliveries for %d acks", q, err, got.len(), len(acked))
	}
}

// TestDiskAlarmWithoutConfirms: a publisher without confirms that goes on
// publishing through the alarm has its channel closed with 506, and what
// was stored is a prefix of what it sent: nothing after a refused message.
func TestDiskAlarmWithoutConfirms(t *testing.T) {
	n, disk := startDiskNode(t)
	conn := dial(t, n.url)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("alarm.nc", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	sent := make(chan int, 1)
	go func() {
		i := 0
		for ch.Publish("", "alarm.nc", false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}) == nil {
			i++
		}
		sent <- i
	}()
	topic := queueTopic("/", "alarm.nc")
	waitFor(t, 10*time.Second, "messages stored", func() bool {
		c, _ := n.b.ReadyCount(topic)
		return c >= 200
	})
	disk.free.Store(diskLow)
	if e := closeErr(t, closed); e == nil || e.Code != amqp091.ResourceError || !strings.Contains(e.Reason, "disk alarm") {
		t.Fatalf("close under the alarm: %v, want 506 naming the disk alarm", e)
	}
	total := <-sent
	disk.free.Store(diskRoom)
	stored, _ := n.b.ReadyCount(topic)
	if stored == 0 || int(stored) >= total {
		t.Fatalf("%d stored of %d sent: the alarm refused nothing", stored, total)
	}
	in, err := openCh(t, conn).Consume("alarm.nc", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	got.run(in, false)
	for i, d := range got.waitN(t, int(stored)) {
		if string(d.Body) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q: the stored messages are not a prefix of those sent", i, d.Body)
		}
	}
}

// TestDiskAlarmDeadLetter: a reject without requeue on a queue with a
// dead-letter exchange goes on under the alarm: the dead letter is a copy
// of a stored message, which the alarm does not refuse (as in RabbitMQ).
func TestDiskAlarmDeadLetter(t *testing.T) {
	n, disk := startDiskNode(t)
	conn := dial(t, n.url)
	ch := openCh(t, conn)
	if err := ch.ExchangeDeclare("alarm.dlx", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("alarm.dead", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("alarm.dead", "", "alarm.dlx", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("alarm.live", true, false, false, false, amqp091.Table{"x-dead-letter-exchange": "alarm.dlx"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "alarm.live", false, false, amqp091.Publishing{Body: []byte("poison")}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "alarm.live", 1)
	disk.free.Store(diskLow)
	waitFor(t, 10*time.Second, "the alarm", func() bool { return n.b.DiskStatus().Blocked })
	d, ok, err := ch.Get("alarm.live", false)
	if err != nil || !ok {
		t.Fatalf("get under the alarm: %v %v", ok, err)
	}
	// A dead letter is a copy of a stored message: the alarm does not
	// refuse it, so the reject goes through and the channel stays open.
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "alarm.dead", 1)
	waitReady(t, n, "alarm.live", 0)
	if _, err := ch.QueueDeclarePassive("alarm.live", true, false, false, false, nil); err != nil {
		t.Fatalf("the channel after a dead-lettering reject under the alarm: %v", err)
	}
}

// nextMethod reads the raw client's next method frame.
func (c *raw) nextMethod() frame.Method {
	c.t.Helper()
	for {
		f, err := frame.ReadFrame(c.r, 1<<20)
		if err != nil {
			c.t.Fatal(err)
		}
		if f.Type == frame.TypeMethod {
			m, err := frame.DecodeMethod(f.Payload)
			if err != nil {
				c.t.Fatal(err)
			}
			return m
		}
	}
}

// TestDiskAlarmNewConnection: a connection opened while the alarm is on
// is told connection.blocked right after open-ok if its client announced
// the capability, and unblocked when the alarm clears; a client that did
// not announce it hears neither.
func TestDiskAlarmNewConnection(t *testing.T) {
	n, disk := startDiskNode(t)
	disk.free.Store(diskLow)
	waitFor(t, 10*time.Second, "the alarm", func() bool { return n.b.DiskStatus().Blocked })

	capable := dialRaw(t, n)
	capable.handshake(frame.Table{"capabilities": frame.Table{"connection.blocked": true}})
	if m, ok := capable.nextMethod().(*frame.ConnectionBlocked); !ok || m.Reason != "low on disk space (disk alarm on node 1)" {
		t.Fatalf("after open-ok under the alarm: %+v, want connection.blocked", m)
	}
	other := dialRaw(t, n)
	other.handshake(frame.Table{"capabilities": frame.Table{"connection.blocked": false}})
	other.method(1, &frame.ChannelOpen{})
	if m := other.nextMethod(); m.Name() != (&frame.ChannelOpenOk{}).Name() {
		t.Fatalf("without the capability: %s before channel.open-ok", m.Name())
	}

	disk.free.Store(diskRoom)
	if m := capable.nextMethod(); m.Name() != (&frame.ConnectionUnblocked{}).Name() {
		t.Fatalf("after the alarm: %s, want connection.unblocked", m.Name())
	}
	// Only unblocked came: the next answer is to our own request.
	other.method(1, &frame.ChannelClose{})
	capable.method(1, &frame.ChannelOpen{})
	if m := capable.nextMethod(); m.Name() != (&frame.ChannelOpenOk{}).Name() {
		t.Fatalf("capable client after unblocked: %s", m.Name())
	}
	if m := other.nextMethod(); m.Name() != (&frame.ChannelCloseOk{}).Name() {
		t.Fatalf("client without the capability after the alarm: %s", m.Name())
	}
}
