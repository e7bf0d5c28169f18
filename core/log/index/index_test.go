package index

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

func TestHashIsStable(t *testing.T) {
	for _, key := range []string{"", "a", "order-42", "\x00\xff"} {
		h := fnv.New64a()
		h.Write([]byte(key))
		if got, want := hashKey([]byte(key)), fmix64(h.Sum64()); got != want {
			t.Fatalf("hashKey(%q) = %#x, want %#x", key, got, want)
		}
	}
	// A golden value: changing the hash silently breaks every stored file.
	if got := hashKey([]byte("hello")); got != 0xe9c562c0fdb23244 {
		t.Fatalf("hashKey(hello) = %#x changed", got)
	}
}

func TestZeroEntryIsInvalid(t *testing.T) {
	if _, ok := getEntry(make([]byte, entryBytes)); ok {
		t.Fatal("an all-zero entry must not have a valid CRC")
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{FS: vfs.NewMem(), Dir: "/d"}
	must(t, c.Validate())
	if c.SlotCount != DefaultSlotCount || c.EntriesPerFile != DefaultEntriesPerFile || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if size := c.geometry().size(); size != 36<<20+128 {
		t.Fatalf("default file size = %d", size)
	}
	for _, bad := range []Config{
		{Dir: "/d"},
		{FS: vfs.NewMem()},
		{FS: vfs.NewMem(), Dir: "/d", SlotCount: -1},
		{FS: vfs.NewMem(), Dir: "/d", EntriesPerFile: maxEntriesPerFile + 1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("Validate(%+v) = %v, want ErrInvalidConfig", bad, err)
		}
	}
}

func TestAddLookupManyFiles(t *testing.T) {
	const nkeys = 20
	mem := newMem(t)
	x := mustOpen(t, tinyCfg(mem))
	m := gen(rand.New(rand.NewPCG(1, 2)), 600, nkeys, 0)
	addAll(t, x, m)
	if n := fileCount(x); n != 600/16+1 {
		t.Fatalf("%d files, want %d", n, 600/16+1)
	}
	checkAll(t, x, m, nkeys)
	// dst is appended to, not overwritten.
	got, err := x.Lookup([]byte(keyName(3)), 0, 0, 2, []uint64{7})
	must(t, err)
	if want := append([]uint64{7}, m.lookup(keyName(3), 0, 0, 2)...); !slices.Equal(got, want) {
		t.Fatalf("Lookup with dst = %v, want %v", got, want)
	}
	if got, _ := x.Lookup([]byte(keyName(3)), 0, 0, 0, nil); len(got) != 0 {
		t.Fatalf("max 0 returned %v", got)
	}
	must(t, x.Close())
}

func TestAddRejectsDecreasingOffset(t *testing.T) {
	x := mustOpen(t, tinyCfg(newMem(t)))
	must(t, x.Add([]byte("a"), 100, 1))
	must(t, x.Add([]byte("b"), 100, 1))
	if err := x.Add([]byte("c"), 99, 1); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("Add below the last offset = %v, want ErrOutOfOrder", err)
	}
	must(t, x.Add([]byte("c"), 101, 1))
	must(t, x.Close())
}

func TestTooManyKeysAtOneOffset(t *testing.T) {
	x := mustOpen(t, tinyCfg(newMem(t)))
	for i := range 16 {
		must(t, x.Add([]byte{byte(i)}, 5, 1))
	}
	if err := x.Add([]byte("x"), 5, 1); !errors.Is(err, ErrTooManyKeys) {
		t.Fatalf("17th key at one offset = %v, want ErrTooManyKeys", err)
	}
	// The index stays usable.
	must(t, x.Add([]byte("x"), 6, 1))
	must(t, x.Close())
}

func TestReopenKeepsEverything(t *testing.T) {
	const nkeys = 15
	mem := newMem(t)
	cfg := tinyCfg(mem)
	x := mustOpen(t, cfg)
	m := gen(rand.New(rand.NewPCG(3, 4)), 203, nkeys, 1000)
	addAll(t, x, m)
	must(t, x.Sync())
	// A power cut right after Sync loses nothing.
	y := mustOpen(t, Config{FS: mem.CrashClone(vfs.CrashDropUnsynced, nil), Dir: testDir})
	checkAll(t, y, m, nkeys)
	must(t, y.Close())
	// Neither does a clean Close and reopen; adding goes on where it stopped.
	must(t, x.Close())
	x = mustOpen(t, cfg)
	checkAll(t, x, m, nkeys)
	more := gen(rand.New(rand.NewPCG(5, 6)), 50, nkeys, m[len(m)-1].phys)
	addAll(t, x, more)
	checkAll(t, x, append(m, more...), nkeys)
	must(t, x.Close())
	if _, err := x.Lookup([]byte("k"), 0, 0, 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lookup after Close = %v", err)
	}
	if err := x.Add([]byte("k"), 1<<40, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close = %v", err)
	}
}

func TestNewGeometryAppliesToNewFilesOnly(t *testing.T) {
	const nkeys = 10
	mem := newMem(t)
	x := mustOpen(t, tinyCfg(mem))
	m := gen(rand.New(rand.NewPCG(7, 8)), 40, nkeys, 0)
	addAll(t, x, m)
	must(t, x.Close())
	cfg := Config{FS: mem, Dir: testDir, SlotCount: 5, EntriesPerFile: 7}
	x = mustOpen(t, cfg)
	more := gen(rand.New(rand.NewPCG(9, 10)), 40, nkeys, m[len(m)-1].phys+1)
	addAll(t, x, more)
	m = append(m, more...)
	checkAll(t, x, m, nkeys)
	must(t, x.Close())
	x = mustOpen(t, cfg)
	checkAll(t, x, m, nkeys)
	must(t, x.Close())
}

func TestTruncateAbove(t *testing.T) {
	const nkeys = 12
	m := gen(rand.New(rand.NewPCG(11, 12)), 100, nkeys, 500)
	for _, cutAt := range []int{0, 1, 15, 16, 17, 32, 33, 50, 99, 100} {
		mem := newMem(t)
		cfg := tinyCfg(mem)
		x := mustOpen(t, cfg)
		addAll(t, x, m)
		i := msgStart(m, cutAt)
		physEnd := uint64(1 << 62)
		if i < len(m) {
			physEnd = m[i].phys
		}
		must(t, x.TruncateAbove(physEnd))
		if want := (i + 15) / 16; fileCount(x) != want {
			t.Fatalf("cut at %d: %d files, want %d", i, fileCount(x), want)
		}
		checkAll(t, x, m[:i], nkeys)
		addAll(t, x, m[i:])
		checkAll(t, x, m, nkeys)
		must(t, x.Close())
		x = mustOpen(t, cfg)
		checkAll(t, x, m, nkeys)
		must(t, x.Close())
	}
}

func TestTruncateAboveEverythingThenAdd(t *testing.T) {
	mem := newMem(t)
	x := mustOpen(t, tinyCfg(mem))
	m := gen(rand.New(rand.NewPCG(13, 14)), 40, 5, 100)
	addAll(t, x, m)
	must(t, x.TruncateAbove(0))
	if fileCount(x) != 0 || len(mem.Names()) != 0 {
		t.Fatalf("files left: %v", mem.Names())
	}
	checkAll(t, x, nil, 5)
	addAll(t, x, m)
	checkAll(t, x, m, 5)
	must(t, x.Close())
}

func TestDeleteBefore(t *testing.T) {
	const nkeys = 10
	mem := newMem(t)
	cfg := tinyCfg(mem)
	x := mustOpen(t, cfg)
	m := gen(rand.New(rand.NewPCG(15, 16)), 80, nkeys, 0) // 5 files
	addAll(t, x, m)
	// Offset of entry 40 (in file 2): files 0 and 1 hold only smaller ones,
	// unless entry 31 shares the offset of entry 32.
	start := m[40].phys
	must(t, x.DeleteBefore(start))
	keep := 0
	for keep+16 < 80 && m[keep+15].phys < start {
		keep += 16
	}
	if got := fileCount(x); got != 5-keep/16 {
		t.Fatalf("%d files after DeleteBefore, want %d", got, 5-keep/16)
	}
	checkAll(t, x, m[keep:], nkeys)
	must(t, x.Sync())
	must(t, x.Close())
	x = mustOpen(t, cfg)
	checkAll(t, x, m[keep:], nkeys)
	// Never the last file, even when everything is older.
	must(t, x.DeleteBefore(1<<62))
	if fileCount(x) != 1 {
		t.Fatalf("%d files, want the last one kept", fileCount(x))
	}
	checkAll(t, x, m[64:], nkeys)
	must(t, x.Close())
}

func TestOSFileSystem(t *testing.T) {
	const nkeys = 30
	cfg := Config{FS: vfs.OS{}, Dir: t.TempDir(), SlotCount: 64, EntriesPerFile: 100}
	x := mustOpen(t, cfg)
	m := gen(rand.New(rand.NewPCG(17, 18)), 450, nkeys, 4096)
	addAll(t, x, m)
	must(t, x.Sync())
	checkAll(t, x, m, nkeys)
	must(t, x.TruncateAbove(m[msgStart(m, 420)].phys))
	must(t, x.DeleteBefore(m[150].phys))
	must(t, x.Close())
	x = mustOpen(t, cfg)
	i := msgStart(m, 420)
	addAll(t, x, m[i:])
	checkAll(t, x, m[100:], nkeys) // file 0 ends below m[150]
	must(t, x.Close())
}

// One writer, a flusher and several readers, under -race: a reader must
// see, for its key, exactly the entries of some prefix of the Adds, at least
// those that were done when its Lookup began.
func TestConcurrentReaders(t *testing.T) {
	const nkeys, n = 8, 3000
	x := mustOpen(t, tinyCfg(newMem(t)))
	m := gen(rand.New(rand.NewPCG(19, 20)), n, nkeys, 0)
	var done atomic.Int64
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() { readLoop(t, x, m, &done, r) })
	}
	// Sync from another goroutine (a flusher) runs alongside Add.
	wg.Go(func() {
		for done.Load() < n {
			if err := x.Sync(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i, rec := range m {
		must(t, x.Add([]byte(rec.key), rec.phys, rec.ms))
		done.Store(int64(i + 1))
		if i%500 == 499 {
			must(t, x.DeleteBefore(m[i-300].phys))
		}
	}
	wg.Wait()
	must(t, x.Close())
}

func readLoop(t *testing.T, x *Index, m model, done *atomic.Int64, seed int) {
	rng := rand.New(rand.NewPCG(uint64(seed), 99))
	for done.Load() < int64(len(m)) {
		key := keyName(rng.IntN(8))
		before := int(done.Load())
		got, err := x.Lookup([]byte(key), 0, 0, 1<<30, nil)
		if err != nil {
			t.Error(err)
			return
		}
		// The Add in flight may be visible before done counts it.
		all := m[:min(done.Load()+1, int64(len(m)))].lookup(key, 0, 0, 1<<30)
		// Newer entries may have arrived since got was read and DeleteBefore
		// may have removed old ones: got is a contiguous part of all.
		if !isSuffixFrom(got, all) {
			t.Errorf("reader saw %v for %s, not part of %v", got, key, all)
			return
		}
		if recent := m[:before].lookup(key, 0, 0, 1<<30); len(recent) > 0 && !slices.Contains(got, recent[0]) {
			t.Errorf("reader missed %d for %s", recent[0], key)
			return
		}
	}
}

// isSuffixFrom reports whether got equals all[i : i+len(got)] for some i
// (newer entries arrived after got was read, older ones were deleted).
func isSuffixFrom(got, all []uint64) bool {
	for i := 0; i+len(got) <= len(all); i++ {
		if slices.Equal(got, all[i:i+len(got)]) {
			return true
		}
	}
	return false
}
