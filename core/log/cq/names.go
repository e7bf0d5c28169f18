package cq

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// MaxTopicBytes is the longest topic name: a path component on common file
// systems holds at most 255 bytes.
const MaxTopicBytes = 255

const fileSuffix = ".cq"

// fileNameLen is the length of "%020d.cq".
const fileNameLen = 20 + len(fileSuffix)

// checkTopic rejects a topic that is not a single safe path component, so
// that no topic can name a file outside its own directory.
func checkTopic(topic string) error {
	switch {
	case topic == "", topic == ".", topic == "..":
		return fmt.Errorf("%w: %q", ErrBadTopic, topic)
	case len(topic) > MaxTopicBytes:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadTopic, len(topic), MaxTopicBytes)
	case strings.ContainsAny(topic, "/\x00"):
		return fmt.Errorf("%w: %q contains '/' or NUL", ErrBadTopic, topic)
	}
	return nil
}

func queueDirName(queue uint32) string { return strconv.FormatUint(uint64(queue), 10) }

// parseQueueDir accepts only the canonical spelling, so that two directories
// can never name the same queue ("7" and "007").
func parseQueueDir(name string) (uint32, bool) {
	q, err := strconv.ParseUint(name, 10, 32)
	if err != nil || queueDirName(uint32(q)) != name {
		return 0, false
	}
	return uint32(q), true
}

func fileName(first uint64) string { return fmt.Sprintf("%020d%s", first, fileSuffix) }

// parseFileName accepts exactly the names fileName makes.
func parseFileName(name string) (uint64, bool) {
	if len(name) != fileNameLen || !strings.HasSuffix(name, fileSuffix) {
		return 0, false
	}
	digits := name[:20]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	first, err := strconv.ParseUint(digits, 10, 64)
	return first, err == nil
}

func (s *Store) queueDir(id QueueID) string {
	return vfs.Join(s.cfg.Dir, id.Topic, queueDirName(id.Queue))
}
