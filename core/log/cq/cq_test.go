package cq

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

func TestPutGetAcrossFilesAndReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	log := genLog(57, testIDs)
	putAll(t, s, log)
	want := expect(log)
	checkQueues(t, s, want)

	// A read that spans a file boundary, capped by maxUnits and by next.
	id := QueueID{"orders", 0}
	got, err := s.Get(id.Topic, id.Queue, 2, 5, nil)
	if err != nil || !slices.Equal(got, want[id][2:7]) {
		t.Fatalf("Get(2, 5) = %v, %v; want %v", got, err, want[id][2:7])
	}
	n := uint64(len(want[id]))
	got, err = s.Get(id.Topic, id.Queue, n-2, 100, got[:0])
	if err != nil || !slices.Equal(got, want[id][n-2:]) {
		t.Fatalf("Get(next-2, 100) = %v, %v", got, err)
	}
	if !slices.Contains(fs.Names(), qfile(id, 8)) {
		t.Fatalf("file %s missing from %v", qfile(id, 8), fs.Names())
	}

	mustSync(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkQueues(t, mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil))), want)
}

func TestGetBoundaries(t *testing.T) {
	s := mustOpen(t, memConfig(vfs.NewMem()))
	for k := range uint64(10) {
		if err := s.Put("t", 1, k, Unit{PhysOffset: 100 + k, Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteBefore(105); err != nil { // min = 5, file [0,4) removed
		t.Fatal(err)
	}
	if lo, next, ok := s.Range("t", 1); lo != 5 || next != 10 || !ok {
		t.Fatalf("Range = %d, %d, %v; want 5, 10, true", lo, next, ok)
	}
	cases := []struct {
		off     uint64
		max     int
		n       int
		wantErr error
	}{
		{4, 10, 0, ErrOffsetTooSmall},
		{5, 10, 5, nil},
		{9, 10, 1, nil},
		{10, 10, 0, nil}, // next: empty, no error
		{11, 10, 0, ErrOffsetTooLarge},
		{5, 0, 0, nil},
		{5, -1, 0, nil},
	}
	for _, c := range cases {
		got, err := s.Get("t", 1, c.off, c.max, nil)
		if !errors.Is(err, c.wantErr) || len(got) != c.n {
			t.Errorf("Get(%d, %d) = %d units, %v; want %d, %v", c.off, c.max, len(got), err, c.n, c.wantErr)
		}
	}
	if _, err := s.Get("t", 2, 0, 1, nil); !errors.Is(err, ErrUnknownQueue) {
		t.Errorf("Get on unknown queue: %v", err)
	}
	if _, _, ok := s.Range("t", 2); ok {
		t.Error("Range on unknown queue: ok")
	}
}

func TestReplayIsIdempotent(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	log := genLog(40, testIDs)
	putAll(t, s, log)
	mustSync(t, s)
	before := fileBytes(t, fs)
	putAll(t, s, log)
	if len(s.dirty) != 0 || len(s.dirtyDirs) != 0 {
		t.Fatalf("replay wrote: %d dirty files, %d dirty dirs", len(s.dirty), len(s.dirtyDirs))
	}
	if after := fileBytes(t, fs); !mapsEqual(before, after) {
		t.Fatal("replay changed the files")
	}
	checkQueues(t, s, expect(log))
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}

func TestSyncEachFileOnce(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	ops := map[string]int{}
	fs.SetInjector(func(op vfs.Op, name string) error {
		if op == vfs.OpSync || op == vfs.OpSyncDir {
			ops[string(op)+" "+name]++
		}
		return nil
	})
	for k := range uint64(6) { // two files
		if err := s.Put("t", 0, k, Unit{PhysOffset: 1 + k}); err != nil {
			t.Fatal(err)
		}
	}
	mustSync(t, s)
	want := map[string]int{
		"sync " + testDir + "/t/0/" + fileName(0): 1,
		"sync " + testDir + "/t/0/" + fileName(4): 1,
		"syncdir " + testDir + "/t/0":             1,
		"syncdir " + testDir + "/t":               1,
		"syncdir " + testDir:                      1,
	}
	if !equalCounts(ops, want) {
		t.Fatalf("first Sync did %v, want %v", ops, want)
	}
	clear(ops)
	mustSync(t, s)
	if len(ops) != 0 {
		t.Fatalf("idle Sync did %v", ops)
	}
	if err := s.Put("t", 0, 6, Unit{PhysOffset: 7}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, s)
	if want := map[string]int{"sync " + testDir + "/t/0/" + fileName(4): 1}; !equalCounts(ops, want) {
		t.Fatalf("third Sync did %v, want %v", ops, want)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSyncErrorKeepsWorkForRetry(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	if err := s.Put("t", 0, 0, Unit{PhysOffset: 1}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	fs.SetInjector(func(op vfs.Op, _ string) error {
		if op == vfs.OpSyncDir {
			return boom
		}
		return nil
	})
	if err := s.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want boom", err)
	}
	fs.SetInjector(nil)
	mustSync(t, s)
	checkQueues(t, mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil))),
		map[QueueID][]Unit{{"t", 0}: {{PhysOffset: 1}}})
}

func TestTruncateAbove(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	log := genLog(60, testIDs)
	putAll(t, s, log)
	mustSync(t, s)

	// Cut the log in the middle: every queue loses its units at or past it.
	cut := 23
	if err := s.TruncateAbove(physOf(cut)); err != nil {
		t.Fatal(err)
	}
	want := expect(log[:cut])
	checkQueues(t, s, want)
	for id, units := range want {
		// No file is left that starts at or past the new next (but the first).
		for _, first := range filesOf(fs, id) {
			if first > 0 && first >= uint64(len(units)) {
				t.Errorf("queue %s next %d: file %d survived", id, len(units), first)
			}
		}
	}
	// The dispatcher carries on from the cut; reopen after a Sync agrees.
	putAll(t, s, log[cut:])
	mustSync(t, s)
	checkQueues(t, s, expect(log))
	s.Close()
	fs = fs.CrashClone(vfs.CrashDropUnsynced, nil)
	s = mustOpen(t, memConfig(fs))
	checkQueues(t, s, expect(log))

	// Truncating everything keeps each queue's first file and an empty range.
	if err := s.TruncateAbove(1); err != nil {
		t.Fatal(err)
	}
	for _, id := range testIDs {
		if lo, next, ok := s.Range(id.Topic, id.Queue); lo != 0 || next != 0 || !ok {
			t.Errorf("after truncating all: Range %s = %d, %d, %v", id, lo, next, ok)
		}
	}
	mustSync(t, s)
	if got := len(fs.Names()); got != len(testIDs) {
		t.Errorf("after truncating all: %d files, want %d: %v", got, len(testIDs), fs.Names())
	}
}

func TestTruncateAboveDropsTrailingHoles(t *testing.T) {
	s := mustOpen(t, memConfig(vfs.NewMem()))
	put := func(k uint64) {
		t.Helper()
		if err := s.Put("t", 0, k, Unit{PhysOffset: 10 * (k + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	put(0)
	put(1)
	put(5) // holes at 2, 3 and 4
	if got, err := s.Get("t", 0, 0, 10, nil); err != nil || len(got) != 2 {
		t.Fatalf("Get stops at the hole: %v, %v", got, err)
	}
	if got, err := s.Get("t", 0, 3, 10, nil); err != nil || len(got) != 0 {
		t.Fatalf("Get at a hole: %v, %v", got, err)
	}
	if err := s.TruncateAbove(60); err != nil { // drops unit 5, then the holes
		t.Fatal(err)
	}
	if _, next, _ := s.Range("t", 0); next != 2 {
		t.Fatalf("next = %d, want 2", next)
	}
}

func TestDeleteBefore(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	id := QueueID{"t", 0}
	for k := range uint64(10) { // files 0, 4, 8
		if err := s.Put(id.Topic, id.Queue, k, Unit{PhysOffset: 100 * (k + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantMin uint64, wantFiles ...uint64) {
		t.Helper()
		if lo, next, _ := s.Range(id.Topic, id.Queue); lo != wantMin || next != 10 {
			t.Fatalf("Range = %d, %d; want %d, 10", lo, next, wantMin)
		}
		var files []string
		for _, f := range wantFiles {
			files = append(files, qfile(id, f))
		}
		if got := fs.Names(); !slices.Equal(got, files) {
			t.Fatalf("files %v, want %v", got, files)
		}
	}
	mustOk(t, s.DeleteBefore(300)) // units 0, 1 gone; no whole file
	check(2, 0, 4, 8)
	mustOk(t, s.DeleteBefore(200)) // min never goes down
	check(2, 0, 4, 8)
	mustOk(t, s.DeleteBefore(600)) // file 0 (units up to 400) is removed
	check(5, 4, 8)
	if _, err := s.Get(id.Topic, id.Queue, 4, 1, nil); !errors.Is(err, ErrOffsetTooSmall) {
		t.Fatalf("Get below min: %v", err)
	}
	mustOk(t, s.DeleteBefore(1<<40)) // everything: the last file stays
	check(10, 8)
	if err := s.Put(id.Topic, id.Queue, 9, Unit{PhysOffset: 1000}); !errors.Is(err, ErrOffsetTooSmall) {
		t.Fatalf("Put below min: %v", err)
	}
	mustOk(t, s.Put(id.Topic, id.Queue, 10, Unit{PhysOffset: 1100}))
	mustSync(t, s)

	// min is not persisted: after a restart it is the first file's start.
	s2 := mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil)))
	if lo, next, _ := s2.Range(id.Topic, id.Queue); lo != 8 || next != 11 {
		t.Fatalf("after reopen Range = %d, %d; want 8, 11", lo, next)
	}
}

func mustOk(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewQueueStartsAtFirstOffset(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	mustOk(t, s.Put("t", 0, 6, Unit{PhysOffset: 5}))
	if lo, next, _ := s.Range("t", 0); lo != 6 || next != 7 {
		t.Fatalf("Range = %d, %d; want 6, 7", lo, next)
	}
	if got := fs.Names(); !slices.Equal(got, []string{qfile(QueueID{"t", 0}, 4)}) {
		t.Fatalf("files %v", got)
	}
	// A gap of up to one file's worth of units is allowed, more is not.
	mustOk(t, s.Put("t", 0, 11, Unit{PhysOffset: 6}))
	if err := s.Put("t", 0, 17, Unit{PhysOffset: 7}); !errors.Is(err, ErrOffsetTooLarge) {
		t.Fatalf("Put past the gap limit: %v", err)
	}
	if err := s.Put("t", 0, s.maxOffset, Unit{PhysOffset: 7}); !errors.Is(err, ErrOffsetTooLarge) {
		t.Fatalf("Put at maxOffset: %v", err)
	}
}

func TestBadTopics(t *testing.T) {
	s := mustOpen(t, memConfig(vfs.NewMem()))
	for _, topic := range []string{"", ".", "..", "a/b", "/", "../x", "a\x00b", strings.Repeat("x", 256)} {
		if err := s.Put(topic, 0, 0, Unit{PhysOffset: 1}); !errors.Is(err, ErrBadTopic) {
			t.Errorf("Put(%q) = %v, want ErrBadTopic", topic, err)
		}
		if _, err := s.Get(topic, 0, 0, 1, nil); !errors.Is(err, ErrBadTopic) {
			t.Errorf("Get(%q) = %v, want ErrBadTopic", topic, err)
		}
	}
	for _, topic := range []string{"x", "...", "a.b", "%TRETRY%group", strings.Repeat("x", 255)} {
		mustOk(t, s.Put(topic, 0, 0, Unit{PhysOffset: 1}))
	}
	if err := s.Put("x", 0, 1, Unit{}); !errors.Is(err, ErrZeroPhysOffset) {
		t.Errorf("Put of a zero unit = %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{{}, {Dir: "/d", UnitsPerFile: -1}, {Dir: "/d", UnitsPerFile: MaxUnitsPerFile + 1}} {
		if _, err := Open(c); err == nil {
			t.Errorf("Open(%+v) succeeded", c)
		}
	}
	c := Config{Dir: "/d"}.WithDefaults()
	if c.UnitsPerFile != DefaultUnitsPerFile || c.Logger == nil || c.FS == nil {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, memConfig(vfs.NewMem()))
	mustOk(t, s.Put("t", 0, 0, Unit{PhysOffset: 1}))
	mustOk(t, s.Close())
	for name, err := range map[string]error{
		"Put":           s.Put("t", 0, 1, Unit{PhysOffset: 2}),
		"Sync":          s.Sync(),
		"TruncateAbove": s.TruncateAbove(1),
		"DeleteBefore":  s.DeleteBefore(1),
		"Close":         s.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v", name, err)
		}
	}
	if _, err := s.Get("t", 0, 0, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v", err)
	}
	if _, _, ok := s.Range("t", 0); ok {
		t.Error("Range after Close: ok")
	}
}

func TestTruncateQueue(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	id := QueueID{"t", 0}
	for k := range uint64(10) {
		mustOk(t, s.Put(id.Topic, id.Queue, k, Unit{PhysOffset: 100 * (k + 1)}))
	}
	mustOk(t, s.Put("t", 1, 0, Unit{PhysOffset: 5}))
	mustOk(t, s.DeleteBefore(200)) // min 1
	for _, c := range []struct {
		next uint64
		want error
	}{{0, ErrOffsetTooSmall}, {11, ErrOffsetTooLarge}} {
		if err := s.TruncateQueue(id.Topic, id.Queue, c.next); !errors.Is(err, c.want) {
			t.Errorf("TruncateQueue(%d) = %v, want %v", c.next, err, c.want)
		}
	}
	if err := s.TruncateQueue("t", 9, 0); !errors.Is(err, ErrUnknownQueue) {
		t.Errorf("TruncateQueue on unknown queue = %v", err)
	}
	mustOk(t, s.TruncateQueue(id.Topic, id.Queue, 10)) // no-op
	mustOk(t, s.TruncateQueue(id.Topic, id.Queue, 4))  // drops files 4 and 8
	if lo, next, _ := s.Range(id.Topic, id.Queue); lo != 1 || next != 4 {
		t.Fatalf("Range = %d, %d; want 1, 4", lo, next)
	}
	if got := filesOf(fs, id); !slices.Equal(got, []uint64{0}) {
		t.Fatalf("files %v, want [0]", got)
	}
	if _, next, _ := s.Range("t", 1); next != 1 {
		t.Fatalf("other queue touched: next %d", next)
	}
	mustOk(t, s.TruncateQueue(id.Topic, id.Queue, 1))
	mustSync(t, s)
	s2 := mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil)))
	if lo, next, _ := s2.Range(id.Topic, id.Queue); lo != 0 || next != 1 {
		t.Fatalf("after reopen Range = %d, %d; want 0, 1", lo, next)
	}
}
