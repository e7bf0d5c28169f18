package log

import (
	"errors"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/raft/v3"
)

// TestStorageModel runs random operations against the log and against etcd
// raft's MemoryStorage and requires the same answers, including error
// kinds. It reopens the log at random points (after a Sync) to check that
// recovery gives back the same state.
func TestStorageModel(t *testing.T) {
	seed := testSeed(t)
	for run := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, run))
		fs := newMemFS(t)
		cfg := memConfig(fs)
		l := openLog(t, cfg)
		ms := raft.NewMemoryStorage()
		term := uint64(1)
		for step := 0; step < 400; step++ {
			switch op := rng.IntN(10); {
			case op < 5: // append, possibly overwriting a tail
				last, _ := ms.LastIndex()
				first, _ := ms.FirstIndex()
				from := last + 1
				if last >= first && rng.IntN(3) == 0 {
					from = first + uint64(rng.IntN(int(last-first+2)))
					term++
				}
				ents := mkEntries(from, uint64(1+rng.IntN(12)), term, randSize(rng))
				if err := l.Append(ents); err != nil {
					t.Fatalf("step %d: Append(%d..): %v", step, from, err)
				}
				if err := ms.Append(ents); err != nil {
					t.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			case op < 6: // compact
				first, _ := ms.FirstIndex()
				last, _ := ms.LastIndex()
				if last < first {
					continue
				}
				i := first + uint64(rng.IntN(int(last-first+1)))
				l.SetCommitted(i)
				if err := l.CompactTo(i); err != nil {
					t.Fatalf("step %d: CompactTo(%d): %v", step, i, err)
				}
				if err := ms.Compact(i); err != nil {
					t.Fatal(err)
				}
			case op < 7: // reopen: recovery must give the same state
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = openLog(t, cfg)
				// Compaction inside a segment is not persisted by the
				// log (its owner keeps the snapshot point); re-apply it.
				first, _ := ms.FirstIndex()
				if lf, _ := l.FirstIndex(); lf < first {
					if err := l.CompactTo(first - 1); err != nil {
						t.Fatalf("re-compact: %v", err)
					}
				}
			default:
				compareStorage(t, step, rng, l, ms)
			}
		}
		compareStorage(t, -1, rng, l, ms)
		_ = l.Close()
	}
}

func compareStorage(t *testing.T, step int, rng *rand.Rand, l *Log, ms *raft.MemoryStorage) {
	t.Helper()
	lf, _ := l.FirstIndex()
	mf, _ := ms.FirstIndex()
	ll, _ := l.LastIndex()
	ml, _ := ms.LastIndex()
	if lf != mf || ll != ml {
		t.Fatalf("step %d: first/last = %d/%d, model %d/%d", step, lf, ll, mf, ml)
	}
	for i := mf - 1; i <= ml+1; i++ {
		lt, lerr := l.Term(i)
		mt, merr := ms.Term(i)
		if lt != mt || !errors.Is(lerr, merr) && lerr != merr {
			t.Fatalf("step %d: Term(%d) = %d, %v; model %d, %v", step, i, lt, lerr, mt, merr)
		}
	}
	if ml < mf {
		return
	}
	for range 5 {
		lo := mf - 1 + uint64(rng.IntN(int(ml-mf+2)))
		if lo < mf && rng.IntN(2) == 0 {
			lo = mf
		}
		hi := lo + uint64(rng.IntN(int(ml+2-lo)))
		if hi <= lo {
			hi = lo + 1
		}
		if hi > ml+1 {
			continue // MemoryStorage panics there; raft never asks
		}
		maxSize := uint64(rng.IntN(4096))
		if rng.IntN(3) == 0 {
			maxSize = ^uint64(0)
		}
		le, lerr := l.Entries(lo, hi, maxSize)
		me, merr := ms.Entries(lo, hi, maxSize)
		if !errors.Is(lerr, merr) && lerr != merr {
			t.Fatalf("step %d: Entries(%d,%d,%d) err %v, model %v", step, lo, hi, maxSize, lerr, merr)
		}
		if len(le) != len(me) {
			t.Fatalf("step %d: Entries(%d,%d,%d) gave %d entries, model %d", step, lo, hi, maxSize, len(le), len(me))
		}
		for k := range le {
			if err := sameEntry(le[k], me[k]); err != nil {
				t.Fatalf("step %d: Entries(%d,%d,%d)[%d]: %v", step, lo, hi, maxSize, k, err)
			}
		}
	}
}
