package log

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

var seedFlag = flag.Uint64("seed", 0, "seed for randomized tests (0: time-based)")

// testSeed returns a seed and logs it on failure so a run can be repeated
// with -seed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reproduce with: go test ./core/log -run '^%s$' -args -seed %d", t.Name(), s)
		}
	})
	return s
}

const testSegBytes = 4096

func memConfig(fs vfs.FS) Config {
	return Config{FS: fs, Dir: "/data", SegmentSizeBytes: testSegBytes, MaxEntryBytes: 1024}
}

func openLog(t testing.TB, cfg Config) *Log {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newMemFS(t testing.TB) *vfs.MemFS {
	m := vfs.NewMem()
	if err := m.MkdirAll("/data"); err != nil {
		t.Fatal(err)
	}
	return m
}

// payload is deterministic data for (index, term) so any entry read back
// can be checked without keeping a copy.
func payload(index, term uint64, n int) []byte {
	if n == 0 {
		return nil // as raft's own empty entries; the log cannot tell nil from empty
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(index*31 + term*7 + uint64(i))
	}
	return b
}

func mkEntries(first, n, term uint64, size func(i uint64) int) []raftpb.Entry {
	out := make([]raftpb.Entry, n)
	for k := range out {
		i := first + uint64(k)
		out[k] = raftpb.Entry{Index: i, Term: term, Type: raftpb.EntryNormal, Data: payload(i, term, size(i))}
	}
	return out
}

func mustAppendSync(t testing.TB, l *Log, ents []raftpb.Entry) {
	t.Helper()
	if err := l.Append(ents); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func sameEntry(a, b raftpb.Entry) error {
	if a.Index != b.Index || a.Term != b.Term || a.Type != b.Type || !bytes.Equal(a.Data, b.Data) {
		return fmt.Errorf("entry (i=%d t=%d type=%v len=%d) != (i=%d t=%d type=%v len=%d)",
			a.Index, a.Term, a.Type, len(a.Data), b.Index, b.Term, b.Type, len(b.Data))
	}
	return nil
}

func randSize(rng *rand.Rand) func(uint64) int {
	return func(uint64) int {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return rng.IntN(16)
		default:
			return rng.IntN(1024)
		}
	}
}
