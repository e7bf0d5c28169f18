package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// TestExchange: three nodes send each other messages of every shape, up to
// exactly MaxFrameBytes, in Send calls of mixed recipients; every message
// arrives intact and in order per sender→recipient pair.
func TestExchange(t *testing.T) {
	const maxFrame = 1 << 20
	var nodes []node
	for id := uint64(1); id <= 3; id++ {
		cfg := testConfig(id)
		cfg.MaxFrameBytes = maxFrame
		nodes = append(nodes, startNode(t, cfg))
	}
	connect(nodes...)

	want := map[[2]uint64][]raftpb.Message{}
	for _, a := range nodes {
		var all []raftpb.Message
		for _, b := range nodes {
			if a.cfg.ID != b.cfg.ID {
				ms := shapes(a.cfg.ID, b.cfg.ID, maxFrame)
				want[[2]uint64{a.cfg.ID, b.cfg.ID}] = ms
				all = interleave(all, ms)
			}
		}
		rng := rand.New(rand.NewPCG(a.cfg.ID, 0))
		for len(all) > 0 { // Send calls of 1 to 8 messages, as Readys come
			n := min(len(all), 1+rng.IntN(8))
			a.Send(all[:n])
			all = all[n:]
		}
	}

	for pair, ms := range want {
		to := nodes[pair[1]-1]
		waitFor(t, 10*time.Second, func() bool { return len(to.rec.from(pair[0])) >= len(ms) })
		got := to.rec.from(pair[0])
		if len(got) != len(ms) {
			t.Fatalf("%d→%d: got %d messages, want %d", pair[0], pair[1], len(got), len(ms))
		}
		for i := range ms {
			if !sameMessage(got[i], ms[i]) {
				t.Fatalf("%d→%d: message %d differs: got %s type, commit %d; want %s, commit %d",
					pair[0], pair[1], i, got[i].Type, got[i].Commit, ms[i].Type, ms[i].Commit)
			}
		}
	}
	for _, n := range nodes {
		for id, s := range n.Stats() {
			if s.DroppedFrames != 0 {
				t.Errorf("node %d dropped %d frames to %d", n.cfg.ID, s.DroppedFrames, id)
			}
		}
	}
	// Every MsgSnap is reported sent, exactly once.
	waitFor(t, 5*time.Second, func() bool {
		for pair, ms := range want {
			snaps := 0
			for _, m := range ms {
				if m.Type == raftpb.MsgSnap {
					snaps++
				}
			}
			from := nodes[pair[0]-1].rec
			if from.snapReports(pair[1], true) != 0 {
				t.Fatalf("%d→%d: a MsgSnap reported failed", pair[0], pair[1])
			}
			if from.snapReports(pair[1], false) != snaps {
				return false
			}
		}
		return true
	})
}

// interleave merges b into a alternately, keeping each one's order.
func interleave(a, b []raftpb.Message) []raftpb.Message {
	out := make([]raftpb.Message, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(a) > 0 {
			out, a = append(out, a[0]), a[1:]
		}
		if len(b) > 0 {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// TestPeerDown: sends to a peer that is not listening return at once and
// are reported; when the peer comes up on its address, delivery resumes by
// itself, in order.
func TestPeerDown(t *testing.T) {
	addr := freeAddr(t)
	cfg := testConfig(1)
	cfg.Peers = map[uint64]string{2: addr}
	a := startNode(t, cfg)

	msgs := make([]raftpb.Message, 1000)
	for i := range msgs {
		msgs[i] = heartbeat(1, 2, uint64(i))
	}
	start := time.Now()
	for range 20 {
		a.Send(msgs)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Send to a down peer took %v", d)
	}
	waitFor(t, 5*time.Second, func() bool { return a.rec.unreachableCount(2) > 0 })
	waitFor(t, 5*time.Second, func() bool { return a.Stats()[2].DroppedFrames == 20*1000 })

	bcfg := testConfig(2)
	bcfg.ListenAddr = addr
	b := startNode(t, bcfg)
	seq := uint64(0)
	waitFor(t, 5*time.Second, func() bool {
		seq++
		a.Send([]raftpb.Message{heartbeat(1, 2, seq)})
		return b.rec.count() > 0
	})

	// The connection is up: a burst now arrives whole and in order (some
	// of the probes above may still be arriving; they are numbered lower).
	burst := make([]raftpb.Message, 500)
	for i := range burst {
		burst[i] = heartbeat(1, 2, seq+1+uint64(i))
	}
	a.Send(burst)
	var got []raftpb.Message
	waitFor(t, 5*time.Second, func() bool {
		got = got[:0]
		for _, m := range b.rec.from(1) {
			if m.Commit > seq {
				got = append(got, m)
			}
		}
		return len(got) >= len(burst)
	})
	for i := range burst {
		if got[i].Commit != burst[i].Commit {
			t.Fatalf("message %d: commit %d, want %d", i, got[i].Commit, burst[i].Commit)
		}
	}
}

// TestFullQueue: a peer that accepts but never reads fills the kernel
// buffers, then the queue; further messages are dropped and reported, and
// Send never blocks.
func TestFullQueue(t *testing.T) {
	sink := newSinkListener(t)
	cfg := testConfig(1)
	cfg.PeerQueueMessages = 8
	cfg.WriteTimeout = time.Minute // the queue, not the timeout, must drop
	cfg.Peers = map[uint64]string{2: sink.ln.Addr().String()}
	a := startNode(t, cfg)

	big := appOfSize(1, 2, 256<<10)
	waitFor(t, 20*time.Second, func() bool {
		start := time.Now()
		a.Send([]raftpb.Message{big})
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Send blocked for %v", d)
		}
		return a.Stats()[2].DroppedFrames > 0
	})
	waitFor(t, 5*time.Second, func() bool { return a.rec.unreachableCount(2) > 0 })
	snap := raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: 2, Snapshot: raftpb.Snapshot{Data: []byte("x")}}
	a.Send([]raftpb.Message{snap})
	waitFor(t, 5*time.Second, func() bool { return a.rec.snapReports(2, true) == 1 })
	waitFor(t, 5*time.Second, func() bool { return sink.accepted() >= 1 })
	if sink.accepted() != 1 {
		t.Fatalf("%d connections, want 1 (no write timeout yet)", sink.accepted())
	}
	// Close must interrupt the writer blocked in Write (checked by Cleanup
	// returning, and by TestNoGoroutineLeak).
}

// TestWriteTimeout: a peer that stops reading is disconnected after
// WriteTimeout, what was lost is reported, and the next message redials.
func TestWriteTimeout(t *testing.T) {
	sink := newSinkListener(t)
	cfg := testConfig(1)
	cfg.WriteTimeout = 200 * time.Millisecond
	cfg.Peers = map[uint64]string{2: sink.ln.Addr().String()}
	a := startNode(t, cfg)

	big := appOfSize(1, 2, 256<<10)
	waitFor(t, 20*time.Second, func() bool {
		a.Send([]raftpb.Message{big})
		return sink.accepted() >= 2
	})
	waitFor(t, 5*time.Second, func() bool { return a.rec.unreachableCount(2) > 0 })
}

// TestSnapshotReports: a MsgSnap is reported sent once flushed, and failed
// when the peer is down, unknown, or the snapshot is over MaxFrameBytes.
func TestSnapshotReports(t *testing.T) {
	b := startNode(t, testConfig(2))
	cfg := testConfig(1)
	cfg.MaxFrameBytes = 4096
	cfg.Peers = map[uint64]string{2: b.addr(), 3: freeAddr(t)}
	a := startNode(t, cfg)

	snap := func(to uint64, size int) raftpb.Message {
		return raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: to, Term: 2, Snapshot: raftpb.Snapshot{
			Data: bytes.Repeat([]byte{'s'}, size),
			Metadata: raftpb.SnapshotMetadata{Index: 50, Term: 2,
				ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}}
	}
	ok := snap(2, 100)
	a.Send([]raftpb.Message{ok})
	waitFor(t, 5*time.Second, func() bool { return a.rec.snapReports(2, false) == 1 })
	waitFor(t, 5*time.Second, func() bool { return b.rec.count() == 1 })
	if !sameMessage(b.rec.from(1)[0], ok) {
		t.Fatal("the snapshot arrived changed")
	}

	a.Send([]raftpb.Message{snap(3, 100)}) // down
	waitFor(t, 5*time.Second, func() bool { return a.rec.snapReports(3, true) == 1 })

	a.Send([]raftpb.Message{snap(9, 100), snap(2, 5000)}) // unknown; too large
	waitFor(t, 5*time.Second, func() bool {
		return a.rec.snapReports(9, true) == 1 && a.rec.unreachableCount(9) == 1 && // unknown
			a.rec.snapReports(2, true) == 1 && a.rec.unreachableCount(2) == 1 // too large
	})
	if a.rec.snapReports(2, false) != 1 {
		t.Fatal("extra success report")
	}
}

// TestBadConnections: each kind of bad client gets its connection closed
// without any message reaching the Handler, and the node keeps serving its
// real peer.
func TestBadConnections(t *testing.T) {
	const maxFrame = 1024
	bcfg := testConfig(2)
	bcfg.MaxFrameBytes = maxFrame
	b := startNode(t, bcfg)
	acfg := testConfig(1)
	acfg.Peers = map[uint64]string{2: b.addr()}
	a := startNode(t, acfg)

	hs := func(cluster, from, to uint64) []byte {
		return appendHandshake(nil, handshake{clusterID: cluster, from: from, to: to})
	}
	good := hs(testCluster, 5, 2)
	frame := func(m raftpb.Message) []byte {
		raw, err := encodeFrame(&m, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	garbage := make([]byte, 64)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"wrong magic", append([]byte("CFXRAFT0"), good[8:]...)},
		{"wrong cluster", hs(testCluster+1, 5, 2)},
		{"wrong recipient", hs(testCluster, 5, 3)},
		{"sender 0", hs(testCluster, 0, 2)},
		{"garbage", garbage},
		{"oversize frame", binary.LittleEndian.AppendUint32(bytes.Clone(good), maxFrame+1)},
		{"undecodable frame", append(bytes.Clone(good), 3, 0, 0, 0, 0xff, 0xff, 0xff)},
		{"message to someone else", append(bytes.Clone(good), frame(heartbeat(5, 3, 1))...)},
		{"message from someone else", append(bytes.Clone(good), frame(heartbeat(6, 2, 1))...)},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", b.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(c.in); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, conn)
			a.Send([]raftpb.Message{heartbeat(1, 2, uint64(i))})
			waitFor(t, 5*time.Second, func() bool { return len(b.rec.from(1)) == i+1 })
			if n := b.rec.count(); n != i+1 {
				t.Fatalf("the handler got %d messages, want only the %d from the real peer", n, i+1)
			}
		})
	}
}

// expectClosed reads from conn until the peer closes it; a timeout means
// the peer kept the connection open.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection was not closed")
	}
}

// TestNewerConnectionReplacesOlder: a second valid handshake from the same
// sender closes the first connection.
func TestNewerConnectionReplacesOlder(t *testing.T) {
	b := startNode(t, testConfig(2))
	dial := func() net.Conn {
		conn, err := net.Dial("tcp", b.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		raw, _ := encodeFrame(&raftpb.Message{Type: raftpb.MsgHeartbeat, From: 5, To: 2}, 1024)
		if _, err := conn.Write(append(appendHandshake(nil, handshake{testCluster, 5, 2}), raw...)); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	first := dial()
	waitFor(t, 5*time.Second, func() bool { return b.rec.count() == 1 })
	dial()
	expectClosed(t, first)
	waitFor(t, 5*time.Second, func() bool { return b.rec.count() == 2 })
}

// TestAddRemovePeer: a peer's address can change under queued traffic, and a
// removed peer is unknown to Send.
func TestAddRemovePeer(t *testing.T) {
	b1 := startNode(t, testConfig(2))
	b2 := startNode(t, testConfig(2))
	cfg := testConfig(1)
	cfg.Peers = map[uint64]string{2: b1.addr()}
	a := startNode(t, cfg)

	a.Send([]raftpb.Message{heartbeat(1, 2, 1)})
	waitFor(t, 5*time.Second, func() bool { return b1.rec.count() == 1 })
	a.AddPeer(2, b1.addr()) // same address: nothing happens
	a.AddPeer(2, b2.addr())
	a.Send([]raftpb.Message{heartbeat(1, 2, 2), heartbeat(1, 2, 3)})
	waitFor(t, 5*time.Second, func() bool { return b2.rec.count() == 2 })
	if b1.rec.count() != 1 {
		t.Fatalf("the old address got %d messages, want 1", b1.rec.count())
	}
	if a.Stats()[2].DroppedFrames != 0 {
		t.Fatal("changing the address dropped messages")
	}

	a.RemovePeer(2)
	a.Send([]raftpb.Message{heartbeat(1, 2, 4)})
	if a.Stats()[2].DroppedFrames != 1 {
		t.Fatal("a send to a removed peer was not counted")
	}
	waitFor(t, 5*time.Second, func() bool { return a.rec.unreachableCount(2) == 1 })
	a.AddPeer(2, b1.addr())
	a.Send([]raftpb.Message{heartbeat(1, 2, 5)})
	waitFor(t, 5*time.Second, func() bool { return b1.rec.count() == 2 })
	a.AddPeer(1, "127.0.0.1:1") // itself: ignored
	if _, ok := (*a.peers.Load())[1]; ok {
		t.Fatal("AddPeer accepted the node itself")
	}
}

// TestCloseIdempotent: Close twice, Send and AddPeer after Close, Start after
// Close are all harmless.
func TestCloseIdempotent(t *testing.T) {
	rec := newRecorder()
	cfg := testConfig(1)
	cfg.Peers = map[uint64]string{2: freeAddr(t)}
	tr, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	tr.Send([]raftpb.Message{heartbeat(1, 2, 1)}) // before Start: waits in the queue
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err == nil {
		t.Fatal("a second Start succeeded")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr.Send([]raftpb.Message{heartbeat(1, 2, 2)})
	tr.AddPeer(3, "127.0.0.1:1")
	if err := tr.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestConfig(t *testing.T) {
	d := Config{}.WithDefaults()
	if d.MaxFrameBytes != 64<<20 || d.PeerQueueMessages != 4096 || d.DialTimeout != time.Second ||
		d.WriteTimeout != 5*time.Second || d.BackoffMin != 50*time.Millisecond || d.BackoffMax != 2*time.Second || d.Logger == nil {
		t.Fatalf("defaults: %+v", d)
	}
	good := Config{ID: 1, ClusterID: 1, ListenAddr: ":0", Peers: map[uint64]string{2: "h:1"}}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.ID = 0 },
		func(c *Config) { c.ClusterID = 0 },
		func(c *Config) { c.ListenAddr = "" },
		func(c *Config) { c.MaxFrameBytes = -1 },
		func(c *Config) { c.MaxFrameBytes = 1 << 32 },
		func(c *Config) { c.PeerQueueMessages = -1 },
		func(c *Config) { c.WriteTimeout = -1 },
		func(c *Config) { c.BackoffMax = c.BackoffMin - 1 },
		func(c *Config) { c.Peers = map[uint64]string{0: "h:1"} },
		func(c *Config) { c.Peers = map[uint64]string{3: ""} },
	}
	for i, f := range bad {
		c := good
		f(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "transport: ") {
			t.Errorf("case %d: Validate = %v, want an error", i, err)
		}
	}
	if _, err := New(good, nil); err == nil {
		t.Error("New accepted a nil Handler")
	}
}

// TestNoGoroutineLeak runs the busy paths (exchange, a down peer, a stuck
// peer, a rejected client) and checks that Close leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("busy", func(t *testing.T) {
		sink := newSinkListener(t)
		b := startNode(t, testConfig(2))
		cfg := testConfig(1)
		cfg.Peers = map[uint64]string{2: b.addr(), 3: freeAddr(t), 4: sink.ln.Addr().String()}
		cfg.PeerQueueMessages = 8
		a := startNode(t, cfg)
		b.AddPeer(1, a.addr())
		big := appOfSize(1, 4, 256<<10)
		waitFor(t, 20*time.Second, func() bool {
			a.Send([]raftpb.Message{heartbeat(1, 2, 1), heartbeat(1, 3, 1), big})
			b.Send([]raftpb.Message{heartbeat(2, 1, 1)})
			return a.Stats()[4].DroppedFrames > 0 && a.rec.count() > 0 && b.rec.count() > 0
		})
		raw, err := net.Dial("tcp", b.addr()) // a client that never sends its handshake
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
	})
	waitFor(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= base })
}

// loopHandler forwards reports to a channel that only the goroutine calling
// Send reads, as core/raft's Node does: a report made from inside Send
// would wait for Send's own caller.
type loopHandler struct {
	ctl  chan string
	stop chan struct{}
}

func (h loopHandler) Process(raftpb.Message) {}
func (h loopHandler) ReportUnreachable(id uint64) {
	h.forward(fmt.Sprintf("unreachable %d", id))
}
func (h loopHandler) ReportSnapshot(id uint64, failed bool) {
	h.forward(fmt.Sprintf("snapshot %d failed=%v", id, failed))
}
func (h loopHandler) forward(s string) {
	select {
	case h.ctl <- s:
	case <-h.stop:
	}
}

// TestSendDoesNotReport: Send returns before any report for what it dropped
// is made, and the reports follow.
func TestSendDoesNotReport(t *testing.T) {
	h := loopHandler{ctl: make(chan string), stop: make(chan struct{})}
	tr, err := New(testConfig(1), h)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	defer close(h.stop) // runs first: lets a blocked report go before Close waits

	returned := make(chan struct{})
	go func() {
		tr.Send([]raftpb.Message{{Type: raftpb.MsgSnap, From: 1, To: 9}})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Send waited for a report to be taken by its own caller")
	}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case s := <-h.ctl:
			got[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("reports so far: %v", got)
		}
	}
	if !got["unreachable 9"] || !got["snapshot 9 failed=true"] {
		t.Fatalf("reports: %v", got)
	}
}
