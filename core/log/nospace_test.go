package log

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// A full disk (ENOSPC) at each write point of the log and of the stores the
// Dispatcher derives from it. The writer must get an error that says so
// (vfs.IsNoSpace), never a panic and never a silently wrong state. Then
// either the same call is retried once space is back, as the raft loop
// retries an Append, or the process restarts on the same disk, or the
// machine loses power (CrashClone, both modes): every acknowledged entry
// must come back, only entries really written may come back, and the log
// (and queues, index) must keep working.

// writePoint is one kind of write a full disk can refuse.
type writePoint struct {
	name string
	op   vfs.Op
	file func(name string) bool
	// span bounds the random number of writes of this kind that succeed
	// before the disk fills: about how many happen in a few steps.
	span int
}

func suffix(s string) func(string) bool {
	return func(n string) bool { return strings.HasSuffix(n, s) }
}
func contains(s string) func(string) bool {
	return func(n string) bool { return strings.Contains(n, s) }
}
func exactly(s string) func(string) bool { return func(n string) bool { return n == s } }

// logWritePoints are the commit log's own writes (write.go).
var logWritePoints = []writePoint{
	{"record append", vfs.OpWrite, suffix(".seg"), 30},
	{"segment sync", vfs.OpSync, suffix(".seg"), 30},
	{"segment create", vfs.OpCreate, suffix(".seg"), 4},
	{"segment preallocate", vfs.OpPreallocate, suffix(".seg"), 4},
	{"idx create", vfs.OpCreate, suffix(".idx.tmp"), 4},
	{"idx write", vfs.OpWrite, suffix(".idx.tmp"), 4},
	{"idx sync", vfs.OpSync, suffix(".idx.tmp"), 4},
	{"idx rename", vfs.OpRename, suffix(".idx.tmp"), 4},
	{"commitlog dir sync", vfs.OpSyncDir, exactly("/data/commitlog"), 6},
}

// dispatchWritePoints are the writes of the consume queues (package cq),
// the key index (package index) and the dispatch checkpoint.
var dispatchWritePoints = []writePoint{
	{"cq file create", vfs.OpCreate, suffix(".cq"), 12},
	{"cq file preallocate", vfs.OpPreallocate, suffix(".cq"), 12},
	{"cq unit write", vfs.OpWrite, suffix(".cq"), 60},
	{"cq sync", vfs.OpSync, suffix(".cq"), 30},
	{"cq dir sync", vfs.OpSyncDir, contains("/consumequeue"), 20},
	{"index file create", vfs.OpCreate, contains("/index/"), 4},
	{"index file preallocate", vfs.OpPreallocate, contains("/index/"), 4},
	{"index entry write", vfs.OpWrite, contains("/index/"), 80},
	{"index rename", vfs.OpRename, contains("/index/"), 4},
	{"index sync", vfs.OpSync, contains("/index/"), 10},
	{"index dir sync", vfs.OpSyncDir, exactly("/data/index"), 2},
	{"checkpoint create", vfs.OpCreate, suffix("dispatch.ckpt.tmp"), 4},
	{"checkpoint write", vfs.OpWrite, suffix("dispatch.ckpt.tmp"), 4},
	{"checkpoint sync", vfs.OpSync, suffix("dispatch.ckpt.tmp"), 4},
	{"checkpoint rename", vfs.OpRename, suffix("dispatch.ckpt.tmp"), 4},
	{"checkpoint dir sync", vfs.OpSyncDir, exactly("/data"), 4},
}

// fullDisk is a MemFS injector: once armed, it lets `left` writes of one
// kind through and refuses every later one with ENOSPC until disarmed.
type fullDisk struct {
	mu    sync.Mutex
	wp    *writePoint
	left  int
	fired int // refusals since armed
}

func (d *fullDisk) inject(op vfs.Op, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wp == nil || op != d.wp.op || !d.wp.file(name) {
		return nil
	}
	if d.left > 0 {
		d.left--
		return nil
	}
	d.fired++
	return syscall.ENOSPC
}

func (d *fullDisk) arm(wp *writePoint, left int) {
	d.mu.Lock()
	d.wp, d.left, d.fired = wp, left, 0
	d.mu.Unlock()
}

// disarm frees space.
func (d *fullDisk) disarm() {
	d.mu.Lock()
	d.wp, d.fired = nil, 0
	d.mu.Unlock()
}

func (d *fullDisk) armed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.wp != nil
}

func (d *fullDisk) refused() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

// noPanic runs f and turns a panic into a test failure that says where.
func noPanic(t *testing.T, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	}()
	return f()
}

// checkNoSpaceErr requires err to be the disk's refusal, reported as such.
func checkNoSpaceErr(t *testing.T, what string, err error, disk *fullDisk) {
	t.Helper()
	if disk.refused() == 0 {
		t.Fatalf("%s failed without an injected ENOSPC: %v", what, err)
	}
	if !vfs.IsNoSpace(err) {
		t.Fatalf("%s failed on a full disk with an error that hides ENOSPC: %v", what, err)
	}
}

// checkNoTempFiles: a failed write must not leave a temporary file behind;
// on a full disk its blocks are needed.
func checkNoTempFiles(t *testing.T, fs *vfs.MemFS, what string) {
	t.Helper()
	for _, n := range fs.Names() {
		if strings.HasSuffix(n, ".tmp") {
			t.Fatalf("after a failed %s, %s is left behind", what, n)
		}
	}
}

// logDriver runs a log through appends, overwrites, syncs and rolls as the
// raft loop does, and handles each refused write.
type logDriver struct {
	t    *testing.T
	rng  *rand.Rand
	seed uint64
	fs   *vfs.MemFS
	disk *fullDisk
	cfg  Config
	l    *Log
	m    *logModel
	term uint64
	// failures counts the refused writes that were ridden out.
	failures int
}

func newLogDriver(t *testing.T, rng *rand.Rand, seed uint64) *logDriver {
	d := &logDriver{t: t, rng: rng, seed: seed, fs: newMemFS(t), disk: &fullDisk{}, m: newLogModel(), term: 1}
	d.fs.SetInjector(d.disk.inject)
	d.cfg = memConfig(d.fs)
	d.l = openLog(t, d.cfg)
	return d
}

// step appends a few entries after the log or over its unsynced tail (with
// a new term, as a new leader would), and syncs most of the time.
func (d *logDriver) step() {
	from := d.m.last + 1
	if d.m.last > d.m.durable && d.rng.IntN(4) == 0 {
		from = d.m.durable + 1 + uint64(d.rng.IntN(int(d.m.last-d.m.durable)))
		d.term++
	}
	d.append(mkEntries(from, uint64(1+d.rng.IntN(6)), d.term, randSize(d.rng)))
	if d.rng.IntN(3) > 0 {
		d.sync()
	}
}

// append appends ents, riding out a full disk.
func (d *logDriver) append(ents []raftpb.Entry) {
	t := d.t
	t.Helper()
	err := noPanic(t, "Append", func() error { return d.l.Append(ents) })
	if err == nil {
		d.okAfter("Append")
		d.m.appended(ents)
		d.checkLive()
		return
	}
	checkNoSpaceErr(t, "Append", err, d.disk)
	d.m.appendFailed(ents)
	if d.goOn("Append") {
		d.append(d.raftRetry(ents))
	}
}

// raftRetry is what the raft loop appends after a failed Append: the same
// unstable entries, perhaps with more proposed since, or with a suffix
// (which may start lower, above the durable entries) replaced by a new
// leader's entries.
func (d *logDriver) raftRetry(ents []raftpb.Entry) []raftpb.Entry {
	switch d.rng.IntN(4) {
	case 0:
		next := ents[len(ents)-1].Index + 1
		return append(slices.Clone(ents), mkEntries(next, uint64(1+d.rng.IntN(3)), ents[len(ents)-1].Term, randSize(d.rng))...)
	case 1:
		lo := ents[0].Index
		if lo > d.m.durable+1 && d.rng.IntN(2) == 0 {
			lo = d.m.durable + 1 + uint64(d.rng.IntN(int(lo-d.m.durable-1)))
		}
		from := lo + uint64(d.rng.IntN(int(ents[len(ents)-1].Index-lo+1)))
		d.term++
		var out []raftpb.Entry
		if from > ents[0].Index {
			out = slices.Clone(ents[:from-ents[0].Index])
		}
		return append(out, mkEntries(from, uint64(1+d.rng.IntN(4)), d.term, randSize(d.rng))...)
	default:
		return ents
	}
}

func (d *logDriver) sync() {
	t := d.t
	t.Helper()
	err := noPanic(t, "Sync", d.l.Sync)
	if err == nil {
		d.okAfter("Sync")
		d.m.synced()
		if got := d.l.DurableIndex(); got != d.m.durable {
			t.Fatalf("durable index %d after Sync, want %d", got, d.m.durable)
		}
		d.l.SetCommitted(d.m.durable)
		return
	}
	checkNoSpaceErr(t, "Sync", err, d.disk)
	if !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("a failed fsync must be ErrSyncFailed, got %v", err)
	}
	if d.goOn("Sync") {
		d.sync()
	}
}

// okAfter: a call that returned nil must not have hit the full disk.
func (d *logDriver) okAfter(what string) {
	if n := d.disk.refused(); n > 0 {
		d.t.Fatalf("%s returned nil although %d writes were refused", what, n)
	}
}

// goOn checks what a power cut now would leave and frees space. Then the
// caller retries (true), as the raft loop does, or, if the log refuses (a
// failed fsync) or by chance, the process restarts on the same disk.
func (d *logDriver) goOn(what string) (retry bool) {
	t := d.t
	t.Helper()
	d.failures++
	checkNoTempFiles(t, d.fs, what)
	d.checkCrashes()
	d.disk.disarm()
	if d.l.failed == nil && d.rng.IntN(3) > 0 {
		return true
	}
	_ = d.l.Close()
	ents, last := checkRecovered(t, d.cfg, d.m)
	d.m.restarted(ents, last)
	d.l = openLog(t, d.cfg)
	d.l.SetCommitted(d.m.durable)
	return false
}

func (d *logDriver) checkCrashes() {
	d.t.Helper()
	for _, mode := range []vfs.CrashMode{vfs.CrashDropUnsynced, vfs.CrashTear} {
		checkCrash(d.t, d.cfg, d.fs.CrashClone(mode, rand.New(rand.NewPCG(d.seed, d.rng.Uint64()))), d.m)
	}
}

// checkLive: the running log returns exactly what was appended.
func (d *logDriver) checkLive() {
	t := d.t
	t.Helper()
	last, _ := d.l.LastIndex()
	if last != d.m.last {
		t.Fatalf("last index %d, want %d", last, d.m.last)
	}
	first, _ := d.l.FirstIndex()
	if last < first {
		return
	}
	ents, err := d.l.Entries(first, last+1, ^uint64(0))
	if err != nil {
		t.Fatalf("Entries: %v", err)
	}
	for _, e := range ents {
		if err := sameEntry(e, d.m.latest[e.Index]); err != nil {
			t.Fatalf("live log: %v", err)
		}
	}
}

// TestNoSpaceAtEveryLogWritePoint fills the disk at every kind of write the
// commit log makes, at many positions, while a seeded workload appends
// (sometimes over the unsynced tail, with a new term), syncs and rolls.
func TestNoSpaceAtEveryLogWritePoint(t *testing.T) {
	seed := testSeed(t)
	for k := range logWritePoints {
		wp := &logWritePoints[k]
		t.Run(wp.name, func(t *testing.T) {
			failures := 0
			for run := range uint64(3) {
				rng := rand.New(rand.NewPCG(seed, uint64(k)<<8|run))
				d := newLogDriver(t, rng, seed)
				for range 80 {
					if !d.disk.armed() {
						// Fill the disk (again) a few writes from now.
						d.disk.arm(wp, rng.IntN(wp.span))
					}
					d.step()
				}
				failures += d.failures
				_ = d.l.Close()
			}
			if failures < 3 {
				t.Fatalf("only %d writes were refused: the workload misses this write point", failures)
			}
		})
	}
}

// TestNoSpaceInDispatch fills the disk at every kind of write of the
// consume queues, the key index and the dispatch checkpoint while committed
// entries are dispatched. A failed dispatch is fatal for the raft loop
// (apply), so the Dispatcher is reopened, after a restart or a power cut;
// a retry on the same Dispatcher must be refused or exact.
func TestNoSpaceInDispatch(t *testing.T) {
	seed := testSeed(t)
	for k := range dispatchWritePoints {
		wp := &dispatchWritePoints[k]
		t.Run(wp.name, func(t *testing.T) {
			failures := 0
			for run := range uint64(2) {
				rng := rand.New(rand.NewPCG(seed, uint64(k)<<8|run|1<<16))
				failures += runDispatchNoSpace(t, rng, seed, wp)
			}
			if failures < 2 {
				t.Fatalf("only %d writes were refused: the workload misses this write point", failures)
			}
		})
	}
}

func runDispatchNoSpace(t *testing.T, rng *rand.Rand, seed uint64, wp *writePoint) int {
	fs := newMemFS(t)
	disk := &fullDisk{}
	fs.SetInjector(disk.inject)
	cfg := bigMemConfig(fs)
	l := openLog(t, cfg)
	dcfg := dispatchConfig()
	d, err := OpenDispatcher(l, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	p := newProducer()
	disk.arm(wp, rng.IntN(wp.span))
	failures := 0
	for i := uint64(1); i <= 40; i++ {
		// The log's own writes are TestNoSpaceAtEveryLogWritePoint's.
		mustAppendSync(t, l, []raftpb.Entry{p.entry(rng, i, 1, 1+rng.IntN(6))})
		l.SetCommitted(i)
		op, call := "DispatchTo", func() error { return d.DispatchTo(i) }
		err := noPanic(t, op, call)
		if err == nil && rng.IntN(4) == 0 {
			op, call = "Checkpoint", func() error { return d.Checkpoint() }
			err = noPanic(t, op, call)
		}
		if err == nil {
			if n := disk.refused(); n > 0 {
				t.Fatalf("entry %d: %s returned nil although %d writes were refused", i, op, n)
			}
			continue
		}
		failures++
		checkNoSpaceErr(t, op, err, disk)
		checkNoTempFiles(t, fs, op)
		for _, mode := range []vfs.CrashMode{vfs.CrashDropUnsynced, vfs.CrashTear} {
			crashed := fs.CrashClone(mode, rand.New(rand.NewPCG(seed, rng.Uint64())))
			cl, cd := reopenDispatch(t, bigMemConfig(crashed), dcfg, p, i)
			_ = cd.Close()
			_ = cl.Close()
		}
		disk.disarm()
		// A retry on the same Dispatcher, which the raft loop never makes
		// (a failed apply is fatal): refused, or exact.
		if err := noPanic(t, "retried "+op, call); err == nil {
			checkQueues(t, d, p, i)
			checkIDs(t, d, p)
			if rng.IntN(2) == 0 {
				disk.arm(wp, rng.IntN(wp.span))
				continue
			}
		}
		// The node stops and starts again on the same disk.
		_ = d.Close()
		_ = l.Close()
		l, d = reopenDispatch(t, cfg, dcfg, p, i)
		disk.arm(wp, rng.IntN(wp.span))
	}
	_ = d.Close()
	return failures
}

// reopenDispatch opens the log in cfg and its dispatcher, with every entry
// up to committed committed, and checks the queues and the index.
func reopenDispatch(t *testing.T, cfg Config, dcfg DispatchConfig, p *producer, committed uint64) (*Log, *Dispatcher) {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("log recovery: %v", err)
	}
	l.SetCommitted(committed)
	d, err := OpenDispatcher(l, dcfg)
	if err != nil {
		_ = l.Close()
		t.Fatalf("dispatcher recovery at entry %d: %v", committed, err)
	}
	checkQueues(t, d, p, committed)
	checkIDs(t, d, p)
	return l, d
}

// checkIDs requires every message id to be in the key index exactly once.
func checkIDs(t *testing.T, d *Dispatcher, p *producer) {
	t.Helper()
	for id := range p.byID {
		offs, err := d.idx.Lookup(append([]byte{'i'}, id[:]...), 0, 0, 16, nil)
		if err != nil {
			t.Fatalf("index lookup: %v", err)
		}
		seen := map[uint64]bool{}
		for _, o := range offs {
			if seen[o] {
				t.Fatalf("message %x is in the index twice at offset %d", id, o)
			}
			seen[o] = true
		}
		m, err := d.QueryByID(id)
		if err != nil {
			t.Fatalf("message %x lost from the index: %v", id, err)
		}
		if !bytes.Equal(m.Body(), p.byID[id].body) {
			t.Fatalf("message %x: wrong body", id)
		}
		m.Release()
	}
}

// spaceFS is a MemFS that reports a settable amount of free space.
type spaceFS struct {
	*vfs.MemFS
	free uint64
}

func (s *spaceFS) FreeBytes(string) (uint64, error) { return s.free, nil }

// TestNoPreallocationWithoutRoom: a segment is not even created when the
// file system says it cannot hold it; the roll is refused with ENOSPC,
// nothing is left behind, and the same append succeeds once there is room.
func TestNoPreallocationWithoutRoom(t *testing.T) {
	fs := &spaceFS{MemFS: newMemFS(t), free: 1 << 40}
	cfg := memConfig(fs)
	l := openLog(t, cfg)
	before := len(fs.Names())
	fs.free = uint64(cfg.SegmentSizeBytes) - 1
	size := func(uint64) int { return int(cfg.SegmentSizeBytes) / 4 }
	ents := mkEntries(1, 8, 1, size) // two segments' worth: a roll is needed
	err := l.Append(ents)
	if !vfs.IsNoSpace(err) {
		t.Fatalf("append that needs a new segment without room: %v, want ENOSPC", err)
	}
	for _, n := range fs.Names() {
		if strings.HasSuffix(n, ".seg") && !strings.HasSuffix(n, "00000000000000000000.seg") {
			t.Fatalf("a segment file %s was created without room for it", n)
		}
	}
	if got := len(fs.Names()); got > before+1 { // the sealed segment's .idx may exist
		t.Fatalf("files after the refused roll: %v", fs.Names())
	}
	fs.free = 1 << 40
	if err := l.Append(ents); err != nil {
		t.Fatalf("the same append with room: %v", err)
	}
	if last, _ := l.LastIndex(); last != 8 {
		t.Fatalf("last index %d after the retry, want 8", last)
	}
}
