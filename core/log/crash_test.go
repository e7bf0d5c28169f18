package log

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// TestCrashAtEveryStep drives a log through appends (some overwriting an
// uncommitted tail), syncs and segment rolls, and after every step crashes
// a copy of the file system, both losing all unsynced bytes and tearing
// them sector by sector. Recovery must keep every synced entry, return only
// entries that were really written, and leave a log that accepts appends.
func TestCrashAtEveryStep(t *testing.T) {
	seed := testSeed(t)
	for run := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, run))
		fs := newMemFS(t)
		cfg := memConfig(fs)
		l := openLog(t, cfg)
		written := map[uint64]raftpb.Entry{} // the latest entry written at each index
		var last, durable uint64
		term := uint64(1)
		for step := 0; step < 150; step++ {
			from := last + 1
			if last > durable && rng.IntN(4) == 0 {
				// Overwrite part of the unsynced (uncommitted) tail.
				from = durable + 1 + uint64(rng.IntN(int(last-durable)))
				term++
			}
			ents := mkEntries(from, uint64(1+rng.IntN(6)), term, randSize(rng))
			if err := l.Append(ents); err != nil {
				t.Fatalf("run %d step %d: %v", run, step, err)
			}
			for i := from; i <= last; i++ {
				delete(written, i)
			}
			for _, e := range ents {
				written[e.Index] = e
			}
			last = ents[len(ents)-1].Index
			if rng.IntN(3) > 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				durable = last
				l.SetCommitted(durable)
			}
			for _, mode := range []vfs.CrashMode{vfs.CrashDropUnsynced, vfs.CrashTear} {
				crashed := fs.CrashClone(mode, rand.New(rand.NewPCG(seed, uint64(step))))
				ccfg := memConfig(crashed)
				ccfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
				checkRecovered(t, ccfg, written, durable, last)
			}
		}
		_ = l.Close()
	}
}

func checkRecovered(t *testing.T, cfg Config, written map[uint64]raftpb.Entry, durable, last uint64) {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("recovery failed (durable %d, last %d): %v", durable, last, err)
	}
	defer func() { _ = l.Close() }()
	first, _ := l.FirstIndex()
	got, _ := l.LastIndex()
	if got < durable || got > last {
		t.Fatalf("recovered last index %d, want between durable %d and written %d", got, durable, last)
	}
	if got >= first {
		ents, err := l.Entries(first, got+1, ^uint64(0))
		if err != nil {
			t.Fatalf("Entries after recovery: %v", err)
		}
		for _, e := range ents {
			if err := sameEntry(e, written[e.Index]); err != nil {
				t.Fatalf("recovered entry differs from what was written: %v", err)
			}
		}
	}
	// The recovered log takes new entries after its last one.
	next := mkEntries(got+1, 3, 1000, func(uint64) int { return 100 })
	if err := l.Append(next); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncErrorIsSticky: after a failed fdatasync the kernel may have thrown
// away the dirty pages, so the log must not report a later sync as success.
func TestSyncErrorIsSticky(t *testing.T) {
	fs := newMemFS(t)
	l := openLog(t, memConfig(fs))
	mustAppendSync(t, l, mkEntries(1, 2, 1, func(uint64) int { return 10 }))
	boom := errors.New("EIO")
	fs.SetInjector(func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			return boom
		}
		return nil
	})
	if err := l.Append(mkEntries(3, 1, 1, func(uint64) int { return 10 })); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want the injected error", err)
	}
	fs.SetInjector(nil)
	if err := l.Sync(); !errors.Is(err, boom) {
		t.Fatalf("second Sync = %v, want the first error again", err)
	}
	if d := l.DurableIndex(); d != 2 {
		t.Fatalf("durable index = %d, want 2", d)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
