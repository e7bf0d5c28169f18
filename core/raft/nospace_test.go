package raft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// A full disk under real Run loops (doc.go, "Full disk"): a node that
// cannot roll a segment waits, keeps its place in the cluster and resumes
// when space is back; a failed fsync stops it, and it restarts.

// fullDisk refuses one kind of commit-log write with ENOSPC while set.
type fullDisk struct {
	mu      sync.Mutex
	op      vfs.Op // "" while there is space
	refused int
}

func (d *fullDisk) inject(op vfs.Op, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.op == "" || op != d.op || !strings.HasSuffix(name, ".seg") {
		return nil
	}
	d.refused++
	return syscall.ENOSPC
}

func (d *fullDisk) fill(op vfs.Op) {
	d.mu.Lock()
	d.op = op
	d.mu.Unlock()
}

func (d *fullDisk) free() { d.fill("") }

func (d *fullDisk) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refused
}

// memDisk is a node's commit log on a MemFS whose disk can fill. Segments
// are as small as the log allows, so they roll every few dozen entries.
func memDisk() (*vfs.MemFS, *fullDisk, clusterOpts) {
	fs, d := vfs.NewMem(), &fullDisk{}
	fs.SetInjector(d.inject)
	return fs, d, clusterOpts{logCfg: clog.Config{FS: fs, SegmentSizeBytes: 4096}}
}

type outcome struct {
	id, index uint64
	err       error
}

// proposeAsync proposes a new id on n and reports the outcome on out.
func proposeAsync(n *Node, out chan<- outcome) {
	id := idSeq.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		idx, err := n.Propose(ctx, testPayload(id, 64))
		out <- outcome{id, idx, err}
	}()
}

// proposeUntilFull proposes on via until the node full reports a full
// disk, and returns the proposals that committed. On a single node the
// proposal that hit the full disk is still waiting: pending counts it.
func proposeUntilFull(t *testing.T, via, full *Node, out chan outcome) (acked []outcome, pending int) {
	t.Helper()
	for range 1000 {
		proposeAsync(via, out)
		pending++
		waitFor(t, 10*time.Second, "a commit or a full disk", func() bool {
			select {
			case o := <-out:
				if o.err != nil {
					t.Fatalf("proposal %d: %v", o.id, o.err)
				}
				acked, pending = append(acked, o), pending-1
				return true
			default:
				return full.Status().StorageFull
			}
		})
		if full.Status().StorageFull {
			return acked, pending
		}
	}
	t.Fatal("the disk never filled: no segment roll was refused")
	return nil, 0
}

// checkWaiting: a node on a full disk keeps running and says so, once
// settled says it has had time to go wrong.
func checkWaiting(t *testing.T, n *Node, settled func() bool) {
	t.Helper()
	waitFor(t, 10*time.Second, "the node to settle on the full disk", settled)
	select {
	case <-n.Done():
		t.Fatalf("the node stopped on a full disk: %v", n.Err())
	default:
	}
	if err := n.Err(); err != nil {
		t.Fatalf("the node failed on a full disk: %v", err)
	}
	if !n.Status().StorageFull {
		t.Fatal("the node waits for space but its status does not say so")
	}
}

// retried is checkWaiting's settled for a MemFS disk: the loop retries at
// every tick, and a few retries show it is still waiting, neither stopped
// nor through.
func retried(disk *fullDisk) func() bool {
	n := disk.count()
	return func() bool { return disk.count() >= n+3 }
}

// checkAppliedOnce requires sm to have applied exactly the acknowledged
// proposals, each once, in the order of their indexes.
func checkAppliedOnce(t *testing.T, sm *lockedSM, acked []outcome) {
	t.Helper()
	slices.SortFunc(acked, func(a, b outcome) int { return cmp.Compare(a.index, b.index) })
	want := make([]uint64, len(acked))
	for k, o := range acked {
		want[k] = o.id
	}
	if got := sm.ids(); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
}

func TestFullDiskSingleNodeWaitsAndResumes(t *testing.T) {
	_, disk, o := memDisk()
	ln := startNode(t, newMemNet(), 1, t.TempDir(), o)
	waitLeader(t, []*liveNode{ln})
	out := make(chan outcome, 64)
	disk.fill(vfs.OpPreallocate)
	acked, pending := proposeUntilFull(t, ln.n, ln.n, out)
	for range 5 {
		proposeAsync(ln.n, out)
		pending++
	}
	checkWaiting(t, ln.n, retried(disk))
	select {
	case o := <-out:
		t.Fatalf("proposal %d returned (%v) while the disk was full", o.id, o.err)
	default:
	}
	disk.free()
	for range pending {
		select {
		case o := <-out:
			if o.err != nil {
				t.Fatalf("stalled proposal %d after space came back: %v", o.id, o.err)
			}
			acked = append(acked, o)
		case <-time.After(10 * time.Second):
			t.Fatal("stalled proposals did not commit after space came back")
		}
	}
	checkAppliedOnce(t, ln.sm, acked)
	waitFor(t, 10*time.Second, "StorageFull to clear", func() bool { return !ln.n.Status().StorageFull })
}

// A node stopped while it waits for space must start again: nothing it
// saves on the way out may claim more than its durable log holds.
func TestFullDiskStopWhileWaitingRestarts(t *testing.T) {
	_, disk, o := memDisk()
	mn, dir := newMemNet(), t.TempDir()
	ln := startNode(t, mn, 1, dir, o)
	waitLeader(t, []*liveNode{ln})
	out := make(chan outcome, 64)
	disk.fill(vfs.OpPreallocate)
	acked, _ := proposeUntilFull(t, ln.n, ln.n, out)
	checkWaiting(t, ln.n, retried(disk))
	if err := ln.n.Stop(); err != nil {
		t.Fatalf("Stop while waiting for space: %v", err)
	}
	disk.free()
	ln = startNode(t, mn, 1, dir, o)
	waitLeader(t, []*liveNode{ln})
	checkAppliedPrefix(t, ln.sm, acked)
}

// checkAppliedPrefix: a restarted node applies every acknowledged proposal
// again, first and in order (it may apply proposals that were pending too).
func checkAppliedPrefix(t *testing.T, sm *lockedSM, acked []outcome) {
	t.Helper()
	want := make([]uint64, len(acked))
	for k, o := range acked {
		want[k] = o.id
	}
	var got []uint64
	waitFor(t, 10*time.Second, "the restarted node to apply its log", func() bool {
		got = sm.ids()
		return len(got) >= len(want)
	})
	if !slices.Equal(got[:len(want)], want) {
		t.Fatalf("after the restart applied %v, want %v first", got, want)
	}
	seen := map[uint64]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("proposal %d applied twice: %v", id, got)
		}
		seen[id] = true
	}
}

// memCluster starts size nodes, each with its own disk.
func memCluster(t *testing.T, size int) (*memNet, []*liveNode, map[uint64]*fullDisk) {
	t.Helper()
	mn := newMemNet()
	peers := map[uint64]string{}
	for id := uint64(1); id <= uint64(size); id++ {
		peers[id] = fmt.Sprint("n", id)
	}
	base := t.TempDir()
	var nodes []*liveNode
	disks := map[uint64]*fullDisk{}
	for id := uint64(1); id <= uint64(size); id++ {
		_, disk, o := memDisk()
		o.peers = peers
		disks[id] = disk
		nodes = append(nodes, startNode(t, mn, id, filepath.Join(base, fmt.Sprint("n", id)), o))
	}
	return mn, nodes, disks
}

func others(nodes []*liveNode, not *liveNode) []*liveNode {
	var out []*liveNode
	for _, ln := range nodes {
		if ln != not {
			out = append(out, ln)
		}
	}
	return out
}

// sameLogs requires the nodes to store the same entries at the same log
// offsets, up to what all of them applied.
func sameLogs(t *testing.T, nodes []*liveNode) {
	t.Helper()
	ref := nodes[0].n.Log()
	var lo, hi uint64 = 0, ^uint64(0)
	for _, ln := range nodes {
		first, _ := ln.n.Log().FirstIndex()
		lo, hi = max(lo, first), min(hi, ln.n.Status().Applied)
	}
	if hi < lo {
		t.Fatalf("no entries in common: [%d, %d]", lo, hi)
	}
	want, err := ref.Entries(lo, hi+1, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range nodes[1:] {
		got, err := ln.n.Log().Entries(lo, hi+1, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		for k := range want {
			a, b := want[k], got[k]
			if a.Index != b.Index || a.Term != b.Term || string(a.Data) != string(b.Data) {
				t.Fatalf("node %d entry %d differs from node %d's", ln.id, a.Index, nodes[0].id)
			}
			oa, _ := ref.DataOffset(a.Index)
			ob, _ := ln.n.Log().DataOffset(b.Index)
			if oa != ob {
				t.Fatalf("node %d stores entry %d at offset %d, node %d at %d", ln.id, a.Index, ob, nodes[0].id, oa)
			}
		}
	}
}

func TestFullDiskLeaderHandsOver(t *testing.T) {
	_, nodes, disks := memCluster(t, 3)
	leader := waitLeader(t, nodes)
	rest := others(nodes, leader)
	disks[leader.id].fill(vfs.OpPreallocate)
	out := make(chan outcome, 64)
	// Followers commit without the leader's own write; proposals through a
	// follower go on until the leader's roll is refused.
	proposeUntilFull(t, rest[0].n, leader.n, out)
	waitFor(t, 10*time.Second, "leadership to leave the full node", func() bool {
		l := leaderOf(nodes)
		return l != nil && l != leader
	})
	checkWaiting(t, leader.n, retried(disks[leader.id]))
	for range 20 {
		for _, ln := range rest {
			proposeOK(t, ln.n)
		}
	}
	disks[leader.id].free()
	sameApplied(t, nodes)
	sameLogs(t, nodes)
}

// Raft gives up a leadership transfer that does not finish within an
// election timeout. A leader still waiting for space then tries again:
// otherwise it would lead, unable to apply, until something else deposes
// it.
func TestFullDiskLeaderRetriesTheHandOver(t *testing.T) {
	mn, nodes, disks := memCluster(t, 3)
	leader := waitLeader(t, nodes)
	rest := others(nodes, leader)
	var timeoutNows atomic.Int64
	mn.mu.Lock()
	mn.drop = func(m raftpb.Message) bool {
		// The first hand-over's message to the transferee is lost.
		return m.Type == raftpb.MsgTimeoutNow && timeoutNows.Add(1) == 1
	}
	mn.mu.Unlock()
	disks[leader.id].fill(vfs.OpPreallocate)
	out := make(chan outcome, 64)
	proposeUntilFull(t, rest[0].n, leader.n, out)
	waitFor(t, 10*time.Second, "a second hand-over", func() bool {
		l := leaderOf(nodes)
		return l != nil && l != leader
	})
	if n := timeoutNows.Load(); n < 2 {
		t.Fatalf("leadership moved without a second hand-over (%d MsgTimeoutNow)", n)
	}
	disks[leader.id].free()
	proposeOK(t, rest[0].n)
	sameApplied(t, nodes)
}

func TestFullDiskFollowerCatchesUp(t *testing.T) {
	_, nodes, disks := memCluster(t, 3)
	leader := waitLeader(t, nodes)
	follower := others(nodes, leader)[0]
	disks[follower.id].fill(vfs.OpPreallocate)
	out := make(chan outcome, 64)
	proposeUntilFull(t, leader.n, follower.n, out)
	checkWaiting(t, follower.n, retried(disks[follower.id]))
	for range 60 {
		proposeOK(t, leader.n)
	}
	if l := leaderOf(nodes); l != leader {
		t.Fatalf("leadership moved away from node %d, which had space", leader.id)
	}
	disks[follower.id].free()
	sameApplied(t, nodes)
	sameLogs(t, nodes)
}

// A failed fsync is not waited out (doc.go): the node stops, and starts
// again with every acknowledged proposal, after a restart on the same disk
// and after a power cut.
func TestFullDiskFailedSyncStopsTheNode(t *testing.T) {
	fs, disk, o := memDisk()
	mn, dir := newMemNet(), t.TempDir()
	ln := startNode(t, mn, 1, dir, o)
	waitLeader(t, []*liveNode{ln})
	var acked []outcome
	for range 10 {
		id, idx := proposeOK(t, ln.n)
		acked = append(acked, outcome{id: id, index: idx})
	}
	disk.fill(vfs.OpSync)
	out := make(chan outcome, 1)
	proposeAsync(ln.n, out)
	select {
	case o := <-out:
		if !errors.Is(o.err, ErrStopped) {
			t.Fatalf("a proposal whose fsync failed returned %v, want ErrStopped", o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not stop on a failed fsync")
	}
	<-ln.n.Done()
	if err := ln.n.Err(); !errors.Is(err, clog.ErrSyncFailed) || !vfs.IsNoSpace(err) {
		t.Fatalf("Err() = %v, want the failed sync with its ENOSPC", err)
	}
	if st := ln.n.Status(); st.StorageFull {
		t.Fatal("a stopped node says it waits for space")
	}
	_ = ln.n.Stop()
	disk.free()
	meta, err := os.ReadFile(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []struct {
		name string
		fs   vfs.FS
	}{
		{"a power cut", fs.CrashClone(vfs.CrashDropUnsynced, nil)},
		{"a restart", fs},
	} {
		// Both start from the meta.db the failed node left.
		if err := os.WriteFile(filepath.Join(dir, "meta.db"), meta, 0o600); err != nil {
			t.Fatal(err)
		}
		ln = startNode(t, mn, 1, dir, clusterOpts{logCfg: clog.Config{FS: after.fs, SegmentSizeBytes: 4096}})
		waitLeader(t, []*liveNode{ln})
		checkAppliedPrefix(t, ln.sm, acked)
		if err := ln.n.Stop(); err != nil {
			t.Fatalf("after %s: %v", after.name, err)
		}
	}
}

// steppedNode is a single node on a disk that can fill, stepped as Run
// steps it, but without a clock.
type steppedNode struct {
	t        *testing.T
	dir      string
	fs       *vfs.MemFS
	disk     *fullDisk
	now      time.Time // the log's clock (segment ages)
	prepared int
	n        *Node
}

func newSteppedNode(t *testing.T) *steppedNode {
	fs, disk, _ := memDisk()
	s := &steppedNode{t: t, dir: t.TempDir(), fs: fs, disk: disk, now: time.Unix(1_700_000_000, 0)}
	s.open()
	return s
}

// open opens (or reopens) the node; the previous one must be closed.
func (s *steppedNode) open() {
	s.t.Helper()
	n, err := Open(Config{ID: 1, Dir: s.dir, StateMachine: &testSM{}, Transport: nopTransport{},
		Log: clog.Config{FS: s.fs, SegmentSizeBytes: 4096, RetentionAge: time.Minute,
			Now: func() time.Time { return s.now }},
		ProposalID: testProposalID,
		Prepare:    func(uint64, []byte) (func(), error) { s.prepared++; return nil, nil }})
	if err != nil {
		s.t.Fatalf("open: %v", err)
	}
	s.t.Cleanup(func() { _ = n.Stop() })
	s.n = n
}

// process handles Readys as Run does after each event.
func (s *steppedNode) process() {
	s.t.Helper()
	if err := s.n.processReady(); err != nil {
		if !waitable(err) {
			s.t.Fatal(err)
		}
		s.n.waitForSpace(err)
		return
	}
	s.n.full = nil
	s.n.publishStatus()
}

// propose hands a proposal to the loop, as drain does.
func (s *steppedNode) propose(id uint64) <-chan result {
	ch := make(chan result, 1)
	s.n.propose(proposal{data: testPayload(id, 64), id: id, done: ch})
	return ch
}

// lead elects the node and commits entries 1..count.
func (s *steppedNode) lead(count uint64) {
	s.t.Helper()
	s.process()
	tickUntilRaftLeader(s.t, s.n)
	s.process()
	for id := uint64(1); id <= count; id++ {
		ch := s.propose(id)
		s.process()
		if r := <-ch; r.err != nil {
			s.t.Fatal(r.err)
		}
	}
}

// The Ready in which a node becomes leader carries raft's one notice of it
// (SoftState). If its append hits a full disk, the node must still know it
// leads, and must hold writes until it has applied its whole log: offsets
// stamped by Prepare before that could repeat.
func TestFullDiskWhileBecomingLeaderHoldsWrites(t *testing.T) {
	s := newSteppedNode(t)
	s.lead(3)
	if err := s.n.Stop(); err != nil {
		t.Fatal(err)
	}
	s.open()
	s.process() // applies the committed log: no write needed
	s.disk.fill(vfs.OpWrite)
	tickUntilRaftLeader(t, s.n)
	s.process() // the new term's empty entry cannot be written
	if !s.n.Status().StorageFull {
		t.Fatal("the append of the new leader's entry was not refused")
	}
	s.prepared = 0
	ch := s.propose(4)
	if st := s.n.Status(); s.prepared != 0 || st.LeaderReady {
		t.Fatalf("a leader whose first entry is not even written took a write: prepared %d, LeaderReady %v", s.prepared, st.LeaderReady)
	}
	s.disk.free()
	s.process()
	select {
	case r := <-ch:
		if r.err != nil || s.prepared != 1 {
			t.Fatalf("held write after space came back: %v (prepared %d)", r.err, s.prepared)
		}
	default:
		t.Fatalf("the held write was not released once the log was applied (held %d, LeaderReady %v)", len(s.n.held), s.n.Status().LeaderReady)
	}
}

// Retention runs at ticks, also while the loop waits for space, and saves
// the HardState with its snapshot. That must not persist a commit index
// that covers entries still waiting to be written: after a crash the node
// would refuse to start.
func TestFullDiskRetentionSavesOnlyADurableCommit(t *testing.T) {
	s := newSteppedNode(t)
	s.lead(100) // a few segments, sealed
	s.disk.fill(vfs.OpPreallocate)
	for id := uint64(101); s.n.full == nil; id++ {
		s.propose(id)
		s.process()
	}
	s.now = s.now.Add(time.Hour) // every sealed segment is past RetentionAge
	first, _ := s.n.log.FirstIndex()
	if err := s.n.runRetention(); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.n.log.FirstIndex(); f == first {
		t.Fatal("retention removed nothing: the test misses its point")
	}
	// A crash now: nothing else is saved.
	s.n.closeStorage()
	s.n.stopped.Store(true)
	s.disk.free()
	s.open()
}
