package transport

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

const testCluster = 0xc1

// waitFor polls cond until it holds, failing the test after timeout. Tests
// synchronise only through it, never through a bare sleep.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond) // the polling interval
	}
}

// sameMessage compares messages by encoding: it ignores nil versus empty
// byte slices, which the wire cannot tell apart.
func sameMessage(a, b raftpb.Message) bool {
	ab, err1 := a.Marshal()
	bb, err2 := b.Marshal()
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}

// appOfSize returns a MsgApp whose encoding is exactly size bytes.
func appOfSize(from, to uint64, size int) raftpb.Message {
	for data := max(size-64, 0); ; data++ {
		m := raftpb.Message{Type: raftpb.MsgApp, From: from, To: to, Term: 1, Index: 1, LogTerm: 1,
			Entries: []raftpb.Entry{{Term: 1, Index: 2, Data: bytes.Repeat([]byte{byte(data)}, data)}}}
		switch n := m.Size(); {
		case n == size:
			return m
		case n > size:
			panic(fmt.Sprintf("no MsgApp of exactly %d bytes", size))
		}
	}
}

// randomMessage returns a message of a random type with random fields.
func randomMessage(rng *rand.Rand, from, to uint64) raftpb.Message {
	m := raftpb.Message{
		Type: raftpb.MessageType(rng.IntN(19)), From: from, To: to,
		Term: rng.Uint64N(100), LogTerm: rng.Uint64N(100), Index: rng.Uint64(), Commit: rng.Uint64N(1000),
		Reject: rng.IntN(2) == 0, RejectHint: rng.Uint64N(10),
	}
	for range rng.IntN(4) {
		m.Entries = append(m.Entries, raftpb.Entry{Term: 1, Index: rng.Uint64(),
			Type: raftpb.EntryType(rng.IntN(3)), Data: randomBytes(rng, 300)})
	}
	if rng.IntN(3) == 0 {
		m.Context = randomBytes(rng, 20)
	}
	if rng.IntN(5) == 0 {
		m.Snapshot = raftpb.Snapshot{Data: randomBytes(rng, 100), Metadata: raftpb.SnapshotMetadata{
			Index: rng.Uint64(), Term: 3, ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}}
	}
	return m
}

func randomBytes(rng *rand.Rand, maxLen int) []byte {
	b := make([]byte, rng.IntN(maxLen+1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// shapes returns one message of every shape the transport must carry, with
// Commit numbering them so that tests can check order. Sizes go up to
// exactly maxFrame.
func shapes(from, to uint64, maxFrame int) []raftpb.Message {
	rng := rand.New(rand.NewPCG(from, to))
	ms := []raftpb.Message{
		{Type: raftpb.MsgHeartbeat, Term: 2},
		{Type: raftpb.MsgHeartbeatResp, Term: 2, Context: []byte("read-index ctx")},
		{Type: raftpb.MsgPreVote, Term: 3, LogTerm: 2, Index: 10},
		{Type: raftpb.MsgVoteResp, Term: 3, Reject: true},
		{Type: raftpb.MsgAppResp, Term: 3, Index: 9, Reject: true, RejectHint: 4},
		{Type: raftpb.MsgApp, Term: 3, LogTerm: 3, Index: 10, Entries: []raftpb.Entry{
			{Term: 3, Index: 11, Data: []byte("batch")},
			{Term: 3, Index: 12, Type: raftpb.EntryConfChange, Data: []byte{8, 1, 16, 4}},
			{Term: 3, Index: 13}, // the empty entry of a new leader
		}},
		{Type: raftpb.MsgSnap, Term: 3, Snapshot: raftpb.Snapshot{Data: []byte("log offset + queue offsets"),
			Metadata: raftpb.SnapshotMetadata{Index: 100, Term: 3, ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}},
		{Type: raftpb.MsgTimeoutNow, Term: 4},
	}
	for range 20 {
		ms = append(ms, randomMessage(rng, from, to))
	}
	ms = append(ms, appOfSize(from, to, maxFrame-1000), appOfSize(from, to, maxFrame))
	for i := range ms {
		ms[i].From, ms[i].To, ms[i].Commit = from, to, uint64(i)
	}
	// Commit is the sequence number, so sizes must not change after it is set.
	ms[len(ms)-2] = sized(ms[len(ms)-2], maxFrame-1000)
	ms[len(ms)-1] = sized(ms[len(ms)-1], maxFrame)
	return ms
}

// sized trims or pads the first entry's data so that m encodes to size.
func sized(m raftpb.Message, size int) raftpb.Message {
	for m.Size() > size {
		m.Entries[0].Data = m.Entries[0].Data[:len(m.Entries[0].Data)-1]
	}
	for m.Size() < size {
		m.Entries[0].Data = append(m.Entries[0].Data, 0)
	}
	if m.Size() != size {
		panic(fmt.Sprintf("cannot size message to %d", size))
	}
	return m
}

type snapReport struct {
	id     uint64
	failed bool
}

// recorder is a Handler that remembers everything.
type recorder struct {
	mu          sync.Mutex
	msgs        []raftpb.Message
	unreachable map[uint64]int
	snaps       []snapReport
}

func newRecorder() *recorder { return &recorder{unreachable: map[uint64]int{}} }

func (r *recorder) Process(m raftpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

func (r *recorder) ReportUnreachable(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable[id]++
}

func (r *recorder) ReportSnapshot(id uint64, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, snapReport{id, failed})
}

// from returns the messages received from sender id, in arrival order.
func (r *recorder) from(id uint64) []raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []raftpb.Message
	for _, m := range r.msgs {
		if m.From == id {
			out = append(out, m)
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) unreachableCount(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[id]
}

func (r *recorder) snapReports(id uint64, failed bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.snaps {
		if s == (snapReport{id, failed}) {
			n++
		}
	}
	return n
}

// testLogger logs to stderr when -v is given, which helps when a test fails.
func testLogger() *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a config with short timeouts, so that failure paths run
// quickly.
func testConfig(id uint64) Config {
	return Config{
		ID: id, ClusterID: testCluster, ListenAddr: "127.0.0.1:0",
		DialTimeout: time.Second, WriteTimeout: 5 * time.Second,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Logger: testLogger(),
	}
}

// node is a started Transport with its recorder.
type node struct {
	*Transport
	rec *recorder
}

func (n node) addr() string { return n.Addr().String() }

// startNode starts a transport for cfg; the test closes it at the end.
func startNode(t testing.TB, cfg Config) node {
	t.Helper()
	rec := newRecorder()
	tr, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return node{tr, rec}
}

// connect makes every node a peer of every other.
func connect(nodes ...node) {
	for _, a := range nodes {
		for _, b := range nodes {
			a.AddPeer(b.cfg.ID, b.addr())
		}
	}
}

// freeAddr returns a loopback address that nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// heartbeat is a small message numbered by Commit.
func heartbeat(from, to, seq uint64) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgHeartbeat, From: from, To: to, Term: 1, Commit: seq}
}

// sinkListener accepts TCP connections and never reads from them: a peer
// that is up but stuck.
type sinkListener struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newSinkListener(t testing.TB) *sinkListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sinkListener{ln: ln, done: make(chan struct{})}
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *sinkListener) accept() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
	}
}

func (s *sinkListener) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *sinkListener) close() {
	s.ln.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}
