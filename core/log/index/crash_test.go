package index

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

var crashModes = []struct {
	name string
	mode vfs.CrashMode
}{{"drop", vfs.CrashDropUnsynced}, {"tear", vfs.CrashTear}}

// Geometries for crash tests: collisions and rolls, an odd one, a roomy
// one, and one that never rolls, so every unsynced entry is in the tail's
// torn sectors (a roll syncs the full file, unsynced entries included).
var crashGeos = []struct{ slots, entries int }{{8, 16}, {3, 7}, {64, 50}, {16, 400}}

// Add, Sync at a message boundary (the checkpoint), add more, lose power.
// Open must succeed and hold a prefix of the Adds that covers every synced
// one; then the owner's recovery must give exactly the never-crashed index.
func TestCrashAfterSync(t *testing.T) {
	for _, g := range crashGeos {
		for _, cm := range crashModes {
			t.Run(fmt.Sprintf("%dx%d/%s", g.slots, g.entries, cm.name), func(t *testing.T) {
				for seed := range uint64(30) {
					crashAfterSync(t, g.slots, g.entries, cm.mode, seed)
				}
			})
		}
	}
}

func crashAfterSync(t *testing.T, slots, entries int, mode vfs.CrashMode, seed uint64) {
	const nkeys = 10
	rng := rand.New(rand.NewPCG(seed, uint64(slots*1000+entries)))
	mem := newMem(t)
	cfg := Config{FS: mem, Dir: testDir, SlotCount: slots, EntriesPerFile: entries}
	x := mustOpen(t, cfg)
	m := gen(rng, 20+rng.IntN(150), nkeys, uint64(rng.IntN(2))*777)
	split := msgStart(m, rng.IntN(len(m)+1))
	for _, r := range m[:split] {
		must(t, x.Add([]byte(r.key), r.phys, r.ms))
		if rng.IntN(15) == 0 {
			must(t, x.Sync())
		}
	}
	must(t, x.Sync())
	addAll(t, x, m[split:])

	cfg.FS = mem.CrashClone(mode, rng)
	y, err := Open(cfg)
	if err != nil {
		t.Fatalf("seed %d: Open after crash: %v", seed, err)
	}
	p := liveEntries(y)
	if p < split || p > len(m) {
		t.Fatalf("seed %d: %d entries survived; %d were synced of %d", seed, p, split, len(m))
	}
	checkAll(t, y, m[:p], nkeys)

	from := checkpoint(m, split)
	if rng.IntN(2) == 0 {
		// The variant that does not trust the checkpoint.
		if last, ok := y.LastOffset(); ok && last < from {
			from = last
		}
	}
	must(t, y.TruncateAbove(from))
	addAll(t, y, m[firstAtOrAbove(m, from):])
	checkAll(t, y, m, nkeys)
	sameAnswers(t, x, y, m, nkeys)
	must(t, y.Sync())
	must(t, y.Close())
	y = mustOpen(t, cfg)
	sameAnswers(t, x, y, m, nkeys)
	must(t, y.Close())
	must(t, x.Close())
}

// checkpoint is the offset dispatch stood at after the first split Adds.
func checkpoint(m model, split int) uint64 {
	if split < len(m) {
		return m[split].phys
	}
	return m[len(m)-1].phys + 1
}

// firstAtOrAbove is the number of Adds with an offset below phys.
func firstAtOrAbove(m model, phys uint64) int {
	return sort.Search(len(m), func(i int) bool { return m[i].phys >= phys })
}

// sameAnswers compares every query between two indexes.
func sameAnswers(t *testing.T, x, y *Index, m model, nkeys int) {
	t.Helper()
	for _, q := range queries(m, nkeys) {
		a, err1 := x.Lookup([]byte(q.key), q.begin, q.end, q.max, nil)
		b, err2 := y.Lookup([]byte(q.key), q.begin, q.end, q.max, nil)
		if err1 != nil || err2 != nil || !slices.Equal(a, b) {
			t.Fatalf("Lookup(%+v): never crashed %v (%v), recovered %v (%v)", q, a, err1, b, err2)
		}
	}
}

// TruncateAbove and DeleteBefore, then adds, then a power cut before Sync:
// redoing them after Open and replaying gives the right index.
func TestCrashAfterTruncateAndDelete(t *testing.T) {
	for _, cm := range crashModes {
		t.Run(cm.name, func(t *testing.T) {
			for seed := range uint64(30) {
				crashAfterTruncate(t, cm.mode, seed)
			}
		})
	}
}

func crashAfterTruncate(t *testing.T, mode vfs.CrashMode, seed uint64) {
	const nkeys = 8
	rng := rand.New(rand.NewPCG(seed, 42))
	mem := newMem(t)
	cfg := tinyCfg(mem)
	x := mustOpen(t, cfg)
	m := gen(rng, 60+rng.IntN(60), nkeys, 100)
	addAll(t, x, m)
	must(t, x.Sync())
	cut := msgStart(m, 20+rng.IntN(len(m)-20))
	start := m[rng.IntN(cut)].phys
	must(t, x.TruncateAbove(m[cut].phys))
	must(t, x.DeleteBefore(start))
	// A replacement history, as after a Raft log truncation.
	again := gen(rng, rng.IntN(40), nkeys, m[cut].phys)
	addAll(t, x, again)

	cfg.FS = mem.CrashClone(mode, rng)
	y, err := Open(cfg)
	if err != nil {
		t.Fatalf("seed %d: Open after crash: %v", seed, err)
	}
	must(t, y.TruncateAbove(m[cut].phys))
	must(t, y.DeleteBefore(start))
	addAll(t, y, again)
	want := append(slices.Clone(m[:cut]), again...)
	drop := 0 // entries DeleteBefore removed: files, not the last, ending below start
	for drop+16 < cut && m[drop+15].phys < start {
		drop += 16
	}
	checkAll(t, y, want[drop:], nkeys)
	must(t, y.Close())
	must(t, x.Close())
}
