package vfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// Both implementations must agree on the behaviour the log relies on.
func forEachFS(t *testing.T, fn func(t *testing.T, fs FS, dir string)) {
	t.Run("os", func(t *testing.T) { fn(t, OS{}, t.TempDir()) })
	t.Run("mem", func(t *testing.T) {
		m := NewMem()
		if err := m.MkdirAll("/d"); err != nil {
			t.Fatal(err)
		}
		fn(t, m, "/d")
	})
}

func TestFileBasics(t *testing.T) {
	forEachFS(t, func(t *testing.T, fs FS, dir string) {
		name := Join(dir, "a")
		f, err := fs.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Preallocate(8192); err != nil {
			t.Fatal(err)
		}
		if sz, _ := f.Size(); sz != 8192 {
			t.Fatalf("size after preallocate = %d, want 8192", sz)
		}
		m, unmap, err := f.MapReadOnly(8192)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("hello"), 4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		// A shared mapping sees positional writes through the page cache.
		if got := string(m[4096:4101]); got != "hello" {
			t.Fatalf("mapping sees %q, want hello", got)
		}
		buf := make([]byte, 5)
		if _, err := f.ReadAt(buf, 4096); err != nil || string(buf) != "hello" {
			t.Fatalf("ReadAt = %q, %v", buf, err)
		}
		if err := unmap(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		names, err := fs.List(dir)
		if err != nil || len(names) != 1 || names[0] != "a" {
			t.Fatalf("List = %v, %v", names, err)
		}
		if err := fs.Rename(name, Join(dir, "b")); err != nil {
			t.Fatal(err)
		}
		if _, err := fs.Open(name); !IsNotExist(err) {
			t.Fatalf("open of renamed file: %v, want not-exist", err)
		}
		if err := fs.Remove(Join(dir, "b")); err != nil {
			t.Fatal(err)
		}
		if err := fs.SyncDir(dir); err != nil {
			t.Fatal(err)
		}
		if names, _ := fs.List(filepath.Join(dir, "missing")); len(names) != 0 {
			t.Fatalf("missing dir lists %v", names)
		}
	})
}

func TestCrashDropsUnsyncedBytesAndNames(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("/d"))
	f, err := m.Create("/d/kept")
	must(t, err)
	_, err = f.WriteAt([]byte("synced"), 0)
	must(t, err)
	must(t, f.Sync())
	must(t, m.SyncDir("/d"))
	_, err = f.WriteAt([]byte("UNSYNC"), 0)
	must(t, err)
	_, err = m.Create("/d/not-dir-synced")
	must(t, err)

	c := m.CrashClone(CrashDropUnsynced, nil)
	if names := c.Names(); len(names) != 1 || names[0] != "/d/kept" {
		t.Fatalf("after crash names = %v, want only /d/kept", names)
	}
	g, err := c.Open("/d/kept")
	must(t, err)
	buf := make([]byte, 6)
	_, err = g.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "synced" {
		t.Fatalf("after crash content = %q, want synced", buf)
	}
	// The original is untouched by cloning.
	_, err = f.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "UNSYNC" {
		t.Fatalf("original content = %q", buf)
	}
}

func TestCrashTearKeepsOnlyWrittenOrSyncedBytesPerSector(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("/d"))
	f, err := m.Create("/d/f")
	must(t, err)
	const size = 64 * SectorBytes
	must(t, f.Preallocate(size))
	must(t, f.Sync())
	must(t, m.SyncDir("/d"))
	newData := bytes.Repeat([]byte{0xAB}, size)
	_, err = f.WriteAt(newData, 0)
	must(t, err)

	sawOld, sawNew := false, false
	for seed := range uint64(20) {
		c := m.CrashClone(CrashTear, rand.New(rand.NewPCG(seed, 1)))
		g, err := c.Open("/d/f")
		must(t, err)
		img := make([]byte, size)
		_, err = g.ReadAt(img, 0)
		must(t, err)
		for s := 0; s < size; s += SectorBytes {
			switch img[s] {
			case 0:
				sawOld = true
			case 0xAB:
				sawNew = true
			}
		}
	}
	if !sawOld || !sawNew {
		t.Fatalf("tearing should keep some sectors and drop others (old=%v new=%v)", sawOld, sawNew)
	}
}

func TestInjector(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("/d"))
	f, err := m.Create("/d/f")
	must(t, err)
	boom := errors.New("boom")
	m.SetInjector(func(op Op, name string) error {
		if op == OpSync {
			return boom
		}
		return nil
	})
	if err := f.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want injected error", err)
	}
	m.SetInjector(nil)
	must(t, f.Sync())
}

func TestMappedFileCannotBeReallocated(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("/d"))
	f, err := m.Create("/d/f")
	must(t, err)
	must(t, f.Preallocate(SectorBytes))
	_, unmap, err := f.MapReadOnly(SectorBytes)
	must(t, err)
	if _, err := f.WriteAt(make([]byte, 10*SectorBytes), 0); err == nil {
		t.Fatal("growing a mapped file past its capacity should fail")
	}
	must(t, unmap())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
