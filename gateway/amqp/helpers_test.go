package amqp

import (
	"net"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft"
)

// node is one in-process broker with its AMQP front door on 127.0.0.1.
type node struct {
	b   *broker.Broker
	srv *Server
	url string
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startNode(t *testing.T, tune func(*Config)) *node {
	t.Helper()
	return startNodeWith(t, nil, tune)
}

// startNodeWith is startNode with the broker's config tuned too.
func startNodeWith(t *testing.T, tuneBroker func(*broker.Config), tune func(*Config)) *node {
	t.Helper()
	bcfg := broker.Config{DataDir: t.TempDir(), Log: clog.Config{SegmentSizeBytes: 4 << 20},
		Raft: raft.Config{TickInterval: 20 * time.Millisecond}}
	if tuneBroker != nil {
		tuneBroker(&bcfg)
	}
	b, err := broker.Open(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	waitFor(t, 10*time.Second, "the broker ready", b.Ready)
	cfg := Config{Broker: b, NodeID: 1}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &node{b: b, srv: srv, url: "amqp://guest:guest@" + ln.Addr().String() + "/"}
}

// dial connects a real amqp091-go client.
func dial(t *testing.T, url string) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.DialConfig(url, amqp091.Config{Heartbeat: 10 * time.Second, Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func openCh(t *testing.T, c *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// collector gathers deliveries from a consumer.
type collector struct {
	mu sync.Mutex
	ds []amqp091.Delivery
}

// run collects from in, acking each delivery when ack is set.
func (c *collector) run(in <-chan amqp091.Delivery, ack bool) {
	go func() {
		for d := range in {
			if ack {
				_ = d.Ack(false)
			}
			c.mu.Lock()
			c.ds = append(c.ds, d)
			c.mu.Unlock()
		}
	}()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ds)
}

func (c *collector) all() []amqp091.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp091.Delivery(nil), c.ds...)
}

func (c *collector) waitN(t *testing.T, n int) []amqp091.Delivery {
	t.Helper()
	waitFor(t, 15*time.Second, "deliveries", func() bool { return c.len() >= n })
	return c.all()
}

// closeErr waits for a channel's close notification.
func closeErr(t *testing.T, ch <-chan *amqp091.Error) *amqp091.Error {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no close notification")
		return nil
	}
}
