package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker/command"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/raft"
)

func testConfig(dir string) Config {
	return Config{
		DataDir: dir,
		Log:     clog.Config{SegmentSizeBytes: 1 << 20},
		Raft:    raft.Config{TickInterval: 20 * time.Millisecond},
	}
}

func openBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func msg(topic, tags, key string, body string) Message {
	return Message{Message: batch.Message{Topic: topic, Tags: tags, Keys: []string{key}, Body: []byte(body)}, Queue: -1, ShardingKey: key}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func fetchAll(t *testing.T, b *Broker, topic string, queue uint32) []string {
	t.Helper()
	var out []string
	var off uint64
	for {
		ms, next, err := b.Fetch(topic, queue, off, FetchOptions{MaxMessages: 7})
		if err != nil {
			t.Fatalf("fetch %s/%d@%d: %v", topic, queue, off, err)
		}
		for _, m := range ms {
			out = append(out, string(m.Body()))
			m.Release()
		}
		if next == off {
			return out
		}
		off = next
	}
}

func TestSingleNodeProduceConsumeAndRestart(t *testing.T) {
	dir := t.TempDir()
	b := openBroker(t, testConfig(dir))
	waitFor(t, 10*time.Second, "ready", b.Ready)

	// Auto-created topic; messages with the same sharding key share a
	// queue, in order.
	var sent []Message
	for i := range 30 {
		sent = append(sent, msg("orders", fmt.Sprint("tag", i%3), fmt.Sprint("k", i%4), fmt.Sprint("m", i)))
	}
	res, err := b.Produce(ctx(t), sent)
	if err != nil {
		t.Fatal(err)
	}
	tp, ok := b.Topic("orders")
	if !ok || tp.Queues != 8 {
		t.Fatalf("auto-created topic: %+v %v", tp, ok)
	}
	perQueue := map[uint32][]string{}
	for k, r := range res {
		if want := uint64(len(perQueue[r.Queue])); r.QueueOffset != want {
			t.Fatalf("message %d got queue offset %d, want %d (contiguous per queue)", k, r.QueueOffset, want)
		}
		perQueue[r.Queue] = append(perQueue[r.Queue], string(sent[k].Body))
	}
	for q, want := range perQueue {
		if got := fetchAll(t, b, "orders", q); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("queue %d: fetched %v, want %v", q, got, want)
		}
	}
	// Tag filter: only tag1 messages, and next moves past the others.
	r0 := res[0]
	hashes := map[int64]bool{batch.JavaStringHash("tag1"): true}
	ms, next, err := b.Fetch("orders", r0.Queue, 0, FetchOptions{MaxMessages: 100, TagHashes: hashes})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if string(m.Tags()) != "tag1" {
			t.Fatalf("tag filter let %q through", m.Tags())
		}
		m.Release()
	}
	if _, hi := b.QueueRange("orders", r0.Queue); next != hi {
		t.Fatalf("next after a filtered fetch = %d, want the queue end %d", next, hi)
	}
	// Query by id and by key.
	m, err := b.QueryByID(res[5].ID)
	if err != nil || string(m.Body()) != "m5" || m.PhysOffset != res[5].PhysOffset {
		t.Fatalf("QueryByID: %v", err)
	}
	m.Release()
	byKey, err := b.QueryByKey("orders", "k1", 0, 0, 100)
	if err != nil || len(byKey) != 8 {
		t.Fatalf("QueryByKey found %d, want 8 (%v)", len(byKey), err)
	}
	for _, m := range byKey {
		m.Release()
	}
	// Consumer offsets.
	if err := b.CommitOffsets(ctx(t), "g1", []command.Offset{{Topic: "orders", Queue: 2, Offset: 3}}); err != nil {
		t.Fatal(err)
	}
	if off, ok := b.Offset("g1", "orders", 2); !ok || off != 3 {
		t.Fatalf("offset = %d, %v", off, ok)
	}

	// Restart: topics, offsets and messages survive.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBroker(t, testConfig(dir))
	waitFor(t, 10*time.Second, "ready after restart", b.Ready)
	if _, ok := b.Topic("orders"); !ok {
		t.Fatal("topic lost on restart")
	}
	if off, ok := b.Offset("g1", "orders", 2); !ok || off != 3 {
		t.Fatalf("offset after restart = %d, %v", off, ok)
	}
	for q, want := range perQueue {
		if got := fetchAll(t, b, "orders", q); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after restart queue %d: %v, want %v", q, got, want)
		}
	}
	// New messages continue the offsets.
	more, err := b.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "orders", Body: []byte("after")}, Queue: int(r0.Queue)}})
	if err != nil {
		t.Fatal(err)
	}
	if more[0].QueueOffset != uint64(len(perQueue[r0.Queue])) {
		t.Fatalf("offset after restart = %d, want %d", more[0].QueueOffset, len(perQueue[r0.Queue]))
	}
}

func TestTopicsAndErrors(t *testing.T) {
	cfg := testConfig(t.TempDir())
	off := false
	cfg.AutoCreateTopics = &off
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "ready", b.Ready)
	if _, err := b.Produce(ctx(t), []Message{msg("nope", "", "k", "x")}); !errors.Is(err, ErrNoTopic) {
		t.Fatalf("produce to a missing topic without auto-create: %v", err)
	}
	if err := b.CreateTopic(ctx(t), Topic{Name: "bad/name", Queues: 1}); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("bad name: %v", err)
	}
	if err := b.CreateTopic(ctx(t), Topic{Name: "ro", Queues: 2, Perm: PermRead}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx(t), []Message{msg("ro", "", "k", "x")}); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("produce to a read-only topic: %v", err)
	}
	if _, err := b.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "ro"}, Queue: 5}}); err == nil {
		t.Fatal("produce to a queue beyond the topic's accepted")
	}
	if _, _, err := b.Fetch("ro", 9, 0, FetchOptions{MaxMessages: 1}); !errors.Is(err, ErrBadQueue) {
		t.Fatalf("fetch from a missing queue: %v", err)
	}
	if err := b.DeleteTopic(ctx(t), "ro"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Topic("ro"); ok {
		t.Fatal("topic still there after delete")
	}
}

func TestLongPollWakesOnProduce(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "ready", b.Ready)
	if err := b.CreateTopic(ctx(t), Topic{Name: "lp", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	woke := make(chan error, 1)
	go func() { woke <- b.WaitForMessages(ctx(t), "lp", 0, 0) }()
	select {
	case err := <-woke:
		t.Fatalf("returned before any message: %v", err)
	case <-time.After(50 * time.Millisecond): // it is waiting, as it should
	}
	if _, err := b.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "lp", Body: []byte("x")}, Queue: 0}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not wake")
	}
	short, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.WaitForMessages(short, "lp", 0, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the end: %v", err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// openCluster opens three brokers on free 127.0.0.1 ports. A port picked
// free can be taken by someone else before the broker binds it; then the
// whole cluster is tried again on new ports.
func openCluster(t *testing.T, tune func(*Config)) ([]*Broker, []Config) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		peers := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
		base := t.TempDir()
		var bs []*Broker
		var cfgs []Config
		var err error
		for id := uint64(1); id <= 3 && err == nil; id++ {
			cfg := testConfig(filepath.Join(base, fmt.Sprint("n", id)))
			cfg.NodeID, cfg.Peers, cfg.RaftAddr = id, peers, peers[id]
			if tune != nil {
				tune(&cfg)
			}
			var b *Broker
			if b, err = Open(cfg); err == nil {
				bs, cfgs = append(bs, b), append(cfgs, cfg)
			}
		}
		if err == nil {
			own := append([]*Broker(nil), bs...) // tests may nil out entries of bs
			t.Cleanup(func() {
				for _, b := range own {
					_ = b.Close()
				}
			})
			return bs, cfgs
		}
		for _, b := range bs {
			_ = b.Close()
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 3 {
			t.Fatal(err)
		}
	}
}

func startCluster(t *testing.T) ([]*Broker, []Config) {
	bs, cfgs := openCluster(t, nil)
	waitFor(t, 15*time.Second, "a leader ready for writes", func() bool {
		for _, b := range bs {
			if b.Status().LeaderReady {
				return true
			}
		}
		return false
	})
	return bs, cfgs
}

func leaderIndex(bs []*Broker) int {
	for k, b := range bs {
		if b != nil && b.Status().LeaderReady {
			return k
		}
	}
	return -1
}

// TestThreeNodesFollowerProduceAndLeaderLoss: produce through followers
// and the leader concurrently, close the leader mid-way, and require every
// acknowledged message on both survivors at the same queue offset, with
// contiguous offsets identical on every replica.
func TestThreeNodesFollowerProduceAndLeaderLoss(t *testing.T) {
	bs, _ := startCluster(t)
	if err := bs[0].CreateTopic(ctx(t), Topic{Name: "t", Queues: 4}); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		body  string
		queue uint32
		off   uint64
	}
	var mu sync.Mutex
	var acked []ack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				b := bs[(w+i)%3]
				mu.Unlock()
				if b == nil || b.closed.Load() {
					continue
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				res, err := b.Produce(c, []Message{{Message: batch.Message{Topic: "t", Body: []byte(body)}, Queue: i % 4}})
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, ack{body, res[0].Queue, res[0].QueueOffset})
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, 10*time.Second, "some acknowledged messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 50 })
	li := leaderIndex(bs)
	mu.Lock()
	leader := bs[li]
	bs[li] = nil
	before := len(acked)
	mu.Unlock()
	killedAt := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "writes after losing the leader", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > before+50 })
	t.Logf("writes resumed %v after the leader closed", time.Since(killedAt))
	close(stop)
	wg.Wait()

	var alive []*Broker
	for _, b := range bs {
		if b != nil {
			alive = append(alive, b)
		}
	}
	// The producers have stopped: the survivors converge on identical
	// queues (a replica may briefly be an entry behind the other).
	waitFor(t, 10*time.Second, "survivors to hold identical queues", func() bool {
		for q := uint32(0); q < 4; q++ {
			if fmt.Sprint(fetchAll(t, alive[0], "t", q)) != fmt.Sprint(fetchAll(t, alive[1], "t", q)) {
				return false
			}
		}
		return true
	})
	for _, a := range acked {
		ms, _, err := alive[0].Fetch("t", a.queue, a.off, FetchOptions{MaxMessages: 1})
		if err != nil || len(ms) != 1 || !bytes.Equal(ms[0].Body(), []byte(a.body)) {
			t.Fatalf("acknowledged %q at %d/%d is missing (%v)", a.body, a.queue, a.off, err)
		}
		ms[0].Release()
	}
	t.Logf("%d acknowledged messages all present on both survivors", len(acked))
}

// A message routed to several queues is stored once: every queue's unit
// points at the same physical offset.
func TestFanOutStoresOnce(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "ready", b.Ready)
	for _, name := range []string{"ex", "qa", "qb"} {
		if err := b.CreateTopic(ctx(t), Topic{Name: name, Queues: 2}); err != nil {
			t.Fatal(err)
		}
	}
	before := b.node.Log().EndOffset()
	res, err := b.Produce(ctx(t), []Message{{
		Message: batch.Message{Topic: "ex", Body: bytes.Repeat([]byte("x"), 4096)},
		Queue:   0, Also: []Route{{Topic: "qa", Queue: 1}, {Topic: "qb", Queue: 0}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if grown := b.node.Log().EndOffset() - before; grown > 2*4096 {
		t.Fatalf("the log grew by %d bytes for one 4 KiB message to three queues", grown)
	}
	if len(res[0].Also) != 2 {
		t.Fatalf("result offsets for the extra routes: %v", res[0].Also)
	}
	for _, r := range []Route{{"ex", 0}, {"qa", 1}, {"qb", 0}} {
		ms, _, err := b.Fetch(r.Topic, r.Queue, 0, FetchOptions{MaxMessages: 1})
		if err != nil || len(ms) != 1 {
			t.Fatalf("%v: %d messages, %v", r, len(ms), err)
		}
		if ms[0].PhysOffset != res[0].PhysOffset {
			t.Fatalf("%v points at %d, the message is at %d", r, ms[0].PhysOffset, res[0].PhysOffset)
		}
		ms[0].Release()
	}
}

// retentionCluster starts three brokers with tiny segments and frequent
// retention, so that a follower kept down falls behind the leader's log,
// and returns them by id with their configs and the leader.
func retentionCluster(t *testing.T) (map[uint64]*Broker, map[uint64]Config, *Broker) {
	t.Helper()
	list, cfgList := openCluster(t, func(cfg *Config) {
		cfg.Log = clog.Config{SegmentSizeBytes: 64 << 10, RetentionBytes: 3 * 64 << 10}
		cfg.Raft.RetentionInterval = 100 * time.Millisecond
	})
	cfgs := map[uint64]Config{}
	bs := map[uint64]*Broker{}
	for k, b := range list {
		cfgs[cfgList[k].NodeID], bs[cfgList[k].NodeID] = cfgList[k], b
	}
	var leader *Broker
	waitFor(t, 15*time.Second, "a leader", func() bool {
		for _, b := range bs {
			if b.Status().LeaderReady {
				leader = b
				return true
			}
		}
		return false
	})
	return bs, cfgs, leader
}

// A follower that was down while the leader's retention removed the entries
// it misses is brought back by a snapshot: the broker restores topics,
// offsets and subscriptions from it, restarts its consume queues at the
// log's new start, and then serves what is produced next exactly like the
// other replicas.
func TestSnapshotInstallRestoresBrokerState(t *testing.T) {
	bs, cfgs, leader := retentionCluster(t)
	if err := leader.CreateTopic(ctx(t), Topic{Name: "s", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	var lagID uint64
	for id, b := range bs {
		if b != leader {
			lagID = id
			break
		}
	}
	if err := bs[lagID].Close(); err != nil {
		t.Fatal(err)
	}
	// Far more than the retention keeps, plus metadata the snapshot must carry.
	body := bytes.Repeat([]byte("x"), 1000)
	for range 600 {
		if _, err := leader.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "s", Body: body}, Queue: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.CommitOffsets(ctx(t), "g", []command.Offset{{Topic: "s", Queue: 0, Offset: 77}}); err != nil {
		t.Fatal(err)
	}
	if err := leader.Subscribe(ctx(t), SubscriptionConfig{Name: "sub", Topic: "s", FromLatest: true}); err != nil {
		t.Fatal(err)
	}
	if err := leader.PutRecord(ctx(t), "ns", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the leader's retention", func() bool { return leader.Status().FirstIndex > 100 })

	lag := openBroker(t, cfgs[lagID])
	res, err := leader.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "s", Body: []byte("after")}, Queue: 0}})
	if err != nil {
		t.Fatal(err)
	}
	// Wait on the entry itself: a node's published status can trail the
	// answer a producer already got.
	waitFor(t, 15*time.Second, "the follower to catch up", func() bool {
		return lag.Status().Applied >= res[0].Index
	})
	if first := lag.Status().FirstIndex; first <= 2 {
		t.Fatalf("the follower did not install a snapshot (first index %d)", first)
	}
	if _, ok := lag.Topic("s"); !ok {
		t.Fatal("topic missing after the snapshot")
	}
	if off, ok := lag.Offset("g", "s", 0); !ok || off != 77 {
		t.Fatalf("consumer offset after the snapshot: %d, %v", off, ok)
	}
	if _, ok := lag.SubscriptionState("sub"); !ok {
		t.Fatal("subscription missing after the snapshot")
	}
	if v, ok := lag.Record("ns", "k"); !ok || string(v) != "v" {
		t.Fatalf("record after the snapshot: %q, %v", v, ok)
	}
	ms, _, err := lag.Fetch("s", 0, res[0].QueueOffset, FetchOptions{MaxMessages: 1})
	if err != nil || len(ms) != 1 || string(ms[0].Body()) != "after" || ms[0].PhysOffset != res[0].PhysOffset {
		t.Fatalf("the follower serves the new message at %d: %v (%d)", res[0].QueueOffset, err, len(ms))
	}
	ms[0].Release()
}
