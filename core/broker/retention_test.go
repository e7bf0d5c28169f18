package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker/command"
	clog "github.com/conflux-mq/conflux/core/log"
)

// TestRetentionSaysWhatItTakes: retention deletes old segments whatever
// points into them, and counts what still needed them: a consumer group
// that consumed nothing, a subscription with nothing acknowledged, and a
// delayed message not yet due.
func TestRetentionSaysWhatItTakes(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Log = clog.Config{SegmentSizeBytes: 64 << 10, RetentionBytes: 3 * 64 << 10}
	cfg.Raft.RetentionInterval = 50 * time.Millisecond
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "ready", b.Ready)

	if err := b.CreateTopic(ctx(t), Topic{Name: "ret", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx(t), SubscriptionConfig{Name: "sub", Topic: "ret", Queue: 0}); err != nil {
		t.Fatal(err)
	}
	if err := b.CommitOffsets(ctx(t), "group", []command.Offset{{Topic: "ret", Queue: 0, Offset: 0}}); err != nil {
		t.Fatal(err)
	}
	delayed := msg("later", "", "k", "due in an hour")
	delayed.DeliverAt = time.Now().Add(time.Hour)
	if _, err := b.Produce(ctx(t), []Message{delayed}); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 2000)
	for range 400 { // about 800 KiB: far over the 192 KiB kept
		m := msg("ret", "", "k", body)
		m.Queue = 0
		if _, err := b.Produce(ctx(t), []Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	r := &b.sm.retention
	waitFor(t, 15*time.Second, "a retention pass", func() bool { return r.passes.Load() > 0 && r.lostGroups.Load() > 0 })
	if r.removedBytes.Load() == 0 {
		t.Fatal("retention ran but counted no removed bytes")
	}
	if r.lostTimers.Load() != 1 {
		t.Fatalf("lost delayed messages: %d, want 1", r.lostTimers.Load())
	}
	lo, _ := b.QueueRange("ret", 0)
	if r.lostSubs.Load() != lo || r.lostGroups.Load() != lo {
		t.Fatalf("queue now starts at %d: lost unacked %d and unconsumed %d, want %d each",
			lo, r.lostSubs.Load(), r.lostGroups.Load(), lo)
	}
}
