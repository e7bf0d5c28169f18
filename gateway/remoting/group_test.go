package remoting

// Consumer-group tests with the real rocketmq-client-go: a clustering group
// of two members sharing a topic, broadcasting, and a broker restart in the
// middle of producing and consuming.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
)

// uniq makes group and topic names unique per run, so that client-side
// state (the broadcasting offset files under $HOME) of an earlier run
// cannot leak into this one.
func uniq(prefix string) string {
	return fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

func newProducer(t *testing.T, nsAddr, group string) rocketmq.Producer {
	t.Helper()
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver([]string{nsAddr})),
		producer.WithGroupName(group), producer.WithInstanceName(group+"-producer"),
		producer.WithSendMsgTimeout(5*time.Second), producer.WithRetry(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// sendN sends bodies prefix-from..prefix-(to-1) synchronously, retrying
// each up to deadline, and returns MsgId -> body of the acknowledged ones.
func sendN(t *testing.T, p rocketmq.Producer, topic, prefix string, from, to int, deadline time.Duration) map[string]string {
	t.Helper()
	acked := map[string]string{}
	for i := from; i < to; i++ {
		body := fmt.Sprintf("%s-%d", prefix, i)
		end := time.Now().Add(deadline)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte(body)))
			cancel()
			if err == nil && res.Status == primitive.SendOK {
				acked[res.MsgID] = body
				break
			}
			if time.Now().After(end) {
				t.Fatalf("send %s: %v %v", body, res, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return acked
}

// collector records consumed messages per member by MsgId.
type collector struct {
	mu       sync.Mutex
	byMember map[string]map[string]int // member -> MsgId -> count
	all      map[string]int            // MsgId -> count (clustering: across members)
	bodies   map[string]string
}

func newCollector() *collector {
	return &collector{byMember: map[string]map[string]int{}, all: map[string]int{}, bodies: map[string]string{}}
}

func (c *collector) handler(member string) func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
	return func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		m := c.byMember[member]
		if m == nil {
			m = map[string]int{}
			c.byMember[member] = m
		}
		for _, msg := range msgs {
			m[msg.MsgId]++
			c.all[msg.MsgId]++
			c.bodies[msg.MsgId] = string(msg.Body)
		}
		return consumer.ConsumeSuccess, nil
	}
}

func startPush(t *testing.T, nsAddr, group, instance, topic string, model consumer.MessageModel, h func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error)) rocketmq.PushConsumer {
	t.Helper()
	c := newPush(t, nsAddr, group, instance, topic, model, h)
	t.Cleanup(func() { _ = c.Shutdown() })
	return c
}

// newPush starts a push consumer that the caller shuts down.
func newPush(t *testing.T, nsAddr, group, instance, topic string, model consumer.MessageModel, h func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error)) rocketmq.PushConsumer {
	t.Helper()
	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver([]string{nsAddr})),
		consumer.WithGroupName(group), consumer.WithInstance(instance), consumer.WithConsumerModel(model),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(topic, consumer.MessageSelector{}, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

func createTopic(t *testing.T, b *broker.Broker, name string, queues uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.CreateTopic(ctx, broker.Topic{Name: name, Queues: queues}); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond every 100 ms until it holds or the deadline passes.
func waitUntil(deadline time.Duration, cond func() bool) bool {
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// TestRealClientGroupClustering: two members of one clustering group share
// an 8-queue topic; each message is consumed exactly once across them and
// both get some.
func TestRealClientGroupClustering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	e := start(t, 0)
	topic, group := uniq("GroupTopic"), uniq("cg_two")
	const n = 200
	createTopic(t, e.b, topic, 8)

	col := newCollector()
	// Both members join before anything is sent, so that the rebalance
	// splits the queues between them.
	startPush(t, e.nsAddr, group, "member-a", topic, consumer.Clustering, col.handler("a"))
	startPush(t, e.nsAddr, group, "member-b", topic, consumer.Clustering, col.handler("b"))

	p := newProducer(t, e.nsAddr, uniq("pg_two"))
	acked := sendN(t, p, topic, "m", 0, n, 20*time.Second)
	if len(acked) != n {
		t.Fatalf("%d distinct MsgIds acknowledged, want %d", len(acked), n)
	}

	ok := waitUntil(60*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.all) >= n && len(col.byMember["a"]) > 0 && len(col.byMember["b"]) > 0
	})
	// Wait a little for duplicates that would still arrive.
	time.Sleep(2 * time.Second)
	col.mu.Lock()
	defer col.mu.Unlock()
	missing := 0
	for id := range acked {
		if col.all[id] == 0 {
			missing++
		}
	}
	for id, k := range col.all {
		if k != 1 {
			t.Errorf("%s (%q) consumed %d times (a %d, b %d)", id, col.bodies[id], k, col.byMember["a"][id], col.byMember["b"][id])
		}
		if _, ok := acked[id]; !ok {
			t.Errorf("consumed %s (%q) that was never acknowledged", id, col.bodies[id])
		}
	}
	if missing > 0 || !ok {
		t.Errorf("missing %d of %d (timed out: %v)", missing, n, !ok)
	}
	t.Logf("member a consumed %d, member b %d", len(col.byMember["a"]), len(col.byMember["b"]))
	if len(col.byMember["a"]) == 0 || len(col.byMember["b"]) == 0 {
		t.Errorf("no rebalance: a %d, b %d", len(col.byMember["a"]), len(col.byMember["b"]))
	}
}

// TestRealClientGroupBroadcasting: two broadcasting consumers of one group
// each receive every message.
func TestRealClientGroupBroadcasting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	e := start(t, 0)
	topic, group := uniq("BcastTopic"), uniq("cg_bcast")
	const n = 60
	createTopic(t, e.b, topic, 4)
	// Broadcasting consumers keep their offsets in local files, under a
	// directory fixed when the client package initialises; remove this
	// group's after the consumers have shut down (cleanups run last-in
	// first-out).
	if home := os.Getenv("HOME"); home != "" && os.Getenv("rocketmq.client.localOffsetStoreDir") == "" {
		dir := filepath.Join(home, ".rocketmq_client_go", group)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
	}

	col := newCollector()
	startPush(t, e.nsAddr, group, "bcast-a", topic, consumer.BroadCasting, col.handler("a"))
	startPush(t, e.nsAddr, group, "bcast-b", topic, consumer.BroadCasting, col.handler("b"))

	p := newProducer(t, e.nsAddr, uniq("pg_bcast"))
	acked := sendN(t, p, topic, "b", 0, n, 20*time.Second)

	ok := waitUntil(60*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.byMember["a"]) >= n && len(col.byMember["b"]) >= n
	})
	time.Sleep(time.Second)
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, member := range []string{"a", "b"} {
		got := col.byMember[member]
		missing := 0
		for id := range acked {
			if got[id] == 0 {
				missing++
			}
		}
		dups := 0
		for _, k := range got {
			if k > 1 {
				dups++
			}
		}
		t.Logf("member %s: %d distinct, %d missing, %d duplicated", member, len(got), missing, dups)
		if missing > 0 || !ok {
			t.Errorf("member %s missing %d of %d", member, missing, n)
		}
		if dups > 0 {
			t.Errorf("member %s got %d messages more than once", member, dups)
		}
	}
}

// restartable is a broker with both front doors on fixed addresses that
// can be closed and reopened on the same data dir.
type restartable struct {
	t              *testing.T
	dir            string
	nsAddr, brAddr string
	b              *broker.Broker
	ns, br         *Server
}

func (r *restartable) open() {
	r.t.Helper()
	b, err := broker.Open(broker.Config{DataDir: r.dir, Log: clog.Config{SegmentSizeBytes: 4 << 20}})
	if err != nil {
		r.t.Fatal(err)
	}
	if !waitUntil(10*time.Second, b.Ready) {
		r.t.Fatal("broker not ready in 10 s")
	}
	listen := func(addr string) net.Listener {
		var ln net.Listener
		// The old listener's port may linger briefly.
		if !waitUntil(10*time.Second, func() bool {
			ln, err = net.Listen("tcp", addr)
			return err == nil
		}) {
			r.t.Fatalf("listen %s: %v", addr, err)
		}
		return ln
	}
	nsLn, brLn := listen(r.nsAddr), listen(r.brAddr)
	cfg := Config{Broker: b, BrokerAddr: r.brAddr, AutoCreateTopics: true}
	r.b, r.ns, r.br = b, NewNameServer(cfg), NewBroker(cfg)
	go func() { _ = r.ns.Serve(nsLn) }()
	go func() { _ = r.br.Serve(brLn) }()
}

func (r *restartable) close() {
	_ = r.ns.Close()
	_ = r.br.Close()
	_ = r.b.Close()
}

// TestRealClientRestart: half the messages are sent, the broker and its
// front doors restart on the same data dir and ports, the rest are sent;
// a consumer group gets every acknowledged message and committed offsets
// survive the restart.
func TestRealClientRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	// Two free ports, fixed for both lifetimes of the broker.
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	r := &restartable{t: t, dir: t.TempDir(), nsAddr: addrs[0], brAddr: addrs[1]}
	t.Cleanup(func() {
		if r.b != nil {
			r.close()
		}
	})
	r.open()

	t0 := time.Now()
	topic, group := uniq("RestartTopic"), uniq("cg_restart")
	const n, queues = 100, 4
	createTopic(t, r.b, topic, queues)
	p := newProducer(t, r.nsAddr, uniq("pg_restart"))
	acked := sendN(t, p, topic, "r", 0, n/2, 20*time.Second)

	// A consumer consumes the first half and commits offsets; it shuts
	// down before the restart (rocketmq-client-go does not fail a pull in
	// flight when its connection drops: it waits out its fixed 30 s pull
	// timeout, which would dominate this test).
	col := newCollector()
	c1 := newPush(t, r.nsAddr, group, "restart-consumer-1", topic, consumer.Clustering, col.handler("c1"))
	if !waitUntil(30*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.all) >= n/2
	}) {
		_ = c1.Shutdown()
		t.Fatalf("consumed %d of the first %d", len(col.all), n/2)
	}
	var before [queues]uint64
	if !waitUntil(30*time.Second, func() bool {
		sum := uint64(0)
		for q := range uint32(queues) {
			off, _ := r.b.Offset(group, topic, q)
			before[q] = off
			sum += off
		}
		return sum == n/2
	}) {
		_ = c1.Shutdown()
		t.Fatalf("committed offsets %v before the restart, want a sum of %d", before, n/2)
	}
	_ = c1.Shutdown()
	t.Logf("committed offsets before the restart: %v (%s into the test)", before, time.Since(t0).Round(time.Millisecond))

	r.close()
	r.b = nil
	start := time.Now()
	r.open()
	t.Logf("reopened in %s", time.Since(start).Round(time.Millisecond))
	for q := range uint32(queues) {
		if off, ok := r.b.Offset(group, topic, q); !ok || off != before[q] {
			t.Errorf("queue %d: committed offset %d (%v) after the restart, want %d", q, off, ok, before[q])
		}
	}
	for q := range uint32(queues) {
		if _, hi := r.b.QueueRange(topic, q); hi == 0 {
			t.Errorf("queue %d empty after the restart", q)
		}
	}

	// The producer, created before the restart, reconnects.
	start = time.Now()
	second := sendN(t, p, topic, "r", n/2, n, 30*time.Second)
	for id, body := range second {
		acked[id] = body
	}
	t.Logf("second half sent in %s", time.Since(start).Round(time.Millisecond))
	if len(acked) != n {
		t.Fatalf("%d distinct acknowledged MsgIds, want %d", len(acked), n)
	}

	// A new member of the group resumes from the committed offsets: it
	// gets the second half and nothing of the first.
	start = time.Now()
	startPush(t, r.nsAddr, group, "restart-consumer-2", topic, consumer.Clustering, col.handler("c2"))
	ok := waitUntil(30*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for id := range acked {
			if col.all[id] == 0 {
				return false
			}
		}
		return true
	})
	col.mu.Lock()
	missing, dups, again := 0, 0, 0
	for id := range acked {
		if col.all[id] == 0 {
			missing++
		}
	}
	for _, k := range col.all {
		if k > 1 {
			dups++
		}
	}
	for id := range col.byMember["c2"] {
		if _, ok := second[id]; !ok {
			again++
		}
	}
	col.mu.Unlock()
	t.Logf("consumed %d distinct, %d missing, %d redelivered (%d of the first half after the restart); all consumed %s after the new member started",
		len(col.all), missing, dups, again, time.Since(start).Round(time.Millisecond))
	if !ok || missing > 0 {
		t.Fatalf("%d acknowledged messages never consumed", missing)
	}
	if again > 0 || dups > 0 {
		t.Errorf("%d messages of the first half consumed again after the restart (committed offsets not honoured); %d duplicates", again, dups)
	}

	// The broker holds every message exactly once, and committed offsets
	// advance to the end.
	total := uint64(0)
	for q := range uint32(queues) {
		_, hi := r.b.QueueRange(topic, q)
		total += hi
	}
	if total != n {
		t.Errorf("broker holds %d messages, want %d", total, n)
	}
	if !waitUntil(30*time.Second, func() bool {
		for q := range uint32(queues) {
			_, hi := r.b.QueueRange(topic, q)
			if off, _ := r.b.Offset(group, topic, q); off != hi {
				return false
			}
		}
		return true
	}) {
		t.Errorf("committed offsets did not reach the end after the restart")
	}
	t.Logf("offsets committed to the end %s into the test", time.Since(t0).Round(time.Millisecond))
}
