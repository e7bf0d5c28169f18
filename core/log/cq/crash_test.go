package cq

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// crashAfter writes log[:synced], Syncs, writes log[synced:written] and
// returns the file system a power cut would leave.
func crashAfter(t *testing.T, cfg Config, log []msg, synced, written int, mode vfs.CrashMode, rng *rand.Rand) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMem()
	cfg.FS = fs
	s := mustOpen(t, cfg)
	putAll(t, s, log[:synced])
	mustSync(t, s)
	putAll(t, s, log[synced:written])
	crashed := fs.CrashClone(mode, rng)
	mustOk(t, s.Close())
	return crashed
}

// checkNoGarbage asserts what must hold right after reopening, before any
// repair: next covers every synced unit, Get returns every synced unit
// intact, and every unit Get returns is one that was written there.
func checkNoGarbage(t *testing.T, s *Store, log []msg, synced, written int) {
	t.Helper()
	syncedQ, writtenQ := expect(log[:synced]), expect(log[:written])
	for id, units := range syncedQ {
		_, next, ok := s.Range(id.Topic, id.Queue)
		if !ok || next < uint64(len(units)) {
			t.Fatalf("%s: next %d (ok %v) below synced count %d", id, next, ok, len(units))
		}
	}
	for _, id := range s.Queues() {
		_, next, _ := s.Range(id.Topic, id.Queue)
		got, err := s.Get(id.Topic, id.Queue, 0, int(next), nil)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		if len(got) < len(syncedQ[id]) {
			t.Fatalf("%s: Get returned %d units, %d were synced", id, len(got), len(syncedQ[id]))
		}
		if !slices.Equal(got, writtenQ[id][:len(got)]) {
			t.Fatalf("%s: Get returned units never written:\n got %v\nwant %v", id, got, writtenQ[id])
		}
	}
}

// recoverAndReplay is what core/log does after a crash (see the package
// doc): truncate the queues to the recovered log's end, replay the log from
// the checkpoint, cut each queue at the next the replay ended at (only needed
// after torn writes), Sync.
func recoverAndReplay(t *testing.T, s *Store, log []msg, checkpoint, logEnd int, cutQueues bool) {
	t.Helper()
	mustOk(t, s.TruncateAbove(physOf(logEnd)))
	putAll(t, s, log[checkpoint:logEnd])
	if cutQueues {
		want := expect(log[:logEnd])
		for _, id := range s.Queues() {
			lo, _, _ := s.Range(id.Topic, id.Queue)
			mustOk(t, s.TruncateQueue(id.Topic, id.Queue, max(lo, uint64(len(want[id])))))
		}
	}
	mustSync(t, s)
}

func TestCrashDropUnsynced(t *testing.T) {
	log := genLog(90, testIDs)
	for synced := 0; synced <= len(log); synced += 9 {
		for _, extra := range []int{0, 1, 4, 17, 40} {
			written := min(synced+extra, len(log))
			for _, logEnd := range []int{synced, (synced + written) / 2, written} {
				name := fmt.Sprintf("synced=%d/written=%d/logEnd=%d", synced, written, logEnd)
				t.Run(name, func(t *testing.T) {
					fs := crashAfter(t, memConfig(nil), log, synced, written, vfs.CrashDropUnsynced, nil)
					s := mustOpen(t, memConfig(fs))
					checkNoGarbage(t, s, log, synced, written)
					// Without torn sectors, replaying from the checkpoint
					// (what had been synced) is enough.
					recoverAndReplay(t, s, log, synced, logEnd, false)
					checkRecovered(t, s, log[:logEnd])
					s.Close()
					checkRecovered(t, mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil))), log[:logEnd])
				})
			}
		}
	}
}

// checkRecovered asserts that every queue holds exactly the units of log;
// queues that log never reaches may exist, empty.
func checkRecovered(t *testing.T, s *Store, log []msg) {
	t.Helper()
	want := expect(log)
	for _, id := range s.Queues() {
		lo, units := getAll(t, s, id)
		if lo != 0 || !slices.Equal(units, want[id]) {
			t.Fatalf("queue %s: min %d, units %v\nwant min 0, units %v", id, lo, units, want[id])
		}
	}
	for id := range want {
		if _, _, ok := s.Range(id.Topic, id.Queue); !ok {
			t.Fatalf("queue %s missing", id)
		}
	}
}

// With CrashTear, unsynced sectors survive whole, torn, as garbage (where
// the write changed bytes) or not at all. Every synced unit must survive
// untouched, and recovery must restore exactly the expected queues. Files of
// 64 units span several sectors.
func TestCrashTear(t *testing.T) {
	cfg := Config{Dir: testDir, UnitsPerFile: 64}
	ids := testIDs[:3]
	log := genLog(600, ids)
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		synced := rng.IntN(len(log) + 1)
		written := synced + rng.IntN(len(log)-synced+1)
		logEnd := synced + rng.IntN(written-synced+1)
		t.Run(fmt.Sprintf("seed=%d/synced=%d/written=%d/logEnd=%d", seed, synced, written, logEnd), func(t *testing.T) {
			fs := crashAfter(t, cfg, log, synced, written, vfs.CrashTear, rng)
			cfg.FS = fs
			s := mustOpen(t, cfg)
			checkSyncedIntact(t, s, log[:synced])
			recoverAndReplay(t, s, log, synced, logEnd, true)
			checkRecovered(t, s, log[:logEnd])
			s.Close()
			cfg.FS = fs.CrashClone(vfs.CrashDropUnsynced, nil)
			checkRecovered(t, mustOpen(t, cfg), log[:logEnd])
		})
	}
}

// checkSyncedIntact asserts that next covers every synced unit and that each
// reads back exactly.
func checkSyncedIntact(t *testing.T, s *Store, synced []msg) {
	t.Helper()
	for id, units := range expect(synced) {
		_, next, ok := s.Range(id.Topic, id.Queue)
		if !ok || next < uint64(len(units)) {
			t.Fatalf("%s: next %d (ok %v) below synced count %d", id, next, ok, len(units))
		}
		got, err := s.Get(id.Topic, id.Queue, 0, len(units), nil)
		if err != nil || !slices.Equal(got, units) {
			t.Fatalf("%s: synced units read back as %v, %v\nwant %v", id, got, err, units)
		}
	}
}

// TruncateAbove and DeleteBefore are undone by a crash before Sync; redoing
// them after Open, then replaying, gives the same queues.
func TestCrashDuringTrim(t *testing.T) {
	log := genLog(70, testIDs)
	const start, end = 20, 45
	for _, mode := range []vfs.CrashMode{vfs.CrashDropUnsynced, vfs.CrashTear} {
		for seed := range uint64(10) {
			fs := vfs.NewMem()
			s := mustOpen(t, memConfig(fs))
			putAll(t, s, log)
			mustSync(t, s)
			mustOk(t, s.DeleteBefore(physOf(start)))
			mustOk(t, s.TruncateAbove(physOf(end)))
			crashed := fs.CrashClone(mode, rand.New(rand.NewPCG(seed, 1)))
			mustOk(t, s.Close())

			s = mustOpen(t, memConfig(crashed))
			mustOk(t, s.DeleteBefore(physOf(start)))
			recoverAndReplay(t, s, log, start, end, true)
			checkTrimmed(t, s, log, start, end)
		}
	}
}

// checkTrimmed asserts each queue holds exactly the units of log[start:end],
// from the queue offset of its first such unit.
func checkTrimmed(t *testing.T, s *Store, log []msg, start, end int) {
	t.Helper()
	first := map[QueueID]uint64{}
	want := map[QueueID][]Unit{}
	for _, e := range log[start:end] {
		if _, ok := first[e.id]; !ok {
			first[e.id] = e.off
		}
		want[e.id] = append(want[e.id], e.u)
	}
	for id, units := range want {
		lo, got := getAll(t, s, id)
		if lo != first[id] || !slices.Equal(got, units) {
			t.Fatalf("%s: min %d, units %v\nwant min %d, units %v", id, lo, got, first[id], units)
		}
	}
}
