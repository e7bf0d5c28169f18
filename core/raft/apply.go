package raft

import (
	"fmt"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// apply applies committed entries: membership changes here, normal entries
// in runs through the state machine; then it wakes the proposers waiting on
// this node.
func (n *Node) apply(ents []raftpb.Entry) error {
	var run []raftpb.Entry
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		if err := n.sm.Apply(run); err != nil {
			return fmt.Errorf("raft: apply entries %d..%d: %w", run[0].Index, run[len(run)-1].Index, err)
		}
		run = run[:0]
		return nil
	}
	var done []result
	var ids []uint64
	for _, e := range ents {
		if e.Index <= n.applied {
			continue // already in the state machine (restart replay)
		}
		switch e.Type {
		case raftpb.EntryConfChange:
			if err := flush(); err != nil {
				return err
			}
			var cc raftpb.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("raft: conf change at %d: %w", e.Index, err)
			}
			if err := n.applyConfChange(cc); err != nil {
				return err
			}
			ids, done = append(ids, cc.ID), append(done, result{index: e.Index})
		case raftpb.EntryNormal:
			if len(e.Data) == 0 {
				break // a new leader's empty entry
			}
			run = append(run, e)
			if n.cfg.ProposalID != nil {
				if id, ok := n.cfg.ProposalID(e.Data); ok {
					ids, done = append(ids, id), append(done, result{index: e.Index})
				}
			}
		default:
			return fmt.Errorf("raft: entry %d has unsupported type %v", e.Index, e.Type)
		}
		n.applied = e.Index
	}
	if err := flush(); err != nil {
		return err
	}
	if len(ids) > 0 {
		// A caller whose proposal returns must see its effect in Status
		// (the new voters after a ConfChange), so publish before waking it.
		n.publishStatus()
	}
	for k, id := range ids {
		n.resolve(id, done[k])
	}
	return nil
}

// applyConfChange applies a committed membership change and records the
// new configuration and peer address durably.
func (n *Node) applyConfChange(cc raftpb.ConfChange) error {
	cs := n.rn.ApplyConfChange(cc)
	n.st.cs = *cs
	switch cc.Type {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
		if len(cc.Context) > 0 {
			n.peers[cc.NodeID] = string(cc.Context)
		}
		if cc.NodeID != n.cfg.ID && n.peers[cc.NodeID] != "" {
			n.tr.AddPeer(cc.NodeID, n.peers[cc.NodeID])
		}
	case raftpb.ConfChangeRemoveNode:
		delete(n.peers, cc.NodeID)
		if cc.NodeID != n.cfg.ID {
			n.tr.RemovePeer(cc.NodeID)
		}
	}
	if err := n.meta.save(nil, cs, nil); err != nil {
		return err
	}
	return n.meta.savePeers(n.peers)
}

// makeSnapshot builds a snapshot at the log's compaction point index (whose
// term is term; the next entry is stored at log offset next): metadata,
// that offset, the peer addresses and the state machine's state. Messages
// stay in the log: a follower that installs it receives every retained
// entry after index as ordinary appends, so it holds the same messages as
// the leader. The state machine's bytes describe the applied index, which
// may be further; Restore says so and the state machine skips what it
// already holds while those entries are applied again.
func (n *Node) makeSnapshot(index, term, next uint64) (raftpb.Snapshot, error) {
	app, err := n.sm.Snapshot()
	if err != nil {
		return raftpb.Snapshot{}, fmt.Errorf("raft: state machine snapshot: %w", err)
	}
	return raftpb.Snapshot{
		Data:     encodeSnapData(next, encodePeers(n.peers, app)),
		Metadata: raftpb.SnapshotMetadata{Index: index, Term: term, ConfState: n.st.cs},
	}, nil
}

// snapshotAtStart builds a snapshot at the current compaction point (for
// raft, when the stored one is older than the log's first index).
func (n *Node) snapshotAtStart() (raftpb.Snapshot, error) {
	first, _ := n.log.FirstIndex()
	term, err := n.log.Term(first - 1)
	if err != nil {
		return raftpb.Snapshot{}, fmt.Errorf("raft: snapshot at %d: %w", first-1, err)
	}
	return n.makeSnapshot(first-1, term, n.log.StartOffset())
}

// installSnapshot replaces this follower's log and state with the leader's
// snapshot. meta.db is written first: a crash before the log reset is
// finished at the next start (repairSnapshot).
func (n *Node) installSnapshot(snap raftpb.Snapshot) error {
	next, blob, err := decodeSnapData(snap.Data)
	if err != nil {
		return err
	}
	peers, app, err := decodePeers(blob)
	if err != nil {
		return err
	}
	idx := snap.Metadata.Index
	n.cfg.Logger.Info("installing snapshot", "index", idx, "term", snap.Metadata.Term)
	// The snapshot covers everything up to idx; a commit index beyond it
	// waits until the entries after it are durable (saveHardState).
	hs := n.hs
	hs.Commit = max(n.savedHS.Commit, idx)
	cs := snap.Metadata.ConfState
	// Mark the install first: a crash before the state machine's Restore
	// finishes is completed at the next start (openStorage).
	if err := n.meta.setInstalling(idx); err != nil {
		return err
	}
	if err := n.meta.save(&hs, &cs, &snap); err != nil {
		return err
	}
	n.savedHS = hs
	if err := n.log.Reset(idx, snap.Metadata.Term, next); err != nil {
		return err
	}
	if err := n.sm.Restore(app, idx); err != nil {
		return fmt.Errorf("raft: restore snapshot %d: %w", idx, err)
	}
	if err := n.meta.setInstalling(0); err != nil {
		return err
	}
	n.applied = idx
	n.st.snap, n.st.cs = snap, cs
	for id, addr := range peers {
		if id != n.cfg.ID {
			n.tr.AddPeer(id, addr)
		}
	}
	n.peers = peers
	return n.meta.savePeers(peers)
}

// runRetention applies the log's retention. Before any segment goes, a
// snapshot at the applied index is saved, so a follower that needs the
// removed entries can be brought back by snapshot instead.
func (n *Node) runRetention() error {
	index, term, next, ok := n.log.RetentionPoint(n.applied)
	if !ok {
		return nil
	}
	r, derived := n.sm.(LogRetainer)
	if derived {
		if err := r.BeforeRetention(); err != nil {
			return err
		}
	}
	// The snapshot is saved before any segment goes, so the stored one is
	// never older than the log's start after a crash in between.
	snap, err := n.makeSnapshot(index, term, next)
	if err != nil {
		return err
	}
	hs := n.durableHardState()
	if err := n.meta.save(&hs, nil, &snap); err != nil {
		return err
	}
	n.savedHS, n.st.snap = hs, snap
	// Delete exactly up to the snapshot, even if more became too old since.
	if _, err = n.log.ApplyRetention(index); err != nil || !derived {
		return err
	}
	return r.AfterRetention()
}

func (n *Node) publishStatus() {
	bs := n.rn.BasicStatus()
	last, _ := n.log.LastIndex()
	first, _ := n.log.FirstIndex()
	st := &Status{
		ID: n.cfg.ID, Leader: bs.Lead, Term: bs.Term,
		Commit: bs.Commit, Applied: n.applied, LastIndex: last,
		Role:             bs.RaftState.String(),
		LeaderReady:      n.leader && n.applied >= n.readyIndex,
		DurableIndex:     n.log.DurableIndex(),
		FirstIndex:       first,
		PendingProposals: len(n.held),
		StorageFull:      n.full != nil,
		Voters:           append([]uint64(nil), n.st.cs.Voters...),
	}
	n.status.Store(st)
}
