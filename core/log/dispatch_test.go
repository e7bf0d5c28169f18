package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/log/cq"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// producer plays the broker's part: it encodes batches whose destinations
// carry queue offsets stamped from per-queue counters, and remembers where
// every message went so tests can check the queues.
type producer struct {
	next   map[cq.QueueID]uint64
	seq    uint64
	sent   map[cq.QueueID][]sentMsg // queue → messages in offset order
	byID   map[[16]byte]sentMsg
	enc    batch.Encoder
	topics []string
}

type sentMsg struct {
	id    [16]byte
	topic string
	key   string
	body  []byte
	index uint64 // raft index of its entry
}

func newProducer() *producer {
	return &producer{next: map[cq.QueueID]uint64{}, sent: map[cq.QueueID][]sentMsg{},
		byID: map[[16]byte]sentMsg{}, topics: []string{"orders", "site1", "audit"}}
}

// entry builds one raft entry of n messages; some fan out to two queues.
func (p *producer) entry(rng *rand.Rand, index, term uint64, n int) raftpb.Entry {
	p.enc.Reset(index, 1_700_000_000_000+int64(index))
	for range n {
		p.seq++
		var id [16]byte
		binary.LittleEndian.PutUint64(id[:], p.seq)
		topic := p.topics[rng.IntN(len(p.topics))]
		m := batch.Message{ID: id, Topic: topic, Keys: []string{fmt.Sprint("key", p.seq%7)},
			Body: bytes.Repeat([]byte{byte(p.seq)}, rng.IntN(300))}
		dests := []cq.QueueID{{Topic: topic, Queue: uint32(rng.IntN(4))}}
		if rng.IntN(4) == 0 {
			dests = append(dests, cq.QueueID{Topic: "fanout", Queue: 0})
		}
		for _, q := range dests {
			m.Destinations = append(m.Destinations, batch.Destination{Topic: q.Topic, QueueID: q.Queue,
				QueueOffset: p.next[q], TagHash: batch.JavaStringHash(topic)})
			p.next[q]++
			s := sentMsg{id: id, topic: topic, key: m.Keys[0], body: m.Body, index: index}
			p.sent[q] = append(p.sent[q], s)
			p.byID[id] = s
		}
		if err := p.enc.Add(&m); err != nil {
			panic(err)
		}
	}
	return raftpb.Entry{Index: index, Term: term, Data: append([]byte(nil), p.enc.Bytes()...)}
}

func dispatchConfig() DispatchConfig {
	return DispatchConfig{UnitsPerQueueFile: 16, IndexSlots: 8, IndexEntriesPerFile: 64, CheckpointEveryEntries: 5}
}

func bigMemConfig(fs vfs.FS) Config {
	return Config{FS: fs, Dir: "/data", SegmentSizeBytes: 32 << 10}
}

// checkQueues requires every queue to hold exactly the messages of entries
// ≤ upTo, in offset order, each unit pointing at the right message.
func checkQueues(t *testing.T, d *Dispatcher, p *producer, upTo uint64) {
	t.Helper()
	for q, msgs := range p.sent {
		var want []sentMsg
		for _, m := range msgs {
			if m.index <= upTo {
				want = append(want, m)
			}
		}
		lo, next, ok := d.Queues().Range(q.Topic, q.Queue)
		if len(want) == 0 {
			if ok && next > lo {
				t.Fatalf("queue %v holds %d units, want none", q, next-lo)
			}
			continue
		}
		if !ok || lo != 0 || next != uint64(len(want)) {
			t.Fatalf("queue %v range [%d, %d) ok=%v, want [0, %d)", q, lo, next, ok, len(want))
		}
		units, err := d.Queues().Get(q.Topic, q.Queue, 0, len(want), nil)
		if err != nil || len(units) != len(want) {
			t.Fatalf("queue %v Get: %d units, %v", q, len(units), err)
		}
		for k, u := range units {
			m, err := d.ReadMessage(u.PhysOffset)
			if err != nil {
				t.Fatalf("queue %v offset %d: %v", q, k, err)
			}
			if m.ID() != want[k].id || !bytes.Equal(m.Body(), want[k].body) || int(u.Size) != m.Len() {
				t.Fatalf("queue %v offset %d points at the wrong message", q, k)
			}
			m.Release()
		}
	}
}

func TestDispatchFanOutAndQueries(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0))
	fs := newMemFS(t)
	l := openLog(t, bigMemConfig(fs))
	d, err := OpenDispatcher(l, dispatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	p := newProducer()
	for i := uint64(1); i <= 40; i++ {
		mustAppendSync(t, l, []raftpb.Entry{p.entry(rng, i, 1, 1+rng.IntN(8))})
	}
	l.SetCommitted(40)
	if err := d.DispatchTo(40); err != nil {
		t.Fatal(err)
	}
	checkQueues(t, d, p, 40)
	// A fanned-out message is stored once: both units point at one offset.
	fan, _ := d.Queues().Get("fanout", 0, 0, 1, nil)
	if len(fan) == 1 {
		m, _ := d.ReadMessage(fan[0].PhysOffset)
		orig := p.byID[m.ID()]
		q := cq.QueueID{Topic: orig.topic}
		found := false
		for qq, msgs := range p.sent {
			if qq.Topic == q.Topic {
				for k, s := range msgs {
					if s.id == m.ID() {
						u, _ := d.Queues().Get(qq.Topic, qq.Queue, uint64(k), 1, nil)
						found = len(u) == 1 && u[0].PhysOffset == fan[0].PhysOffset
					}
				}
			}
		}
		m.Release()
		if !found {
			t.Fatal("fan-out unit does not share the stored message's offset")
		}
	}
	for id, s := range p.byID {
		m, err := d.QueryByID(id)
		if err != nil || string(m.Topic()) != s.topic {
			t.Fatalf("QueryByID: %v", err)
		}
		m.Release()
	}
	var missing [16]byte
	missing[15] = 0xEE
	if _, err := d.QueryByID(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("QueryByID(missing) = %v", err)
	}
	ms, err := d.QueryByKey("orders", "key3", 0, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, s := range p.byID {
		if s.topic == "orders" && s.key == "key3" {
			want++
		}
	}
	if len(ms) != want || want == 0 {
		t.Fatalf("QueryByKey found %d, want %d", len(ms), want)
	}
	for _, m := range ms {
		m.Release()
	}
}

// TestDispatchCrashRecovery crashes the log, queues and index together at
// many points, in both crash modes, and requires the recovered queues to
// hold exactly the messages of the committed, durable entries.
func TestDispatchCrashRecovery(t *testing.T) {
	seed := testSeed(t)
	for run := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, run))
		fs := newMemFS(t)
		cfg := bigMemConfig(fs)
		l := openLog(t, cfg)
		d, err := OpenDispatcher(l, dispatchConfig())
		if err != nil {
			t.Fatal(err)
		}
		p := newProducer()
		for i := uint64(1); i <= 60; i++ {
			mustAppendSync(t, l, []raftpb.Entry{p.entry(rng, i, 1, 1+rng.IntN(6))})
			l.SetCommitted(i)
			if err := d.DispatchTo(i); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(3) > 0 {
				continue
			}
			mode := vfs.CrashMode(rng.IntN(2))
			crashed := fs.CrashClone(mode, rand.New(rand.NewPCG(seed, i)))
			l2, err := Open(bigMemConfig(crashed))
			if err != nil {
				t.Fatalf("run %d entry %d: log recovery: %v", run, i, err)
			}
			// Every entry was synced and committed before the crash.
			l2.SetCommitted(i)
			d2, err := OpenDispatcher(l2, dispatchConfig())
			if err != nil {
				t.Fatalf("run %d entry %d mode %d: dispatcher recovery: %v", run, i, mode, err)
			}
			checkQueues(t, d2, p, i)
			for id := range p.byID {
				m, err := d2.QueryByID(id)
				if err != nil {
					t.Fatalf("run %d entry %d: id lost from the index: %v", run, i, err)
				}
				m.Release()
			}
			_ = d2.Close()
			_ = l2.Close()
		}
		_ = d.Close()
	}
}

func TestDispatchRebuildsMissingOrCorruptState(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	build := func(t *testing.T) (*vfs.MemFS, *producer) {
		fs := newMemFS(t)
		l := openLog(t, bigMemConfig(fs))
		d, err := OpenDispatcher(l, dispatchConfig())
		if err != nil {
			t.Fatal(err)
		}
		p := newProducer()
		for i := uint64(1); i <= 30; i++ {
			mustAppendSync(t, l, []raftpb.Entry{p.entry(rng, i, 1, 4)})
		}
		l.SetCommitted(30)
		if err := d.DispatchTo(30); err != nil {
			t.Fatal(err)
		}
		if err := d.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		_ = d.Close()
		_ = l.Close()
		return fs, p
	}
	reopen := func(t *testing.T, fs *vfs.MemFS, p *producer) {
		l := openLog(t, bigMemConfig(fs))
		l.SetCommitted(30)
		d, err := OpenDispatcher(l, dispatchConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = d.Close() }()
		checkQueues(t, d, p, 30)
	}
	t.Run("checkpoint missing", func(t *testing.T) {
		fs, p := build(t)
		if err := fs.Remove("/data/dispatch.ckpt"); err != nil {
			t.Fatal(err)
		}
		reopen(t, fs, p)
	})
	t.Run("checkpoint corrupt", func(t *testing.T) {
		fs, p := build(t)
		f, _ := fs.Open("/data/dispatch.ckpt")
		_, _ = f.WriteAt([]byte{0xFF, 0xFF}, 10)
		_ = f.Close()
		reopen(t, fs, p)
	})
	t.Run("consume queue files deleted", func(t *testing.T) {
		fs, p := build(t)
		for _, n := range fs.Names() {
			if bytes.Contains([]byte(n), []byte("/consumequeue/orders/")) {
				_ = fs.Remove(n)
			}
		}
		reopen(t, fs, p)
	})
	t.Run("index files deleted", func(t *testing.T) {
		fs, p := build(t)
		for _, n := range fs.Names() {
			if bytes.Contains([]byte(n), []byte("/index/")) {
				_ = fs.Remove(n)
			}
		}
		reopen(t, fs, p)
		l := openLog(t, bigMemConfig(fs))
		l.SetCommitted(30)
		d, err := OpenDispatcher(l, dispatchConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = d.Close() }()
		for id := range p.byID {
			m, err := d.QueryByID(id)
			if err != nil {
				t.Fatalf("id not re-indexed: %v", err)
			}
			m.Release()
		}
	})
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(encodeCheckpoint(checkpoint{index: 5, end: 4096, indexLast: 100,
		next: map[cq.QueueID]uint64{{Topic: "a", Queue: 1}: 7}}))
	f.Add([]byte("CFXC"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ck, err := decodeCheckpoint(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeCheckpoint(ck), b) {
			t.Fatal("a checkpoint that decodes must re-encode to the same bytes")
		}
	})
}

// A unit past a queue's checkpointed end that no log entry accounts for (a
// torn write, or a record the log lost) looks plausible to cq; recovery must
// cut it, not serve it.
func TestDispatchCutsStrayUnitsPastTheCheckpoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	fs := newMemFS(t)
	l := openLog(t, bigMemConfig(fs))
	d, err := OpenDispatcher(l, dispatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := newProducer()
	p.topics = []string{"orders"}
	for i := uint64(1); i <= 3; i++ {
		mustAppendSync(t, l, []raftpb.Entry{p.entry(rng, i, 1, 2)})
	}
	l.SetCommitted(3)
	if err := d.DispatchTo(3); err != nil {
		t.Fatal(err)
	}
	if err := d.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	_ = l.Close()
	// Plant a unit pointing at the first message, at the end of every
	// queue of "orders" that has one.
	stray := make([]byte, cq.UnitBytes)
	binary.LittleEndian.PutUint64(stray, SegmentHeaderBytes+RecordHeaderBytes+batch.HeaderBytes)
	binary.LittleEndian.PutUint32(stray[8:], 100)
	planted := 0
	for q, msgs := range p.sent {
		name := fmt.Sprintf("/data/consumequeue/%s/%d/%020d.cq", q.Topic, q.Queue, 0)
		f, err := fs.Open(name)
		if err != nil {
			continue
		}
		if _, err := f.WriteAt(stray, int64(len(msgs))*cq.UnitBytes); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		planted++
	}
	if planted == 0 {
		t.Fatal("no queue file to plant a unit in")
	}
	l = openLog(t, bigMemConfig(fs))
	l.SetCommitted(3)
	d, err = OpenDispatcher(l, dispatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	checkQueues(t, d, p, 3)
}
