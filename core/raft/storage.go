package raft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/etcd/raft/v3"
	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
)

// StateMachine is what the node applies committed entries to. All calls
// come from the node's loop goroutine, one at a time.
type StateMachine interface {
	// Apply applies committed, locally durable entries in log order. Only
	// normal entries with data are passed; the node handles the rest.
	Apply(ents []raftpb.Entry) error
	// AppliedIndex is the last index whose effect survives a restart. On
	// start the node replays committed entries after it.
	AppliedIndex() uint64
	// Snapshot returns the state after the last Apply, for a follower that
	// fell behind the log's retention.
	Snapshot() ([]byte, error)
	// Restore replaces the state with a snapshot's. The snapshot sits at
	// index, but its state may already include entries after index (it was
	// taken at the applied index of the node that made it); the node then
	// applies entries from index+1 on, and the state machine must skip the
	// effects it already holds.
	Restore(data []byte, index uint64) error
}

// LogUser is implemented by a state machine that reads the commit log
// itself (the broker's dispatcher). The node calls OpenLog once, after the
// log is recovered and its saved commit index is set, before AppliedIndex.
// OpenLog may raise the log's commit index (SetCommitted) up to what the
// state machine has applied: an applied entry was committed and durable.
type LogUser interface {
	OpenLog(l *clog.Log) error
}

// LogRetainer is implemented by a state machine that keeps state derived
// from the log (consume queues). Before retention deletes segments, the
// node calls BeforeRetention so that state is durable up to the applied
// index (nothing it still needs to replay is deleted); after, it calls
// AfterRetention to drop what points below the log's new start.
type LogRetainer interface {
	BeforeRetention() error
	AfterRetention() error
}

// storage is raft.Storage over the commit log (entries) and meta.db
// (HardState, ConfState, snapshot). Raft calls it from the node's loop.
type storage struct {
	log  *clog.Log
	hs   raftpb.HardState
	cs   raftpb.ConfState
	snap raftpb.Snapshot
	// newSnapshot builds a snapshot at the applied index when the stored
	// one is older than the log's compaction point.
	newSnapshot func() (raftpb.Snapshot, error)
}

var _ raft.Storage = (*storage)(nil)

func (s *storage) InitialState() (raftpb.HardState, raftpb.ConfState, error) {
	return s.hs, s.cs, nil
}

func (s *storage) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	return s.log.Entries(lo, hi, maxSize)
}

func (s *storage) Term(i uint64) (uint64, error) { return s.log.Term(i) }
func (s *storage) LastIndex() (uint64, error)    { return s.log.LastIndex() }
func (s *storage) FirstIndex() (uint64, error)   { return s.log.FirstIndex() }

// Snapshot returns the latest snapshot, building a new one if the stored
// one no longer lets a follower continue from the log (its index is below
// the compaction point).
func (s *storage) Snapshot() (raftpb.Snapshot, error) {
	first, _ := s.log.FirstIndex()
	if s.snap.Metadata.Index+1 >= first && !raft.IsEmptySnap(s.snap) {
		return s.snap, nil
	}
	if s.newSnapshot == nil {
		return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	snap, err := s.newSnapshot()
	if err != nil {
		return raftpb.Snapshot{}, err
	}
	s.snap = snap
	return snap, nil
}

// The snapshot blob (Snapshot.Data): the log offset at which the entry
// after the snapshot's index goes (so the follower's log continues at the
// same physical offsets as the leader's), then the state machine's bytes.
const snapHeaderBytes = 16

const snapMagic = 0x31534658_43 // "CXFS1" truncated into the first 8 bytes as a check

func encodeSnapData(nextOffset uint64, app []byte) []byte {
	b := make([]byte, snapHeaderBytes+len(app))
	binary.LittleEndian.PutUint64(b[0:], snapMagic)
	binary.LittleEndian.PutUint64(b[8:], nextOffset)
	copy(b[snapHeaderBytes:], app)
	return b
}

var errBadSnapshot = errors.New("raft: bad snapshot data")

func decodeSnapData(b []byte) (nextOffset uint64, app []byte, err error) {
	if len(b) < snapHeaderBytes || binary.LittleEndian.Uint64(b) != snapMagic {
		return 0, nil, fmt.Errorf("%w: %d bytes", errBadSnapshot, len(b))
	}
	return binary.LittleEndian.Uint64(b[8:]), b[snapHeaderBytes:], nil
}

// snapAppData returns the state machine's part of a snapshot blob.
func snapAppData(b []byte) ([]byte, error) {
	_, blob, err := decodeSnapData(b)
	if err != nil {
		return nil, err
	}
	_, app, err := decodePeers(blob)
	return app, err
}
