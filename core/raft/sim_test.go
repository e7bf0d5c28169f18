package raft

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the simulation (0: time-based)")

func testSeed(t *testing.T) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reproduce the schedule with: go test ./core/raft -run '^%s$' -args -seed %d (raft's own election jitter is not seeded)", t.Name(), s)
		}
	})
	return s
}

// testSM is an in-memory state machine: the list of applied payloads. It
// survives nothing (AppliedIndex 0), so a restarted node replays its log or
// restores a snapshot, which exercises both paths.
type testSM struct {
	applied []appliedEntry
	index   uint64
}

type appliedEntry struct {
	Index uint64
	Data  string
}

func (s *testSM) Apply(ents []raftpb.Entry) error {
	for _, e := range ents {
		if e.Index <= s.index {
			continue // already in a restored snapshot's state
		}
		s.applied = append(s.applied, appliedEntry{e.Index, string(e.Data)})
		s.index = e.Index
	}
	return nil
}

func (s *testSM) AppliedIndex() uint64 { return 0 }

func (s *testSM) Snapshot() ([]byte, error) {
	var b []byte
	for _, a := range s.applied {
		b = binary.LittleEndian.AppendUint64(b, a.Index)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(a.Data)))
		b = append(b, a.Data...)
	}
	return b, nil
}

func (s *testSM) Restore(data []byte, index uint64) error {
	s.applied, s.index = nil, index
	for len(data) > 0 {
		if len(data) < 12 {
			return errors.New("bad test snapshot")
		}
		i, l := binary.LittleEndian.Uint64(data), int(binary.LittleEndian.Uint32(data[8:]))
		s.applied = append(s.applied, appliedEntry{i, string(data[12 : 12+l])})
		s.index = max(s.index, i) // the state may reach past the snapshot's index
		data = data[12+l:]
	}
	return nil
}

// Proposal payloads start with an 8-byte id.
func testProposalID(data []byte) (uint64, bool) {
	if len(data) < 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(data), true
}

func testPayload(id uint64, size int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, id)
	for len(b) < size {
		b = append(b, byte(id+uint64(len(b))))
	}
	return b
}

type simMsg struct {
	m  raftpb.Message
	at int // delivered at or after this step
}

type simNet struct {
	trace []string // recent events, printed when a check fails
	rng   *rand.Rand
	step  int
	queue []simMsg
	cut   map[uint64]bool // node isolated from all others
	nodes map[uint64]*simNode
	drop  float64
}

type simTransport struct {
	net  *simNet
	from uint64
}

func (t *simTransport) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		// Copy through the wire encoding, as the real transport does, so
		// nothing aliases the sender's log.
		data, err := m.Marshal()
		if err != nil {
			panic(err)
		}
		var c raftpb.Message
		if err := c.Unmarshal(data); err != nil {
			panic(err)
		}
		t.net.queue = append(t.net.queue, simMsg{m: c, at: t.net.step + t.net.rng.IntN(4)})
	}
}
func (t *simTransport) AddPeer(uint64, string) {}
func (t *simTransport) RemovePeer(uint64)      {}

type simNode struct {
	id    uint64
	peers map[uint64]string // passed on every start, as a real deployment's --peers
	dir   string
	fs    *vfs.MemFS
	node  *Node
	sm    *testSM
	up    bool
	acked map[uint64]chan result
}

func (s *simNet) logf(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("step %d: ", s.step)+fmt.Sprintf(format, args...))
	if len(s.trace) > 400 {
		s.trace = s.trace[100:]
	}
}

func (s *simNet) fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	for _, l := range s.trace {
		t.Log(l)
	}
	t.Fatalf(format, args...)
}

func (s *simNet) open(t *testing.T, sn *simNode) {
	t.Helper()
	sn.sm = &testSM{}
	n, err := Open(Config{
		ID: sn.id, Dir: sn.dir, Peers: sn.peers,
		Log: clog.Config{FS: sn.fs, SegmentSizeBytes: 4096, MaxEntryBytes: 2048,
			RetentionBytes: 4 * 4096},
		StateMachine: sn.sm, Transport: &simTransport{net: s, from: sn.id},
		ProposalID: testProposalID, RetentionInterval: 10 * 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open node %d: %v", sn.id, err)
	}
	sn.node, sn.up = n, true
}

// deliver hands the due messages to their recipients, dropping some and
// everything that crosses a cut.
func (s *simNet) deliver() {
	var later []simMsg
	for _, sm := range s.queue {
		if sm.at > s.step {
			later = append(later, sm)
			continue
		}
		m := sm.m
		from, to := s.nodes[m.From], s.nodes[m.To]
		lost := to == nil || !to.up || s.cut[m.From] || s.cut[m.To] || s.rng.Float64() < s.drop
		if lost {
			if from != nil && from.up {
				from.node.rn.ReportUnreachable(m.To)
				if m.Type == raftpb.MsgSnap {
					from.node.rn.ReportSnapshot(m.To, raft.SnapshotFailure)
				}
			}
			continue
		}
		if m.Type == raftpb.MsgVote || m.Type == raftpb.MsgVoteResp || m.Type == raftpb.MsgPreVote || m.Type == raftpb.MsgPreVoteResp {
			s.logf("deliver %v %d->%d term %d logterm %d index %d reject %v", m.Type, m.From, m.To, m.Term, m.LogTerm, m.Index, m.Reject)
		}
		to.node.step(m)
		if m.Type == raftpb.MsgSnap && from != nil && from.up {
			from.node.rn.ReportSnapshot(m.To, raft.SnapshotFinish)
		}
	}
	s.queue = later
}

// TestSimulatedCluster runs a seeded schedule of proposals, ticks, message
// loss and delay, partitions, crashes with torn writes and restarts, and
// retention with snapshots, over three nodes; then heals everything and
// checks the invariants.
func TestSimulatedCluster(t *testing.T) {
	seed := testSeed(t)
	for run := range uint64(3) {
		t.Run(fmt.Sprint("run", run), func(t *testing.T) { simulate(t, seed, run, 3000) })
	}
}

func simulate(t *testing.T, seed, run uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, run))
	net := &simNet{rng: rng, cut: map[uint64]bool{}, nodes: map[uint64]*simNode{}, drop: 0.02}
	peers := map[uint64]string{1: "n1", 2: "n2", 3: "n3"}
	base := t.TempDir()
	for id := range peers {
		sn := &simNode{id: id, peers: peers, dir: filepath.Join(base, fmt.Sprint("n", id)), fs: vfs.NewMem(), acked: map[uint64]chan result{}}
		net.nodes[id] = sn
		net.open(t, sn)
	}
	acked := map[uint64]uint64{}   // proposal id → index
	leaders := map[uint64]uint64{} // term → leader
	nextID := uint64(1)
	ids := []uint64{1, 2, 3}
	for net.step = 0; net.step < steps; net.step++ {
		sn := net.nodes[ids[rng.IntN(3)]]
		switch r := rng.IntN(100); {
		case r < 35:
			net.deliver()
		case r < 60:
			if sn.up {
				sn.node.tick()
			}
		case r < 85:
			if sn.up {
				ch := make(chan result, 1)
				sn.acked[nextID] = ch
				sn.node.propose(proposal{data: testPayload(nextID, 16+rng.IntN(600)), id: nextID, done: ch})
				nextID++
			}
		case r < 87:
			if sn.up {
				crash(t, net, sn, rng)
			}
		case r < 89:
			if len(net.cut) == 0 {
				net.cut[sn.id] = true
			} else {
				clear(net.cut)
			}
		case r < 90:
			if sn.up {
				if err := sn.node.runRetention(); err != nil {
					t.Fatalf("retention on %d: %v", sn.id, err)
				}
			}
		}
		for _, id := range ids {
			n := net.nodes[id]
			if !n.up {
				continue
			}
			if err := n.node.processReady(); err != nil {
				t.Fatalf("step %d node %d: %v", net.step, id, err)
			}
			collectAcks(t, n, acked)
			st := n.node.Status()
			if st.Role == "StateLeader" {
				if l, ok := leaders[st.Term]; ok && l != id {
					net.fatalf(t, "two leaders in term %d: %d and %d", st.Term, l, id)
				}
				if _, ok := leaders[st.Term]; !ok {
					net.logf("node %d leads term %d (hs %+v)", id, st.Term, n.node.hs)
				}
				leaders[st.Term] = id
			}
		}
	}
	settle(t, net, ids, acked)
	checkInvariants(t, net, ids, acked)
	for _, id := range ids {
		_ = net.nodes[id].node.Stop()
	}
}

func crash(t *testing.T, net *simNet, sn *simNode, rng *rand.Rand) {
	mode := vfs.CrashDropUnsynced
	if rng.IntN(2) == 0 {
		mode = vfs.CrashTear
	}
	clone := sn.fs.CrashClone(mode, rand.New(rand.NewPCG(rng.Uint64(), 0)))
	net.logf("crash node %d (mode %d) hs %+v savedHS %+v", sn.id, mode, sn.node.hs, sn.node.savedHS)
	sn.node.closeStorage() // no Sync, no HardState save: a power cut
	sn.fs = clone
	sn.acked = map[uint64]chan result{} // outcomes unknown
	net.open(t, sn)
	last, _ := sn.node.log.LastIndex()
	net.logf("restart node %d: hs %+v last %d", sn.id, sn.node.hs, last)
}

func collectAcks(t *testing.T, sn *simNode, acked map[uint64]uint64) {
	for id, ch := range sn.acked {
		select {
		case r := <-ch:
			delete(sn.acked, id)
			if r.err == nil {
				if prev, ok := acked[id]; ok && prev != r.index {
					t.Fatalf("proposal %d acked at %d and at %d", id, prev, r.index)
				}
				acked[id] = r.index
			}
		default:
		}
	}
}

// settle heals the network and runs until every node has applied the same
// commit index.
func settle(t *testing.T, net *simNet, ids []uint64, acked map[uint64]uint64) {
	clear(net.cut)
	net.drop = 0
	for k := 0; k < 20000; k++ {
		net.step++
		net.deliver()
		for _, id := range ids {
			sn := net.nodes[id]
			if k%3 == 0 {
				sn.node.tick()
			}
			if err := sn.node.processReady(); err != nil {
				t.Fatal(err)
			}
			collectAcks(t, sn, acked)
		}
		if k > 200 && converged(net, ids) {
			return
		}
	}
	for _, id := range ids {
		t.Logf("node %d: %+v", id, net.nodes[id].node.Status())
	}
	t.Fatal("cluster did not converge after healing")
}

func converged(net *simNet, ids []uint64) bool {
	var applied uint64
	leaders := 0
	for k, id := range ids {
		st := net.nodes[id].node.Status()
		if st.Role == "StateLeader" {
			leaders++
		}
		if k == 0 {
			applied = st.Applied
		} else if st.Applied != applied {
			return false
		}
	}
	return leaders == 1 && len(net.queue) == 0
}

func checkInvariants(t *testing.T, net *simNet, ids []uint64, acked map[uint64]uint64) {
	// Every replica applied the same sequence (the SM history spans
	// snapshots, so it is complete even where logs were compacted).
	ref := net.nodes[ids[0]].sm.applied
	for _, id := range ids[1:] {
		got := net.nodes[id].sm.applied
		if len(got) != len(ref) {
			t.Fatalf("node %d applied %d entries, node %d applied %d", id, len(got), ids[0], len(ref))
		}
		for k := range got {
			if got[k] != ref[k] {
				t.Fatalf("node %d differs at applied entry %d: %v vs %v", id, k, got[k].Index, ref[k].Index)
			}
		}
	}
	// Every acknowledged proposal is there exactly once, at its index.
	seen := map[uint64]uint64{}
	for _, a := range ref {
		id, _ := testProposalID([]byte(a.Data))
		if _, dup := seen[id]; dup {
			t.Fatalf("proposal %d applied twice", id)
		}
		seen[id] = a.Index
	}
	for id, idx := range acked {
		if got, ok := seen[id]; !ok || got != idx {
			t.Fatalf("acked proposal %d (index %d) found at %d, present=%v", id, idx, got, ok)
		}
	}
	// Committed log prefixes are byte-identical where the logs overlap.
	var lo, hi uint64 = 0, ^uint64(0)
	for _, id := range ids {
		st := net.nodes[id].node.Status()
		lo, hi = max(lo, st.FirstIndex), min(hi, st.Commit)
	}
	for i := lo; i <= hi; i++ {
		var want raftpb.Entry
		for k, id := range ids {
			ents, err := net.nodes[id].node.log.Entries(i, i+1, ^uint64(0))
			if err != nil {
				t.Fatalf("node %d entry %d: %v", id, i, err)
			}
			if k == 0 {
				want = ents[0]
			} else if ents[0].Term != want.Term || string(ents[0].Data) != string(want.Data) {
				t.Fatalf("entry %d differs between nodes", i)
			}
		}
	}
	keys := make([]uint64, 0, len(acked))
	for id := range acked {
		keys = append(keys, id)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	t.Logf("%d proposals acknowledged, %d applied, common log [%d, %d]", len(acked), len(ref), lo, hi)
	if len(acked) == 0 {
		t.Fatal("no proposal was acknowledged: the schedule exercised nothing")
	}
}
