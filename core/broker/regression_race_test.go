package broker

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// Ack applies a Settle in the raft loop; metaStore.apply → saveSub →
// Subscription.marshal → syncSettled rewrites s.Settled outside sm.mu, while
// SubscriptionState copies (and shares) the same slice under RLock.
func TestSubscriptionStateReadDuringAcks(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "ready", b.Ready)
	if err := b.CreateTopic(ctx(t), Topic{Name: "q", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	produceN(t, b, "q", 40)
	if err := b.Subscribe(ctx(t), SubscriptionConfig{Name: "s", Topic: "q"}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s, _ := b.SubscriptionState("s")
			_, _ = json.Marshal(s) // a gateway/HTTP handler reading the copy
		}
	}()
	for off := uint64(1); off < 40; off += 2 { // out of order: Settled non-empty
		if err := b.Ack(ctx(t), "s", off); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
