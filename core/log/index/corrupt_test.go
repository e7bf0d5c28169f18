package index

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// built is a closed index of 3 full files and a tail, and what it holds.
type built struct {
	mem   *vfs.MemFS
	cfg   Config
	m     model
	paths []string
}

const builtKeys = 6

func buildClosed(t testing.TB) built {
	t.Helper()
	mem := newMem(t)
	cfg := tinyCfg(mem)
	x := mustOpen(t, cfg)
	m := gen(rand.New(rand.NewPCG(21, 22)), 56, builtKeys, 10)
	addAll(t, x, m)
	paths := filePaths(x)
	must(t, x.Close())
	return built{mem, cfg, m, paths}
}

// wantCorrupt checks that Open fails with ErrCorrupt naming path.
func wantCorrupt(t *testing.T, cfg Config, path string) {
	t.Helper()
	x, err := Open(cfg)
	if err == nil {
		_ = x.Close()
		t.Fatalf("Open succeeded, want ErrCorrupt for %s", path)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open = %v, want ErrCorrupt naming %s", err, path)
	}
}

func TestCorruptHeader(t *testing.T) {
	for _, file := range []int{0, 3} { // a full file and the tail
		for _, off := range []int64{0, 7, 8, 12, 16, 20, 24, 40, 60, 63} {
			b := buildClosed(t)
			patch(t, b.mem, b.paths[file], off, []byte{0x5a})
			wantCorrupt(t, b.cfg, b.paths[file])
		}
	}
}

func TestCorruptFooterOfFullFile(t *testing.T) {
	b := buildClosed(t)
	g := geometry{8, 16}
	patch(t, b.mem, b.paths[1], g.footerOff()+30, []byte{1})
	wantCorrupt(t, b.cfg, b.paths[1])
}

func TestWrongSize(t *testing.T) {
	for _, delta := range []int64{-1, 1, -geometry{8, 16}.size() + 10} {
		b := buildClosed(t)
		f, err := b.mem.Open(b.paths[1])
		must(t, err)
		size, _ := f.Size()
		must(t, f.Truncate(size+delta))
		must(t, f.Close())
		wantCorrupt(t, b.cfg, b.paths[1])
	}
}

func TestUnexpectedNames(t *testing.T) {
	for _, name := range []string{
		"garbage", "1.kix", "0000000000000000000x.kix", "99999999999999999999.kix",
		"00000000000000000001.kix.bak", "00000000000000000001.KIX",
	} {
		b := buildClosed(t)
		f, err := b.mem.Create(vfs.Join(testDir, name))
		must(t, err)
		must(t, f.Close())
		wantCorrupt(t, b.cfg, vfs.Join(testDir, name))
	}
}

func TestLeftoverTmpIsRemoved(t *testing.T) {
	b := buildClosed(t)
	tmp := vfs.Join(testDir, fileName(1<<40)+tmpSuffix)
	f, err := b.mem.Create(tmp)
	must(t, err)
	must(t, f.Close())
	x := mustOpen(t, b.cfg)
	checkAll(t, x, b.m, builtKeys)
	must(t, x.Close())
	for _, n := range b.mem.Names() {
		if n == tmp {
			t.Fatalf("%s was not removed", tmp)
		}
	}
}

// A crash can make a new file's name durable before its entry 0 (on file
// systems that order metadata freely): the empty tail is removed.
func TestEmptyTailIsRemoved(t *testing.T) {
	b := buildClosed(t)
	g := geometry{8, 16}
	last := b.paths[3]
	patch(t, b.mem, last, g.entryOff(0), make([]byte, 16*entryBytes))
	x := mustOpen(t, b.cfg)
	checkAll(t, x, b.m[:48], builtKeys)
	if fileCount(x) != 3 {
		t.Fatalf("%d files, want 3", fileCount(x))
	}
	addAll(t, x, b.m[48:])
	checkAll(t, x, b.m, builtKeys)
	must(t, x.Close())
}

// rewrite replaces entry k of a file with e, with a valid CRC, as a bug or a
// malicious disk could.
func rewrite(t *testing.T, fs vfs.FS, path string, g geometry, k int64, edit func(*entry)) {
	t.Helper()
	f, err := fs.Open(path)
	must(t, err)
	buf := make([]byte, entryBytes)
	_, err = f.ReadAt(buf, g.entryOff(k))
	must(t, err)
	e, ok := getEntry(buf)
	if !ok {
		t.Fatalf("entry %d of %s is not valid before the edit", k, path)
	}
	edit(&e)
	e.put(buf)
	_, err = f.WriteAt(buf, g.entryOff(k))
	must(t, err)
	must(t, f.Close())
}

// A corrupt chain in a full file (trusted without a scan) ends the lookup
// with ErrCorrupt: never a loop, never a read out of range.
func TestCorruptChainTerminates(t *testing.T) {
	g := geometry{8, 16}
	edits := map[string]func(*entry){
		"self loop":       func(e *entry) { e.prev = 6 },
		"forward pointer": func(e *entry) { e.prev = 15 },
		"out of range":    func(e *entry) { e.prev = 1 << 30 },
		"other slot":      func(e *entry) { e.hash ^= 1 << 63 }, // the slot is the hash's high bits
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			b := buildClosed(t)
			rewrite(t, b.mem, b.paths[1], g, 5, edit)
			x := mustOpen(t, b.cfg)
			defer x.Close()
			// Entry 5 of file 1 is on the chain of its key's slot.
			key := b.m[16+5].key
			_, err := x.Lookup([]byte(key), 0, 0, 1<<30, nil)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), b.paths[1]) {
				t.Fatalf("Lookup = %v, want ErrCorrupt naming %s", err, b.paths[1])
			}
		})
	}
}

func TestCorruptSlotTerminates(t *testing.T) {
	b := buildClosed(t)
	g := geometry{8, 16}
	for i := range int64(8) {
		patch(t, b.mem, b.paths[0], g.slotOff(i), []byte{0xff, 0xff, 0xff, 0xff})
	}
	x := mustOpen(t, b.cfg)
	defer x.Close()
	_, err := x.Lookup([]byte(keyName(0)), 0, 0, 1<<30, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Lookup = %v, want ErrCorrupt", err)
	}
}

// In the tail, a corrupt chain is where recovery cuts: entries are kept up
// to it and the rest is dropped (the owner replays them).
func TestTailChainIsRecomputed(t *testing.T) {
	b := buildClosed(t)
	g := geometry{8, 16}
	rewrite(t, b.mem, b.paths[3], g, 4, func(e *entry) { e.prev = 5 })
	x := mustOpen(t, b.cfg)
	checkAll(t, x, b.m[:48+4], builtKeys)
	must(t, x.TruncateAbove(b.m[msgStart(b.m, 52)].phys))
	addAll(t, x, b.m[msgStart(b.m, 52):])
	checkAll(t, x, b.m, builtKeys)
	must(t, x.Close())
}

// TruncateAbove into a full file validates what it keeps first.
func TestTruncateAboveRefusesCorruptFullFile(t *testing.T) {
	b := buildClosed(t)
	g := geometry{8, 16}
	patch(t, b.mem, b.paths[1], g.entryOff(2)+3, []byte{0xee})
	x := mustOpen(t, b.cfg)
	defer x.Close()
	err := x.TruncateAbove(b.m[msgStart(b.m, 16+10)].phys)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("TruncateAbove = %v, want ErrCorrupt", err)
	}
	if fileCount(x) != 4 {
		t.Fatalf("TruncateAbove changed the files before failing")
	}
}

func TestWriteFailureIsSticky(t *testing.T) {
	mem := newMem(t)
	x := mustOpen(t, tinyCfg(mem))
	must(t, x.Add([]byte("a"), 1, 1))
	boom := errors.New("boom")
	mem.SetInjector(func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			return boom
		}
		return nil
	})
	if err := x.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want the injected error", err)
	}
	mem.SetInjector(nil)
	if err := x.Add([]byte("b"), 2, 1); !errors.Is(err, boom) {
		t.Fatalf("Add after a failed Sync = %v, want the sticky error", err)
	}
	if got, err := x.Lookup([]byte("a"), 0, 0, 9, nil); err != nil || len(got) != 1 {
		t.Fatalf("reads go on: %v, %v", got, err)
	}
	if err := x.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want the sticky error", err)
	}
}
