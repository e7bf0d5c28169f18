package remoting

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// openCore opens a single-node broker for the lock table.
func openCore(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Log: clog.Config{SegmentSizeBytes: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if !waitUntil(10*time.Second, b.Ready) {
		t.Fatal("broker not ready")
	}
	return b
}

// TestLockTable: a queue locked by one client is refused to another until
// the holder unlocks it or lets it expire; renewing keeps it; the broker
// name is part of the queue's identity.
func TestLockTable(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLocks(openCore(t), nil, 60*time.Second, nil)
	l.now = func() time.Time { return now }
	call := func(h func(context.Context, *Conn, *command.RemotingCommand) *command.RemotingCommand, client string, mqs ...messageQueue) []messageQueue {
		body, _ := json.Marshal(lockBody{ConsumerGroup: "OG", ClientID: client, MQSet: mqs})
		r := h(context.Background(), nil, &command.RemotingCommand{Body: body, ExtFields: map[string]string{}})
		var out struct {
			LockOKMQSet []messageQueue `json:"lockOKMQSet"`
		}
		if len(r.Body) > 0 {
			if err := json.Unmarshal(r.Body, &out); err != nil {
				t.Fatal(err)
			}
		}
		return out.LockOKMQSet
	}
	q0 := messageQueue{Topic: "T", BrokerName: "b-1", QueueID: 0}
	q0b := messageQueue{Topic: "T", BrokerName: "b-2", QueueID: 0}
	if got := call(l.lock, "A", q0); len(got) != 1 {
		t.Fatalf("A's first lock: %v", got)
	}
	if got := call(l.lock, "B", q0, q0b); len(got) != 1 || got[0] != q0b {
		t.Fatalf("B locked %v, want only the other broker's queue 0", got)
	}
	now = now.Add(50 * time.Second)
	if got := call(l.lock, "A", q0); len(got) != 1 {
		t.Fatalf("A's renewal: %v", got)
	}
	now = now.Add(50 * time.Second) // 50 s after the renewal: still A's
	if got := call(l.lock, "B", q0); len(got) != 0 {
		t.Fatalf("B took a renewed lock: %v", got)
	}
	call(l.unlock, "B", q0) // not B's: no effect
	if got := call(l.lock, "B", q0); len(got) != 0 {
		t.Fatal("B's unlock released A's lock")
	}
	call(l.unlock, "A", q0) // rebalance: A lets go
	if got := call(l.lock, "B", q0); len(got) != 1 {
		t.Fatalf("B after A's unlock: %v", got)
	}
	now = now.Add(61 * time.Second) // B stopped renewing
	if got := call(l.lock, "A", q0); len(got) != 1 {
		t.Fatalf("A after B's lock expired: %v", got)
	}
}

// TestLockFreedNotifies: a member refused a queue hears (through a
// rebalance notice to its group) as soon as the queue is unlocked or its
// lock expires, instead of at its next 20 s rebalance.
func TestLockFreedNotifies(t *testing.T) {
	notified := make(chan string, 4)
	l := newLocks(openCore(t), nil, 300*time.Millisecond, func(g string) { notified <- g })
	lock := func(h func(context.Context, *Conn, *command.RemotingCommand) *command.RemotingCommand, client string) {
		body, _ := json.Marshal(lockBody{ConsumerGroup: "OG", ClientID: client, MQSet: []messageQueue{{Topic: "T", BrokerName: "b", QueueID: 1}}})
		h(context.Background(), nil, &command.RemotingCommand{Body: body, ExtFields: map[string]string{}})
	}
	lock(l.lock, "A")
	lock(l.lock, "B") // refused: B waits
	lock(l.unlock, "A")
	select {
	case g := <-notified:
		if g != "OG" {
			t.Fatalf("notified %q", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notice after the unlock")
	}
	lock(l.lock, "A")
	lock(l.lock, "B") // refused again; A never renews
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Fatal("no notice after the expiry")
	}
}

// TestRealClientOrderlyGroup: an orderly group of two members over 4
// queues consumes 1000 messages over 20 sharding keys. The second member
// joins half way, so queues change hands in a rebalance. Per key, every
// message is first consumed after its predecessor (order holds), none is
// lost, and no queue is consumed by a member again after it handed the
// queue over (never two members on one queue).
func TestRealClientOrderlyGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	if raceEnabled {
		// As in TestRealClientOrderly: the client's orderly consumer races
		// on its own process queue (putMessage vs takeMessages on an
		// unlocked treemap). Run this test without -race.
		t.Skip("rocketmq-client-go's orderly consumer has a data race of its own")
	}
	quietClient()
	// The Go client does not unlock queues it loses in a rebalance: the
	// new owner gets them when the broker's lock expires. Shorten that
	// (safe here: the old owner drops the queue at once in the rebalance).
	old := lockExpiry
	lockExpiry = 4 * time.Second
	t.Cleanup(func() { lockExpiry = old })
	e := start(t, 0)
	topic, group := uniq("OrderTopic"), uniq("cg_order")
	createTopic(t, e.b, topic, 4)
	const keys, total = 20, 1000

	var mu sync.Mutex
	next := map[string]int{}     // key -> next seq never consumed yet
	owners := map[int][]string{} // queue -> members in the order they consumed it
	var violations []string
	handler := func(member string) func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		return func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				key, seqText, _ := strings.Cut(string(m.Body), "/")
				seq, _ := strconv.Atoi(seqText)
				switch {
				case seq == next[key]:
					next[key]++
				case seq > next[key]:
					violations = append(violations, fmt.Sprintf("%s got %s/%d before %s/%d", member, key, seq, key, next[key]))
				}
				q := m.Queue.QueueId
				if o := owners[q]; len(o) == 0 || o[len(o)-1] != member {
					owners[q] = append(owners[q], member)
				}
			}
			return consumer.ConsumeSuccess, nil
		}
	}
	newOrderly := func(member string) rocketmq.PushConsumer {
		c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver([]string{e.nsAddr})),
			consumer.WithGroupName(group), consumer.WithInstance(member), consumer.WithConsumerOrder(true),
			consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe(topic, consumer.MessageSelector{}, handler(member)); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Shutdown() })
		return c
	}
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver([]string{e.nsAddr})),
		producer.WithGroupName(uniq("pg_order")), producer.WithQueueSelector(producer.NewHashQueueSelector()),
		producer.WithSendMsgTimeout(5*time.Second), producer.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	sendRange := func(from, to int) {
		for i := from; i < to; i++ {
			key := fmt.Sprintf("key%02d", i%keys)
			m := primitive.NewMessage(topic, []byte(fmt.Sprintf("%s/%d", key, i/keys)))
			m.WithShardingKey(key)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := p.SendSync(ctx, m)
			cancel()
			if err != nil || res.Status != primitive.SendOK {
				t.Fatalf("send %d: %v %v", i, res, err)
			}
		}
	}
	consumedAll := func(upTo int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, v := range next {
				n += v
			}
			return n >= upTo
		}
	}
	t0 := time.Now()
	newOrderly("member-a")
	sendRange(0, total/2)
	t.Logf("first half sent after %v", time.Since(t0))
	if !waitUntil(60*time.Second, consumedAll(total/2)) {
		t.Fatalf("first half not consumed: %v", next)
	}
	t.Logf("first half consumed after %v", time.Since(t0))
	newOrderly("member-b")
	sendRange(total/2, total)
	t.Logf("second half sent after %v", time.Since(t0))
	if !waitUntil(90*time.Second, consumedAll(total)) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("not all consumed: %v; violations %v", next, violations)
	}
	t.Logf("all consumed after %v", time.Since(t0))
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("order broken: %v", violations[:min(len(violations), 10)])
	}
	for q, o := range owners {
		seen := map[string]bool{}
		for _, m := range o {
			if seen[m] {
				t.Fatalf("queue %d went back to %s after a hand-over: %v", q, m, o)
			}
			seen[m] = true
		}
	}
	t.Logf("queue owners over time: %v", owners)
}
