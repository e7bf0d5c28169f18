package raft

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/raft/v3/raftpb"
)

// meta is the small, rarely written Raft state that does not belong in the
// commit log: HardState, ConfState, the latest snapshot and the applied
// in bbolt (meta.db). See doc.go for the layout. The applied index is not
// here: the state machine owns it, so it can persist it in the same
// transaction as the state it describes.
type meta struct {
	db *bolt.DB
}

var (
	bucketRaft   = []byte("raft")
	keyHardState = []byte("hardstate")
	keyConfState = []byte("confstate")
	keySnapshot  = []byte("snapshot")
	// keyInstalling holds the index of a snapshot whose install has begun
	// but whose state-machine restore has not finished.
	keyInstalling = []byte("installing")
)

func openMeta(path string) (*meta, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second, // a second process on the same data dir fails fast
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("raft: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRaft)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("raft: init %s: %w", path, err)
	}
	return &meta{db: db}, nil
}

func (m *meta) close() error { return m.db.Close() }

// DB exposes the database so a state machine can keep its own buckets next
// to the Raft state (and update its applied index in the same transaction).
func (m *meta) DB() *bolt.DB { return m.db }

type state struct {
	hs         raftpb.HardState
	cs         raftpb.ConfState
	snap       raftpb.Snapshot
	installing uint64
}

func (m *meta) load() (state, error) {
	var st state
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRaft)
		if v := b.Get(keyHardState); v != nil {
			if err := st.hs.Unmarshal(v); err != nil {
				return fmt.Errorf("hardstate: %w", err)
			}
		}
		if v := b.Get(keyConfState); v != nil {
			if err := st.cs.Unmarshal(v); err != nil {
				return fmt.Errorf("confstate: %w", err)
			}
		}
		if v := b.Get(keySnapshot); v != nil {
			if err := st.snap.Unmarshal(v); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
		if v := b.Get(keyInstalling); len(v) == 8 {
			st.installing = binary.LittleEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("raft: load meta.db: %w", err)
	}
	return st, nil
}

// save writes whatever is non-nil in one synced transaction.
func (m *meta) save(hs *raftpb.HardState, cs *raftpb.ConfState, snap *raftpb.Snapshot) error {
	err := m.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRaft)
		put := func(k []byte, v interface{ Marshal() ([]byte, error) }) error {
			data, err := v.Marshal()
			if err != nil {
				return err
			}
			return b.Put(k, data)
		}
		if hs != nil {
			if err := put(keyHardState, hs); err != nil {
				return err
			}
		}
		if cs != nil {
			if err := put(keyConfState, cs); err != nil {
				return err
			}
		}
		if snap != nil {
			return put(keySnapshot, snap)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("raft: save meta.db: %w", err)
	}
	return nil
}

// setInstalling records (index > 0) or clears (0) an unfinished install.
func (m *meta) setInstalling(index uint64) error {
	err := m.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRaft).Put(keyInstalling, binary.LittleEndian.AppendUint64(nil, index))
	})
	if err != nil {
		return fmt.Errorf("raft: save meta.db: %w", err)
	}
	return nil
}
