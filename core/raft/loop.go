package raft

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/vfs"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"
)

// Run drives the node until Stop: ticks, incoming messages, proposals, and
// Ready handling, all from this one goroutine.
func (n *Node) Run() {
	if !n.running.CompareAndSwap(false, true) {
		return // already running, or stopped before it started
	}
	defer close(n.done)
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		ticked := false
		select {
		case <-n.stopc:
			return
		case <-ticker.C:
			n.tick()
			ticked = true
		case m := <-n.recvc:
			n.step(m)
		case p := <-n.propc:
			n.propose(p)
		case f := <-n.ctlc:
			f()
		}
		// Take everything else that is waiting before building a Ready, so
		// one fsync covers as many proposals as possible (group commit).
		n.drain()
		if n.full != nil && !ticked {
			continue // out of space: try again at the next tick, not per message
		}
		if err := n.processReady(); err != nil {
			if waitable(err) {
				n.waitForSpace(err)
				continue
			}
			n.fail(err)
			return
		}
		if n.full != nil {
			n.cfg.Logger.Info("disk space is back: storage writes resume", "stalled_for", time.Since(n.fullSince).Round(time.Millisecond))
			n.full = nil
			n.publishStatus()
		}
	}
}

// errFatal marks a storage error that the loop must not wait out even if
// the disk is full: a failed apply or snapshot install may have changed
// part of the state, so doing it again is not exact.
var errFatal = errors.New("raft: storage step cannot be retried")

func fatal(err error) error { return fmt.Errorf("%w: %w", errFatal, err) }

// waitable reports whether the loop may wait for space instead of failing
// (doc.go, "Full disk"). A failed fsync is never waitable (core/log).
func waitable(err error) bool {
	return vfs.IsNoSpace(err) && !errors.Is(err, errFatal) && !errors.Is(err, clog.ErrSyncFailed)
}

// waitForSpace handles an ENOSPC from the storage steps of a Ready (doc.go,
// "Full disk"): the Ready is not advanced, so raft offers the same work
// again, and Run retries it at every tick. A leader that cannot write hands
// leadership to the most up-to-date follower, which may still have room.
// Raft gives a transfer up after an election timeout (the follower may not
// have caught up, or a message was lost), so a leader still waiting tries
// again at a later retry.
func (n *Node) waitForSpace(err error) {
	if n.full == nil {
		n.fullSince = time.Now()
		n.cfg.Logger.Error("disk full: storage writes wait for space", "err", err)
	}
	if n.leader && n.rn.BasicStatus().LeadTransferee == 0 {
		if to := n.bestFollower(); to != 0 {
			n.cfg.Logger.Warn("disk full: handing leadership over", "to", to)
			n.rn.TransferLeader(to)
		}
	}
	n.full = err
	n.publishStatus()
}

// bestFollower is the voter other than this node with the highest match
// index, 0 if there is none.
func (n *Node) bestFollower() uint64 {
	var best, match uint64
	for id, pr := range n.rn.Status().Progress {
		if id != n.cfg.ID && pr.Match > match && !pr.IsLearner {
			best, match = id, pr.Match
		}
	}
	return best
}

func (n *Node) drain() {
	for {
		select {
		case m := <-n.recvc:
			n.step(m)
		case p := <-n.propc:
			n.propose(p)
		case f := <-n.ctlc:
			f()
		default:
			return
		}
	}
}

// processReady handles Readys until raft has nothing more to do.
func (n *Node) processReady() error {
	for n.rn.HasReady() {
		if err := n.handleReady(n.rn.Ready()); err != nil {
			return err
		}
	}
	if n.hsSaveDue {
		n.hsSaveDue = false
		if err := n.saveHardState(); err != nil {
			return err
		}
	}
	n.publishStatus()
	return nil
}

func (n *Node) fail(err error) {
	n.cfg.Logger.Error("raft node stops on a storage failure", "err", err)
	n.errMu.Lock()
	n.err = err
	n.errMu.Unlock()
	n.failWaiters(n.stopErr()) // ErrStopped, as every later proposer sees
}

// Stop stops the loop, persists the latest HardState and closes storage.
func (n *Node) Stop() error {
	if !n.stopped.CompareAndSwap(false, true) {
		return nil
	}
	close(n.stopc)
	if n.running.CompareAndSwap(false, true) {
		close(n.done) // the loop never ran (or a simulation drove it): nothing to wait for
	} else {
		<-n.done
	}
	n.failWaiters(ErrStopped)
	var err error
	if n.Err() == nil {
		err = n.saveHardState()
	}
	n.closeStorage()
	return err
}

func (n *Node) failWaiters(err error) {
	for id, w := range n.waiters {
		w <- result{err: err}
		delete(n.waiters, id)
	}
	n.held = nil // their waiters were answered above
}

func (n *Node) tick() {
	n.rn.Tick()
	n.ticks++
	n.hsSaveDue = true
	every := uint64(max(n.cfg.RetentionInterval/n.cfg.TickInterval, 1))
	if n.ticks-n.retentionTick >= every {
		n.retentionTick = n.ticks
		if err := n.runRetention(); err != nil {
			n.cfg.Logger.Warn("retention failed", "err", err)
		}
	}
}

// step feeds an incoming message to raft. A proposal forwarded by a follower
// is taken apart on the leader and proposed like a local one, so the leader
// can prepare it (stamp offsets) and hold it until it is ready for writes.
func (n *Node) step(m raftpb.Message) {
	if m.Type == raftpb.MsgProp && n.raftLeader() {
		for _, e := range m.Entries {
			switch e.Type {
			case raftpb.EntryNormal:
				n.propose(proposal{data: e.Data})
			case raftpb.EntryConfChange:
				var cc raftpb.ConfChange
				if err := cc.Unmarshal(e.Data); err != nil {
					n.cfg.Logger.Warn("dropping a malformed forwarded conf change", "from", m.From, "err", err)
					continue
				}
				n.propose(proposal{cc: &cc, id: cc.ID})
			default:
				n.cfg.Logger.Warn("dropping a forwarded entry of unsupported type", "from", m.From, "type", e.Type)
			}
		}
		return
	}
	if err := n.rn.Step(m); err != nil && err != raft.ErrStepPeerNotFound {
		n.cfg.Logger.Debug("step", "type", m.Type, "from", m.From, "err", err)
	}
}

// propose hands a proposal to raft. A follower lets raft forward it to the
// leader; a leader that has not applied its whole log yet holds it, because
// the offsets it would stamp could be stale.
func (n *Node) propose(p proposal) {
	if p.done != nil {
		n.waiters[p.id] = p.done
		p.done = nil // from here on the waiter is found by id
	}
	// Ask raft itself: it can become leader inside a Tick or Step of this
	// very loop pass, before handleReady has noticed (n.leader) and set
	// readyIndex. Such a leader must hold writes like any unready one.
	leader := n.raftLeader()
	if leader && (!n.leader || n.applied < n.readyIndex) {
		if len(n.held) >= n.cfg.MaxPendingProposals {
			n.resolve(p.id, result{err: ErrBusy})
			return
		}
		n.held = append(n.held, p)
		return
	}
	var undo func()
	if leader && n.cfg.Prepare != nil && p.cc == nil {
		// Prepare stamps the data in place; a retry of the same proposal
		// may share the buffer, so each attempt gets its own copy.
		p.data = bytes.Clone(p.data)
		var err error
		if undo, err = n.cfg.Prepare(n.hs.Term, p.data); err != nil {
			n.resolve(p.id, result{err: err})
			return
		}
	}
	var err error
	if p.cc != nil {
		err = n.rn.ProposeConfChange(*p.cc)
	} else {
		err = n.rn.Propose(p.data)
	}
	if err != nil {
		if undo != nil {
			undo()
		}
		n.resolve(p.id, result{err: fmt.Errorf("%w: %w", ErrDropped, err)})
	}
}

func (n *Node) raftLeader() bool { return n.rn.BasicStatus().RaftState == raft.StateLeader }

func (n *Node) resolve(id uint64, r result) {
	if w, ok := n.waiters[id]; ok {
		w <- r
		delete(n.waiters, id)
	}
}

// handleReady processes one Ready in this order (etcd raft's contract for
// synchronous storage, see doc.go):
//
//  0. The new HardState and role are taken in memory. Raft hands a role
//     change out once, so it must not be lost when the Ready then waits
//     for disk space; a new leader takes writes only after step 4.
//  1. A changed term or vote is synced to meta.db before anything is sent:
//     a forgotten vote could elect two leaders in one term.
//  2. A leader sends its messages now, in parallel with its own disk write
//     (Raft thesis 10.2.1): its MsgApps do not claim local durability.
//  3. A snapshot from the leader is installed.
//  4. Entries are appended and made durable with one fdatasync (group
//     commit).
//  5. A follower sends its messages only now: its MsgAppResp acknowledges
//     entries that must be durable.
//  6. The commit index is noted (persisted lazily: raft relearns it), and
//     the log may serve committed, durable entries without copying.
//  7. Committed entries are applied. They are all durable by now: etcd raft
//     v3.5 can hand out entries of this same Ready as committed (always on a
//     single node), which is why applying comes after step 4.
//  8. Advance.
func (n *Node) handleReady(rd raft.Ready) error {
	// Adopt the new HardState first: everything below that persists n.hs
	// (a snapshot install) must write the new term and vote, never an older
	// one over it, or a crash could let this node vote twice in a term.
	if !raft.IsEmptyHardState(rd.HardState) {
		n.hs = rd.HardState
	}
	// Then the role: raft reports a change once (SoftState), also when this
	// Ready fails on a full disk and is handed out again without it.
	if rd.SoftState != nil {
		isLeader := rd.SoftState.RaftState == raft.StateLeader
		if isLeader && !n.leader {
			n.readyIndex = readyUnknown // until the new term's entry is durable (step 4)
		}
		if n.leader && !isLeader {
			n.stepDown()
		}
		n.leader = isLeader
	}
	if err := n.saveTermVote(n.hs); err != nil { // 1
		return err
	}
	if n.leader { // 2
		n.tr.Send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) { // 3
		if err := n.installSnapshot(rd.Snapshot); err != nil {
			return fatal(err)
		}
	}
	if err := n.log.Append(rd.Entries); err != nil { // 4
		return err
	}
	if rd.MustSync {
		if err := n.log.Sync(); err != nil {
			return err
		}
	}
	if n.leader && n.readyIndex == readyUnknown {
		// Raft appended an empty entry for the new term, now durable;
		// once it is applied, so is everything before it.
		n.readyIndex, _ = n.log.LastIndex()
	}
	if !n.leader { // 5
		n.tr.Send(rd.Messages)
	}
	n.log.SetCommitted(n.hs.Commit)                      // 6
	if err := n.apply(rd.CommittedEntries); err != nil { // 7
		return fatal(err)
	}
	n.rn.Advance(rd) // 8
	n.releaseHeld()
	return nil
}

// saveTermVote syncs a changed term or vote. It keeps the commit index
// that is already saved: the new one may cover entries of this very Ready
// that are not durable yet, and a persisted commit index beyond the durable
// log would keep the node from restarting.
func (n *Node) saveTermVote(hs raftpb.HardState) error {
	if hs.Term == n.savedHS.Term && hs.Vote == n.savedHS.Vote {
		return nil
	}
	hs.Commit = n.savedHS.Commit
	if err := n.meta.save(&hs, nil, nil); err != nil {
		return err
	}
	n.savedHS = hs
	return nil
}

// saveHardState persists the commit index when it moved (lazily: at most
// once per Ready that follows a tick, and on Stop).
func (n *Node) saveHardState() error {
	hs := n.durableHardState()
	if hs.Commit == n.savedHS.Commit && hs.Term == n.savedHS.Term && hs.Vote == n.savedHS.Vote {
		return nil
	}
	if err := n.meta.save(&hs, nil, nil); err != nil {
		return err
	}
	n.savedHS = hs
	return nil
}

// durableHardState is the HardState to persist: n.hs with the commit index
// the log was last given (step 6), which its durable entries back. n.hs
// runs ahead of it while a Ready waits for disk space, and a saved commit
// index beyond the durable log would keep the node from restarting.
func (n *Node) durableHardState() raftpb.HardState {
	hs := n.hs
	hs.Commit = min(hs.Commit, n.log.Committed())
	return hs
}

// stepDown: held proposals go back through raft, which forwards them to
// whoever leads now (or drops them if nobody does).
func (n *Node) stepDown() {
	held := n.held
	n.held = nil
	n.leader = false
	for _, p := range held {
		n.propose(p)
	}
}

func (n *Node) releaseHeld() {
	if !n.leader || n.applied < n.readyIndex || len(n.held) == 0 {
		return
	}
	held := n.held
	n.held = nil
	for _, p := range held {
		n.propose(p)
	}
}
