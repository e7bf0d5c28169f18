package cq

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// The same store on the real disk: real mmap, pwrite, fallocate and fsync.
func TestRealDisk(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{FS: vfs.OS{}, Dir: filepath.Join(dir, "cq"), UnitsPerFile: testUPF}
	s := mustOpen(t, cfg)
	log := genLog(50, testIDs)
	putAll(t, s, log)
	mustSync(t, s)
	checkQueues(t, s, expect(log))

	mustOk(t, s.TruncateAbove(physOf(30)))
	mustOk(t, s.DeleteBefore(physOf(25)))
	putAll(t, s, log[30:40])
	mustSync(t, s)
	want := expect(log[:40])
	// keptFrom is the first unit of each queue at or past physOf(25).
	keptFrom := map[QueueID]uint64{}
	for _, e := range log[25:40] {
		if _, ok := keptFrom[e.id]; !ok {
			keptFrom[e.id] = e.off
		}
	}
	check := func(s *Store, reopened bool) {
		t.Helper()
		deleted := false
		for id, units := range want {
			lo, got := getAll(t, s, id)
			wantMin := keptFrom[id]
			if reopened { // min falls back to the start of the first file
				wantMin -= wantMin % testUPF
			}
			if lo != wantMin || !slices.Equal(got, units[lo:]) {
				t.Fatalf("%s: min %d, units %v; want min %d, units %v", id, lo, got, wantMin, units[wantMin:])
			}
			deleted = deleted || lo >= testUPF
		}
		if !deleted {
			t.Fatal("DeleteBefore removed no file")
		}
	}
	check(s, false)
	mustOk(t, s.Close())

	s = mustOpen(t, cfg)
	check(s, true)
	mustOk(t, s.Close())

	// A wrong-size file is reported, not mapped.
	bad := filepath.Join(cfg.Dir, "orders", "0", fileName(400))
	mustOk(t, os.WriteFile(bad, []byte("short"), 0o644))
	if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a short file = %v, want ErrCorrupt", err)
	}
}
