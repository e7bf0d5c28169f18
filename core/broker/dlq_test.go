package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// TestResendDeadLetterRacesOnce: concurrent resends of one dead letter,
// through the leader and through followers, put it back exactly once.
// (Found in review: the check and the record used to bracket the produce.)
func TestResendDeadLetterRacesOnce(t *testing.T) {
	bs, _ := startCluster(t)
	lead := bs[leaderIndex(bs)]
	for _, tp := range []Topic{{Name: "orders", Queues: 1}, {Name: "%DLQ%g", Queues: 1}} {
		if err := lead.CreateTopic(ctx(t), tp); err != nil {
			t.Fatal(err)
		}
	}
	dead := batch.Message{Topic: "%DLQ%g", Body: []byte("poison"),
		Properties: []batch.Property{{Key: "RETRY_TOPIC", Value: "orders"}}}
	res, err := lead.Produce(ctx(t), []Message{{Message: dead, Queue: 0}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		waitFor(t, 10*time.Second, "the dead letter on every node", func() bool { return b.Status().Applied >= res[0].Index })
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = bs[i%3].ResendDeadLetter(ctx(t), "%DLQ%g", 0, 0)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrAlreadyResent):
			t.Fatalf("a racing resend failed otherwise: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d resends succeeded, want 1 (%v)", ok, errs)
	}
	if _, next := lead.QueueRange("orders", 0); next != 1 {
		t.Fatalf("orders holds %d messages, want 1", next)
	}
}

// TestResendDeadLetterCallerGivingUp: the caller's context ends just as
// the claim commits. Found in review: the resend then either gave its
// claim back although its produce could still commit (a retry resent the
// message twice), or left the claim with nothing resent (every retry
// refused). Neither may happen, over many trials.
func TestResendDeadLetterCallerGivingUp(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "ready", b.Ready)
	for _, tp := range []Topic{{Name: "orders", Queues: 1}, {Name: "%DLQ%g", Queues: 1}} {
		if err := b.CreateTopic(ctx(t), tp); err != nil {
			t.Fatal(err)
		}
	}
	doubled, stuck := 0, 0
	for i := range 300 {
		dead := batch.Message{Topic: "%DLQ%g", Body: []byte(fmt.Sprint("poison", i)),
			Properties: []batch.Property{{Key: "RETRY_TOPIC", Value: "orders"}}}
		res, err := b.Produce(ctx(t), []Message{{Message: dead, Queue: 0}})
		if err != nil {
			t.Fatal(err)
		}
		off := res[0].QueueOffset
		key := fmt.Sprintf("%%DLQ%%g/0/%d", off)
		_, before := b.QueueRange("orders", 0)
		c, cancel := context.WithCancel(context.Background())
		stop := make(chan struct{})
		go func() { // the caller's deadline passes just after the claim
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, ok := b.Record(deadLetterRecords, key); ok {
					cancel()
					return
				}
				runtime.Gosched()
			}
		}()
		_, _, err1 := b.ResendDeadLetter(c, "%DLQ%g", 0, off)
		close(stop)
		cancel()
		if err1 == nil {
			continue
		}
		// The caller was told it failed; it retries.
		_, _, err2 := b.ResendDeadLetter(ctx(t), "%DLQ%g", 0, off)
		_, after := b.QueueRange("orders", 0)
		switch {
		case after-before > 1:
			doubled++
			t.Logf("trial %d: first resend: %v; retry: %v; copies on orders: %d", i, err1, err2, after-before)
		case after-before == 0 && errors.Is(err2, ErrAlreadyResent):
			stuck++
			if stuck == 1 {
				t.Logf("trial %d: first resend: %v; retry: %v; copies on orders: 0 (claim left, never resent)", i, err1, err2)
			}
		}
		if doubled > 0 && stuck > 0 {
			break
		}
	}
	if doubled > 0 {
		t.Errorf("%d dead letters resent twice (claim given back after an unknown Produce outcome)", doubled)
	}
	if stuck > 0 {
		t.Errorf("%d dead letters never resent but refused as already resent (claim committed, caller told it failed)", stuck)
	}
}
