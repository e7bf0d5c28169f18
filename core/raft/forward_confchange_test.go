//go:build unix

package raft

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// fwdNet is a minimal in-process network for this file: Send hands every
// message to the recipient's Process (copied through the wire encoding).
type fwdNet struct {
	mu    sync.Mutex
	nodes map[uint64]*Node
}

type fwdTransport struct{ net *fwdNet }

func (t fwdTransport) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		data, err := m.Marshal()
		if err != nil {
			panic(err)
		}
		var c raftpb.Message
		if err := c.Unmarshal(data); err != nil {
			panic(err)
		}
		t.net.mu.Lock()
		n := t.net.nodes[c.To]
		t.net.mu.Unlock()
		if n != nil {
			n.Process(c)
		}
	}
}
func (fwdTransport) AddPeer(uint64, string) {}
func (fwdTransport) RemovePeer(uint64)      {}

// A membership change proposed on a follower is forwarded to the leader
// like any proposal (raft does that); it must be appended and applied, or at
// least fail, rather than vanish. Today the leader's step() takes forwarded
// MsgProps apart and re-proposes only the EntryNormal entries, so a
// forwarded EntryConfChange is silently dropped and the follower's
// ProposeConfChange waits until its context ends.
func TestProposeConfChangeOnFollower(t *testing.T) {
	net := &fwdNet{nodes: map[uint64]*Node{}}
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	base := t.TempDir()
	open := func(id uint64, join bool) *Node {
		cfg := Config{
			ID: id, Dir: filepath.Join(base, fmt.Sprint("n", id)), Peers: peers, Join: join,
			TickInterval: 10 * time.Millisecond, StateMachine: &procSM{},
			Transport: fwdTransport{net}, ProposalID: testProposalID,
		}
		if join {
			cfg.Peers = nil
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatalf("open node %d: %v", id, err)
		}
		net.mu.Lock()
		net.nodes[id] = n
		net.mu.Unlock()
		go n.Run()
		t.Cleanup(func() { _ = n.Stop() })
		return n
	}
	var nodes []*Node
	for id := uint64(1); id <= 3; id++ {
		nodes = append(nodes, open(id, false))
	}
	var follower *Node
	deadline := time.Now().Add(10 * time.Second)
	for follower == nil {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10s")
		}
		var lead uint64
		for _, n := range nodes {
			if st := n.Status(); st.LeaderReady {
				lead = st.ID
			}
		}
		for _, n := range nodes {
			if st := n.Status(); lead != 0 && st.ID != lead && st.Leader == lead {
				follower = n
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // the polling interval
	}
	open(4, true)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := follower.ProposeConfChange(ctx, raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4, Context: []byte("n4")})
	if err != nil {
		t.Fatalf("ProposeConfChange on follower %d: %v after %v (follower status %+v)",
			follower.Status().ID, err, time.Since(start).Round(time.Millisecond), follower.Status())
	}
	if v := follower.Status().Voters; len(v) != 4 {
		t.Fatalf("voters after the add: %v", v)
	}
}
