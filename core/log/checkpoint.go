package log

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/conflux-mq/conflux/core/log/cq"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// The dispatch checkpoint (dispatch.ckpt) says how far the consume queues
// and the index are durable. Written to a temporary file, synced, renamed
// over the old one, and the directory synced, so a crash leaves either the
// old or the new checkpoint.
//
//	off size field
//	  0    4 magic "CFXC"
//	  4    4 version = 1
//	  8    8 last dispatched Raft index
//	 16    8 log offset just past that entry's record data (aligned to 8)
//	 24    8 1 + physical offset of the last message in the key index (0: empty)
//	 32    4 number of queues n
//	 36    … n × (u16 topic length, topic, u32 queue id, u64 next offset)
//	  …    4 CRC32C of everything before

type checkpoint struct {
	index, end uint64
	indexLast  uint64 // 1 + the key index's LastOffset, 0 when it was empty
	next       map[cq.QueueID]uint64
}

const (
	ckptMagic        = "CFXC"
	maxCkptQueues    = 1 << 22
	maxCkptFileBytes = 1 << 30
)

var errNoCheckpoint = errors.New("no dispatch checkpoint")

func encodeCheckpoint(ck checkpoint) []byte {
	qs := make([]cq.QueueID, 0, len(ck.next))
	for q := range ck.next {
		qs = append(qs, q)
	}
	sort.Slice(qs, func(i, j int) bool {
		if qs[i].Topic != qs[j].Topic {
			return qs[i].Topic < qs[j].Topic
		}
		return qs[i].Queue < qs[j].Queue
	})
	b := append([]byte(nil), ckptMagic...)
	b = binary.LittleEndian.AppendUint32(b, formatVersion)
	b = binary.LittleEndian.AppendUint64(b, ck.index)
	b = binary.LittleEndian.AppendUint64(b, ck.end)
	b = binary.LittleEndian.AppendUint64(b, ck.indexLast)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(qs)))
	for _, q := range qs {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(q.Topic)))
		b = append(b, q.Topic...)
		b = binary.LittleEndian.AppendUint32(b, q.Queue)
		b = binary.LittleEndian.AppendUint64(b, ck.next[q])
	}
	return binary.LittleEndian.AppendUint32(b, crc(b))
}

func decodeCheckpoint(b []byte) (checkpoint, error) {
	bad := func(why string) (checkpoint, error) {
		return checkpoint{}, fmt.Errorf("%w: dispatch checkpoint: %s", ErrCorrupt, why)
	}
	if len(b) < 40 || string(b[:4]) != ckptMagic {
		return bad("bad magic or size")
	}
	body := b[:len(b)-4]
	if crc(body) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return bad("crc mismatch")
	}
	if v := binary.LittleEndian.Uint32(body[4:]); v != formatVersion {
		return bad(fmt.Sprintf("version %d", v))
	}
	ck := checkpoint{
		index:     binary.LittleEndian.Uint64(body[8:]),
		end:       binary.LittleEndian.Uint64(body[16:]),
		indexLast: binary.LittleEndian.Uint64(body[24:]),
		next:      map[cq.QueueID]uint64{},
	}
	n := binary.LittleEndian.Uint32(body[32:])
	if n > maxCkptQueues {
		return bad("too many queues")
	}
	p := body[36:]
	for range n {
		if len(p) < 2 {
			return bad("truncated")
		}
		tl := int(binary.LittleEndian.Uint16(p))
		if len(p) < 2+tl+12 {
			return bad("truncated")
		}
		q := cq.QueueID{Topic: string(p[2 : 2+tl]), Queue: binary.LittleEndian.Uint32(p[2+tl:])}
		ck.next[q] = binary.LittleEndian.Uint64(p[2+tl+4:])
		p = p[2+tl+12:]
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return ck, nil
}

func readCheckpoint(fs vfs.FS, name string) (checkpoint, error) {
	f, err := fs.Open(name)
	if vfs.IsNotExist(err) {
		return checkpoint{}, errNoCheckpoint
	}
	if err != nil {
		return checkpoint{}, err
	}
	defer func() { _ = f.Close() }()
	size, err := f.Size()
	if err != nil {
		return checkpoint{}, err
	}
	if size > maxCkptFileBytes {
		return checkpoint{}, fmt.Errorf("%w: dispatch checkpoint of %d bytes", ErrCorrupt, size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return checkpoint{}, err
	}
	return decodeCheckpoint(b)
}

func writeCheckpoint(fs vfs.FS, name string, ck checkpoint) error {
	if err := replaceFile(fs, name, encodeCheckpoint(ck)); err != nil {
		return err
	}
	return fs.SyncDir(vfs.Dir(name))
}
