package raft

// Regression tests for defects found in review (see the commit message).

import (
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
)

type nopTransport struct{}

func (nopTransport) Send([]raftpb.Message)  {}
func (nopTransport) AddPeer(uint64, string) {}
func (nopTransport) RemovePeer(uint64)      {}

func openSingle(t *testing.T, prepared *int) *Node {
	n, err := Open(Config{ID: 1, Dir: t.TempDir(), StateMachine: &testSM{}, Transport: nopTransport{},
		Log:        clog.Config{SegmentSizeBytes: 1 << 20}, // many of these per test: keep files small
		ProposalID: testProposalID,
		Prepare:    func(term uint64, data []byte) (func(), error) { *prepared++; return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Step the node like Run does; stop right after the tick that makes raft a
// leader, before the Ready that updates n.leader.
func tickUntilRaftLeader(t *testing.T, n *Node) {
	for i := 0; i < 1000; i++ {
		n.tick()
		if n.rn.BasicStatus().RaftState == raft.StateLeader {
			return
		}
		if err := n.processReady(); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no leader")
}

// A proposal taken in the same drain() as the tick/vote that elected this
// node goes to raft without Prepare and without the readiness hold.
func TestProposalRightAfterElectionIsPrepared(t *testing.T) {
	prepared := 0
	n := openSingle(t, &prepared)
	defer n.Stop()
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	tickUntilRaftLeader(t, n)
	ch := make(chan result, 1)
	n.propose(proposal{data: testPayload(42, 32), id: 42, done: ch}) // what drain() does next
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Logf("proposal committed at %d, err=%v; Prepare calls: %d; n.leader=%v", r.index, r.err, prepared, n.leader)
		if prepared == 0 {
			t.Errorf("entry %d was proposed by the leader without Prepare (unstamped queue offsets)", r.index)
		}
	default:
		// Not committed yet: then it must be held until the new leader has
		// applied its log, not sitting in raft unprepared.
		if len(n.held) != 1 {
			t.Errorf("the proposal is neither committed, prepared nor held (held %d, prepared %d)", len(n.held), prepared)
		}
	}
}

// Stop with a held local proposal whose submitter still waits sends twice on
// the submitter's 1-slot channel (waiters + held), and blocks forever.
func TestStopWithHeldProposalDoesNotHang(t *testing.T) {
	prepared := 0
	n := openSingle(t, &prepared)
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	tickUntilRaftLeader(t, n)
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	if !n.leader {
		t.Fatal("not leader")
	}
	n.readyIndex = n.applied + 1000 // a backlog still to apply after election
	ch := make(chan result, 1)      // as submit makes it
	n.propose(proposal{data: testPayload(7, 32), id: 7, done: ch})
	t.Logf("held=%d waiters=%d", len(n.held), len(n.waiters))
	stopped := make(chan error)
	go func() { stopped <- n.Stop() }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("Stop blocked: failWaiters sent twice on the same 1-slot channel")
	}
}

// Two attempts of one broker proposal share the data slice (broker.propose
// retries with the same bytes). If both are held (or both queued), Prepare
// stamps the shared buffer twice and raft keeps both entries aliasing it.
func TestRetriedProposalsGetTheirOwnStamps(t *testing.T) {
	var counter uint64
	n, err := Open(Config{ID: 1, Dir: t.TempDir(), StateMachine: &testSM{}, Transport: nopTransport{},
		Log:        clog.Config{SegmentSizeBytes: 1 << 20}, // many of these per test: keep files small
		ProposalID: testProposalID,
		Prepare: func(term uint64, data []byte) (func(), error) {
			data[8] = byte(counter) // "queue offset"
			counter++
			return nil, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { n.held = nil; n.waiters = map[uint64]chan<- result{}; n.Stop() }()
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	tickUntilRaftLeader(t, n)
	if err := n.processReady(); err != nil {
		t.Fatal(err)
	}
	data := testPayload(9, 32)
	n.readyIndex = n.applied + 1                                       // leader not ready yet
	n.propose(proposal{data: data, id: 9, done: make(chan result, 1)}) // attempt 1, held
	delete(n.waiters, 9)                                               // attempt 1 timed out
	n.propose(proposal{data: data, id: 9, done: make(chan result, 1)}) // retry, same bytes, held
	n.readyIndex = n.applied
	n.releaseHeld()
	rd := n.rn.Ready()
	for _, e := range rd.Entries {
		t.Logf("entry %d stamped %d", e.Index, e.Data[8])
	}
	if len(rd.Entries) == 2 && rd.Entries[0].Data[8] == rd.Entries[1].Data[8] {
		t.Errorf("two entries carry the same stamp %d; counter advanced to %d", rd.Entries[0].Data[8], counter)
	}
}

// Broker.Open starts `go node.Run()` and returns; an immediate Close can run
// Stop before Run began. Neither may close done twice (a panic), and Stop
// must not wait for a loop that never runs.
func TestStopBeforeRunStarts(t *testing.T) {
	var wg sync.WaitGroup
	for range 100 {
		prepared := 0
		n := openSingle(t, &prepared)
		wg.Go(n.Run)
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait() // every Run returned; a double close would have panicked
}
