package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestAMQPClusterLeaderKill: three `conflux serve` processes. An
// amqp091-go publisher on a follower sends persistent messages one at a
// time in confirm mode (on a nack, an error or no confirm within 15 s it
// reconnects and sends the same message again). The leader is killed
// with SIGKILL mid-way. Then a consumer on the new leader must find every
// confirmed message, the first copies in publish order.
func TestAMQPClusterLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cs := startCluster3(t, "amqp-addr")
	nodes := cs.nodes
	leader := waitLeader(t, nodes)
	pubNode := (leader + 1) % 3
	url := func(i int) string { return "amqp://guest:guest@" + cs.addr(i, "amqp-addr") + "/" }
	t.Logf("leader %s; publisher on %s", nodes[leader].name, nodes[pubNode].name)

	dial := func(u string) (*amqp091.Connection, *amqp091.Channel, error) {
		c, err := amqp091.DialConfig(u, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
		if err != nil {
			return nil, nil, err
		}
		ch, err := c.Channel()
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		return c, ch, nil
	}
	c, ch, err := dial(url(pubNode))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orders", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()

	var mu sync.Mutex
	var confirmed []string
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		var c *amqp091.Connection
		var ch *amqp091.Channel
		defer func() {
			if c != nil {
				_ = c.Close()
			}
		}()
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			if c == nil || c.IsClosed() || ch.IsClosed() {
				if c != nil {
					_ = c.Close()
				}
				var err error
				if c, ch, err = dial(url(pubNode)); err == nil {
					err = ch.Confirm(false)
				}
				if err != nil {
					c = nil
					time.Sleep(200 * time.Millisecond) // back off before dialling again
					continue
				}
			}
			body := fmt.Sprint("m-", i)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "orders", false, false,
				amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(body)})
			ok := false
			if err == nil {
				ok, err = dc.WaitContext(ctx)
			}
			cancel()
			if err == nil && ok {
				mu.Lock()
				confirmed = append(confirmed, body)
				mu.Unlock()
				i++
				continue
			}
			_ = c.Close() // nacked or no answer: the same message again on a new connection
			c = nil
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(confirmed)
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	}()

	waitFor(t, "confirmed publishes before the kill", 30*time.Second, nodes, func() (bool, string) {
		return count() >= 100, fmt.Sprintf("%d confirmed", count())
	})
	if err := nodes[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-nodes[leader].done
	before := count()
	t.Logf("killed %s after %d confirmed publishes", nodes[leader].name, before)
	var survivors []*node
	var idx []int
	for i := range nodes {
		if i != leader {
			survivors, idx = append(survivors, nodes[i]), append(idx, i)
		}
	}
	waitFor(t, "a confirmed publish after the kill", 60*time.Second, survivors, func() (bool, string) {
		return count() > before, fmt.Sprintf("%d confirmed", count())
	})
	t.Logf("first confirm after the kill: %s", time.Since(killed).Round(10*time.Millisecond))
	waitFor(t, "confirmed publishes after the kill", 60*time.Second, survivors, func() (bool, string) {
		return count() >= before+100, fmt.Sprintf("%d confirmed", count())
	})
	close(stop)
	<-stopped

	// Deliveries come from the leader: consume there.
	newLeader := idx[waitLeader(t, survivors)]
	c, ch, err = dial(url(newLeader))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ch.Qos(200, 0, false); err != nil {
		t.Fatal(err)
	}
	in, err := ch.Consume("orders", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := append([]string(nil), confirmed...)
	mu.Unlock()
	seen := map[string]bool{}
	var order []int
	dups := 0
	deadline := time.After(60 * time.Second)
	for len(seen) < len(want) {
		select {
		case d := <-in:
			body := string(d.Body)
			if seen[body] {
				dups++
			} else {
				seen[body] = true
				n, _ := strconv.Atoi(strings.TrimPrefix(body, "m-"))
				order = append(order, n)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			var missing []string
			for _, b := range want {
				if !seen[b] {
					missing = append(missing, b)
				}
			}
			if len(missing) > 5 {
				missing = append(missing[:5], "...")
			}
			t.Fatalf("%d of %d confirmed messages delivered; missing %v", len(seen), len(want), missing)
		}
	}
	for k := 1; k < len(order); k++ {
		if order[k] < order[k-1] {
			t.Fatalf("out of order: m-%d after m-%d", order[k], order[k-1])
		}
	}
	t.Logf("%d confirmed messages all delivered in order (%d duplicates from resends)", len(want), dups)
}
