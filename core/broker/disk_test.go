package broker

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// fakeDisk is a free-space probe a test can turn.
type fakeDisk struct{ free atomic.Uint64 }

func newFakeDisk(free uint64) *fakeDisk {
	d := &fakeDisk{}
	d.free.Store(free)
	return d
}

func (d *fakeDisk) FreeBytes(string) (uint64, error) { return d.free.Load(), nil }

// withDisk makes cfg check d against a 100 MB limit every 10ms.
func withDisk(cfg *Config, d *fakeDisk) {
	cfg.Disk = DiskConfig{FreeLimitBytes: 100e6, CheckInterval: 10 * time.Millisecond, FreeBytes: d.FreeBytes}
}

func TestDiskAlarmRefusesProducersAndKeepsAcks(t *testing.T) {
	disk := newFakeDisk(1e9)
	cfg := testConfig(t.TempDir())
	withDisk(&cfg, disk)
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "ready", b.Ready)
	res, err := b.Produce(ctx(t), []Message{msg("alarm", "", "k", "before")})
	if err != nil {
		t.Fatal(err)
	}
	changed := b.DiskAlarmChanged()

	disk.free.Store(50e6)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("DiskAlarmChanged did not fire when free space fell under the limit")
	}
	st := b.DiskStatus()
	if !st.Local || !st.Blocked || st.FreeBytes != 50e6 {
		t.Fatalf("status under the limit: %+v", st)
	}
	_, err = b.Produce(ctx(t), []Message{msg("alarm", "", "k", "refused")})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("produce under the alarm: %v, want ErrDiskFull", err)
	}
	// Reads and acknowledgements go on.
	if got := fetchAll(t, b, "alarm", res[0].Queue); len(got) != 1 || got[0] != "before" {
		t.Fatalf("fetch under the alarm: %v", got)
	}
	if err := b.CommitOffsets(ctx(t), "g", []command.Offset{{Topic: "alarm", Queue: res[0].Queue, Offset: 1}}); err != nil {
		t.Fatalf("offset commit under the alarm: %v", err)
	}

	changed = b.DiskAlarmChanged()
	disk.free.Store(200e6)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("DiskAlarmChanged did not fire when space came back")
	}
	if _, err := b.Produce(ctx(t), []Message{msg("alarm", "", "k", "after")}); err != nil {
		t.Fatalf("produce after the alarm cleared: %v", err)
	}
	if got := fetchAll(t, b, "alarm", res[0].Queue); len(got) != 2 || got[1] != "after" {
		t.Fatalf("after the alarm: %v", got)
	}
}

// TestDiskAlarmQuorum: one voter short of space refuses its own producers
// while the others go on; a quorum short of space blocks every node.
func TestDiskAlarmQuorum(t *testing.T) {
	disks := map[uint64]*fakeDisk{1: newFakeDisk(1e9), 2: newFakeDisk(1e9), 3: newFakeDisk(1e9)}
	bs, _ := openCluster(t, func(c *Config) { withDisk(c, disks[c.NodeID]) })
	waitFor(t, 15*time.Second, "a leader ready for writes", func() bool { return leaderIndex(bs) >= 0 })
	lead := leaderIndex(bs)
	follower := (lead + 1) % 3
	other := (lead + 2) % 3

	disks[uint64(follower+1)].free.Store(1e6)
	waitFor(t, 10*time.Second, "the follower's alarm on every node", func() bool {
		for _, b := range bs {
			if len(b.DiskStatus().Nodes) != 1 {
				return false
			}
		}
		return true
	})
	if _, err := bs[follower].Produce(ctx(t), []Message{msg("q", "", "k", "x")}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("produce on the node under its limit: %v, want ErrDiskFull", err)
	}
	for _, k := range []int{lead, other} {
		if _, err := bs[k].Produce(ctx(t), []Message{msg("q", "", "k", "x")}); err != nil {
			t.Fatalf("node %d with room refused a message while only one voter is short: %v", k+1, err)
		}
	}

	disks[uint64(other+1)].free.Store(1e6)
	waitFor(t, 10*time.Second, "every node blocked by the quorum", func() bool {
		for _, b := range bs {
			if !b.DiskStatus().Blocked {
				return false
			}
		}
		return true
	})
	if _, err := bs[lead].Produce(ctx(t), []Message{msg("q", "", "k", "x")}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("leader produce with a quorum short of space: %v, want ErrDiskFull", err)
	}

	disks[uint64(follower+1)].free.Store(1e9)
	disks[uint64(other+1)].free.Store(1e9)
	waitFor(t, 10*time.Second, "every node unblocked", func() bool {
		for _, b := range bs {
			if b.DiskStatus().Blocked || len(b.DiskStatus().Nodes) != 0 {
				return false
			}
		}
		return true
	})
	if _, err := bs[follower].Produce(ctx(t), []Message{msg("q", "", "k", "y")}); err != nil {
		t.Fatalf("produce after space came back: %v", err)
	}
}
