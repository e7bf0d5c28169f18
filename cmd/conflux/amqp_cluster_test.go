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
// amqp091-go publisher on one follower sends persistent messages one at a
// time in confirm mode (on a nack, an error or no confirm within 15 s it
// reconnects and sends the same message again). A consumer connects to
// the other follower, which hands its connection to the leader's door;
// when its connection ends it connects to the same node again. The
// leader is killed with SIGKILL mid-way. The consumer must get every
// confirmed message, the first copies in publish order (redeliveries of
// what was unacknowledged at the kill are allowed).
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

	// The consumer, on the follower the publisher does not use.
	consNode := (leader + 2) % 3
	var cmu sync.Mutex
	seen := map[string]bool{}
	var order []int
	dups, sessions := 0, 0
	cstop, cstopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(cstopped)
		for {
			select {
			case <-cstop:
				return
			default:
			}
			c, ch, err := dial(url(consNode))
			if err == nil {
				err = ch.Qos(100, 0, false)
			}
			var in <-chan amqp091.Delivery
			if err == nil {
				in, err = ch.Consume("orders", "", false, false, false, false, nil)
			}
			if err != nil {
				if c != nil {
					_ = c.Close()
				}
				time.Sleep(200 * time.Millisecond) // back off before dialling again
				continue
			}
			cmu.Lock()
			sessions++
			cmu.Unlock()
		consume:
			for {
				select {
				case d, ok := <-in:
					if !ok {
						break consume // the connection ended: connect again
					}
					body := string(d.Body)
					cmu.Lock()
					if seen[body] {
						dups++
					} else {
						seen[body] = true
						n, _ := strconv.Atoi(strings.TrimPrefix(body, "m-"))
						order = append(order, n)
					}
					cmu.Unlock()
					_ = d.Ack(false)
				case <-cstop:
					_ = c.Close()
					return
				}
			}
			_ = c.Close()
		}
	}()
	defer func() {
		select {
		case <-cstop:
		default:
			close(cstop)
		}
		<-cstopped
	}()

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
	for i := range nodes {
		if i != leader {
			survivors = append(survivors, nodes[i])
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

	mu.Lock()
	want := append([]string(nil), confirmed...)
	mu.Unlock()
	waitFor(t, "every confirmed message at the consumer", 60*time.Second, survivors, func() (bool, string) {
		cmu.Lock()
		defer cmu.Unlock()
		var missing []string
		for _, b := range want {
			if !seen[b] {
				missing = append(missing, b)
			}
		}
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		return len(missing) == 0, fmt.Sprintf("%d confirmed, missing %v", len(want), missing)
	})
	close(cstop)
	<-cstopped
	cmu.Lock()
	defer cmu.Unlock()
	for k := 1; k < len(order); k++ {
		if order[k] < order[k-1] {
			t.Fatalf("out of order: m-%d after m-%d", order[k], order[k-1])
		}
	}
	t.Logf("%d confirmed messages all delivered in order through %s (%d redeliveries, %d consumer sessions)",
		len(want), nodes[consNode].name, dups, sessions)
}
