package main

// A three-process cluster behind the RocketMQ front door: the Raft leader
// is killed with SIGKILL while a rocketmq-client-go producer sends; every
// acknowledged message must survive on the two remaining nodes.

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"github.com/conflux-mq/conflux/internal/testport"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// sharedPorts returns n distinct ports that are free on every one of hosts,
// holding them until all are chosen. It skips the test if a host cannot
// be bound at all.
func sharedPorts(t *testing.T, hosts []string, n int) []int {
	t.Helper()
	for _, h := range hosts {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
		if err != nil {
			t.Skipf("cannot bind %s (needs 127.0.0.0/8 routed to lo, as on Linux): %v", h, err)
		}
		ln.Close()
	}
	ports, err := testport.Pick(hosts, n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// ackedSend is one send that returned SEND_OK.
type ackedSend struct {
	body        string
	msgID       string
	offsetMsgID string
	brokerName  string
	queue       int
	queueOffset int64
	at          time.Time
}

func TestRocketMQClusterLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cs := startCluster3(t, "namesrv-addr", "broker-addr")
	nodes, bin := cs.nodes, cs.bin
	t.Logf("ports: %v", cs.ports)
	leader := waitLeader(t, nodes)
	t.Logf("leader: %s", nodes[leader].name)

	const topic, group = "FailoverTopic", "cg_failover"
	runAdmin(t, bin, "--http-addr", cs.addr(leader, "http-addr"), "topics", "create", topic, "--queues", "4")

	// The client's logger is a process-wide global that its goroutines
	// read at any time: set it once, the way the bench command does, never
	// again while another test's client may still be running.
	quietRlogOnce.Do(func() { rlog.SetLogger(quietRlog{}) })
	nsAddrs := cs.addrs("namesrv-addr")
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver(nsAddrs)),
		producer.WithGroupName("pg_failover"), producer.WithInstanceName("failover-producer"),
		producer.WithSendMsgTimeout(3*time.Second), producer.WithRetry(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })

	// The producer sends one message at a time until stopped.
	var (
		mu       sync.Mutex
		acked    []ackedSend
		failures []time.Time
		attempts int
	)
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			body := fmt.Sprintf("failover-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte(body)))
			cancel()
			now := time.Now()
			mu.Lock()
			attempts++
			if err == nil && res.Status == primitive.SendOK {
				acked = append(acked, ackedSend{body: body, msgID: res.MsgID, offsetMsgID: res.OffsetMsgID,
					brokerName: res.MessageQueue.BrokerName, queue: res.MessageQueue.QueueId, queueOffset: res.QueueOffset, at: now})
			} else {
				failures = append(failures, now)
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			} else {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	stopProducer := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	}
	t.Cleanup(stopProducer)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}

	// Some messages before the kill.
	waitFor(t, "acknowledged sends before the kill", 30*time.Second, nodes, func() (bool, string) {
		k := ackedCount()
		return k >= 50, fmt.Sprintf("%d acknowledged", k)
	})
	before := ackedCount()
	killedAt := time.Now()
	if err := nodes[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-nodes[leader].done
	t.Logf("killed %s after %d acknowledged sends", nodes[leader].name, before)
	var survivors []*node
	for i, n := range nodes {
		if i != leader {
			survivors = append(survivors, n)
		}
	}

	newLeader := waitLeader(t, survivors)
	t.Logf("new leader %s elected %s after the kill", survivors[newLeader].name, time.Since(killedAt).Round(time.Millisecond))

	// The survivors' name servers move the dead node's broker name to a
	// live node once the new leader has not heard from it for 3 s.
	dead := cs.addr(leader, "broker-addr")
	waitFor(t, "routes without the killed node as a master", 20*time.Second, survivors, func() (bool, string) {
		for i := range nodes {
			if i == leader {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			masters, err := masterBrokers(ctx, cs.addr(i, "namesrv-addr"))
			cancel()
			if err != nil || len(masters) == 0 || slices.Contains(masters, dead) {
				return false, fmt.Sprintf("%s's name server: masters %v, %v", nodes[i].name, masters, err)
			}
		}
		return true, ""
	})
	t.Logf("routes moved off the killed node %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// Sends succeed again: every node takes writes under its own broker
	// name, so the client's retry goes to a live node at once rather than
	// after its next route refresh (30 s). Then a few more seconds.
	var firstOK time.Time
	waitFor(t, "an acknowledged send after the kill", 20*time.Second, survivors, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range acked {
			if a.at.After(killedAt) {
				firstOK = a.at
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d failed sends since the kill", len(failures))
	})
	time.Sleep(3 * time.Second)
	stopProducer()

	mu.Lock()
	failedAfter := 0
	var lastFail time.Time
	for _, f := range failures {
		if f.After(killedAt) {
			failedAfter++
			lastFail = f
		}
	}
	total, nAcked := attempts, len(acked)
	sent := append([]ackedSend(nil), acked...)
	mu.Unlock()
	lastFailAfter := "none"
	if failedAfter > 0 {
		lastFailAfter = lastFail.Sub(killedAt).Round(time.Millisecond).String()
	}
	t.Logf("sends: %d attempts, %d acknowledged (%d after the kill), %d failed (%d after the kill); first acknowledged send %s after the kill, last failure after it: %s",
		total, nAcked, nAcked-before, len(failures), failedAfter, firstOK.Sub(killedAt).Round(time.Millisecond), lastFailAfter)

	// Which broker front door stored each acknowledged message, from the
	// address in its offsetMsgId (IPv4, port, physical offset in hex).
	byBroker := map[string]int{}
	for _, a := range sent {
		host := "?"
		if b, err := hex.DecodeString(a.offsetMsgID); err == nil && len(b) == 16 {
			host = fmt.Sprintf("%s:%d", net.IP(b[:4]), binary.BigEndian.Uint32(b[4:8]))
		}
		byBroker[host]++
	}
	t.Logf("acknowledged sends by the broker address in their offsetMsgId: %v", byBroker)
	// An election takes a second or two; sends wait for it on the
	// survivors. 10 s leaves room for a slow CI machine.
	if gap := firstOK.Sub(killedAt); gap > 10*time.Second {
		t.Errorf("no send acknowledged for %s after the kill", gap.Round(time.Millisecond))
	}
	if k := byBroker[dead]; k > before+1 {
		t.Errorf("%d acknowledged sends carry the killed leader's address %s, but only %d were sent before the kill", k, dead, before)
	}

	// Every acknowledged message is consumed from the survivors, at the
	// queue and offset its send reported.
	want := map[string]ackedSend{}
	for _, a := range sent {
		want[a.body] = a
	}
	got := map[string]int{}
	var bad []string
	at := map[string][]string{} // body -> where it was consumed
	done := make(chan struct{})
	var cmu sync.Mutex
	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver(nsAddrs)),
		consumer.WithGroupName(group), consumer.WithInstance("failover-consumer"),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		cmu.Lock()
		defer cmu.Unlock()
		for _, m := range msgs {
			body := string(m.Body)
			got[body]++
			at[body] = append(at[body], fmt.Sprintf("%s/%d offset %d id %s", m.Queue.BrokerName, m.Queue.QueueId, m.QueueOffset, m.MsgId))
		}
		for body := range want {
			if got[body] == 0 {
				return consumer.ConsumeSuccess, nil
			}
		}
		select {
		case <-done:
		default:
			close(done)
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	consumeStart := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	cmu.Lock()
	defer cmu.Unlock()
	var lost []string
	for body, a := range want {
		if got[body] == 0 {
			lost = append(lost, fmt.Sprintf("%s (queue %d offset %d, offsetMsgId %s, acknowledged %s after the kill)",
				body, a.queue, a.queueOffset, a.offsetMsgID, a.at.Sub(killedAt).Round(time.Millisecond)))
		}
	}
	// A send whose answer was lost in the kill is retried and may be
	// stored twice (at-least-once, one message id): every copy is fine as
	// long as one sits where the acknowledged send said.
	dups := 0
	for body, k := range got {
		if k > 1 {
			dups++
			t.Logf("%s consumed %d times: %v", body, k, at[body])
		}
	}
	for body, a := range want {
		if where := fmt.Sprintf("%s/%d offset %d id %s", a.brokerName, a.queue, a.queueOffset, a.msgID); got[body] > 0 && !slices.Contains(at[body], where) {
			bad = append(bad, fmt.Sprintf("%s acknowledged at %s, consumed at %v", body, where, at[body]))
		}
	}
	t.Logf("consumed %d distinct messages (%d more than once) in %s; %d acknowledged", len(got), dups,
		time.Since(consumeStart).Round(time.Millisecond), len(want))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost: %s", len(lost), strings.Join(lost[:min(len(lost), 20)], "; "))
	}
	if len(bad) > 0 {
		t.Errorf("%d messages not where their send said: %s", len(bad), strings.Join(bad[:min(len(bad), 20)], "; "))
	}
	if nAcked-before == 0 {
		t.Errorf("no send acknowledged after the kill")
	}
}
