package log

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
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
		m := newLogModel()
		term := uint64(1)
		for step := 0; step < 150; step++ {
			from := m.last + 1
			if m.last > m.durable && rng.IntN(4) == 0 {
				// Overwrite part of the unsynced (uncommitted) tail.
				from = m.durable + 1 + uint64(rng.IntN(int(m.last-m.durable)))
				term++
			}
			ents := mkEntries(from, uint64(1+rng.IntN(6)), term, randSize(rng))
			if err := l.Append(ents); err != nil {
				t.Fatalf("run %d step %d: %v", run, step, err)
			}
			m.appended(ents)
			if rng.IntN(3) > 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				m.synced()
				l.SetCommitted(m.durable)
			}
			for _, mode := range []vfs.CrashMode{vfs.CrashDropUnsynced, vfs.CrashTear} {
				checkCrash(t, cfg, fs.CrashClone(mode, rand.New(rand.NewPCG(seed, uint64(step)))), m)
			}
		}
		_ = l.Close()
	}
}

// logModel says what the log holds: exactly latest while it runs, and
// after a crash every entry up to durable plus, above it, any entry an
// Append put at that index since the last sync that covered it. While a
// failure is unresolved (unsure), an overwritten entry may come back too:
// a failed Append may have stopped before or after removing it.
type logModel struct {
	latest  map[uint64]raftpb.Entry
	maybe   map[uint64][]raftpb.Entry
	durable uint64
	last    uint64 // of latest
	top     uint64 // highest index a crash may bring back
	unsure  bool
}

func newLogModel() *logModel {
	return &logModel{latest: map[uint64]raftpb.Entry{}, maybe: map[uint64][]raftpb.Entry{}}
}

func (m *logModel) appended(ents []raftpb.Entry) {
	end := ents[len(ents)-1].Index
	for i := end + 1; i <= m.last; i++ {
		delete(m.latest, i)
		if !m.unsure {
			delete(m.maybe, i)
		}
	}
	for _, e := range ents {
		m.latest[e.Index] = e
		if m.unsure {
			m.maybe[e.Index] = append(m.maybe[e.Index], e)
		} else {
			m.maybe[e.Index] = []raftpb.Entry{e}
		}
	}
	m.last = end
	if m.unsure {
		m.top = max(m.top, end)
	} else {
		m.top = end
	}
}

func (m *logModel) appendFailed(ents []raftpb.Entry) {
	m.unsure = true
	for _, e := range ents {
		m.maybe[e.Index] = append(m.maybe[e.Index], e)
	}
	m.top = max(m.top, ents[len(ents)-1].Index)
}

func (m *logModel) synced() {
	m.durable, m.top, m.unsure = m.last, m.last, false
	clear(m.maybe)
	for i, e := range m.latest {
		m.maybe[i] = []raftpb.Entry{e}
	}
}

// restarted: the log was reopened and holds exactly ents (checked by
// checkRecovered), all of them durable now.
func (m *logModel) restarted(ents []raftpb.Entry, last uint64) {
	clear(m.latest)
	for _, e := range ents {
		m.latest[e.Index] = e
	}
	m.last = last
	m.synced()
}

// check reports whether a recovered entry may be there.
func (m *logModel) check(e raftpb.Entry) error {
	var errs []error
	for _, w := range m.maybe[e.Index] {
		err := sameEntry(e, w)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return fmt.Errorf("entry %d (term %d) was never written", e.Index, e.Term)
	}
	return errors.Join(errs...)
}

// checkCrash recovers the log of cfg from the crashed file system: it must
// hold what m allows and take new entries after its last one.
func checkCrash(t *testing.T, cfg Config, crashed vfs.FS, m *logModel) {
	t.Helper()
	cfg.FS = crashed
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	_, last := checkRecovered(t, cfg, m)
	l := openLog(t, cfg)
	mustAppendSync(t, l, mkEntries(last+1, 3, 1000, func(uint64) int { return 100 }))
	_ = l.Close()
}

// checkRecovered opens the log of cfg and checks it against m: every
// acknowledged entry is there, and only entries that were written. It
// returns what it found.
func checkRecovered(t *testing.T, cfg Config, m *logModel) ([]raftpb.Entry, uint64) {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("recovery failed (durable %d, written up to %d): %v", m.durable, m.top, err)
	}
	defer func() { _ = l.Close() }()
	first, _ := l.FirstIndex()
	got, _ := l.LastIndex()
	if got < m.durable || got > m.top {
		t.Fatalf("recovered last index %d, want between durable %d and written %d", got, m.durable, m.top)
	}
	if got < first {
		return nil, got
	}
	ents, err := l.Entries(first, got+1, ^uint64(0))
	if err != nil {
		t.Fatalf("Entries after recovery: %v", err)
	}
	for _, e := range ents {
		if err := m.check(e); err != nil {
			t.Fatalf("recovered entry differs from what was written: %v", err)
		}
	}
	// Entries alias the mapping, which Close releases.
	for k := range ents {
		ents[k].Data = slices.Clone(ents[k].Data)
	}
	return ents, got
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

// TestRestartMakesRecoveredEntriesDurable: a process killed between
// Append and Sync leaves records in the page cache. The restarted log
// finds them and counts them as durable (raft acknowledges every stored
// entry), so they must survive a power cut that follows.
func TestRestartMakesRecoveredEntriesDurable(t *testing.T) {
	fs := newMemFS(t)
	cfg := memConfig(fs)
	l := openLog(t, cfg)
	mustAppendSync(t, l, mkEntries(1, 3, 1, func(uint64) int { return 100 }))
	if err := l.Append(mkEntries(4, 5, 1, func(uint64) int { return 100 })); err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // killed: no Sync
	l = openLog(t, cfg)
	if d := l.DurableIndex(); d != 8 {
		t.Fatalf("after the restart the durable index is %d, want 8", d)
	}
	_ = l.Close()
	crashed := openLog(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil)))
	if last, _ := crashed.LastIndex(); last != 8 {
		t.Fatalf("a power cut after the restart lost entries the log had called durable: last index %d, want 8", last)
	}
}
