package broker

import (
	"fmt"
	"testing"
	"time"
)

// TestProduceCallKeepsOrderAcrossEntries: one Produce call larger than an
// entry is cut into several groups that are proposed concurrently; the
// log must still hold the call's messages in the order given. It runs on
// one node and through a follower of a three-node group (forwarded
// proposals), where the groups race each other to the leader.
func TestProduceCallKeepsOrderAcrossEntries(t *testing.T) {
	const calls, per = 6, 300
	check := func(t *testing.T, b *Broker, topic string) {
		t.Helper()
		if err := b.CreateTopic(ctx(t), Topic{Name: topic, Queues: 1}); err != nil {
			t.Fatal(err)
		}
		var want []string
		for c := range calls {
			msgs := make([]Message, per)
			for i := range msgs {
				body := fmt.Sprintf("%d-%d", c, i)
				msgs[i] = Message{Queue: 0}
				msgs[i].Topic, msgs[i].Body = topic, []byte(body)
				want = append(want, body)
			}
			res, err := b.Produce(ctx(t), msgs)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(res); i++ {
				if res[i].QueueOffset != res[i-1].QueueOffset+1 {
					t.Fatalf("call %d: message %d at queue offset %d after %d", c, i, res[i].QueueOffset, res[i-1].QueueOffset)
				}
			}
		}
		got := fetchAll(t, b, topic, 0)
		if len(got) != len(want) {
			t.Fatalf("%d messages in the queue, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("queue position %d holds %q, want %q", i, got[i], want[i])
			}
		}
	}
	small := func(c *Config) { c.MaxBatchMessages = 8 }
	t.Run("single", func(t *testing.T) {
		cfg := testConfig(t.TempDir())
		small(&cfg)
		b := openBroker(t, cfg)
		waitFor(t, 10*time.Second, "ready", b.Ready)
		check(t, b, "order1")
	})
	t.Run("follower", func(t *testing.T) {
		bs, _ := openCluster(t, small)
		var f *Broker
		waitFor(t, 15*time.Second, "a leader ready and a follower", func() bool {
			ready := false
			f = nil
			for _, b := range bs {
				st := b.Status()
				ready = ready || st.LeaderReady
				if st.Leader != 0 && st.Leader != st.ID {
					f = b
				}
			}
			return ready && f != nil
		})
		check(t, f, "order3")
	})
}
