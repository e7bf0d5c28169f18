package index

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// fuzzBase is a closed index (3 full files and a tail) as file images.
type fuzzBase struct {
	names  []string
	images [][]byte
	m      model
}

var fuzzBaseOnce = sync.OnceValue(func() fuzzBase {
	mem := vfs.NewMem()
	_ = mem.MkdirAll(testDir)
	x, err := Open(tinyCfg(mem))
	if err != nil {
		panic(err)
	}
	m := gen(rand.New(rand.NewPCG(23, 24)), 56, builtKeys, 10)
	for _, r := range m {
		if err := x.Add([]byte(r.key), r.phys, r.ms); err != nil {
			panic(err)
		}
	}
	b := fuzzBase{names: filePaths(x), m: m}
	if err := x.Close(); err != nil {
		panic(err)
	}
	for _, name := range b.names {
		b.images = append(b.images, readAll(mem, name))
	}
	return b
})

func readAll(fs vfs.FS, name string) []byte {
	f, err := fs.Open(name)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	size, _ := f.Size()
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, 0); err != nil {
		panic(err)
	}
	return buf
}

// FuzzOpenCorruptIndex writes arbitrary bytes over one file (header, slots,
// entries or footer), optionally fixing the CRCs so that the checks behind
// them are reached too. Open, Lookup, Add and TruncateAbove must never panic
// or hang, and must fail only with ErrCorrupt.
func FuzzOpenCorruptIndex(f *testing.F) {
	g := geometry{8, 16}
	f.Add(uint8(0), uint16(0), []byte("XXXX"), false)
	f.Add(uint8(1), uint16(12), []byte{0xff, 0xff, 0xff, 0x7f}, true)
	f.Add(uint8(3), uint16(g.slotOff(2)), []byte{9, 0, 0, 0}, false)
	f.Add(uint8(2), uint16(g.slotOff(0)), []byte{16, 0, 0, 0, 3, 0, 0, 0}, false)
	f.Add(uint8(1), uint16(g.entryOff(4)+24), []byte{5, 0, 0, 0}, true)
	f.Add(uint8(3), uint16(g.entryOff(2)+8), []byte{0, 0, 0, 0, 0, 0, 0, 0}, true)
	f.Add(uint8(0), uint16(g.footerOff()+8), []byte{3}, true)
	f.Fuzz(func(t *testing.T, file uint8, off uint16, data []byte, fixCRC bool) {
		base := fuzzBaseOnce()
		mem := vfs.NewMem()
		must(t, mem.MkdirAll(testDir))
		for i, name := range base.names {
			img := append([]byte(nil), base.images[i]...)
			if i == int(file)%len(base.names) {
				corrupt(img, g, int64(off), data, fixCRC)
			}
			put(t, mem, name, img)
		}
		exercise(t, Config{FS: mem, Dir: testDir}, base.m)
	})
}

// corrupt writes data at off (wrapped into the file) and maybe fixes CRCs.
func corrupt(img []byte, g geometry, off int64, data []byte, fixCRC bool) {
	off %= int64(len(img))
	n := copy(img[off:], data)
	if !fixCRC {
		return
	}
	le.PutUint32(img[crcOff:], checksum(img[:crcOff]))
	ft := img[g.footerOff():]
	le.PutUint32(ft[crcOff:], checksum(ft[:crcOff]))
	for k := range g.entries {
		e := img[g.entryOff(k):]
		if o := g.entryOff(k); o < off+int64(n) && off < o+entryBytes {
			le.PutUint32(e[entryCRCOff:], checksum(e[:entryCRCOff]))
		}
	}
}

func put(t *testing.T, mem *vfs.MemFS, name string, img []byte) {
	f, err := mem.Create(name)
	must(t, err)
	_, err = f.WriteAt(img, 0)
	must(t, err)
	must(t, f.Close())
}

func exercise(t *testing.T, cfg Config, m model) {
	x, err := Open(cfg)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want nil or ErrCorrupt", err)
		}
		return
	}
	defer x.Close()
	for k := -1; k <= builtKeys; k++ {
		for _, q := range []query{{keyName(k), 0, 0, 1 << 30}, {keyName(k), m[20].ms, m[40].ms, 3}} {
			if _, err := x.Lookup([]byte(q.key), q.begin, q.end, q.max, nil); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Lookup = %v", err)
			}
		}
	}
	x.LastOffset()
	if err := x.TruncateAbove(m[30].phys); err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("TruncateAbove = %v", err)
	}
	for _, r := range m[30:] {
		if err := x.Add([]byte(r.key), r.phys, r.ms); err != nil &&
			!errors.Is(err, ErrOutOfOrder) && !errors.Is(err, ErrTooManyKeys) {
			t.Fatalf("Add = %v", err)
		}
	}
	if _, err := x.Lookup([]byte(keyName(1)), 0, 0, 1<<30, nil); err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Lookup = %v", err)
	}
}
