package vfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// OS is the real file system.
type OS struct{}

var (
	_ FS            = OS{}
	_ SpaceReporter = OS{}
)

// FreeBytes implements SpaceReporter with statfs (f_bavail).
func (OS) FreeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("vfs: statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func wrapNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	return err
}

// Create implements FS.
func (OS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, wrapNotExist(err)
	}
	return &osFile{f: f}, nil
}

// Open implements FS.
func (OS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, wrapNotExist(err)
	}
	return &osFile{f: f}, nil
}

// Remove implements FS.
func (OS) Remove(name string) error { return wrapNotExist(os.Remove(name)) }

// Rename implements FS.
func (OS) Rename(oldName, newName string) error { return wrapNotExist(os.Rename(oldName, newName)) }

// MkdirAll implements FS.
func (OS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

// List implements FS.
func (OS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// SyncDir implements FS.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return wrapNotExist(err)
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}

type osFile struct{ f *os.File }

func (o *osFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o *osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o *osFile) Close() error                             { return o.f.Close() }
func (o *osFile) Truncate(size int64) error                { return o.f.Truncate(size) }

// Sync uses fdatasync: the log never depends on file metadata other than the
// size, and the size is fixed by Preallocate before any record is written.
func (o *osFile) Sync() error { return unix.Fdatasync(int(o.f.Fd())) }

func (o *osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (o *osFile) Preallocate(size int64) error {
	cur, err := o.Size()
	if err != nil {
		return err
	}
	if size <= cur {
		return nil
	}
	err = unix.Fallocate(int(o.f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// Some file systems (tmpfs on old kernels, overlay variants) lack
		// fallocate; a sparse extension still keeps the mapping in bounds.
		return o.f.Truncate(size)
	}
	return err
}

func (o *osFile) MapReadOnly(size int64) ([]byte, func() error, error) {
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	m, err := mmap.MapRegion(o.f, int(size), mmap.RDONLY, 0, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap %s: %w", o.f.Name(), err)
	}
	return m, m.Unmap, nil
}
