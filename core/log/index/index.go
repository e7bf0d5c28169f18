package index

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Errors. Every error is wrapped with context; test with errors.Is.
var (
	// ErrCorrupt: a file is damaged or is not an index file (the message
	// names it). Never returned for what a crash can leave behind.
	ErrCorrupt = errors.New("corrupt index")
	// ErrClosed: the Index was closed.
	ErrClosed = errors.New("index: closed")
	// ErrOutOfOrder: Add got an offset below the last one added.
	ErrOutOfOrder = errors.New("index: physical offset below the last one added")
	// ErrTooManyKeys: one offset would fill a whole file (a message with more
	// keys than EntriesPerFile), which the naming by first offset cannot hold.
	ErrTooManyKeys = errors.New("index: too many keys at one physical offset")
	// ErrInvalidConfig: Config.Validate rejected the configuration.
	ErrInvalidConfig = errors.New("index: invalid config")
)

// Defaults give 36 MiB files: 4 MiB of slots and 32 MiB of entries, one slot
// per entry so chains stay short.
const (
	DefaultSlotCount      = 1 << 20
	DefaultEntriesPerFile = 1 << 20
)

// Config configures an Index.
type Config struct {
	FS  vfs.FS // all file I/O goes through it
	Dir string // directory of the .kix files; created if missing

	SlotCount      int          // slots per new file; default DefaultSlotCount
	EntriesPerFile int          // entries per new file; default DefaultEntriesPerFile
	Logger         *slog.Logger // default discards
}

// Validate fills in defaults for zero values and checks the rest.
func (c *Config) Validate() error {
	if c.FS == nil {
		return fmt.Errorf("%w: FS is nil", ErrInvalidConfig)
	}
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is empty", ErrInvalidConfig)
	}
	if c.SlotCount == 0 {
		c.SlotCount = DefaultSlotCount
	}
	if c.EntriesPerFile == 0 {
		c.EntriesPerFile = DefaultEntriesPerFile
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := c.geometry().validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func (c *Config) geometry() geometry {
	return geometry{slots: int64(c.SlotCount), entries: int64(c.EntriesPerFile)}
}

// Index is a persistent hash index from keys to commit-log offsets. See the
// package documentation for the format, recovery and concurrency rules.
type Index struct {
	cfg Config

	// syncMu serializes the methods that wait for the disk or release files
	// (Sync, TruncateAbove, DeleteBefore, Close), so a file is never closed
	// under an fdatasync in flight. Lock order: syncMu, wmu, mu.
	syncMu sync.Mutex
	// wmu serializes writers and guards the fields below it.
	wmu      sync.Mutex
	buf      [entryBytes]byte // scratch for encoding an entry
	slotBuf  [slotBytes]byte  // scratch for a slot (a local would escape)
	dirDirty bool             // a name changed since the last SyncDir
	failed   error            // first write failure; the Index is then read-only

	// mu guards what readers see: the file list and each file's stats,
	// slots and live entries. Readers hold it shared while they read.
	mu struct {
		sync.RWMutex
		segs   []*segment // ascending first offset; the last is the tail
		closed bool
	}
}

// Open opens the index in cfg.Dir, creating the directory if needed, and
// recovers from a crash (see "Recovery" in the package documentation; the
// owner must then TruncateAbove and replay).
func Open(cfg Config) (*Index, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.FS.MkdirAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("index: create %s: %w", cfg.Dir, err)
	}
	x := &Index{cfg: cfg}
	segs, err := x.load()
	if err != nil {
		return nil, err
	}
	x.mu.segs = segs
	return x, nil
}

// Add indexes key at physOffset, stored at storeUnixMs. Offsets must not
// decrease from one Add to the next; several keys may share an offset.
// Nothing is durable before Sync.
func (x *Index) Add(key []byte, physOffset uint64, storeUnixMs int64) error {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if err := x.writable(); err != nil {
		return err
	}
	t := x.tail()
	if t != nil && physOffset < t.st.lastPhys {
		return fmt.Errorf("%w: %d after %d", ErrOutOfOrder, physOffset, t.st.lastPhys)
	}
	if t == nil || t.st.used == t.geo.entries {
		var err error
		if t, err = x.roll(t, physOffset); err != nil {
			return err
		}
	}
	return x.append(t, entry{hash: hashKey(key), phys: physOffset, storeMs: storeUnixMs})
}

// append writes e as the tail's next entry and links it into its slot.
func (x *Index) append(t *segment, e entry) error {
	k := t.st.used
	slot := t.geo.slotOf(e.hash)
	e.prev = t.slotAt(slot)
	e.put(x.buf[:])
	// Readers never look at entry k before the count says it is live, so it
	// is written without the lock.
	if _, err := t.f.WriteAt(x.buf[:], t.geo.entryOff(k)); err != nil {
		return x.fail(fmt.Errorf("index: write entry %d of %s: %w", k, t.path, err))
	}
	t.dirty = true
	le.PutUint32(x.slotBuf[:], uint32(k+1))
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := t.f.WriteAt(x.slotBuf[:], t.geo.slotOff(slot)); err != nil {
		return x.fail(fmt.Errorf("index: write slot %d of %s: %w", slot, t.path, err))
	}
	t.st.add(e)
	return nil
}

// Lookup appends to dst the offsets of at most max entries whose key hash
// equals key's and whose store time is in [beginUnixMs, endUnixMs] ((0, 0)
// means any time), newest first. They are candidates: a different key with
// the same 64-bit hash gives a false positive, so the caller must check the
// message's real key; a stored key is never missed. On ErrCorrupt, dst holds
// the candidates found before the damage.
func (x *Index) Lookup(key []byte, beginUnixMs, endUnixMs int64, max int, dst []uint64) ([]uint64, error) {
	if max <= 0 {
		return dst, nil
	}
	h, w := hashKey(key), newWindow(beginUnixMs, endUnixMs)
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.mu.closed {
		return dst, ErrClosed
	}
	for i := len(x.mu.segs) - 1; i >= 0 && max > 0; i-- {
		s := x.mu.segs[i]
		if !s.st.meets(w) {
			continue
		}
		n := len(dst)
		var err error
		if dst, err = s.lookup(h, w, max, dst); err != nil {
			return dst, err
		}
		max -= len(dst) - n
	}
	return dst, nil
}

// LastOffset returns the highest offset indexed, and false when the index is
// empty. After a crash it is where a replay can safely resume (see the
// package documentation).
func (x *Index) LastOffset() (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := len(x.mu.segs) - 1; i >= 0; i-- {
		if st := x.mu.segs[i].st; st.used > 0 {
			return st.lastPhys, true
		}
	}
	return 0, false
}

// Close syncs, then releases every file. The Index is unusable afterwards.
func (x *Index) Close() error {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	files, dir, err := x.dirtyFiles()
	if errors.Is(err, ErrClosed) {
		return err
	}
	if err == nil {
		err = x.flush(files, dir)
	}
	x.wmu.Lock()
	defer x.wmu.Unlock()
	x.mu.Lock()
	segs := x.mu.segs
	x.mu.segs, x.mu.closed = nil, true
	x.mu.Unlock()
	errs := []error{err}
	for _, s := range segs {
		errs = append(errs, s.release())
	}
	return errors.Join(errs...)
}

// tail returns the last file, or nil; writer-only (segs changes only under
// wmu).
func (x *Index) tail() *segment {
	if n := len(x.mu.segs); n > 0 {
		return x.mu.segs[n-1]
	}
	return nil
}

// writable is checked by every writer, under wmu.
func (x *Index) writable() error {
	if x.mu.closed {
		return ErrClosed
	}
	if x.failed != nil {
		return fmt.Errorf("index: unusable after a failed write, reopen to recover: %w", x.failed)
	}
	return nil
}

// fail records the first write failure (under wmu) and returns err.
func (x *Index) fail(err error) error {
	if x.failed == nil {
		x.failed = err
	}
	return err
}
