package cq

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// unitAtOffset is the one value queue q ever holds at offset k, so that
// readers can check every unit they see, whatever the writer did meanwhile.
func unitAtOffset(q uint32, k uint64) Unit {
	return Unit{PhysOffset: 1 + (k*2+uint64(q))*10, Size: uint32(k%1000 + 1), TagHash: int64(k) ^ int64(q)}
}

// One writer puts, syncs, truncates and deletes while readers Get and
// Range; run under -race. Readers check that every unit is the right one
// and that errors are only the boundary errors.
func TestConcurrentReadersOneWriter(t *testing.T) {
	s := mustOpen(t, memConfig(vfs.NewMem()))
	const total = 3000
	var done atomic.Bool
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			readLoop(t, s, &done, uint64(r))
		}()
	}
	defer func() { // also when writeLoop fails: readers must stop before Close
		done.Store(true)
		wg.Wait()
	}()
	writeLoop(t, s, total)
}

func writeLoop(t *testing.T, s *Store, total uint64) {
	rng := rand.New(rand.NewPCG(1, 2))
	var next [2]uint64
	for next[0] < total {
		q := uint32(rng.IntN(2))
		if err := s.Put("t", q, next[q], unitAtOffset(q, next[q])); err != nil {
			t.Errorf("Put: %v", err)
			return
		}
		next[q]++
		switch rng.IntN(200) {
		case 0:
			mustOk(t, s.Sync())
		case 1: // drop the last few units of both queues, then put them again
			cut := unitAtOffset(0, next[0]-min(next[0], 5)).PhysOffset
			mustOk(t, s.TruncateAbove(cut))
			for q := range uint32(2) {
				_, next[q], _ = s.Range("t", q)
			}
		case 2:
			mustOk(t, s.DeleteBefore(unitAtOffset(0, next[0]/2).PhysOffset))
		}
	}
}

func readLoop(t *testing.T, s *Store, done *atomic.Bool, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	var buf []Unit
	for !done.Load() {
		q := uint32(rng.IntN(2))
		lo, next, ok := s.Range("t", q)
		if !ok {
			continue
		}
		off := lo + rng.Uint64N(next-lo+1)
		var err error
		buf, err = s.Get("t", q, off, 1+rng.IntN(10), buf[:0])
		if err != nil && !errors.Is(err, ErrOffsetTooSmall) && !errors.Is(err, ErrOffsetTooLarge) {
			t.Errorf("Get: %v", err)
			return
		}
		for i, u := range buf {
			if want := unitAtOffset(q, off+uint64(i)); u != want {
				t.Errorf("Get %d/%d = %v, want %v", q, off+uint64(i), u, want)
				return
			}
		}
	}
}
