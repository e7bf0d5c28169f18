package cq

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

const (
	testDir = "/data/cq"
	testUPF = 4
)

// msg is one dispatched message: the unit at (id, off).
type msg struct {
	id  QueueID
	off uint64
	u   Unit
}

// genLog simulates a commit log of n messages spread over ids in a fixed
// pattern, so that each queue's units have increasing, interleaved physical
// offsets (message i starts at 64 + 100·i, after a segment header).
func genLog(n int, ids []QueueID) []msg {
	next := map[QueueID]uint64{}
	out := make([]msg, 0, n)
	for i := range n {
		id := ids[(i*7+i/3)%len(ids)]
		u := Unit{PhysOffset: physOf(i), Size: uint32(50 + i%50), TagHash: int64(i)*1_000_003 - 7}
		out = append(out, msg{id: id, off: next[id], u: u})
		next[id]++
	}
	return out
}

func physOf(i int) uint64 { return 64 + 100*uint64(i) }

var testIDs = []QueueID{{"orders", 0}, {"orders", 1}, {"orders", 7}, {"audit", 3}, {"z", 4294967295}}

// expect builds each queue's units from a prefix of the log.
func expect(log []msg) map[QueueID][]Unit {
	m := map[QueueID][]Unit{}
	for _, e := range log {
		m[e.id] = append(m[e.id], e.u)
	}
	return m
}

func memConfig(fs vfs.FS) Config {
	return Config{FS: fs, Dir: testDir, UnitsPerFile: testUPF}
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func putAll(t testing.TB, s *Store, log []msg) {
	t.Helper()
	for _, e := range log {
		if err := s.Put(e.id.Topic, e.id.Queue, e.off, e.u); err != nil {
			t.Fatalf("Put %s %d: %v", e.id, e.off, err)
		}
	}
}

func mustSync(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// getAll reads a queue from min to next in small batches.
func getAll(t testing.TB, s *Store, id QueueID) (min uint64, units []Unit) {
	t.Helper()
	lo, next, ok := s.Range(id.Topic, id.Queue)
	if !ok {
		t.Fatalf("Range %s: unknown queue", id)
	}
	for off := lo; off < next; {
		n := len(units)
		var err error
		units, err = s.Get(id.Topic, id.Queue, off, 3, units)
		if err != nil {
			t.Fatalf("Get %s %d: %v", id, off, err)
		}
		if len(units) == n {
			t.Fatalf("Get %s %d: no units below next %d", id, off, next)
		}
		off += uint64(len(units) - n)
	}
	return lo, units
}

// checkQueues asserts that the store holds exactly want, every queue
// starting at 0.
func checkQueues(t testing.TB, s *Store, want map[QueueID][]Unit) {
	t.Helper()
	var ids []QueueID
	for id := range want {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	if got := s.Queues(); !slices.Equal(got, ids) {
		t.Fatalf("Queues = %v, want %v", got, ids)
	}
	for _, id := range ids {
		lo, units := getAll(t, s, id)
		if lo != 0 || !slices.Equal(units, want[id]) {
			t.Fatalf("queue %s: min %d, units %v\nwant min 0, units %v", id, lo, units, want[id])
		}
	}
}

// fileBytes returns the content of every file of a MemFS.
func fileBytes(t testing.TB, fs *vfs.MemFS) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range fs.Names() {
		f, err := fs.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		size, _ := f.Size()
		b := make([]byte, size)
		if _, err := f.ReadAt(b, 0); err != nil && size > 0 {
			t.Fatal(err)
		}
		out[name] = b
		f.Close()
	}
	return out
}

func qfile(id QueueID, first uint64) string {
	return vfs.Join(testDir, id.Topic, fmt.Sprint(id.Queue), fileName(first))
}

// writeFile puts raw bytes at name in a MemFS and makes them durable.
func writeFile(t testing.TB, fs *vfs.MemFS, name string, data []byte) {
	t.Helper()
	if err := fs.MkdirAll(vfsDir(name)); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 {
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(f.Sync(), f.Close(), fs.SyncDir(vfsDir(name))); err != nil {
		t.Fatal(err)
	}
}

func vfsDir(name string) string {
	i := len(name) - 1
	for i > 0 && name[i] != '/' {
		i--
	}
	return name[:i]
}

// filesOf lists the first offsets of a queue's files in a MemFS.
func filesOf(fs *vfs.MemFS, id QueueID) []uint64 {
	dir := vfsDir(qfile(id, 0))
	var out []uint64
	for _, name := range fs.Names() {
		if vfsDir(name) == dir {
			first, _ := parseFileName(name[len(dir)+1:])
			out = append(out, first)
		}
	}
	return out
}

func (u Unit) encode() (b [UnitBytes]byte) {
	u.encodeTo(b[:])
	return b
}
