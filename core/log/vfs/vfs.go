// Package vfs is the narrow file-system interface that core/log writes through.
//
// Storage code never calls the os package directly. It goes through FS so that
// tests can swap in MemFS, an in-memory twin that remembers what was synced and
// can "crash": it throws away everything written since the last Sync (or keeps a
// random subset of it, torn at sector granularity), exactly what a power cut does
// to a real disk. Durability points are explicit methods (File.Sync, FS.SyncDir),
// so a test can crash at each one and check what survives.
//
// The interface is deliberately small: only the calls the log needs.
package vfs

import (
	"errors"
	"io"
	"syscall"
)

// ErrNotExist is returned (wrapped) when a named file does not exist.
var ErrNotExist = errors.New("vfs: file does not exist")

// FS is a flat view of a directory tree.
type FS interface {
	// Create makes a new empty file, truncating one that exists.
	// The new name is durable only after SyncDir of its directory.
	Create(name string) (File, error)
	// Open opens an existing file for reading and writing.
	Open(name string) (File, error)
	// Remove deletes a file; durable after SyncDir of its directory.
	Remove(name string) error
	// Rename moves a file, replacing the target; durable after SyncDir.
	Rename(oldName, newName string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(dir string) error
	// List returns the names (not paths) of the files in dir, sorted.
	// A missing directory lists as empty.
	List(dir string) ([]string, error)
	// SyncDir makes creations, removals and renames in dir durable.
	SyncDir(dir string) error
}

// File is an open file. Writes are positional; there is no file offset.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes every byte written so far durable (fdatasync).
	Sync() error
	// Truncate sets the size; bytes past it are gone, new bytes read as zero.
	Truncate(size int64) error
	// Size is the current size in bytes.
	Size() (int64, error)
	// Preallocate reserves disk space up to size bytes (fallocate), so that
	// later writes below size cannot fail for lack of space and a mapping of
	// that length never faults past the end. It never shrinks the file.
	Preallocate(size int64) error
	// MapReadOnly maps the first size bytes for reading. The returned slice
	// sees later WriteAt calls (as a shared mmap does through the page cache).
	// The caller must call unmap exactly once, after its last use of the slice.
	MapReadOnly(size int64) (data []byte, unmap func() error, err error)
}

// IsNoSpace reports whether err says the file system is full (or the
// user's quota is): a condition that goes away when space is freed, unlike
// other I/O errors.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// SpaceReporter is implemented by file systems that can tell how much
// space is left, so the log can refuse to start a preallocation that
// cannot finish (a failed one can leave blocks allocated until the file is
// removed).
type SpaceReporter interface {
	// FreeBytes is the space an unprivileged writer may still use in the
	// file system that holds dir.
	FreeBytes(dir string) (uint64, error)
}
