package broker

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/txn"
)

func delayed(topic, body string, at time.Time) Message {
	return Message{Message: batch.Message{Topic: topic, Body: []byte(body)}, Queue: 0, DeliverAt: at}
}

// TestTimerDeliversOnceAcrossRestart: a delayed message is invisible until
// due, then delivered once to its queue, with its id and without the timer
// properties; one still pending at a restart is delivered once after it.
func TestTimerDeliversOnceAcrossRestart(t *testing.T) {
	cfg := testConfig(t.TempDir())
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CreateTopic(ctx(t), Topic{Name: "d", Queues: 2}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := b.Produce(ctx(t), []Message{delayed("d", "a", start.Add(700*time.Millisecond))})
	if err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, b, "d", 0); len(got) != 0 {
		t.Fatalf("delayed message visible at once: %q", got)
	}
	waitFor(t, 5*time.Second, "the delayed message", func() bool { return len(fetchAll(t, b, "d", 0)) == 1 })
	if late := time.Since(start); late < 700*time.Millisecond {
		t.Fatalf("delivered after %v, before its time", late)
	}
	ms, _, err := b.Fetch("d", 0, 0, FetchOptions{MaxMessages: 1})
	if err != nil || len(ms) != 1 {
		t.Fatal(err)
	}
	if ms[0].ID() != res[0].ID || property(ms[0].View, PropTimerOutMs) != nil || property(ms[0].View, PropRealTopic) != nil {
		t.Fatalf("copy changed its id or kept timer properties")
	}
	ms[0].Release()
	waitFor(t, time.Second, "the timer to be gone", func() bool { return b.PendingTimers() == 0 })

	// One pending across a restart.
	if _, err := b.Produce(ctx(t), []Message{delayed("d", "b", time.Now().Add(1500*time.Millisecond))}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBroker(t, cfg)
	if n := b.PendingTimers(); n != 1 {
		t.Fatalf("%d timers after restart, want 1", n)
	}
	waitFor(t, 10*time.Second, "the timer after restart", func() bool { return len(fetchAll(t, b, "d", 0)) == 2 })
	waitFor(t, time.Second, "the timer to be gone", func() bool { return b.PendingTimers() == 0 })
	if got := fetchAll(t, b, "d", 0); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("after restart: %q", got)
	}
}

// TestTimerLimits: past times deliver at once, beyond MaxDelay is refused,
// and a producer cannot forge the delivered-copy marker.
func TestTimerLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Schedule.MaxDelay = 3 * time.Hour
	b := openBroker(t, cfg)
	if err := b.CreateTopic(ctx(t), Topic{Name: "d", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx(t), []Message{delayed("d", "past", time.Now().Add(-time.Second))}); err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, b, "d", 0); len(got) != 1 {
		t.Fatalf("a past time was not delivered at once: %q", got)
	}
	if _, err := b.Produce(ctx(t), []Message{delayed("d", "far", time.Now().Add(4*time.Hour))}); err == nil {
		t.Fatal("a delay beyond MaxDelay was accepted")
	}
	res, err := b.Produce(ctx(t), []Message{delayed("d", "x", time.Now().Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	forged := Message{Message: batch.Message{Topic: "d", Body: []byte("forged"), Properties: []batch.Property{
		{Key: PropScheduledFrom, Value: "0"}}}, Queue: 0}
	forged.Properties[0].Value = strconv.FormatUint(res[0].PhysOffset, 10)
	if _, err := b.Produce(ctx(t), []Message{forged}); err != nil {
		t.Fatal(err)
	}
	if n := b.PendingTimers(); n != 1 {
		t.Fatalf("a forged marker removed a timer: %d pending", n)
	}
	if b.DelayForLevel(2) != 5*time.Second || b.DelayForLevel(99) != 2*time.Hour || b.DelayForLevel(0) != 0 {
		t.Fatal("delay levels")
	}
}

func half(topic, group, body string) Message {
	return Message{Message: batch.Message{Topic: topic, Body: []byte(body), SysFlag: sysFlagTxnPrepared,
		Properties: []batch.Property{{Key: PropTranMsg, Value: "true"}, {Key: PropProducerGroup, Value: group}}},
		Queue: -1, Half: true}
}

// TestTransactionsCommitRollbackAndCheck: a committed half message is
// delivered once, a duplicate decision changes nothing, a rolled back one
// never appears, and an open one is checked, then discarded after
// MaxChecks.
func TestTransactionsCommitRollbackAndCheck(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Schedule.Txn = txn.Config{FirstCheckDelay: 200 * time.Millisecond, CheckInterval: 200 * time.Millisecond, MaxChecks: 2}
	b := openBroker(t, cfg)
	var mu sync.Mutex
	checks := map[uint64]int{}
	b.SetTxnChecker(func(h TxnCheck) {
		mu.Lock()
		checks[h.Phys]++
		mu.Unlock()
	})
	if err := b.CreateTopic(ctx(t), Topic{Name: "tx", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Produce(ctx(t), []Message{half("tx", "pg", "c"), half("tx", "pg", "r"), half("tx", "pg", "open")})
	if err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, b, "tx", 0); len(got) != 0 {
		t.Fatalf("half messages visible: %q", got)
	}
	if h, ok := b.HalfMessage(res[0].PhysOffset); !ok || h.Group != "pg" {
		t.Fatalf("half message state: %+v %v", h, ok)
	}
	if err := b.EndTransaction(ctx(t), res[0].PhysOffset, true); err != nil {
		t.Fatal(err)
	}
	if err := b.EndTransaction(ctx(t), res[0].PhysOffset, false); err != nil { // too late, ignored
		t.Fatal(err)
	}
	if err := b.EndTransaction(ctx(t), res[1].PhysOffset, false); err != nil {
		t.Fatal(err)
	}
	if err := b.EndTransaction(ctx(t), res[0].PhysOffset, true); err != nil { // duplicate
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the committed message", func() bool { return len(fetchAll(t, b, "tx", 0)) >= 1 })
	waitFor(t, 5*time.Second, "the open transaction to be discarded", func() bool {
		_, ok := b.HalfMessage(res[2].PhysOffset)
		return !ok
	})
	waitFor(t, 5*time.Second, "no open transaction", func() bool { return b.OpenTransactions() == 0 })
	if got := fetchAll(t, b, "tx", 0); len(got) != 1 || got[0] != "c" {
		t.Fatalf("consumable: %q, want only the committed one", got)
	}
	ms, _, _ := b.Fetch("tx", 0, 0, FetchOptions{MaxMessages: 1})
	if ms[0].SysFlag()&sysFlagTxnMask != sysFlagTxnCommit || property(ms[0].View, PropTranMsg) != nil {
		t.Fatalf("committed copy: sysFlag %#x", ms[0].SysFlag())
	}
	ms[0].Release()
	mu.Lock()
	defer mu.Unlock()
	if checks[res[2].PhysOffset] != 2 || checks[res[0].PhysOffset] != 0 || checks[res[1].PhysOffset] != 0 {
		t.Fatalf("check-backs: %v", checks)
	}
}

// TestScheduleSnapshotRoundTrip: the schedule travels in snapshots.
func TestScheduleSnapshotRoundTrip(t *testing.T) {
	st := metaState{Topics: map[string]Topic{}, sched: newSchedState(), qlocks: newQLockState()}
	st.sched.addTimer(64, 1000)
	st.sched.addTimer(8, 500)
	st.sched.halves.Add(txn.Half{Phys: 16, Group: "g", StoreMs: 3, Checks: 1, LastCheckMs: 9})
	st.qlocks.m[qlockKey{"g", "t", "b", 2}] = qlockLease{Owner: "c", AtMs: 5}
	raw, err := st.marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := unmarshalMeta(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.sched.popDue(1<<40, 10); len(got) != 2 || got[0].Phys != 8 || got[1].Phys != 64 {
		t.Fatalf("timers after round trip: %+v", got)
	}
	if h, ok := back.sched.halves.Get(16); !ok || h.Checks != 1 || h.Group != "g" {
		t.Fatalf("half after round trip: %+v", h)
	}
	if l := back.qlocks.m[qlockKey{"g", "t", "b", 2}]; l.Owner != "c" || l.AtMs != 5 {
		t.Fatalf("queue lock after round trip: %+v", l)
	}
}

// TestTimersAndTransactionsSurviveLeaderLoss: three nodes; timers and a
// committed transaction still pending when the leader closes are
// delivered exactly once by the next leader.
func TestTimersAndTransactionsSurviveLeaderLoss(t *testing.T) {
	bs, _ := startCluster(t)
	li := leaderIndex(bs)
	leader := bs[li]
	if err := leader.CreateTopic(ctx(t), Topic{Name: "f", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(1500 * time.Millisecond)
	var msgs []Message
	for range 20 {
		msgs = append(msgs, delayed("f", "timer", due))
	}
	if _, err := leader.Produce(ctx(t), msgs); err != nil {
		t.Fatal(err)
	}
	res, err := leader.Produce(ctx(t), []Message{half("f", "pg", "txn")})
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	bs[li] = nil
	var other *Broker
	for _, b := range bs {
		if b != nil {
			other = b
		}
	}
	waitFor(t, 15*time.Second, "a new leader", func() bool { return leaderIndex(bs) >= 0 })
	if err := other.EndTransaction(ctx(t), res[0].PhysOffset, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "every scheduled message", func() bool { return len(fetchAll(t, other, "f", 0)) >= 21 })
	for _, b := range bs {
		if b == nil {
			continue
		}
		// Once the schedule is empty no copy can follow: the entry that
		// stores a copy is the one that removes its timer.
		waitFor(t, 5*time.Second, "an empty schedule", func() bool {
			_, open := b.HalfMessage(res[0].PhysOffset)
			return b.PendingTimers() == 0 && !open
		})
		if got := fetchAll(t, b, "f", 0); len(got) != 21 {
			t.Fatalf("node %d has %d messages, want 21", b.cfg.NodeID, len(got))
		}
	}
}

// TestTimerDeliveryUnderLoad: 5000 timers due within one second, while
// another producer keeps the log busy, are all delivered, none more than
// a second after its time. It logs the worst lateness seen.
func TestTimerDeliveryUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	b := openBroker(t, testConfig(t.TempDir()))
	for _, tp := range []Topic{{Name: "due", Queues: 4}, {Name: "load", Queues: 4}} {
		if err := b.CreateTopic(ctx(t), tp); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // background load: batches of 64 small messages
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var ms []Message
			for range 64 {
				ms = append(ms, Message{Message: batch.Message{Topic: "load", Body: make([]byte, 256)}, Queue: -1})
			}
			if _, err := b.Produce(ctx(t), ms); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	const n = 5000
	start := time.Now().Add(2 * time.Second)
	dues := make([]time.Time, n)
	for i := 0; i < n; i += 250 {
		var ms []Message
		for k := i; k < i+250; k++ {
			dues[k] = start.Add(time.Duration(k) * time.Second / n)
			ms = append(ms, Message{Message: batch.Message{Topic: "due", Body: []byte("x")}, Queue: k % 4, DeliverAt: dues[k]})
		}
		if _, err := b.Produce(ctx(t), ms); err != nil {
			t.Fatal(err)
		}
	}
	if time.Now().After(start) {
		t.Logf("producing the timers took past their first due time")
	}
	delivered := func() int {
		total := uint64(0)
		for q := range uint32(4) {
			_, hi := b.QueueRange("due", q)
			total += hi
		}
		return int(total)
	}
	var worst time.Duration
	deadline := start.Add(30 * time.Second)
	for {
		now := time.Now()
		c := delivered()
		if c > n {
			t.Fatalf("%d delivered, only %d scheduled", c, n)
		}
		if c == n {
			break
		}
		// dues is sorted: the first one not delivered yet is dues[c].
		if late := now.Sub(dues[c]); late > worst {
			worst = late
		}
		if now.After(deadline) {
			t.Fatalf("only %d of %d delivered", c, n)
		}
		time.Sleep(5 * time.Millisecond) // sampling, not synchronisation
	}
	t.Logf("%d timers due within 1 s under load: worst lateness %v", n, worst.Round(time.Millisecond))
	if worst > time.Second {
		t.Fatalf("a timer was delivered %v after its time", worst)
	}
}

// TestSystemTopicsUnreadable: half messages cannot be fetched from their
// system topic.
func TestSystemTopicsUnreadable(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	if _, err := b.Produce(ctx(t), []Message{half("tx", "pg", "secret")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Fetch(HalfTopic, 0, 0, FetchOptions{MaxMessages: 1}); !errors.Is(err, ErrNotReadable) {
		t.Fatalf("fetch from %s: %v, want ErrNotReadable", HalfTopic, err)
	}
}

// TestSchedKeyGolden: the broker.db keys of the schedule, byte by byte.
func TestSchedKeyGolden(t *testing.T) {
	for _, c := range []struct {
		k    schedKey
		want []byte
	}{
		{schedKey{'t', 0x0102}, []byte{'t', 0, 0, 0, 0, 0, 0, 1, 2}}, // timer, u64 BE offset
		{schedKey{'h', 8}, []byte{'h', 0, 0, 0, 0, 0, 0, 0, 8}},      // half message
	} {
		if got := c.k.bytes(); string(got) != string(c.want) {
			t.Fatalf("%+v: % x, want % x", c.k, got, c.want)
		}
	}
}
