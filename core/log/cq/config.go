package cq

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// DefaultUnitsPerFile makes 6,000,000-byte files, RocketMQ's default.
const DefaultUnitsPerFile = 300_000

// MaxUnitsPerFile keeps a file (and its mapping) under 1 GiB.
const MaxUnitsPerFile = (1 << 30) / UnitBytes

// Config configures a Store. Zero fields take defaults (see WithDefaults).
type Config struct {
	// FS is where the files live; the real disk (vfs.OS) by default.
	FS vfs.FS
	// Dir is the root of the queues: <Dir>/<topic>/<queue>/<offset>.cq.
	Dir string
	// UnitsPerFile is the number of 20-byte units per file. It cannot
	// change once a store exists: it fixes every file's size and name.
	UnitsPerFile int
	// Logger receives recovery and retention events.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.FS == nil {
		c.FS = vfs.OS{}
	}
	if c.UnitsPerFile == 0 {
		c.UnitsPerFile = DefaultUnitsPerFile
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first setting that cannot work. Zero fields that have
// a default are accepted.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("cq: Dir is empty")
	case c.UnitsPerFile < 0 || c.UnitsPerFile > MaxUnitsPerFile:
		return fmt.Errorf("cq: UnitsPerFile %d outside [1, %d]", c.UnitsPerFile, MaxUnitsPerFile)
	}
	return nil
}
