package vfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"sort"
	"sync"
)

// SectorBytes is the unit in which MemFS tears unsynced writes on a crash:
// a real disk persists (or not) whole sectors, in any order.
const SectorBytes = 512

// Op names a MemFS operation, for fault injection.
type Op string

// The operations an Injector sees.
const (
	OpCreate      Op = "create"
	OpOpen        Op = "open"
	OpRemove      Op = "remove"
	OpRename      Op = "rename"
	OpSyncDir     Op = "syncdir"
	OpWrite       Op = "write"
	OpSync        Op = "sync"
	OpTruncate    Op = "truncate"
	OpPreallocate Op = "preallocate"
)

// Injector is consulted before each operation; a non-nil error is returned to
// the caller instead of doing the operation.
type Injector func(op Op, name string) error

// MemFS is an in-memory FS that knows what is durable.
//
// A file's bytes become durable at File.Sync; a name (creation, removal,
// rename) becomes durable at SyncDir of its directory. CrashClone returns the
// file system a machine would find after losing power at this instant.
type MemFS struct {
	mu      sync.Mutex
	files   map[string]*memNode // the namespace as the running process sees it
	durable map[string]*memNode // the namespace as the disk holds it
	dirs    map[string]bool
	inject  Injector
}

var _ FS = (*MemFS)(nil)

// NewMem returns an empty MemFS.
func NewMem() *MemFS {
	return &MemFS{
		files:   map[string]*memNode{},
		durable: map[string]*memNode{},
		dirs:    map[string]bool{"/": true, ".": true},
	}
}

// SetInjector installs (or, with nil, removes) a fault injector.
func (m *MemFS) SetInjector(inj Injector) {
	m.mu.Lock()
	m.inject = inj
	m.mu.Unlock()
}

func (m *MemFS) check(op Op, name string) error {
	m.mu.Lock()
	inj := m.inject
	m.mu.Unlock()
	if inj == nil {
		return nil
	}
	if err := inj(op, name); err != nil {
		return fmt.Errorf("vfs: injected %s %s: %w", op, name, err)
	}
	return nil
}

func clean(name string) string { return path.Clean(name) }

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	name = clean(name)
	if err := m.check(OpCreate, name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[path.Dir(name)] {
		return nil, fmt.Errorf("create %s: %w", name, ErrNotExist)
	}
	n := &memNode{dirty: map[int64]struct{}{}}
	m.files[name] = n
	return &memFile{fs: m, name: name, n: n}, nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) {
	name = clean(name)
	if err := m.check(OpOpen, name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[name]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", name, ErrNotExist)
	}
	return &memFile{fs: m, name: name, n: n}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	name = clean(name)
	if err := m.check(OpRemove, name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return fmt.Errorf("remove %s: %w", name, ErrNotExist)
	}
	delete(m.files, name)
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldName, newName string) error {
	oldName, newName = clean(oldName), clean(newName)
	if err := m.check(OpRename, oldName); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[oldName]
	if !ok {
		return fmt.Errorf("rename %s: %w", oldName, ErrNotExist)
	}
	if !m.dirs[path.Dir(newName)] {
		return fmt.Errorf("rename to %s: %w", newName, ErrNotExist)
	}
	delete(m.files, oldName)
	m.files[newName] = n
	return nil
}

// MkdirAll implements FS. Directories are durable at once: the log creates
// them only at start-up, before anything depends on them.
func (m *MemFS) MkdirAll(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := clean(dir); !m.dirs[d]; d = path.Dir(d) {
		m.dirs[d] = true
	}
	return nil
}

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for name := range m.files {
		if path.Dir(name) == dir {
			seen[path.Base(name)] = true
		}
	}
	for d := range m.dirs {
		if d != dir && path.Dir(d) == dir {
			seen[path.Base(d)] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(dir string) error {
	dir = clean(dir)
	if err := m.check(OpSyncDir, dir); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.durable {
		if path.Dir(name) == dir {
			delete(m.durable, name)
		}
	}
	for name, n := range m.files {
		if path.Dir(name) == dir {
			m.durable[name] = n
		}
	}
	return nil
}

// CrashMode says what happens to bytes written but not yet synced.
type CrashMode int

const (
	// CrashDropUnsynced loses every unsynced byte: the disk holds exactly what
	// was synced.
	CrashDropUnsynced CrashMode = iota
	// CrashTear keeps a random subset of the unsynced sectors: some whole,
	// some only partly written, some with garbage where the write changed
	// bytes, in any order. Bytes that were synced and not rewritten survive
	// (powersafe overwrite).
	CrashTear
)

// CrashClone returns the file system as it would be after a power cut now.
// Only durable names survive; each file holds its synced bytes, plus (with
// CrashTear) a random mix of its unsynced sectors chosen by rng.
func (m *MemFS) CrashClone(mode CrashMode, rng *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewMem()
	for d := range m.dirs {
		c.dirs[d] = true
	}
	done := map[*memNode]*memNode{}
	for name, n := range m.durable {
		cn, ok := done[n]
		if !ok {
			cn = n.crashCopy(mode, rng)
			done[n] = cn
		}
		c.files[name] = cn
		c.durable[name] = cn
	}
	return c
}

// Names returns every file name the process currently sees, sorted (for
// tests and debugging).
func (m *MemFS) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.files))
	for n := range m.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// memNode is one file's bytes. data is what reads see; synced is what the
// disk holds; dirty lists the sectors that differ.
type memNode struct {
	mu         sync.Mutex
	data       []byte
	synced     []byte
	syncedSize int64
	dirty      map[int64]struct{}
	maps       int // live mappings; while > 0 data must not be reallocated
}

func (n *memNode) markDirty(off, length int64) {
	for s := off / SectorBytes; s*SectorBytes < off+length; s++ {
		n.dirty[s] = struct{}{}
	}
}

func (n *memNode) crashCopy(mode CrashMode, rng *rand.Rand) *memNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := &memNode{dirty: map[int64]struct{}{}}
	size := n.syncedSize
	img := make([]byte, size)
	copy(img, n.synced)
	if mode == CrashTear {
		sectors := make([]int64, 0, len(n.dirty))
		for s := range n.dirty {
			sectors = append(sectors, s)
		}
		sort.Slice(sectors, func(i, j int) bool { return sectors[i] < sectors[j] })
		for _, s := range sectors {
			lo := s * SectorBytes
			if lo >= size {
				continue // unsynced growth: the size change was not durable
			}
			hi := min(lo+SectorBytes, size, int64(len(n.data)))
			if lo >= hi {
				continue
			}
			switch rng.IntN(4) {
			case 0: // this sector never reached the disk
			case 1: // it did, whole
				copy(img[lo:hi], n.data[lo:hi])
			case 2: // torn: a prefix of it did
				cut := lo + int64(rng.IntN(int(hi-lo)/8+1))*8
				copy(img[lo:cut], n.data[lo:cut])
			case 3: // the device wrote garbage where the write changed bytes
				// Powersafe overwrite: bytes the interrupted write did not
				// change keep their synced value (as ext4/xfs on modern
				// disks give, and as the log's format assumes).
				for i := lo; i < hi; i++ {
					if i >= int64(len(n.synced)) || n.synced[i] != n.data[i] {
						img[i] = byte(rng.UintN(256))
					}
				}
			}
		}
	}
	out.data = img
	out.synced = append([]byte(nil), img...)
	out.syncedSize = size
	return out
}

type memFile struct {
	fs     *MemFS
	name   string
	n      *memNode
	closed bool
}

var errClosed = errors.New("vfs: file already closed")

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("vfs: negative offset %d", off)
	}
	if off >= int64(len(f.n.data)) {
		return 0, errEOF
	}
	k := copy(p, f.n.data[off:])
	if k < len(p) {
		return k, errEOF
	}
	return k, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.check(OpWrite, f.name); err != nil {
		return 0, err
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("vfs: negative offset %d", off)
	}
	end := off + int64(len(p))
	if end > int64(len(f.n.data)) {
		if f.n.maps > 0 && end > int64(cap(f.n.data)) {
			return 0, fmt.Errorf("vfs: write past the end of mapped file %s (preallocate first)", f.name)
		}
		f.n.grow(end)
	}
	copy(f.n.data[off:end], p)
	f.n.markDirty(off, int64(len(p)))
	return len(p), nil
}

func (n *memNode) grow(size int64) {
	if size <= int64(cap(n.data)) {
		n.data = n.data[:size]
		return
	}
	nd := make([]byte, size, max(size, 2*int64(cap(n.data))))
	copy(nd, n.data)
	n.data = nd
}

func (f *memFile) Close() error {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.closed = true
	return nil
}

func (f *memFile) Sync() error {
	if err := f.fs.check(OpSync, f.name); err != nil {
		return err
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.closed {
		return errClosed
	}
	size := int64(len(f.n.data))
	if int64(len(f.n.synced)) < size {
		ns := make([]byte, size)
		copy(ns, f.n.synced)
		f.n.synced = ns
	}
	for s := range f.n.dirty {
		lo := s * SectorBytes
		hi := min(lo+SectorBytes, size)
		if lo < hi {
			copy(f.n.synced[lo:hi], f.n.data[lo:hi])
		}
	}
	f.n.synced = f.n.synced[:size]
	f.n.syncedSize = size
	clear(f.n.dirty)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.fs.check(OpTruncate, f.name); err != nil {
		return err
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if size < 0 {
		return fmt.Errorf("vfs: negative size %d", size)
	}
	old := int64(len(f.n.data))
	if size < old {
		// Keep the backing array so live mappings stay valid; the bytes
		// past the new end read as zero if the file grows again.
		clear(f.n.data[size:old])
		f.n.data = f.n.data[:size]
		f.n.markDirty(size, old-size)
		return nil
	}
	if f.n.maps > 0 && size > int64(cap(f.n.data)) {
		return fmt.Errorf("vfs: cannot grow mapped file %s", f.name)
	}
	f.n.grow(size)
	f.n.markDirty(old, size-old)
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	return int64(len(f.n.data)), nil
}

func (f *memFile) Preallocate(size int64) error {
	if err := f.fs.check(OpPreallocate, f.name); err != nil {
		return err
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	old := int64(len(f.n.data))
	if size <= old {
		return nil
	}
	if f.n.maps > 0 && size > int64(cap(f.n.data)) {
		return fmt.Errorf("vfs: cannot grow mapped file %s", f.name)
	}
	f.n.grow(size)
	f.n.markDirty(old, size-old)
	return nil
}

func (f *memFile) MapReadOnly(size int64) ([]byte, func() error, error) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if size > int64(len(f.n.data)) {
		return nil, nil, fmt.Errorf("vfs: map %d bytes of %s, which has %d", size, f.name, len(f.n.data))
	}
	f.n.maps++
	view := f.n.data[:size:size]
	var once sync.Once
	unmap := func() error {
		once.Do(func() {
			f.n.mu.Lock()
			f.n.maps--
			f.n.mu.Unlock()
		})
		return nil
	}
	return view, unmap, nil
}

// IsNotExist reports whether err says a file does not exist.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }

// Join is path.Join for FS names; the log builds every name with it.
func Join(elem ...string) string { return path.Join(elem...) }

// Dir is path.Dir for FS names.
func Dir(name string) string { return path.Dir(name) }

var errEOF = io.EOF
