package raft

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
)

// memNet connects nodes running their real loops in one process. Delivery
// copies each message through its wire encoding and can be cut per node.
type memNet struct {
	mu    sync.Mutex
	nodes map[uint64]*Node
	cut   map[uint64]bool
	drop  func(raftpb.Message) bool // nil: deliver every message
}

func newMemNet() *memNet { return &memNet{nodes: map[uint64]*Node{}, cut: map[uint64]bool{}} }

type memTransport struct {
	net  *memNet
	from uint64
}

func (t *memTransport) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		data, err := m.Marshal()
		if err != nil {
			panic(err)
		}
		t.net.mu.Lock()
		to := t.net.nodes[m.To]
		lost := to == nil || t.net.cut[m.To] || t.net.cut[t.from] || t.net.drop != nil && t.net.drop(m)
		from := t.net.nodes[t.from]
		t.net.mu.Unlock()
		if lost {
			if from != nil {
				go from.ReportUnreachable(m.To)
			}
			continue
		}
		var c raftpb.Message
		if err := c.Unmarshal(data); err != nil {
			panic(err)
		}
		to.Process(c)
		if c.Type == raftpb.MsgSnap && from != nil {
			go from.ReportSnapshot(m.To, false)
		}
	}
}
func (t *memTransport) AddPeer(uint64, string) {}
func (t *memTransport) RemovePeer(uint64)      {}

func (mn *memNet) set(id uint64, n *Node) {
	mn.mu.Lock()
	defer mn.mu.Unlock()
	if n == nil {
		delete(mn.nodes, id)
		return
	}
	mn.nodes[id] = n
}

type liveNode struct {
	id  uint64
	dir string
	sm  *lockedSM
	n   *Node
}

// lockedSM lets the test read what the loop applied.
type lockedSM struct {
	mu sync.Mutex
	testSM
	prepared atomic.Int64
}

func (s *lockedSM) Apply(ents []raftpb.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.testSM.Apply(ents)
}
func (s *lockedSM) Restore(data []byte, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.testSM.Restore(data, index)
}
func (s *lockedSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.testSM.Snapshot()
}
func (s *lockedSM) ids() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, len(s.applied))
	for k, a := range s.applied {
		out[k], _ = testProposalID([]byte(a.Data))
	}
	return out
}

type clusterOpts struct {
	logCfg clog.Config
	join   bool
	peers  map[uint64]string
	logger *slog.Logger // nil: discard
}

func startNode(t *testing.T, mn *memNet, id uint64, dir string, o clusterOpts) *liveNode {
	t.Helper()
	if o.logCfg.SegmentSizeBytes == 0 {
		o.logCfg.SegmentSizeBytes = 4 << 20 // segments are preallocated: keep test disks small
	}
	sm := &lockedSM{}
	n, err := Open(Config{
		ID: id, Dir: dir, Peers: o.peers, Join: o.join, Log: o.logCfg,
		TickInterval: 20 * time.Millisecond, StateMachine: sm,
		Transport: &memTransport{net: mn, from: id}, ProposalID: testProposalID,
		Prepare:           func(uint64, []byte) (func(), error) { sm.prepared.Add(1); return nil, nil },
		RetentionInterval: 100 * time.Millisecond,
		Logger:            o.logger,
	})
	if err != nil {
		t.Fatalf("open node %d: %v", id, err)
	}
	mn.set(id, n)
	go n.Run()
	ln := &liveNode{id: id, dir: dir, sm: sm, n: n}
	t.Cleanup(func() { _ = n.Stop() })
	return ln
}

func startCluster(t *testing.T, size int, o clusterOpts) (*memNet, []*liveNode) {
	mn := newMemNet()
	o.peers = map[uint64]string{}
	for id := uint64(1); id <= uint64(size); id++ {
		o.peers[id] = fmt.Sprint("n", id)
	}
	base := t.TempDir()
	var nodes []*liveNode
	for id := uint64(1); id <= uint64(size); id++ {
		nodes = append(nodes, startNode(t, mn, id, filepath.Join(base, fmt.Sprint("n", id)), o))
	}
	return mn, nodes
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

func leaderOf(nodes []*liveNode) *liveNode {
	for _, ln := range nodes {
		if st := ln.n.Status(); st.Role == "StateLeader" && st.LeaderReady {
			return ln
		}
	}
	return nil
}

func waitLeader(t *testing.T, nodes []*liveNode) *liveNode {
	t.Helper()
	var l *liveNode
	waitFor(t, 10*time.Second, "a ready leader", func() bool { l = leaderOf(nodes); return l != nil })
	return l
}

var idSeq atomic.Uint64

func proposeOK(t *testing.T, n *Node) (uint64, uint64) {
	t.Helper()
	// Each attempt gets its own deadline: a proposal forwarded to a leader
	// that just died is lost without an answer, and only a retry (with the
	// same id, so a late commit is recognised) gets through.
	id := idSeq.Add(1)
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		var idx uint64
		idx, err = n.Propose(ctx, testPayload(id, 64))
		cancel()
		if err == nil {
			return id, idx
		}
		time.Sleep(10 * time.Millisecond) // no leader yet
	}
	t.Fatalf("propose %d: %v", id, err)
	return 0, 0
}

func sameApplied(t *testing.T, nodes []*liveNode) []uint64 {
	t.Helper()
	var ref []uint64
	waitFor(t, 10*time.Second, "replicas to apply the same entries", func() bool {
		ref = nodes[0].sm.ids()
		for _, ln := range nodes[1:] {
			got := ln.sm.ids()
			if len(got) != len(ref) {
				return false
			}
			for k := range got {
				if got[k] != ref[k] {
					t.Fatalf("node %d applied %d at position %d, node %d applied %d", ln.id, got[k], k, nodes[0].id, ref[k])
				}
			}
		}
		return true
	})
	return ref
}

func TestSingleNodeCommitsAndRestarts(t *testing.T) {
	mn := newMemNet()
	dir := t.TempDir()
	ln := startNode(t, mn, 1, dir, clusterOpts{})
	waitLeader(t, []*liveNode{ln})
	var ids []uint64
	for range 20 {
		id, _ := proposeOK(t, ln.n)
		ids = append(ids, id)
	}
	if err := ln.n.Stop(); err != nil {
		t.Fatal(err)
	}
	ln = startNode(t, mn, 1, dir, clusterOpts{})
	waitLeader(t, []*liveNode{ln})
	id, _ := proposeOK(t, ln.n)
	ids = append(ids, id)
	got := ln.sm.ids()
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("after restart applied %v, want %v", got, ids)
	}
}

func TestProposeOnEveryNodeAndPrepareOnLeader(t *testing.T) {
	_, nodes := startCluster(t, 3, clusterOpts{})
	leader := waitLeader(t, nodes)
	var acked []uint64
	for round := range 5 {
		for _, ln := range nodes {
			id, idx := proposeOK(t, ln.n)
			acked = append(acked, id)
			if idx == 0 {
				t.Fatalf("round %d: index 0", round)
			}
		}
	}
	applied := sameApplied(t, nodes)
	if len(applied) != len(acked) {
		t.Fatalf("applied %d, acked %d", len(applied), len(acked))
	}
	// Every entry, also those forwarded by followers, passed Prepare on
	// the leader, and only there.
	if got := leader.sm.prepared.Load(); got != int64(len(acked)) {
		t.Fatalf("leader prepared %d proposals, want %d", got, len(acked))
	}
	for _, ln := range nodes {
		if ln != leader && ln.sm.prepared.Load() != 0 {
			t.Fatalf("follower %d ran Prepare", ln.id)
		}
	}
}

func TestLeaderTransfer(t *testing.T) {
	_, nodes := startCluster(t, 3, clusterOpts{})
	leader := waitLeader(t, nodes)
	target := nodes[0]
	if target == leader {
		target = nodes[1]
	}
	proposeOK(t, leader.n)
	leader.n.TransferLeader(target.id)
	waitFor(t, 10*time.Second, "leadership to move", func() bool { return leaderOf(nodes) == target })
	proposeOK(t, target.n)
	sameApplied(t, nodes)
}

func TestLeaderLossElectsANewLeader(t *testing.T) {
	mn, nodes := startCluster(t, 3, clusterOpts{})
	leader := waitLeader(t, nodes)
	proposeOK(t, leader.n)
	mn.mu.Lock()
	mn.cut[leader.id] = true
	mn.mu.Unlock()
	var rest []*liveNode
	for _, ln := range nodes {
		if ln != leader {
			rest = append(rest, ln)
		}
	}
	start := time.Now()
	proposeOK(t, rest[0].n)
	t.Logf("first commit %v after the leader was cut off", time.Since(start))
	// CheckQuorum: the isolated leader steps down by itself.
	waitFor(t, 10*time.Second, "the old leader to step down", func() bool {
		return leader.n.Status().Role != "StateLeader"
	})
	mn.mu.Lock()
	clear(mn.cut)
	mn.mu.Unlock()
	proposeOK(t, leader.n)
	sameApplied(t, nodes)
}

func TestMembershipAddAndRemove(t *testing.T) {
	mn, nodes := startCluster(t, 3, clusterOpts{})
	leader := waitLeader(t, nodes)
	for range 10 {
		proposeOK(t, leader.n)
	}
	n4 := startNode(t, mn, 4, filepath.Join(t.TempDir(), "n4"), clusterOpts{join: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leader.n.ProposeConfChange(ctx, raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4, Context: []byte("n4")}); err != nil {
		t.Fatal(err)
	}
	all := append(nodes, n4)
	proposeOK(t, n4.n)
	sameApplied(t, all)
	if v := leader.n.Status().Voters; len(v) != 4 {
		t.Fatalf("voters after add: %v", v)
	}
	// Remove a follower; the remaining three keep committing.
	victim := nodes[0]
	if victim == leader {
		victim = nodes[1]
	}
	if err := leader.n.ProposeConfChange(ctx, raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: victim.id}); err != nil {
		t.Fatal(err)
	}
	_ = victim.n.Stop()
	mn.set(victim.id, nil)
	var rest []*liveNode
	for _, ln := range all {
		if ln != victim {
			rest = append(rest, ln)
		}
	}
	proposeOK(t, leader.n)
	sameApplied(t, rest)
	if v := leader.n.Status().Voters; len(v) != 3 {
		t.Fatalf("voters after remove: %v", v)
	}
}

// A follower that misses entries the leader's retention removed catches up
// through a snapshot and then through ordinary appends.
func TestSnapshotCatchUpAfterRetention(t *testing.T) {
	logCfg := clog.Config{SegmentSizeBytes: 16 << 10, RetentionBytes: 3 * 16 << 10}
	mn, nodes := startCluster(t, 3, clusterOpts{logCfg: logCfg})
	leader := waitLeader(t, nodes)
	lagger := nodes[0]
	if lagger == leader {
		lagger = nodes[1]
	}
	proposeOK(t, leader.n)
	_ = lagger.n.Stop()
	mn.set(lagger.id, nil)
	// Write far more than the retention keeps.
	for range 600 {
		proposeOK(t, leader.n)
	}
	waitFor(t, 10*time.Second, "retention to compact the leader's log", func() bool {
		return leader.n.Status().FirstIndex > 50
	})
	lagger = startNode(t, mn, lagger.id, lagger.dir, clusterOpts{logCfg: logCfg})
	proposeOK(t, leader.n)
	var rest []*liveNode
	for _, ln := range nodes {
		if ln.id != lagger.id {
			rest = append(rest, ln)
		}
	}
	rest = append(rest, lagger)
	sameApplied(t, rest)
	if first := lagger.n.Status().FirstIndex; first <= 2 {
		t.Fatalf("the lagging follower did not install a snapshot (first index %d)", first)
	}
}
