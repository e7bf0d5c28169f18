package cq

import (
	"errors"
	"strings"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// durableQueue returns a MemFS holding queue t/0 with units 0..9 (files 0,
// 4 and 8), all synced.
func durableQueue(t *testing.T) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMem()
	s := mustOpen(t, memConfig(fs))
	for k := range uint64(10) {
		mustOk(t, s.Put("t", 0, k, Unit{PhysOffset: 100 * (k + 1)}))
	}
	mustSync(t, s)
	mustOk(t, s.Close())
	return fs.CrashClone(vfs.CrashDropUnsynced, nil)
}

func TestOpenRejectsBadFiles(t *testing.T) {
	id := QueueID{"t", 0}
	qdir := vfsDir(qfile(id, 0))
	cases := []struct {
		name    string
		mangle  func(t *testing.T, fs *vfs.MemFS)
		inError string // the path the error must name
	}{
		{"short file", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qfile(id, 4), make([]byte, 7))
		}, qfile(id, 4)},
		{"long file", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qfile(id, 8), make([]byte, testUPF*UnitBytes+1))
		}, qfile(id, 8)},
		{"garbage name", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qdir+"/notes.txt", []byte("hi"))
		}, qdir + "/notes.txt"},
		{"name not 20 digits", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qdir+"/12.cq", make([]byte, testUPF*UnitBytes))
		}, qdir + "/12.cq"},
		{"name with sign", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qdir+"/+0000000000000000012.cq", make([]byte, testUPF*UnitBytes))
		}, qdir + "/+0000000000000000012.cq"},
		{"misaligned name", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qfile(id, 13), make([]byte, testUPF*UnitBytes))
		}, qfile(id, 13)},
		{"name past the offset limit", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, qdir+"/18446744073709551612.cq", make([]byte, testUPF*UnitBytes))
		}, qdir + "/18446744073709551612.cq"},
		{"missing middle file", func(t *testing.T, fs *vfs.MemFS) {
			mustOk(t, fs.Remove(qfile(id, 4)))
			mustOk(t, fs.SyncDir(qdir))
		}, qfile(id, 4)},
		{"queue dir not canonical", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, testDir+"/t/007/"+fileName(0), make([]byte, testUPF*UnitBytes))
		}, testDir + "/t/007"},
		{"queue dir not a number", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, testDir+"/t/q1/"+fileName(0), make([]byte, testUPF*UnitBytes))
		}, testDir + "/t/q1"},
		{"queue id past uint32", func(t *testing.T, fs *vfs.MemFS) {
			writeFile(t, fs, testDir+"/t/4294967296/"+fileName(0), make([]byte, testUPF*UnitBytes))
		}, testDir + "/t/4294967296"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := durableQueue(t)
			c.mangle(t, fs)
			s, err := Open(memConfig(fs))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.inError) {
				t.Fatalf("Open = %v; want ErrCorrupt naming %s", err, c.inError)
			}
		})
	}
}

func TestOpenChangedUnitsPerFile(t *testing.T) {
	fs := durableQueue(t)
	cfg := memConfig(fs)
	cfg.UnitsPerFile = 8
	if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with another UnitsPerFile = %v, want ErrCorrupt", err)
	}
}

// A crash can leave a created file's name without its size, and a queue
// directory without files; neither is corruption.
func TestOpenIgnoresEmptyFilesAndDirs(t *testing.T) {
	fs := durableQueue(t)
	writeFile(t, fs, qfile(QueueID{"t", 0}, 12), nil)
	writeFile(t, fs, qfile(QueueID{"t", 0}, 20), nil)
	writeFile(t, fs, qfile(QueueID{"u", 1}, 0), nil)
	mustOk(t, fs.MkdirAll(testDir+"/v/2"))
	s := mustOpen(t, memConfig(fs))
	if got := s.Queues(); len(got) != 1 || got[0] != (QueueID{"t", 0}) {
		t.Fatalf("Queues = %v", got)
	}
	if lo, next, _ := s.Range("t", 0); lo != 0 || next != 10 {
		t.Fatalf("Range = %d, %d", lo, next)
	}
	// Put recreates the empty files it needs.
	for k := uint64(10); k < 14; k++ {
		mustOk(t, s.Put("t", 0, k, Unit{PhysOffset: 100 * (k + 1)}))
	}
	mustOk(t, s.Put("u", 1, 0, Unit{PhysOffset: 5000}))
	mustSync(t, s)
	s2 := mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil)))
	if lo, next, _ := s2.Range("t", 0); lo != 0 || next != 14 {
		t.Fatalf("after reopen Range = %d, %d", lo, next)
	}
	if _, next, ok := s2.Range("u", 1); !ok || next != 1 {
		t.Fatalf("after reopen u/1 next = %d, %v", next, ok)
	}
}

// next is one past the last unit with a nonzero byte, even in an earlier
// file, and holes below it are not returned.
func TestRecoverNext(t *testing.T) {
	fs := vfs.NewMem()
	unit := func(u Unit) []byte { b := u.encode(); return b[:] }
	file0 := make([]byte, testUPF*UnitBytes)
	copy(file0[0:], unit(Unit{PhysOffset: 10}))
	copy(file0[2*UnitBytes:], unit(Unit{PhysOffset: 30}))
	writeFile(t, fs, qfile(QueueID{"t", 0}, 0), file0)
	writeFile(t, fs, qfile(QueueID{"t", 0}, 4), make([]byte, testUPF*UnitBytes))
	file8 := make([]byte, testUPF*UnitBytes)
	file8[UnitBytes+15] = 1 // a torn unit: only its tag hash is set
	writeFile(t, fs, qfile(QueueID{"t", 1}, 8), file8)

	s := mustOpen(t, memConfig(fs))
	if lo, next, _ := s.Range("t", 0); lo != 0 || next != 3 {
		t.Fatalf("t/0 Range = %d, %d; want 0, 3", lo, next)
	}
	if got, err := s.Get("t", 0, 0, 10, nil); err != nil || len(got) != 1 {
		t.Fatalf("Get stops before the hole at 1: %v, %v", got, err)
	}
	if lo, next, _ := s.Range("t", 1); lo != 8 || next != 10 {
		t.Fatalf("t/1 Range = %d, %d; want 8, 10", lo, next)
	}
	if got, err := s.Get("t", 1, 8, 10, nil); err != nil || len(got) != 0 {
		t.Fatalf("Get never returns a unit with PhysOffset 0: %v, %v", got, err)
	}
	// Recovery: the log ends at 25; replay fills the hole.
	mustOk(t, s.TruncateAbove(25))
	mustOk(t, s.Put("t", 0, 1, Unit{PhysOffset: 20}))
	got, err := s.Get("t", 0, 0, 10, nil)
	if err != nil || len(got) != 2 || got[1].PhysOffset != 20 {
		t.Fatalf("after recovery Get = %v, %v", got, err)
	}
	if _, next, _ := s.Range("t", 1); next != 8 {
		t.Fatalf("torn unit survived TruncateAbove: next %d", next)
	}
}

// Injected I/O errors come back wrapped, leave nothing half-published, and
// the store works again once the fault is gone.
func TestInjectedFaults(t *testing.T) {
	boom := errors.New("boom")
	for _, op := range []vfs.Op{vfs.OpCreate, vfs.OpPreallocate, vfs.OpWrite, vfs.OpSync} {
		t.Run(string(op), func(t *testing.T) {
			fs := vfs.NewMem()
			s := mustOpen(t, memConfig(fs))
			mustOk(t, s.Put("t", 0, 0, Unit{PhysOffset: 1}))
			fs.SetInjector(func(o vfs.Op, _ string) error {
				if o == op {
					return boom
				}
				return nil
			})
			err := s.Put("t", 0, 4, Unit{PhysOffset: 5}) // new file: create, preallocate, write
			if op == vfs.OpSync {
				err = s.Sync()
			}
			if !errors.Is(err, boom) {
				t.Fatalf("got %v, want boom", err)
			}
			if _, next, _ := s.Range("t", 0); op != vfs.OpSync && next != 1 {
				t.Fatalf("failed Put published: next %d", next)
			}
			fs.SetInjector(nil)
			mustOk(t, s.Put("t", 0, 4, Unit{PhysOffset: 5}))
			mustSync(t, s)
			s2 := mustOpen(t, memConfig(fs.CrashClone(vfs.CrashDropUnsynced, nil)))
			if got, err := s2.Get("t", 0, 4, 1, nil); err != nil || len(got) != 1 || got[0].PhysOffset != 5 {
				t.Fatalf("after recovery Get = %v, %v", got, err)
			}
		})
	}
}
