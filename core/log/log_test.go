package log

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

func fixedSize(n int) func(uint64) int { return func(uint64) int { return n } }

// segmentFiles returns the segment names, oldest first.
func segmentFiles(t *testing.T, fs *vfs.MemFS) []string {
	var out []string
	for _, n := range fs.Names() {
		if strings.HasSuffix(n, ".seg") {
			out = append(out, n)
		}
	}
	return out
}

func TestRollIsDeterministicAcrossTruncation(t *testing.T) {
	// Replica A writes entries 1..40 straight. Replica B first writes a
	// different, larger tail from index 20 (as a deposed leader would),
	// then gets A's entries from 20 on. Both must end with the same bytes
	// at the same offsets: the physical offset is a cluster-wide name.
	sizeA := func(i uint64) int { return int(i*37) % 700 }
	a := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, a, mkEntries(1, 40, 1, sizeA))

	b := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, b, mkEntries(1, 19, 1, sizeA))
	mustAppendSync(t, b, mkEntries(20, 15, 1, fixedSize(1000))) // rolls into later segments
	correct, _ := a.Entries(20, 41, ^uint64(0))
	mustAppendSync(t, b, correct)

	a.SetCommitted(40)
	b.SetCommitted(40)
	for i := uint64(1); i <= 40; i++ {
		var offA, offB uint64
		if err := a.Scan(i, i+1, func(r Record) error { offA = r.Offset; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := b.Scan(i, i+1, func(r Record) error { offB = r.Offset; return nil }); err != nil {
			t.Fatal(err)
		}
		if offA != offB {
			t.Fatalf("entry %d at offset %d on A but %d on B", i, offA, offB)
		}
	}
	if a.EndOffset() != b.EndOffset() {
		t.Fatalf("end offsets differ: %d vs %d", a.EndOffset(), b.EndOffset())
	}
}

func TestReadAtIsZeroCopyAndBounded(t *testing.T) {
	l := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, l, mkEntries(1, 20, 1, fixedSize(300)))
	var recs []Record
	l.SetCommitted(10)
	err := l.Scan(1, 11, func(r Record) error {
		r.Data = append([]byte(nil), r.Data...)
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		v, err := l.ReadAt(r.Offset, len(r.Data))
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", r.Offset, err)
		}
		if !bytes.Equal(v.Bytes, payload(r.Index, 1, 300)) {
			t.Fatalf("entry %d: wrong bytes", r.Index)
		}
		v.Release()
	}
	// Entry 11 is durable but not committed: not readable yet.
	if err := l.Scan(11, 12, func(Record) error { return nil }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Scan of an uncommitted entry = %v, want ErrUnavailable", err)
	}
	if _, err := l.ReadAt(recs[9].Offset+uint64(len(recs[9].Data)), 8); !errors.Is(err, ErrNotReadable) {
		t.Fatalf("ReadAt past the committed end = %v, want ErrNotReadable", err)
	}
	if _, err := l.ReadAt(0, 8); !errors.Is(err, ErrNotReadable) {
		t.Fatalf("ReadAt of the header = %v, want ErrNotReadable", err)
	}
}

func TestEntriesCopiesUncommittedData(t *testing.T) {
	l := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, l, mkEntries(1, 4, 1, fixedSize(64)))
	l.SetCommitted(2)
	ents, err := l.Entries(1, 5, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite 3..4 (allowed: above the commit index). Copies of the old
	// 3..4 must keep their old bytes.
	mustAppendSync(t, l, mkEntries(3, 2, 2, fixedSize(64)))
	for _, e := range ents[2:] {
		if !bytes.Equal(e.Data, payload(e.Index, 1, 64)) {
			t.Fatalf("uncommitted entry %d changed under the reader", e.Index)
		}
	}
	if err := l.Append(mkEntries(2, 1, 3, fixedSize(8))); err == nil {
		t.Fatal("truncating a committed entry must fail")
	}
}

func TestRetentionBySizeAndAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	cfg := memConfig(newMemFS(t))
	cfg.Now = func() time.Time { return now }
	cfg.RetentionBytes = 3 * testSegBytes
	cfg.RetentionAge = time.Hour
	l := openLog(t, cfg)
	for i := uint64(1); i <= 60; i++ { // ~4 records of 1 KiB per segment
		mustAppendSync(t, l, mkEntries(i, 1, 1, fixedSize(900)))
		now = now.Add(time.Minute)
	}
	l.SetCommitted(60)
	nSegs := len(l.mu.segs)
	if nSegs < 10 {
		t.Fatalf("only %d segments; the test needs more", nSegs)
	}
	// The limit keeps what the owner still needs.
	first, err := l.ApplyRetention(5)
	if err != nil {
		t.Fatal(err)
	}
	if first > 6 {
		t.Fatalf("retention went past the limit: first index %d", first)
	}
	first, err = l.ApplyRetention(60)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(l.mu.segs); got != 3 {
		t.Fatalf("size retention kept %d segments, want 3", got)
	}
	if term, err := l.Term(first - 1); err != nil || term != 1 {
		t.Fatalf("Term(first-1) = %d, %v; the compaction term must stay known", term, err)
	}
	if _, err := l.Entries(first-1, first, 1<<20); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Entries below first = %v, want ErrCompacted", err)
	}
	// Age: an hour later everything sealed is too old; the tail stays.
	now = now.Add(2 * time.Hour)
	if _, err := l.ApplyRetention(60); err != nil {
		t.Fatal(err)
	}
	if got := len(l.mu.segs); got != 1 {
		t.Fatalf("age retention kept %d segments, want only the tail", got)
	}
	// Reopen: the first remaining segment defines the start.
	_ = l.Close()
	l2 := openLog(t, cfg)
	f2, _ := l2.FirstIndex()
	last, _ := l2.LastIndex()
	if last != 60 || f2 > 60 {
		t.Fatalf("after reopen first/last = %d/%d", f2, last)
	}
}

func TestResetContinuesAtTheLeadersOffset(t *testing.T) {
	leader := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, leader, mkEntries(1, 30, 1, fixedSize(500)))
	leader.SetCommitted(30)
	var next uint64
	if err := leader.Scan(21, 22, func(r Record) error { next = r.Offset - RecordHeaderBytes; return nil }); err != nil {
		t.Fatal(err)
	}
	term20, _ := leader.Term(20)

	f := openLog(t, memConfig(newMemFS(t)))
	mustAppendSync(t, f, mkEntries(1, 3, 1, fixedSize(10)))
	if err := f.Reset(20, term20, next); err != nil {
		t.Fatal(err)
	}
	rest, _ := leader.Entries(21, 31, ^uint64(0))
	mustAppendSync(t, f, rest)
	f.SetCommitted(30)
	for i := uint64(21); i <= 30; i++ {
		var a, b uint64
		_ = leader.Scan(i, i+1, func(r Record) error { a = r.Offset; return nil })
		if err := f.Scan(i, i+1, func(r Record) error { b = r.Offset; return nil }); err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Fatalf("entry %d: leader offset %d, follower %d", i, a, b)
		}
	}
	if fi, _ := f.FirstIndex(); fi != 21 {
		t.Fatalf("first index after reset = %d", fi)
	}
	if tm, _ := f.Term(20); tm != term20 {
		t.Fatalf("Term(20) after reset = %d", tm)
	}
}

func TestResetNearSegmentEndSealsAnEmptySegment(t *testing.T) {
	cfg := memConfig(newMemFS(t))
	l := openLog(t, cfg)
	// Continue after index 50 at 16 bytes before the end of segment 0:
	// no record fits there, so the first one rolls into segment 1.
	if err := l.Reset(50, 3, testSegBytes-16); err != nil {
		t.Fatal(err)
	}
	mustAppendSync(t, l, mkEntries(51, 5, 3, fixedSize(100)))
	_ = l.Close()
	l = openLog(t, cfg)
	if first, _ := l.FirstIndex(); first != 51 {
		t.Fatalf("first index %d, want 51", first)
	}
	if last, _ := l.LastIndex(); last != 55 {
		t.Fatalf("last index %d, want 55", last)
	}
	if tm, _ := l.Term(50); tm != 3 {
		t.Fatalf("Term(50) = %d, want 3", tm)
	}
	// Retention may remove the empty sealed segment.
	l.SetCommitted(55)
	cfg.RetentionBytes = 1
	l.cfg.RetentionBytes = 1
	if first, err := l.ApplyRetention(55); err != nil || first != 51 {
		t.Fatalf("ApplyRetention = %d, %v; want 51", first, err)
	}
}

func TestBadInput(t *testing.T) {
	setup := func(t *testing.T) (*vfs.MemFS, Config) {
		fs := newMemFS(t)
		cfg := memConfig(fs)
		l := openLog(t, cfg)
		mustAppendSync(t, l, mkEntries(1, 20, 1, fixedSize(700)))
		_ = l.Close()
		return fs, cfg
	}
	poke := func(t *testing.T, fs *vfs.MemFS, name string, off int64, b []byte) {
		f, err := fs.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	t.Run("flipped bit in a sealed segment's middle record is ErrCorrupt on read", func(t *testing.T) {
		fs, cfg := setup(t)
		// 700-byte entries take 736 bytes each; the second record of the
		// first segment is neither first nor last, so only a read sees it.
		poke(t, fs, segmentFiles(t, fs)[0], SegmentHeaderBytes+736+RecordHeaderBytes+5, []byte{0xFF})
		l := openLog(t, cfg)
		if _, err := l.Entries(1, 2, 1<<20); err != nil {
			t.Fatalf("entry 1 is intact: %v", err)
		}
		if _, err := l.Entries(2, 3, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Entries = %v, want ErrCorrupt", err)
		}
	})
	t.Run("flipped bit in a sealed segment's first record is ErrCorrupt at open", func(t *testing.T) {
		fs, cfg := setup(t)
		poke(t, fs, segmentFiles(t, fs)[0], SegmentHeaderBytes+RecordHeaderBytes+5, []byte{0xFF})
		if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("missing idx is rebuilt", func(t *testing.T) {
		fs, cfg := setup(t)
		name := strings.TrimSuffix(segmentFiles(t, fs)[0], ".seg") + ".idx"
		if err := fs.Remove(name); err != nil {
			t.Fatal(err)
		}
		l := openLog(t, cfg)
		if last, _ := l.LastIndex(); last != 20 {
			t.Fatalf("last = %d", last)
		}
		if _, err := fs.Open(name); err != nil {
			t.Fatalf("idx not rewritten: %v", err)
		}
	})
	t.Run("damaged idx with damaged segment is ErrCorrupt", func(t *testing.T) {
		fs, cfg := setup(t)
		seg := segmentFiles(t, fs)[0]
		poke(t, fs, strings.TrimSuffix(seg, ".seg")+".idx", 40, []byte{1, 2, 3})
		poke(t, fs, seg, SegmentHeaderBytes+RecordHeaderBytes+5, []byte{0xFF})
		if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("wrong magic in a sealed segment header", func(t *testing.T) {
		fs, cfg := setup(t)
		poke(t, fs, segmentFiles(t, fs)[0], 0, []byte("XXXX"))
		if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("truncated sealed segment", func(t *testing.T) {
		fs, cfg := setup(t)
		f, _ := fs.Open(segmentFiles(t, fs)[0])
		_ = f.Truncate(1000)
		_ = f.Close()
		if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("missing middle segment", func(t *testing.T) {
		fs, cfg := setup(t)
		segs := segmentFiles(t, fs)
		if len(segs) < 3 {
			t.Fatalf("need 3 segments, have %d", len(segs))
		}
		_ = fs.Remove(segs[1])
		if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	})
	t.Run("record longer than the file in the tail is cut", func(t *testing.T) {
		fs, cfg := setup(t)
		segs := segmentFiles(t, fs)
		l := openLog(t, cfg)
		before, _ := l.LastIndex()
		tailFirst := l.tail().hdr.first
		_ = l.Close()
		// Claim the tail's first record is 1 MiB long.
		poke(t, fs, segs[len(segs)-1], SegmentHeaderBytes+8, []byte{0, 0, 0x10, 0})
		l = openLog(t, cfg)
		if last, _ := l.LastIndex(); last != tailFirst-1 || last >= before {
			t.Fatalf("last after cutting = %d, want %d", last, tailFirst-1)
		}
	})
	t.Run("segment size cannot change", func(t *testing.T) {
		_, cfg := setup(t)
		cfg.SegmentSizeBytes *= 2
		if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "cannot change") {
			t.Fatalf("Open = %v, want a size-change error", err)
		}
	})
	t.Run("entry over MaxEntryBytes is refused", func(t *testing.T) {
		_, cfg := setup(t)
		l := openLog(t, cfg)
		if err := l.Append(mkEntries(21, 1, 1, fixedSize(cfg.MaxEntryBytes+1))); err == nil {
			t.Fatal("Append of an oversize entry succeeded")
		}
	})
	t.Run("garbage file name", func(t *testing.T) {
		fs, cfg := setup(t)
		f, _ := fs.Create("/data/commitlog/12.seg")
		_ = f.Close()
		if _, err := Open(cfg); err == nil {
			t.Fatal("Open accepted a badly named segment")
		}
	})
}

func TestOnRealDisk(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), SegmentSizeBytes: 64 << 10}
	l := openLog(t, cfg)
	rng := rand.New(rand.NewPCG(testSeed(t), 0))
	var want []raftpb.Entry
	for i := uint64(1); i <= 300; i += 10 {
		ents := mkEntries(i, 10, 1, func(uint64) int { return rng.IntN(4000) })
		mustAppendSync(t, l, ents)
		want = append(want, ents...)
	}
	_ = l.Close()
	l = openLog(t, cfg)
	got, err := l.Entries(1, 301, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for k := range got {
		if err := sameEntry(got[k], want[k]); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzRecoverTail writes arbitrary bytes over the tail segment after its
// valid records and reopens: recovery must not panic and must keep every
// record before the damage.
func FuzzRecoverTail(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte("CX\x01\x00\x00\x00\x00\x00\xff\xff\xff\x7f"), uint16(0))
	var rec [RecordHeaderBytes + 8]byte
	putRecord(rec[:], recHeader{index: 6, term: 1}, []byte("abcdefgh"))
	f.Add(rec[:], uint16(3))
	f.Fuzz(func(t *testing.T, garbage []byte, at uint16) {
		fs := newMemFS(t)
		cfg := memConfig(fs)
		l, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Append(mkEntries(1, 5, 1, fixedSize(100))); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		end := int64(l.EndOffset())
		_ = l.Close()
		segs := segmentFiles(t, fs)
		fh, _ := fs.Open(segs[len(segs)-1])
		off := end + int64(at)%(testSegBytes-end)
		if int64(len(garbage)) > testSegBytes-off {
			garbage = garbage[:testSegBytes-off]
		}
		if _, err := fh.WriteAt(garbage, off); err != nil {
			t.Fatal(err)
		}
		_ = fh.Close()
		l2, err := Open(cfg)
		if err != nil {
			t.Fatalf("recovery failed on tail garbage: %v", err)
		}
		defer func() { _ = l2.Close() }()
		last, _ := l2.LastIndex()
		if last < 5 {
			t.Fatalf("lost synced records: last %d", last)
		}
		ents, err := l2.Entries(1, last+1, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents[:5] {
			if err := sameEntry(e, mkEntries(e.Index, 1, 1, fixedSize(100))[0]); err != nil {
				t.Fatal(err)
			}
		}
		if last > 5 {
			// The garbage happened to form valid records continuing the
			// log; they are returned as written, never altered.
			if ents[5].Index != 6 {
				t.Fatal(fmt.Sprint("unexpected index ", ents[5].Index))
			}
		}
	})
}
