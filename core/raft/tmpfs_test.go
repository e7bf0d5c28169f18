//go:build linux

package raft

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/internal/testdisk"
)

// TestFullDiskOnTmpfs runs a node on a real, small file system (a tmpfs)
// that fills up, so the OS, not MemFS, refuses the writes of a segment
// roll. The node must wait, and go on when the file system grows (mount -o
// remount,size=...). Needs root; CI (CI=true) runs as root and fails
// instead of skipping.
func TestFullDiskOnTmpfs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testdisk.Mount(t, dir, "512k")
	var logs syncBuffer
	o := clusterOpts{
		logCfg: clog.Config{SegmentSizeBytes: 8 << 10},
		logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ln := startNode(t, newMemNet(), 1, dir, o)
	waitLeader(t, []*liveNode{ln})
	out := make(chan outcome, 64)
	var acked []outcome
	for range 5 {
		id, idx := proposeOK(t, ln.n)
		acked = append(acked, outcome{id: id, index: idx})
	}
	fillUp(t, filepath.Join(dir, "filler"))
	more, pending := proposeUntilFull(t, ln.n, ln.n, out)
	acked = append(acked, more...)
	for range 5 {
		proposeAsync(ln.n, out)
		pending++
	}
	checkWaiting(t, ln.n, func() bool { return strings.Contains(logs.String(), "disk full") })
	select {
	case o := <-out:
		t.Fatalf("proposal %d returned (%v) while the disk was full", o.id, o.err)
	default:
	}
	run(t, "mount", "-o", "remount,size=4m", dir)
	for range pending {
		select {
		case o := <-out:
			if o.err != nil {
				t.Fatalf("stalled proposal %d after the remount: %v", o.id, o.err)
			}
			acked = append(acked, o)
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled proposals did not commit after the remount; log:\n%s", logs.String())
		}
	}
	checkAppliedOnce(t, ln.sm, acked)
	// Which write the full disk refused first (bbolt's only if it needed a
	// block it never had: TestFullDiskOnTmpfsMetaSave makes sure of that).
	t.Logf("storage errors while full:\n%s", logs.String())
}

// TestFullDiskOnTmpfsMetaSave: the HardState save (bbolt, meta.db, which
// MemFS cannot reach) of the Ready in which a restarted node becomes
// leader hits ENOSPC. That Ready is raft's one notice of the new role; the
// node must still take it, wait, and lead once space is back.
func TestFullDiskOnTmpfsMetaSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testdisk.Mount(t, dir, "512k")
	var logs syncBuffer
	o := clusterOpts{
		logCfg: clog.Config{SegmentSizeBytes: 8 << 10},
		logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	mn := newMemNet()
	ln := startNode(t, mn, 1, dir, o)
	waitLeader(t, []*liveNode{ln})
	var acked []outcome
	for range 5 {
		id, idx := proposeOK(t, ln.n)
		acked = append(acked, outcome{id: id, index: idx})
	}
	if err := ln.n.Stop(); err != nil {
		t.Fatal(err)
	}
	// Reopen without running, and make bbolt's next write need a block
	// the file system does not have. The state machine keeps what it
	// applied: replaying the bootstrap conf change would write meta.db in
	// the apply step, where a failure is fatal by design.
	sm := &durableSM{applied: ln.n.Status().Applied}
	sm.testSM = ln.sm.testSM
	n, err := Open(Config{ID: 1, Dir: dir, Log: o.logCfg, TickInterval: 20 * time.Millisecond,
		StateMachine: sm, Transport: &memTransport{net: mn, from: 1}, ProposalID: testProposalID, Logger: o.logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	unbackFreePages(t, n.meta.db)
	fillUp(t, filepath.Join(dir, "filler"))
	mn.set(1, n)
	go n.Run()
	waitFor(t, 10*time.Second, "the new leader's term to fail to save", func() bool {
		return strings.Contains(logs.String(), "save meta.db") && n.Status().StorageFull
	})
	out := make(chan outcome, 8)
	pending := 0
	for range 3 {
		proposeAsync(n, out)
		pending++
	}
	checkWaiting(t, n, func() bool { return n.Status().PendingProposals == pending })
	select {
	case o := <-out:
		t.Fatalf("proposal %d returned (%v) while the disk was full", o.id, o.err)
	default:
	}
	run(t, "mount", "-o", "remount,size=4m", dir)
	for range pending {
		select {
		case o := <-out:
			if o.err != nil {
				t.Fatalf("proposal %d after the remount: %v", o.id, o.err)
			}
			acked = append(acked, o)
		case <-time.After(10 * time.Second):
			t.Fatalf("proposals did not commit after the remount (status %+v); log:\n%s", n.Status(), logs.String())
		}
	}
	checkAppliedOnce(t, &sm.lockedSM, acked)
}

// durableSM is a lockedSM that survived the restart with what it applied.
type durableSM struct {
	lockedSM
	applied uint64
}

func (s *durableSM) AppliedIndex() uint64 { return s.applied }

// unbackFreePages punches holes in meta.db where bbolt will write next: its
// free pages and the space past its last page. On a full file system that
// write then fails with ENOSPC, which it otherwise rarely does: bbolt
// mostly rewrites blocks it already has.
func unbackFreePages(t *testing.T, db *bolt.DB) {
	t.Helper()
	size := int64(db.Info().PageSize)
	var holes []int64
	err := db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ { // pages 0 and 1 are the meta pages
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p == nil {
				holes = append(holes, int64(id)*size) // past the last page: up to the end
				return nil
			}
			if p.Type == "free" {
				holes = append(holes, int64(id)*size)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(db.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for k, off := range holes {
		n := size
		if k == len(holes)-1 {
			n = fi.Size() - off
		}
		if n <= 0 {
			continue
		}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
			t.Fatalf("punch a hole in meta.db: %v", err)
		}
	}
}

// fillUp writes name until the file system is full.
func fillUp(t *testing.T, name string) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

// syncBuffer collects log lines from the loop goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
