package remoting

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/core/broker"
)

// storedBodies returns every body stored in topic, over all its queues.
func storedBodies(t *testing.T, b *broker.Broker, topic string) map[string]int {
	t.Helper()
	out := map[string]int{}
	tp, ok := b.Topic(topic)
	if !ok {
		return out
	}
	for q := range tp.Queues {
		lo, _ := b.QueueRange(topic, q)
		ms, _, err := b.Fetch(topic, q, lo, broker.FetchOptions{MaxMessages: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			out[string(m.Body())]++
			m.Release()
		}
	}
	return out
}

// TestRealClientAsyncAndOneWaySends: the Go SDK's async sends are answered
// with their queue offsets, and its one-way sends (which the SDK sends with
// flag 0, like any request) are all stored.
func TestRealClientAsyncAndOneWaySends(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	e := start(t, 0)
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver([]string{e.nsAddr})),
		producer.WithGroupName("pg_modes"), producer.WithInstanceName("modes-producer"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const n = 20
	var mu sync.Mutex
	var wg sync.WaitGroup
	acked := map[string]*primitive.SendResult{}
	for i := range n {
		body := fmt.Sprint("async-", i)
		wg.Add(1)
		err := p.SendAsync(ctx, func(_ context.Context, r *primitive.SendResult, err error) {
			defer wg.Done()
			if err != nil || r.Status != primitive.SendOK {
				t.Errorf("async send %s: %v %v", body, r, err)
				return
			}
			mu.Lock()
			acked[body] = r
			mu.Unlock()
		}, primitive.NewMessage("ModesTopic", []byte(body)))
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for body, r := range acked {
		ms, _, err := e.b.Fetch("ModesTopic", uint32(r.MessageQueue.QueueId), uint64(r.QueueOffset), broker.FetchOptions{MaxMessages: 1})
		if err != nil || len(ms) != 1 || string(ms[0].Body()) != body {
			t.Fatalf("async %s not at its acknowledged offset %d/%d: %v", body, r.MessageQueue.QueueId, r.QueueOffset, err)
		}
		ms[0].Release()
	}
	if len(acked) != n {
		t.Fatalf("%d of %d async sends acknowledged", len(acked), n)
	}

	for i := range n {
		if err := p.SendOneWay(ctx, primitive.NewMessage("ModesTopic", []byte(fmt.Sprint("oneway-", i)))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := storedBodies(t, e.b, "ModesTopic")
		oneway := 0
		for body, c := range got {
			if c != 1 {
				t.Fatalf("%s stored %d times", body, c)
			}
			if strings.HasPrefix(body, "oneway-") {
				oneway++
			}
		}
		if oneway == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d one-way messages stored", oneway, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
