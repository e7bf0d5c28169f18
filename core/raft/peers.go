package raft

import (
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// The address book: peer id → transport address, learned from the initial
// peer list and from ConfChange contexts. It is persisted in meta.db and
// carried in snapshots, so a node restored from a snapshot can reach peers
// added after it fell behind.
//
// Encoding (also inside the snapshot blob): u32 count, then per peer u64 id,
// u16 address length, address bytes; in a snapshot the state machine's
// bytes follow.

var keyPeers = []byte("peers")

const maxPeers = 1024

func encodePeers(peers map[uint64]string, rest []byte) []byte {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(ids)))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint64(b, id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(peers[id])))
		b = append(b, peers[id]...)
	}
	return append(b, rest...)
}

func decodePeers(b []byte) (map[uint64]string, []byte, error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: peer list truncated", errBadSnapshot)
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxPeers {
		return nil, nil, fmt.Errorf("%w: %d peers", errBadSnapshot, n)
	}
	b = b[4:]
	peers := make(map[uint64]string, n)
	for range n {
		if len(b) < 10 {
			return nil, nil, fmt.Errorf("%w: peer entry truncated", errBadSnapshot)
		}
		id, l := binary.LittleEndian.Uint64(b), int(binary.LittleEndian.Uint16(b[8:]))
		if len(b) < 10+l {
			return nil, nil, fmt.Errorf("%w: peer address truncated", errBadSnapshot)
		}
		peers[id] = string(b[10 : 10+l])
		b = b[10+l:]
	}
	return peers, b, nil
}

func (m *meta) loadPeers() (map[uint64]string, error) {
	peers := map[uint64]string{}
	err := m.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRaft).Get(keyPeers)
		if v == nil {
			return nil
		}
		var err error
		peers, _, err = decodePeers(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raft: load peers: %w", err)
	}
	return peers, nil
}

func (m *meta) savePeers(peers map[uint64]string) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRaft).Put(keyPeers, encodePeers(peers, nil))
	})
}
