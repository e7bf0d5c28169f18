package broker

import (
	"testing"
	"time"
)

// TestQueueLocks: a live lease is refused to another owner on every node,
// renewed by its owner, taken over once expired, released only by its
// owner, and kept across a restart.
func TestQueueLocks(t *testing.T) {
	bs, cfgs := startCluster(t)
	q := []QueueRef{{Topic: "T", Broker: "b-1", Queue: 0}}
	t0 := time.Now()
	lease := 60 * time.Second
	lock := func(b *Broker, owner string, at time.Time) bool {
		t.Helper()
		got, err := b.LockQueues(ctx(t), "OG", owner, at, lease, q)
		if err != nil {
			t.Fatal(err)
		}
		return len(got) == 1
	}
	if !lock(bs[0], "A", t0) {
		t.Fatal("A's first lock refused")
	}
	if lock(bs[1], "B", t0.Add(time.Second)) {
		t.Fatal("B got A's live lease through another node")
	}
	if !lock(bs[2], "A", t0.Add(50*time.Second)) {
		t.Fatal("A's renewal refused")
	}
	if lock(bs[0], "B", t0.Add(100*time.Second)) {
		t.Fatal("B got a renewed lease")
	}
	if err := bs[1].UnlockQueues(ctx(t), "OG", "B", q); err != nil {
		t.Fatal(err)
	}
	if owner, _, ok := bs[1].QueueLockHolder("OG", q[0]); !ok || owner != "A" {
		t.Fatalf("B's unlock released A's lease: %q %v", owner, ok)
	}
	// Restart a node: the table comes back from broker.db.
	if err := bs[2].Close(); err != nil {
		t.Fatal(err)
	}
	bs[2] = openBroker(t, cfgs[2])
	if owner, _, ok := bs[2].QueueLockHolder("OG", q[0]); !ok || owner != "A" {
		t.Fatalf("after restart: holder %q %v", owner, ok)
	}
	if !lock(bs[2], "B", t0.Add(111*time.Second)) {
		t.Fatal("B refused an expired lease")
	}
	if err := bs[0].UnlockQueues(ctx(t), "OG", "B", q); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the release on every node", func() bool {
		for _, b := range bs {
			if _, _, held := b.QueueLockHolder("OG", q[0]); held {
				return false
			}
		}
		return true
	})
}

// TestQLockKeyGolden: the bbolt key of a queue lock, byte by byte.
func TestQLockKeyGolden(t *testing.T) {
	k := qlockKey{"g", "t", "b", 0x0102}
	want := []byte{
		'g', 0, // group, NUL
		't', 0, // topic, NUL
		'b', 0, // broker name, NUL
		0, 0, 1, 2, // queue, big-endian u32
	}
	if got := k.bytes(); string(got) != string(want) {
		t.Fatalf("key % x, want % x", got, want)
	}
	if back, ok := parseQLockKey(want); !ok || back != k {
		t.Fatalf("parse: %+v %v", back, ok)
	}
	for n := range len(want) - 4 {
		if _, ok := parseQLockKey(want[:n]); ok {
			t.Fatalf("truncated to %d bytes parsed", n)
		}
	}
}

func FuzzParseQLockKey(f *testing.F) {
	f.Add(qlockKey{"g", "t", "b", 7}.bytes())
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, ok := parseQLockKey(b)
		if ok && string(k.bytes()) != string(b) {
			t.Fatalf("parsed key %+v does not re-encode to % x", k, b)
		}
	})
}

// TestQueueLocksSweepExpired: leases nobody releases (the Go client never
// does) are dropped once long expired, also from broker.db, while a live
// lease stays. (Found in review: the table only grew.)
func TestQueueLocksSweepExpired(t *testing.T) {
	cfg := testConfig(t.TempDir())
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "leadership", b.Ready)
	t0 := time.Now()
	lease := 60 * time.Second
	var stale []QueueRef
	for i := range 50 {
		stale = append(stale, QueueRef{Topic: "T", Broker: "b-1", Queue: uint32(i)})
	}
	if got, err := b.LockQueues(ctx(t), "OG", "gone", t0, lease, stale); err != nil || len(got) != 50 {
		t.Fatalf("locks of the departed owner: %d, %v", len(got), err)
	}
	live := []QueueRef{{Topic: "U", Broker: "b-1", Queue: 0}}
	if _, err := b.LockQueues(ctx(t), "OG", "alive", t0.Add(170*time.Second), lease, live); err != nil {
		t.Fatal(err)
	}
	// Three minutes on: 'gone' expired two minutes ago, 'alive' renewed
	// ten seconds ago.
	if _, err := b.LockQueues(ctx(t), "OG", "alive", t0.Add(180*time.Second), lease, live); err != nil {
		t.Fatal(err)
	}
	check := func(b *Broker, when string) {
		t.Helper()
		for _, q := range stale {
			if _, _, held := b.QueueLockHolder("OG", q); held {
				t.Fatalf("%s: the expired lease on %v is still in the table", when, q)
			}
		}
		if owner, _, held := b.QueueLockHolder("OG", live[0]); !held || owner != "alive" {
			t.Fatalf("%s: the live lease is gone (%q, %v)", when, owner, held)
		}
	}
	check(b, "after the sweep")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	check(openBroker(t, cfg), "after a restart")
}
