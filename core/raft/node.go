package raft

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Errors a proposer sees.
var (
	// ErrStopped: the node is stopped (or failed; see Node.Err).
	ErrStopped = errors.New("raft: node stopped")
	// ErrDropped: raft dropped the proposal (no leader known, leadership
	// transfer in progress, or the uncommitted-bytes limit reached). It was
	// not appended; retrying is safe.
	ErrDropped = errors.New("raft: proposal dropped")
	// ErrBusy: too many proposals are queued. Back off and retry.
	ErrBusy = errors.New("raft: too many pending proposals")
)

// Node is one member of a Raft group whose log is a core/log commit log.
// A single goroutine (run) owns the RawNode, the log's write side and the
// state machine; everything else talks to it through channels.
type Node struct {
	cfg  Config
	log  *clog.Log
	meta *meta
	st   *storage
	rn   *raft.RawNode
	sm   StateMachine
	tr   Transport

	// Loop-owned state.
	hs            raftpb.HardState // latest, in memory
	savedHS       raftpb.HardState // as persisted in meta.db
	applied       uint64
	leader        bool
	readyIndex    uint64 // as leader, accept writes once applied ≥ readyIndex (readyUnknown: not yet)
	held          []proposal
	waiters       map[uint64]chan<- result
	peers         map[uint64]string // address book, persisted and in snapshots
	ticks         uint64
	retentionTick uint64
	hsSaveDue     bool

	recvc chan raftpb.Message
	propc chan proposal
	ctlc  chan func()
	stopc chan struct{}
	done  chan struct{}

	seq    atomic.Uint64
	status atomic.Pointer[Status]
	errMu  sync.Mutex
	err    error

	// full is the ENOSPC the loop is waiting out (loop.go), nil normally.
	full      error
	fullSince time.Time
	stopped   atomic.Bool
	running   atomic.Bool
}

// readyUnknown is a new leader's readyIndex until the empty entry of its
// term is durable: no applied index reaches it, so writes wait.
const readyUnknown = math.MaxUint64

type proposal struct {
	data []byte
	id   uint64
	cc   *raftpb.ConfChange
	done chan<- result // nil for entries forwarded by a follower
}

type result struct {
	index uint64
	err   error
}

// Status is a snapshot of the node's view, safe to read from any goroutine.
type Status struct {
	ID, Leader, Term uint64
	Commit, Applied  uint64
	LastIndex        uint64
	Role             string
	LeaderReady      bool // leader, and applied its whole log: accepts writes
	Voters           []uint64
	DurableIndex     uint64
	FirstIndex       uint64
	PendingProposals int
	// StorageFull is set while the loop waits for disk space: an append,
	// a segment roll or a HardState save failed with ENOSPC (doc.go).
	StorageFull bool
}

// Open opens (or creates) the node's storage and restores its state. It does
// not start the loop: call Run, or drive it step by step in a simulation.
func Open(cfg Config) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fs := cfg.Log.FS
	if fs == nil {
		fs = vfs.OS{}
	}
	if err := fs.MkdirAll(cfg.Dir); err != nil {
		return nil, err
	}
	// meta.db is bbolt, which works on the real file system only; every
	// bbolt commit is synced, so it needs no crash simulation.
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, sm: cfg.StateMachine, tr: cfg.Transport,
		waiters: map[uint64]chan<- result{},
		recvc:   make(chan raftpb.Message, 4096),
		propc:   make(chan proposal, cfg.MaxPendingProposals),
		ctlc:    make(chan func(), 256),
		stopc:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := n.openStorage(); err != nil {
		n.closeStorage()
		return nil, err
	}
	if err := n.startRaft(); err != nil {
		n.closeStorage()
		return nil, err
	}
	n.publishStatus()
	return n, nil
}

func (n *Node) openStorage() error {
	var err error
	if n.meta, err = openMeta(metaPath(n.cfg)); err != nil {
		return err
	}
	st, err := n.meta.load()
	if err != nil {
		return err
	}
	if n.peers, err = n.meta.loadPeers(); err != nil {
		return err
	}
	if n.log, err = clog.Open(n.cfg.Log); err != nil {
		return err
	}
	if err := n.repairSnapshot(st.snap); err != nil {
		return err
	}
	last, _ := n.log.LastIndex()
	n.log.SetCommitted(min(st.hs.Commit, last))
	if u, ok := n.sm.(LogUser); ok {
		if err := u.OpenLog(n.log); err != nil {
			return fmt.Errorf("raft: state machine: %w", err)
		}
	}
	applied := n.sm.AppliedIndex()
	snapIndex := st.snap.Metadata.Index
	// An install that a crash interrupted restores the state machine even
	// if it claims to be further: its claim may rest on the reset log.
	unfinished := st.installing != 0 && st.installing == snapIndex
	if !raft.IsEmptySnap(st.snap) && (applied < snapIndex || unfinished) {
		app, err := snapAppData(st.snap.Data)
		if err != nil {
			return err
		}
		if err := n.sm.Restore(app, snapIndex); err != nil {
			return fmt.Errorf("raft: restore state machine from snapshot %d: %w", snapIndex, err)
		}
		applied = snapIndex
	}
	if st.installing != 0 {
		if err := n.meta.setInstalling(0); err != nil {
			return err
		}
	}
	// Applied entries were committed; the persisted commit index may just
	// lag (it is saved lazily).
	st.hs.Commit = max(st.hs.Commit, applied, snapIndex)
	if st.hs.Commit > last {
		return fmt.Errorf("raft: commit index %d is beyond the durable log (last index %d): synced data was lost; wipe this node and re-add it", st.hs.Commit, last)
	}
	n.applied, n.hs, n.savedHS = applied, st.hs, st.hs
	n.st = &storage{log: n.log, hs: st.hs, cs: st.cs, snap: st.snap, newSnapshot: n.snapshotAtStart}
	n.log.SetCommitted(st.hs.Commit)
	return nil
}

// repairSnapshot finishes a snapshot install that a crash interrupted:
// meta.db is written first, so it may know a snapshot the log does not.
func (n *Node) repairSnapshot(snap raftpb.Snapshot) error {
	if raft.IsEmptySnap(snap) {
		return nil
	}
	idx, term := snap.Metadata.Index, snap.Metadata.Term
	if first, _ := n.log.FirstIndex(); idx+1 < first {
		return nil // stale, not ahead: a newer one is built when raft asks
	}
	if t, err := n.log.Term(idx); err == nil && t == term {
		return nil
	}
	last, _ := n.log.LastIndex()
	if t, err := n.log.Term(idx); errors.Is(err, raft.ErrCompacted) || (last > idx && err == nil && t != term) {
		return fmt.Errorf("raft: log does not match snapshot %d/%d", idx, term)
	}
	next, _, err := decodeSnapData(snap.Data)
	if err != nil {
		return err
	}
	n.cfg.Logger.Warn("completing an interrupted snapshot install", "index", idx, "term", term)
	return n.log.Reset(idx, term, next)
}

func metaPath(cfg Config) string { return vfs.Join(cfg.Dir, "meta.db") }

func (n *Node) startRaft() error {
	rcfg := &raft.Config{
		ID:                        n.cfg.ID,
		ElectionTick:              n.cfg.ElectionTicks,
		HeartbeatTick:             n.cfg.HeartbeatTicks,
		Storage:                   n.st,
		Applied:                   n.applied,
		MaxSizePerMsg:             n.cfg.MaxSizePerMsgBytes,
		MaxCommittedSizePerReady:  n.cfg.MaxCommittedPerReadyBytes,
		MaxUncommittedEntriesSize: n.cfg.MaxUncommittedEntriesBytes,
		MaxInflightMsgs:           n.cfg.MaxInflightMsgs,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    &raftLogger{l: n.cfg.Logger.With("component", "raft")},
	}
	rn, err := raft.NewRawNode(rcfg)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	n.rn = rn
	if n.needsBootstrap() {
		if len(n.cfg.Peers) == 0 {
			n.cfg.Peers = map[uint64]string{n.cfg.ID: ""}
		}
		ids := make([]uint64, 0, len(n.cfg.Peers))
		for id := range n.cfg.Peers {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		// No addresses in the bootstrap entries: every node must write
		// byte-identical entries, and each may reach its peers through
		// different addresses (proxies, NAT). Config.Peers supplies them.
		peers := make([]raft.Peer, len(ids))
		for k, id := range ids {
			peers[k] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return fmt.Errorf("raft: bootstrap: %w", err)
		}
	}
	// Configured addresses win over the ones learned from the log.
	for id, addr := range n.cfg.Peers {
		if addr != "" {
			n.peers[id] = addr
		}
	}
	for id, addr := range n.peers {
		if id != n.cfg.ID {
			n.tr.AddPeer(id, addr)
		}
	}
	return nil
}

// needsBootstrap: a new node of a new cluster, or one whose first Ready (the
// bootstrap entries) never became durable. Bootstrapping again is safe then:
// the entries are the same on every node, and the saved state is at most
// what bootstrap itself sets (term 1, no vote; the first vote is in term 2).
func (n *Node) needsBootstrap() bool {
	last, _ := n.log.LastIndex()
	return !n.cfg.Join && last == 0 && len(n.st.cs.Voters) == 0 && n.hs.Term <= 1 && n.hs.Vote == 0
}

// NewProposalID returns an id unique in the cluster: this node's id in the
// top 16 bits, a sequence below.
func (n *Node) NewProposalID() uint64 {
	return n.cfg.ID<<48 | n.seq.Add(1)&(1<<48-1)
}

// Propose proposes data and waits until it is committed and applied on this
// node; it returns the entry's index. The data must carry an id that
// Config.ProposalID finds. If ctx ends first the outcome is unknown: the
// entry may still commit.
func (n *Node) Propose(ctx context.Context, data []byte) (uint64, error) {
	if n.cfg.ProposalID == nil {
		return 0, errors.New("raft: Config.ProposalID is not set")
	}
	id, ok := n.cfg.ProposalID(data)
	if !ok {
		return 0, errors.New("raft: proposal carries no id")
	}
	return n.submit(ctx, proposal{data: data, id: id})
}

// ProposeConfChange proposes a membership change and waits until it is
// applied here. For an added node, cc.Context is its peer address.
func (n *Node) ProposeConfChange(ctx context.Context, cc raftpb.ConfChange) error {
	cc.ID = n.NewProposalID()
	_, err := n.submit(ctx, proposal{cc: &cc, id: cc.ID})
	return err
}

func (n *Node) submit(ctx context.Context, p proposal) (uint64, error) {
	ch := make(chan result, 1)
	p.done = ch
	select {
	case n.propc <- p:
	case <-n.done:
		return 0, n.stopErr()
	case <-ctx.Done():
		return 0, ctx.Err()
	default:
		return 0, ErrBusy
	}
	select {
	case r := <-ch:
		return r.index, r.err
	case <-n.done:
		return 0, n.stopErr()
	case <-ctx.Done():
		// Only this attempt's waiter: a retry with the same id may have
		// registered its own by now.
		n.control(func() {
			if w, ok := n.waiters[p.id]; ok && w == chan<- result(ch) {
				delete(n.waiters, p.id)
			}
		})
		return 0, ctx.Err()
	}
}

// TransferLeader asks the leader to hand leadership to id.
func (n *Node) TransferLeader(id uint64) { n.control(func() { n.rn.TransferLeader(id) }) }

// Campaign makes this node start an election now.
func (n *Node) Campaign() { n.control(func() { _ = n.rn.Campaign() }) }

// control runs f in the loop (dropped if the node has stopped).
func (n *Node) control(f func()) {
	select {
	case n.ctlc <- f:
	case <-n.done:
	}
}

// Status returns the node's latest published status.
func (n *Node) Status() Status { return *n.status.Load() }

// Log gives read access to the commit log (consumers read it directly).
func (n *Node) Log() *clog.Log { return n.log }

// Err returns why the node stopped on its own (a storage failure), if it did.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Done is closed when the loop has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

func (n *Node) stopErr() error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// Transport handler side: called from transport goroutines.

// Process queues an incoming message; if the queue is full the message is
// dropped, which raft tolerates like any network loss.
func (n *Node) Process(m raftpb.Message) {
	select {
	case n.recvc <- m:
	default:
	}
}

// ReportUnreachable tells raft a send to id failed.
func (n *Node) ReportUnreachable(id uint64) {
	select {
	case n.ctlc <- func() { n.rn.ReportUnreachable(id) }:
	default:
	}
}

// ReportSnapshot tells raft how a snapshot send to id ended.
func (n *Node) ReportSnapshot(id uint64, failed bool) {
	st := raft.SnapshotFinish
	if failed {
		st = raft.SnapshotFailure
	}
	n.control(func() { n.rn.ReportSnapshot(id, st) })
}

func (n *Node) closeStorage() {
	if n.log != nil {
		_ = n.log.Close()
	}
	if n.meta != nil {
		_ = n.meta.close()
	}
}

// RecentlyActive reports, on the leader, which voters raft has heard from
// since its last quorum check (with CheckQuorum on, raft clears the marks
// every election timeout). ok is false on a follower, which cannot know.
func (n *Node) RecentlyActive(ctx context.Context) (active map[uint64]bool, ok bool) {
	ch := make(chan map[uint64]bool, 1)
	n.control(func() {
		st := n.rn.Status()
		if st.RaftState != raft.StateLeader {
			ch <- nil
			return
		}
		m := make(map[uint64]bool, len(st.Progress))
		for id, pr := range st.Progress {
			m[id] = id == n.cfg.ID || pr.RecentActive
		}
		ch <- m
	})
	select {
	case m := <-ch:
		return m, m != nil
	case <-ctx.Done():
		return nil, false
	case <-n.done:
		return nil, false
	}
}
