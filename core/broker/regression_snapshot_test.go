package broker

// Regression tests for defects found in review.

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// A follower restored from a snapshot knows no consume queue that had no
// message after the snapshot; once it leads, prepare() stamps offset 0 there.
func TestRestoredLeaderContinuesIdleQueues(t *testing.T) {
	bs, cfgs, leader := retentionCluster(t)
	if err := leader.CreateTopic(ctx(t), Topic{Name: "s", Queues: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := leader.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "s", Body: []byte(fmt.Sprint("q1-", i))}, Queue: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	var lagID uint64
	for id, b := range bs {
		if b != leader {
			lagID = id
			break
		}
	}
	if err := bs[lagID].Close(); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 1000)
	for range 600 {
		if _, err := leader.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "s", Body: body}, Queue: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "the leader's retention", func() bool { return leader.Status().FirstIndex > 100 })
	lag := openBroker(t, cfgs[lagID])
	waitFor(t, 15*time.Second, "the follower to catch up", func() bool {
		return lag.Status().FirstIndex > 2 && lag.Status().Applied >= leader.Status().Applied
	})
	lo, next := lag.QueueRange("s", 1)
	t.Logf("restored follower: queue s/1 range [%d,%d) (leader has %v)", lo, next, fmt.Sprint(leader.QueueRange("s", 1)))
	leader.node.TransferLeader(lagID)
	waitFor(t, 15*time.Second, "the restored follower to lead", func() bool { return lag.Status().LeaderReady })
	res, err := lag.Produce(ctx(t), []Message{{Message: batch.Message{Topic: "s", Body: []byte("new")}, Queue: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].QueueOffset != 3 {
		t.Fatalf("queue offset %d stamped for s/1, which already holds offsets 0..2", res[0].QueueOffset)
	}
	waitFor(t, 10*time.Second, "the old leader to apply the new message", func() bool {
		return leader.Status().Applied >= res[0].Index
	})
	// Retention removed q1-0..2 on every replica; what is left must agree:
	// the new message at offset 3 on both.
	for name, b := range map[string]*Broker{"old leader": leader, "restored leader": lag} {
		ms, _, err := b.Fetch("s", 1, 3, FetchOptions{MaxMessages: 1})
		if err != nil || len(ms) != 1 || ms[0].QueueOffset != 3 || string(ms[0].Body()) != "new" {
			t.Fatalf("%s: s/1 at offset 3: %v (%d messages)", name, err, len(ms))
		}
		ms[0].Release()
	}
}
