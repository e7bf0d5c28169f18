package cq

import (
	"errors"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Arbitrary bytes as a queue file, padded or cut to the right size or not:
// Open either fails with an error or gives a store on which reads, recovery
// and writes never panic.
func FuzzOpenCorruptQueueFile(f *testing.F) {
	good := make([]byte, testUPF*UnitBytes)
	for k := range testUPF - 1 {
		b := Unit{PhysOffset: uint64(100 * (k + 1)), Size: 10, TagHash: int64(k)}.encode()
		copy(good[k*UnitBytes:], b[:])
	}
	f.Add(good, true, uint64(0))
	f.Add(good[:33], false, uint64(4))
	f.Add([]byte{}, false, uint64(8))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true, uint64(12))
	f.Fuzz(func(t *testing.T, data []byte, fit bool, first uint64) {
		// Longer inputs add nothing (any wrong size is refused alike) and
		// make the fuzzer's quadratic minimization crawl.
		data = data[:min(len(data), 2*testUPF*UnitBytes+1)]
		if fit {
			data = append(data, make([]byte, max(0, testUPF*UnitBytes-len(data)))...)[:testUPF*UnitBytes]
		}
		fs := vfs.NewMem()
		writeFile(t, fs, testDir+"/t/0/"+fileName(first), data)
		s, err := Open(memConfig(fs))
		if err != nil {
			return
		}
		defer s.Close()
		exercise(t, s)
	})
}

func exercise(t *testing.T, s *Store) {
	lo, next, ok := s.Range("t", 0)
	if !ok {
		return
	}
	if lo > next {
		t.Fatalf("min %d > next %d", lo, next)
	}
	for off := lo; off <= next; off++ {
		units, err := s.Get("t", 0, off, testUPF, nil)
		if err != nil {
			t.Fatalf("Get %d in [%d, %d]: %v", off, lo, next, err)
		}
		for _, u := range units {
			if u.PhysOffset == 0 {
				t.Fatalf("Get returned a hole at %d", off)
			}
		}
	}
	_ = s.DeleteBefore(150)
	_ = s.TruncateAbove(250)
	_, next, _ = s.Range("t", 0)
	err := s.Put("t", 0, next, Unit{PhysOffset: 1 << 40})
	if next >= s.maxOffset && errors.Is(err, ErrOffsetTooLarge) {
		err = nil // a queue at the last possible offset is full
	}
	if err != nil {
		t.Fatalf("Put at next %d after recovery: %v", next, err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}
