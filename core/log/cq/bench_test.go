package cq

import (
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// benchStores runs fn on the in-memory FS and on the real disk, both with the
// default file size (what production writes).
func benchStores(b *testing.B, fn func(b *testing.B, s *Store)) {
	b.Run("mem", func(b *testing.B) { fn(b, mustOpen(b, Config{FS: vfs.NewMem(), Dir: testDir})) })
	b.Run("os", func(b *testing.B) { fn(b, mustOpen(b, Config{FS: vfs.OS{}, Dir: b.TempDir()})) })
}

// BenchmarkPut measures the dispatcher's append path over 8 queues (no Sync).
func BenchmarkPut(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Store) {
		var k uint64
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Put("topic", uint32(k%8), k/8, Unit{PhysOffset: 1 + k*100, Size: 100}); err != nil {
				b.Fatal(err)
			}
			k++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "units/s")
	})
}

// BenchmarkGet measures a consumer pull of 32 units.
func BenchmarkGet(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Store) {
		const n = 1 << 16
		for k := range uint64(n) {
			if err := s.Put("topic", 0, k, Unit{PhysOffset: 1 + k*100, Size: 100}); err != nil {
				b.Fatal(err)
			}
		}
		const batch = 32
		buf := make([]Unit, 0, batch)
		var off uint64
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = s.Get("topic", 0, off, batch, buf[:0]); err != nil || len(buf) != batch {
				b.Fatalf("Get: %d units, %v", len(buf), err)
			}
			off = (off + batch) % n
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "units/s")
	})
}
