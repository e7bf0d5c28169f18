package broker

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// Topic is a topic's replicated configuration.
type Topic struct {
	Name   string `json:"name"`
	Queues uint32 `json:"queues"`
	// Perm uses RocketMQ's bits: 4 readable, 2 writable.
	Perm uint32 `json:"perm"`
}

// Permission bits.
const (
	PermRead  = 4
	PermWrite = 2
)

// metaStore keeps the broker's replicated metadata in bbolt (broker.db):
// topics, consumer offsets, and the index of the last command applied, all
// updated in one synced transaction per applied run of commands. Readers
// use the in-memory copy under the state machine's lock.
type metaStore struct {
	db *bolt.DB
}

var (
	bucketTopics  = []byte("topics")
	bucketOffsets = []byte("offsets")
	bucketMeta    = []byte("meta")
	bucketRecords = []byte("records")
	allBuckets    = [][]byte{bucketTopics, bucketOffsets, bucketMeta, bucketSubs, bucketRecords}
	keyApplied    = []byte("applied")
)

type offsetKey struct {
	group, topic string
	queue        uint32
}

func (k offsetKey) bytes() []byte {
	b := []byte(k.group + "\x00" + k.topic + "\x00")
	return binary.BigEndian.AppendUint32(b, k.queue)
}

func parseOffsetKey(b []byte) (offsetKey, bool) {
	if len(b) < 6 {
		return offsetKey{}, false
	}
	parts := strings.SplitN(string(b[:len(b)-4]), "\x00", 3)
	if len(parts) != 3 || parts[2] != "" {
		return offsetKey{}, false
	}
	return offsetKey{group: parts[0], topic: parts[1], queue: binary.BigEndian.Uint32(b[len(b)-4:])}, true
}

// metaState is the whole replicated metadata, also the snapshot's content.
type metaState struct {
	Topics  map[string]Topic         `json:"topics"`
	Offsets []offsetEntry            `json:"offsets"`
	Subs    map[string]*Subscription `json:"subscriptions"`
	Bases   []queueBase              `json:"queueBases,omitempty"`
	Applied uint64                   `json:"applied"`
	// Records: namespace -> key -> value (see records.go).
	Records map[string]map[string][]byte `json:"records,omitempty"`
	// Sched is the schedule as read from a snapshot (sched.go); sched is
	// the live copy.
	Sched *schedSnapshot `json:"sched,omitempty"`
	sched *schedState
	// QLocks: the queue locks as read from a snapshot (qlocks.go).
	QLocks  []qlockEntry `json:"queueLocks,omitempty"`
	qlocks  *qlockState
	offsets map[offsetKey]uint64
	// bases: where each queue stood in the snapshot this node was last
	// restored from (its consume queues start empty there).
	bases map[queueKey]uint64
}

type queueKey struct {
	topic string
	queue uint32
}

type queueBase struct {
	Topic string `json:"topic"`
	Queue uint32 `json:"queue"`
	Next  uint64 `json:"next"`
}

var keyBases = []byte("queueBases")

type offsetEntry struct {
	Group  string `json:"group"`
	Topic  string `json:"topic"`
	Queue  uint32 `json:"queue"`
	Offset uint64 `json:"offset"`
}

func openMetaStore(path string) (*metaStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("broker: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &metaStore{db: db}, nil
}

func (m *metaStore) load() (metaState, error) {
	st := metaState{Topics: map[string]Topic{}, offsets: map[offsetKey]uint64{}, Subs: map[string]*Subscription{}, Records: map[string]map[string][]byte{}}
	err := m.db.View(func(tx *bolt.Tx) error {
		if err := loadSubs(tx, &st); err != nil {
			return err
		}
		if err := loadRecords(tx, &st); err != nil {
			return err
		}
		if err := loadSched(tx, &st); err != nil {
			return err
		}
		if err := loadQLocks(tx, &st); err != nil {
			return err
		}
		err := tx.Bucket(bucketTopics).ForEach(func(k, v []byte) error {
			var t Topic
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("topic %q: %w", k, err)
			}
			st.Topics[t.Name] = t
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketOffsets).ForEach(func(k, v []byte) error {
			key, ok := parseOffsetKey(k)
			if !ok || len(v) != 8 {
				return fmt.Errorf("bad offset record %q", k)
			}
			st.offsets[key] = binary.BigEndian.Uint64(v)
			return nil
		})
		if err != nil {
			return err
		}
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			st.Applied = binary.BigEndian.Uint64(v)
		}
		if v := tx.Bucket(bucketMeta).Get(keyBases); v != nil {
			if err := json.Unmarshal(v, &st.Bases); err != nil {
				return fmt.Errorf("queue bases: %w", err)
			}
		}
		st.bases = basesMap(st.Bases)
		return nil
	})
	return st, err
}

func basesMap(bs []queueBase) map[queueKey]uint64 {
	m := make(map[queueKey]uint64, len(bs))
	for _, b := range bs {
		m[queueKey{b.Topic, b.Queue}] = b.Next
	}
	return m
}

// apply writes the effect of commands (already applied to st in memory)
// and the new applied index in one transaction.
func (m *metaStore) apply(cmds []command.Command, st *metaState, index uint64) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		tb, ob := tx.Bucket(bucketTopics), tx.Bucket(bucketOffsets)
		for _, c := range cmds {
			switch c.Kind {
			case command.KindCreateTopic:
				v, _ := json.Marshal(st.Topics[c.Topic])
				if err := tb.Put([]byte(c.Topic), v); err != nil {
					return err
				}
			case command.KindDeleteTopic:
				if err := tb.Delete([]byte(c.Topic)); err != nil {
					return err
				}
			case command.KindCommitOffsets:
				for _, o := range c.Offsets {
					k := offsetKey{group: c.Group, topic: o.Topic, queue: o.Queue}
					if err := ob.Put(k.bytes(), binary.BigEndian.AppendUint64(nil, st.offsets[k])); err != nil {
						return err
					}
				}
			case command.KindSubscribe, command.KindUnsubscribe, command.KindSettle:
				if err := saveSub(tx, st, c.Subscription); err != nil {
					return err
				}
			case command.KindRecords:
				if err := saveRecords(tx, st, c.Records); err != nil {
					return err
				}
			}
		}
		if err := saveSched(tx, st); err != nil {
			return err
		}
		if err := saveQLocks(tx, st); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyApplied, binary.BigEndian.AppendUint64(nil, index))
	})
}

// replace writes a whole state (snapshot restore).
func (m *metaStore) replace(st *metaState) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTopics, bucketOffsets, bucketSubs, bucketRecords} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		for name, t := range st.Topics {
			v, _ := json.Marshal(t)
			if err := tx.Bucket(bucketTopics).Put([]byte(name), v); err != nil {
				return err
			}
		}
		for k, off := range st.offsets {
			if err := tx.Bucket(bucketOffsets).Put(k.bytes(), binary.BigEndian.AppendUint64(nil, off)); err != nil {
				return err
			}
		}
		for name := range st.Subs {
			if err := saveSub(tx, st, name); err != nil {
				return err
			}
		}
		if err := saveAllRecords(tx, st); err != nil {
			return err
		}
		if err := saveAllSched(tx, st); err != nil {
			return err
		}
		if err := saveAllQLocks(tx, st); err != nil {
			return err
		}
		v, err := json.Marshal(st.Bases)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyBases, v); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyApplied, binary.BigEndian.AppendUint64(nil, st.Applied))
	})
}

// marshal encodes st for a snapshot (metadata is small; JSON keeps it
// readable when debugging a snapshot). It reads st and writes nothing to it:
// API readers share its subscriptions.
func (st *metaState) marshal(bases map[queueKey]uint64) ([]byte, error) {
	out := struct {
		Topics  map[string]Topic             `json:"topics"`
		Offsets []offsetEntry                `json:"offsets"`
		Subs    map[string]*Subscription     `json:"subscriptions"`
		Bases   []queueBase                  `json:"queueBases,omitempty"`
		Applied uint64                       `json:"applied"`
		Records map[string]map[string][]byte `json:"records,omitempty"`
		Sched   schedSnapshot                `json:"sched"`
		QLocks  []qlockEntry                 `json:"queueLocks,omitempty"`
	}{Topics: st.Topics, Subs: map[string]*Subscription{}, Applied: st.Applied, Records: st.Records, Sched: st.sched.snapshot(),
		QLocks: st.qlocks.snapshot()}
	for k, v := range st.offsets {
		out.Offsets = append(out.Offsets, offsetEntry{Group: k.group, Topic: k.topic, Queue: k.queue, Offset: v})
	}
	sort.Slice(out.Offsets, func(i, j int) bool {
		a, b := out.Offsets[i], out.Offsets[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Queue < b.Queue
	})
	for name, s := range st.Subs {
		c := s.encodable()
		out.Subs[name] = &c
	}
	for k, v := range bases {
		out.Bases = append(out.Bases, queueBase{Topic: k.topic, Queue: k.queue, Next: v})
	}
	sort.Slice(out.Bases, func(i, j int) bool {
		a, b := out.Bases[i], out.Bases[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Queue < b.Queue
	})
	return json.Marshal(out)
}

func unmarshalMeta(b []byte) (metaState, error) {
	var st metaState
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("broker: snapshot metadata: %w", err)
	}
	if st.Topics == nil {
		st.Topics = map[string]Topic{}
	}
	if st.Subs == nil {
		st.Subs = map[string]*Subscription{}
	}
	if st.Records == nil {
		st.Records = map[string]map[string][]byte{}
	}
	for _, s := range st.Subs {
		s.init()
	}
	st.bases = basesMap(st.Bases)
	st.qlocks = qlocksFromSnapshot(st.QLocks)
	st.QLocks = nil
	if st.Sched != nil {
		st.sched = schedFromSnapshot(*st.Sched)
		st.Sched = nil
	} else {
		st.sched = newSchedState()
	}
	st.offsets = map[offsetKey]uint64{}
	for _, o := range st.Offsets {
		st.offsets[offsetKey{group: o.Group, topic: o.Topic, queue: o.Queue}] = o.Offset
	}
	return st, nil
}
