package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/conflux-mq/conflux/core/broker/command"
	bolt "go.etcd.io/bbolt"
)

// Records are a small replicated key/value store, grouped by namespace,
// for state that has no bucket of its own: the cluster's view of which
// nodes are live, MQTT retained messages and sessions. Every replica
// applies the same changes in log order, keeps them in broker.db and in
// snapshots. Values are small (command.MaxRecordValueBytes): messages
// themselves belong in the log.

// ErrBadRecord: a record change over the limits, refused before proposing.
var ErrBadRecord = errors.New("broker: bad record")

// PutRecord sets ns/key to value and returns once that is applied here.
func (b *Broker) PutRecord(ctx context.Context, ns, key string, value []byte) error {
	return b.ChangeRecords(ctx, command.Record{Op: command.RecordPut, Namespace: ns, Key: key, Value: value})
}

// DeleteRecord removes ns/key (a missing key is no error).
func (b *Broker) DeleteRecord(ctx context.Context, ns, key string) error {
	return b.ChangeRecords(ctx, command.Record{Op: command.RecordDelete, Namespace: ns, Key: key})
}

// PutRecordIfAbsent sets ns/key unless it exists and reports whether this
// call's value is the one applied: of racing callers on any nodes exactly
// one wins, if their values differ.
func (b *Broker) PutRecordIfAbsent(ctx context.Context, ns, key string, value []byte) (bool, error) {
	if err := b.ChangeRecords(ctx, command.Record{Op: command.RecordPutIfAbsent, Namespace: ns, Key: key, Value: value}); err != nil {
		return false, err
	}
	got, ok := b.Record(ns, key)
	return ok && string(got) == string(value), nil
}

// ChangeRecords applies several record changes atomically, in order.
func (b *Broker) ChangeRecords(ctx context.Context, rs ...command.Record) error {
	for _, r := range rs {
		// broker.db keys are namespace, NUL, key: a NUL inside the
		// namespace would split differently when read back.
		if r.Namespace == "" || len(r.Namespace) > command.MaxNameBytes || strings.IndexByte(r.Namespace, 0) >= 0 {
			return fmt.Errorf("%w: record namespace %q", ErrBadRecord, r.Namespace)
		}
		if len(r.Key) > command.MaxRecordKeyBytes || len(r.Value) > command.MaxRecordValueBytes {
			return fmt.Errorf("%w: key of %d bytes (at most %d), value of %d (at most %d)", ErrBadRecord,
				len(r.Key), command.MaxRecordKeyBytes, len(r.Value), command.MaxRecordValueBytes)
		}
	}
	return b.command(ctx, &command.Command{Kind: command.KindRecords, Records: rs})
}

// Record returns the applied value of ns/key (a copy).
func (b *Broker) Record(ns, key string) ([]byte, bool) {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	v, ok := b.sm.st.Records[ns][key]
	return append([]byte(nil), v...), ok
}

// Records returns a copy of every record of a namespace.
func (b *Broker) Records(ns string) map[string][]byte {
	b.sm.mu.RLock()
	defer b.sm.mu.RUnlock()
	out := make(map[string][]byte, len(b.sm.st.Records[ns]))
	for k, v := range b.sm.st.Records[ns] {
		out[k] = append([]byte(nil), v...)
	}
	return out
}

// Changed returns a channel that is closed at the next apply of committed
// entries (messages or commands); watchers of records re-read then.
func (b *Broker) Changed() <-chan struct{} { return b.sm.changed() }

func (st *metaState) applyRecords(rs []command.Record) {
	if st.Records == nil {
		st.Records = map[string]map[string][]byte{}
	}
	for _, r := range rs {
		m := st.Records[r.Namespace]
		switch r.Op {
		case command.RecordDelete:
			delete(m, r.Key)
			if len(m) == 0 {
				delete(st.Records, r.Namespace)
			}
			continue
		case command.RecordPutIfAbsent:
			if _, ok := m[r.Key]; ok {
				continue
			}
		}
		if m == nil {
			m = map[string][]byte{}
			st.Records[r.Namespace] = m
		}
		m[r.Key] = r.Value
	}
}

// recordKey is a record's bbolt key: namespace, a zero byte, key (a
// namespace holds no zero byte: it is a name).
func recordKey(ns, key string) []byte { return []byte(ns + "\x00" + key) }

func saveRecords(tx *bolt.Tx, st *metaState, rs []command.Record) error {
	b := tx.Bucket(bucketRecords)
	for _, r := range rs {
		k := recordKey(r.Namespace, r.Key)
		v, ok := st.Records[r.Namespace][r.Key]
		var err error
		if ok {
			err = b.Put(k, v)
		} else {
			err = b.Delete(k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func saveAllRecords(tx *bolt.Tx, st *metaState) error {
	b := tx.Bucket(bucketRecords)
	for ns, m := range st.Records {
		for k, v := range m {
			if err := b.Put(recordKey(ns, k), v); err != nil {
				return err
			}
		}
	}
	return nil
}

func loadRecords(tx *bolt.Tx, st *metaState) error {
	return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
		for i, c := range k {
			if c == 0 {
				ns := string(k[:i])
				if st.Records[ns] == nil {
					st.Records[ns] = map[string][]byte{}
				}
				st.Records[ns][string(k[i+1:])] = append([]byte(nil), v...)
				return nil
			}
		}
		return fmt.Errorf("bad record key %q", k)
	})
}
