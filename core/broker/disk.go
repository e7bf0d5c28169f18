package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

// The disk alarm, as RabbitMQ and RocketMQ have it: a node whose data dir
// has less free space than DiskConfig.FreeLimitBytes stops taking messages
// from producers, on every door, and goes on serving reads, acks and
// every other command (they are small, and the limit leaves room for
// them). Each node publishes its own alarm in the replicated records
// (namespace "cluster", key "disk-alarm/<id>"), so every node also knows
// when a quorum of voters is short of space: then no node takes messages,
// because the leader could not commit them. Above the limit again,
// everything resumes by itself.
//
// The alarm keeps the disk from filling; if it fills anyway (another
// program, the alarm turned off), the raft loop waits for space instead of
// failing (core/raft/doc.go, "Full disk").

// ErrDiskFull: produce refused while the disk alarm is on. Gateways answer
// with their protocol's back-pressure; the producer may retry later.
var ErrDiskFull = errors.New("broker: disk alarm")

const diskAlarmKeyPrefix = "disk-alarm/"

// DiskConfig sets the free-space limit.
type DiskConfig struct {
	// FreeLimitBytes: below this much free space in the data dir's file
	// system, the node refuses new messages. 0 takes the default, the
	// larger of 1 GiB and two segments; -1 turns the alarm off.
	FreeLimitBytes int64
	// CheckInterval spaces the free-space checks (100ms: a statfs is
	// cheap, and the limit must hold what producers write in between).
	CheckInterval time.Duration
	// FreeBytes returns the free bytes of the file system holding dir
	// (statfs by default; tests inject their own).
	FreeBytes func(dir string) (uint64, error)
}

// DefaultDiskFreeLimitBytes is the floor of the default limit.
const DefaultDiskFreeLimitBytes = 1 << 30

func (c DiskConfig) withDefaults(segmentBytes int64) DiskConfig {
	if c.FreeLimitBytes == 0 {
		c.FreeLimitBytes = max(DefaultDiskFreeLimitBytes, 2*segmentBytes)
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 100 * time.Millisecond
	}
	if c.FreeBytes == nil {
		c.FreeBytes = vfs.OS{}.FreeBytes // statfs: what an unprivileged writer may use
	}
	return c
}

func (c DiskConfig) validate() error {
	if c.FreeLimitBytes < -1 {
		return fmt.Errorf("broker: disk free limit %d: use -1 to turn the alarm off", c.FreeLimitBytes)
	}
	if c.CheckInterval < 0 {
		return errors.New("broker: disk check interval is negative")
	}
	return nil
}

// DiskStatus is the alarm as this node sees it.
type DiskStatus struct {
	FreeBytes      uint64 // at the last check
	FreeLimitBytes int64  // -1: the alarm is off
	// Local: this node is under its limit.
	Local bool
	// Nodes: the voters whose alarm is on in the replicated records
	// (this node included once its record is applied).
	Nodes []uint64
	// Blocked: producers are refused here (Local, or a quorum of voters
	// under the limit).
	Blocked bool
}

// diskAlarm is the broker's side of the alarm: the monitor goroutine
// writes, anyone reads.
type diskAlarm struct {
	free    atomic.Uint64
	local   atomic.Bool
	blocked atomic.Bool

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when Blocked changes
}

func newDiskAlarm() *diskAlarm { return &diskAlarm{changed: make(chan struct{})} }

// DiskStatus returns the alarm's state.
func (b *Broker) DiskStatus() DiskStatus {
	return DiskStatus{
		FreeBytes:      b.disk.free.Load(),
		FreeLimitBytes: b.cfg.Disk.FreeLimitBytes,
		Local:          b.disk.local.Load(),
		Nodes:          b.alarmedNodes(),
		Blocked:        b.disk.blocked.Load(),
	}
}

// DiskAlarmChanged is closed when producers become blocked or unblocked
// (DiskStatus().Blocked changes); call it again for the next change.
func (b *Broker) DiskAlarmChanged() <-chan struct{} {
	b.disk.mu.Lock()
	defer b.disk.mu.Unlock()
	return b.disk.changed
}

// checkDisk returns an ErrDiskFull that says why, or nil.
func (b *Broker) checkDisk() error {
	local := b.disk.local.Load()
	if !local && !b.disk.blocked.Load() {
		return nil
	}
	if local {
		return fmt.Errorf("%w: node %d has %d bytes free in %s, below the limit of %d (--disk-free-limit-bytes); free space or raise the limit",
			ErrDiskFull, b.cfg.NodeID, b.disk.free.Load(), b.cfg.DataDir, b.cfg.Disk.FreeLimitBytes)
	}
	return fmt.Errorf("%w: a quorum of nodes is below its free-space limit (nodes %v)", ErrDiskFull, b.alarmedNodes())
}

// alarmedNodes lists the voters whose replicated alarm record is set.
func (b *Broker) alarmedNodes() []uint64 {
	var ids []uint64
	for k := range b.Records(nodesNamespace) {
		s, ok := strings.CutPrefix(k, diskAlarmKeyPrefix)
		if !ok {
			continue
		}
		if id, err := strconv.ParseUint(s, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// monitorDisk runs until the node stops: it samples free space, publishes
// this node's alarm in the records and recomputes whether producers are
// blocked.
func (b *Broker) monitorDisk() {
	t := time.NewTicker(b.cfg.Disk.CheckInterval)
	defer t.Stop()
	key := diskAlarmKeyPrefix + strconv.FormatUint(b.cfg.NodeID, 10)
	for {
		b.sampleDisk()
		// Blocked follows the local alarm at once, and the others' once
		// their records are applied: publishing ours waits for a commit.
		b.updateBlocked()
		b.publishAlarm(key)
		b.updateBlocked()
		select {
		case <-b.node.Done():
			return
		case <-b.stopBG:
			return
		case <-t.C:
		}
	}
}

func (b *Broker) sampleDisk() {
	limit := b.cfg.Disk.FreeLimitBytes
	free, err := b.cfg.Disk.FreeBytes(b.cfg.DataDir)
	if err != nil {
		b.cfg.Logger.Warn("cannot check free disk space", "err", err)
		return
	}
	b.disk.free.Store(free)
	on := limit >= 0 && free < uint64(limit)
	if b.disk.local.Swap(on) == on {
		return
	}
	if on {
		b.cfg.Logger.Error("disk alarm: free space below the limit; producers are refused until space is freed",
			"free_bytes", free, "limit_bytes", limit, "data_dir", b.cfg.DataDir, "setting", "--disk-free-limit-bytes")
	} else {
		b.cfg.Logger.Info("disk alarm cleared: producers are accepted again", "free_bytes", free, "limit_bytes", limit)
	}
}

// publishAlarm makes the records agree with the local alarm. Only a
// cluster needs it: a single node knows its own state.
func (b *Broker) publishAlarm(key string) {
	if len(b.cfg.Peers) <= 1 {
		return
	}
	on := b.disk.local.Load()
	if _, set := b.Record(nodesNamespace, key); set == on {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Disk.CheckInterval+time.Second)
	defer cancel()
	var err error
	if on {
		err = b.PutRecord(ctx, nodesNamespace, key, []byte(strconv.FormatUint(b.disk.free.Load(), 10)))
	} else {
		err = b.DeleteRecord(ctx, nodesNamespace, key)
	}
	if err != nil {
		b.cfg.Logger.Warn("cannot publish the disk alarm; trying again", "on", on, "err", err)
	}
}

func (b *Broker) updateBlocked() {
	blocked := b.disk.local.Load()
	if !blocked {
		alarmed := b.alarmedNodes()
		voters := b.node.Status().Voters
		n := 0
		for _, id := range voters {
			if slices.Contains(alarmed, id) {
				n++
			}
		}
		blocked = len(voters) > 0 && n >= len(voters)/2+1
	}
	if b.disk.blocked.Swap(blocked) == blocked {
		return
	}
	b.disk.mu.Lock()
	close(b.disk.changed)
	b.disk.changed = make(chan struct{})
	b.disk.mu.Unlock()
}
