package log

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"
	"golang.org/x/sys/unix"
)

// The append benchmarks write 1 KiB entries with one Append+Sync per batch,
// on the real disk. BenchmarkAppend measures the log alone; its paired
// variant alternates a batch through the log with the same bytes written by
// a bare pwrite+fdatasync on a preallocated file, and reports the ratio,
// so the comparison shares the machine's moment-to-moment noise.

const benchEntryBytes = 1024

var benchBatches = []int{1, 16, 64, 256}

func benchConfig(b *testing.B) Config {
	return Config{Dir: b.TempDir(), SegmentSizeBytes: 256 << 20}
}

func benchEntries(n int) []raftpb.Entry {
	ents := make([]raftpb.Entry, n)
	data := payload(1, 1, benchEntryBytes)
	for k := range ents {
		ents[k] = raftpb.Entry{Term: 1, Data: data}
	}
	return ents
}

func renumber(ents []raftpb.Entry, first uint64) {
	for k := range ents {
		ents[k].Index = first + uint64(k)
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, n := range benchBatches {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			l, err := Open(benchConfig(b))
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			ents := benchEntries(n)
			next := uint64(1)
			b.SetBytes(int64(n * benchEntryBytes))
			b.ResetTimer()
			for b.Loop() {
				renumber(ents, next)
				if err := l.Append(ents); err != nil {
					b.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					b.Fatal(err)
				}
				next += uint64(n)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// plainFile is the baseline: the same bytes, pwrite at increasing offsets
// of a preallocated file, one fdatasync per batch. When a file is full it
// moves on to a fresh preallocated one, as the log rolls segments, so both
// always write pages that are new to the page cache.
type plainFile struct {
	b    *testing.B
	dir  string
	size int64
	f    *os.File
	off  int64
	n    int
}

func newPlainFile(b *testing.B, size int64) *plainFile {
	p := &plainFile{b: b, dir: b.TempDir(), size: size}
	p.roll()
	b.Cleanup(func() { _ = p.f.Close() })
	return p
}

func (p *plainFile) roll() {
	if p.f != nil {
		_ = p.f.Close()
		_ = os.Remove(p.f.Name())
	}
	p.n++
	f, err := os.OpenFile(filepath.Join(p.dir, fmt.Sprint("plain", p.n)), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		p.b.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, p.size); err != nil {
		p.b.Fatal(err)
	}
	p.f, p.off = f, 0
}

func (p *plainFile) write(buf []byte) {
	if p.off+int64(len(buf)) > p.size {
		p.roll()
	}
	if _, err := p.f.WriteAt(buf, p.off); err != nil {
		p.b.Fatal(err)
	}
	if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
		p.b.Fatal(err)
	}
	p.off += int64(len(buf))
}

func BenchmarkAppendPaired(b *testing.B) {
	for _, n := range benchBatches {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			cfg := benchConfig(b)
			l, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			plain := newPlainFile(b, cfg.SegmentSizeBytes)
			ents := benchEntries(n)
			// The baseline writes exactly the bytes the log writes.
			recBytes := make([]byte, n*int(recordSize(benchEntryBytes)))
			for k := range n {
				putRecord(recBytes[k*int(recordSize(benchEntryBytes)):][:recordSize(benchEntryBytes)], recHeader{index: uint64(k + 1), term: 1}, ents[0].Data)
			}
			var logTime, plainTime time.Duration
			next := uint64(1)
			b.SetBytes(int64(n * benchEntryBytes))
			for b.Loop() {
				start := time.Now()
				renumber(ents, next)
				if err := l.Append(ents); err != nil {
					b.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					b.Fatal(err)
				}
				next += uint64(n)
				mid := time.Now()
				plain.write(recBytes)
				logTime += mid.Sub(start)
				plainTime += time.Since(mid)
			}
			records := float64(b.N * n)
			b.ReportMetric(records/logTime.Seconds(), "log-records/s")
			b.ReportMetric(records/plainTime.Seconds(), "plain-records/s")
			b.ReportMetric(plainTime.Seconds()/logTime.Seconds(), "ratio")
		})
	}
}

// BenchmarkRead reads committed 1 KiB entries back through the mapping:
// Scan (the dispatcher's path) and Entries (raft's path).
func BenchmarkRead(b *testing.B) {
	l, err := Open(benchConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	const total = 64 << 10
	ents := benchEntries(256)
	for first := uint64(1); first <= total; first += 256 {
		renumber(ents, first)
		if err := l.Append(ents); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	l.SetCommitted(total)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(benchEntryBytes)
		i := uint64(1)
		var sum byte
		for b.Loop() {
			if err := l.Scan(i, i+1, func(r Record) error { sum += r.Data[0]; return nil }); err != nil {
				b.Fatal(err)
			}
			if i++; i > total {
				i = 1
			}
		}
		_ = sum
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("entries64", func(b *testing.B) {
		b.SetBytes(64 * benchEntryBytes)
		i := uint64(1)
		for b.Loop() {
			got, err := l.Entries(i, i+64, ^uint64(0))
			if err != nil || len(got) != 64 {
				b.Fatal(err, len(got))
			}
			if i += 64; i+64 > total {
				i = 1
			}
		}
		b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "records/s")
	})
}

// BenchmarkRecoverFullSegment opens a log whose tail is one full segment
// of 1 KiB entries: the recovery scan reads and CRC-checks every record.
func BenchmarkRecoverFullSegment(b *testing.B) {
	cfg := benchConfig(b)
	l, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ents := benchEntries(256)
	next := uint64(1)
	perSeg := (cfg.SegmentSizeBytes - SegmentHeaderBytes) / recordSize(benchEntryBytes)
	for int64(next)+256 <= perSeg {
		renumber(ents, next)
		if err := l.Append(ents); err != nil {
			b.Fatal(err)
		}
		next += 256
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	_ = l.Close()
	b.SetBytes(cfg.SegmentSizeBytes)
	for b.Loop() {
		l, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if last, _ := l.LastIndex(); last != next-1 {
			b.Fatalf("recovered %d entries, want %d", last, next-1)
		}
		_ = l.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/segment")
}
