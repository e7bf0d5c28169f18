package index

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

const benchPrefix = "msg-id-0A1B2C3D-"

// benchKey writes a message-id-like key for i into buf, without allocating.
func benchKey(buf []byte, i int) []byte {
	return strconv.AppendInt(append(buf[:0], benchPrefix...), int64(i), 10)
}

// BenchmarkAdd adds distinct keys with the default geometry (36 MiB files,
// a roll and its fdatasync every 1<<20 Adds).
func BenchmarkAdd(b *testing.B) {
	for _, fsName := range []string{"mem", "os"} {
		b.Run(fsName, func(b *testing.B) {
			cfg := Config{FS: vfs.OS{}, Dir: b.TempDir()}
			if fsName == "mem" {
				cfg = Config{FS: newMem(b), Dir: testDir}
			}
			x := mustOpen(b, cfg)
			b.ReportAllocs()
			i, key := 0, make([]byte, 0, 64)
			for b.Loop() {
				key = benchKey(key, i)
				if err := x.Add(key, uint64(i)*256, int64(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.StopTimer()
			must(b, x.Close())
		})
	}
}

// BenchmarkLookup looks up keys of an index of 2M entries over 2 files (the
// default geometry): 200k keys of 10 entries each, and keys never added.
func BenchmarkLookup(b *testing.B) {
	const keys, perKey = 200_000, 10
	x := mustOpen(b, Config{FS: newMem(b), Dir: testDir})
	key := make([]byte, 0, 64)
	for i := range keys * perKey {
		key = benchKey(key, i%keys)
		must(b, x.Add(key, uint64(i)*256, int64(i)))
	}
	for _, c := range []struct {
		name  string
		first int // keys looked up are [first, first+keys)
		max   int
	}{{"hit-all-10", 0, 32}, {"hit-newest-1", 0, 1}, {"miss", keys, 32}} {
		b.Run(c.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			dst := make([]uint64, 0, 32)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				key = benchKey(key, c.first+rng.IntN(keys))
				dst, err = x.Lookup(key, 0, 0, c.max, dst[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	must(b, x.Close())
}
