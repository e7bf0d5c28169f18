package log

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// Config configures a Log. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// FS is where the files live; the real disk by default.
	FS vfs.FS
	// Dir holds the commitlog directory (and, for a Dispatcher, the
	// consume queues and index).
	Dir string
	// SegmentSizeBytes is the fixed size of each segment file. It cannot
	// change once a log exists, because it fixes every physical offset.
	SegmentSizeBytes int64
	// MaxEntryBytes bounds the data of one Raft entry (one message batch).
	MaxEntryBytes int
	// RetentionAge removes sealed segments whose newest data is older.
	RetentionAge time.Duration
	// RetentionBytes removes the oldest sealed segments while the log is
	// larger than this.
	RetentionBytes int64
	// Logger receives recovery and retention events.
	Logger *slog.Logger
	// Now is the clock (for segment creation times and retention).
	Now func() time.Time
}

// Defaults. The retention defaults are RocketMQ's 72 hours and a size that
// fits a small server; both are finite on purpose.
const (
	DefaultSegmentSizeBytes = 1 << 30
	DefaultMaxEntryBytes    = 16 << 20
	DefaultRetentionAge     = 72 * time.Hour
	DefaultRetentionBytes   = 64 << 30
	minSegmentSizeBytes     = 4096
	maxSegmentSizeBytes     = 1 << 32 // positions are stored as uint32
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.FS == nil {
		c.FS = vfs.OS{}
	}
	if c.SegmentSizeBytes == 0 {
		c.SegmentSizeBytes = DefaultSegmentSizeBytes
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
		// A small test segment still takes any entry that fits in it.
		c.MaxEntryBytes = int(min(int64(c.MaxEntryBytes), c.SegmentSizeBytes-SegmentHeaderBytes-RecordHeaderBytes))
	}
	if c.RetentionAge == 0 {
		c.RetentionAge = DefaultRetentionAge
	}
	if c.RetentionBytes == 0 {
		c.RetentionBytes = DefaultRetentionBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("log: Dir is empty")
	case c.SegmentSizeBytes < minSegmentSizeBytes || c.SegmentSizeBytes >= maxSegmentSizeBytes:
		return fmt.Errorf("log: SegmentSizeBytes %d outside [%d, %d)", c.SegmentSizeBytes, minSegmentSizeBytes, int64(maxSegmentSizeBytes))
	case c.SegmentSizeBytes%8 != 0:
		return fmt.Errorf("log: SegmentSizeBytes %d is not a multiple of 8", c.SegmentSizeBytes)
	case c.MaxEntryBytes <= 0:
		return fmt.Errorf("log: MaxEntryBytes %d must be positive", c.MaxEntryBytes)
	case SegmentHeaderBytes+recordSize(c.MaxEntryBytes) > c.SegmentSizeBytes:
		return fmt.Errorf("log: an entry of MaxEntryBytes %d does not fit in a segment of %d bytes", c.MaxEntryBytes, c.SegmentSizeBytes)
	case c.RetentionAge < 0 || c.RetentionBytes < 0:
		return errors.New("log: retention limits must not be negative")
	}
	return nil
}
