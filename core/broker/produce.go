package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// Message is what a producer sends. Topic is the target; the broker
// fills in the id (unless set), the tag hash and the destinations.
type Message struct {
	batch.Message
	// Queue picks the queue; -1 chooses by ShardingKey (or spreads the
	// messages round robin when it is empty).
	Queue       int
	ShardingKey string
	// Also routes the same stored message to more queues (an AMQP
	// exchange bound to several queues): one copy in the log, one index
	// entry per destination.
	Also []Route
	// DeliverAt delays the message (sched.go): it is stored in TimerTopic
	// and copied to its topic and queue at that time. Zero or past: now.
	DeliverAt time.Time
	// Half stores a transactional half message, invisible to consumers
	// until EndTransaction commits it (property PGROUP names the producer
	// group asked at check-back).
	Half bool

	// A copy made by the scheduler carries where it came from.
	scheduledFrom uint64
	isCopy        bool
}

// Route is one more (topic, queue) a message is indexed in.
type Route struct {
	Topic string
	Queue uint32
}

// Result says where a produced message went.
type Result struct {
	ID          [16]byte
	Index       uint64 // Raft index of its entry
	PhysOffset  uint64 // the same on every replica
	Queue       uint32
	QueueOffset uint64
	// Also has the queue offset in each of Message.Also, in order.
	Also []uint64
}

// Produce stores msgs and returns once they are committed on a majority and
// applied here. Concurrent calls share Raft entries (group commit). The
// messages of one call reach the log in the order given, even when they
// span several entries.
//
// While the disk alarm is on (disk.go) it refuses with ErrDiskFull.
func (b *Broker) Produce(ctx context.Context, msgs []Message) ([]Result, error) {
	if err := b.checkDisk(); err != nil {
		return nil, err
	}
	return b.produce(ctx, msgs)
}

// ProduceCopies stores a door's copies of messages the broker already
// holds (AMQP dead letters and expired messages): Produce without the disk
// alarm. They are bounded by what is stored, and refusing them would block
// the acknowledgements and expiries that cause them.
func (b *Broker) ProduceCopies(ctx context.Context, msgs []Message) ([]Result, error) {
	return b.produce(ctx, msgs)
}

// produce is Produce without the disk alarm, for the broker's own copies
// of messages it already stores (dead letters): they are bounded by what
// is stored, and refusing them would block acks.
func (b *Broker) produce(ctx context.Context, msgs []Message) ([]Result, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	reqs := make([]*produceReq, 0, len(msgs))
	for k := range msgs {
		r, err := b.route(ctx, &msgs[k])
		if err != nil {
			return nil, err
		}
		if k > 0 {
			r.prev = reqs[k-1]
		}
		reqs = append(reqs, r)
	}
	return b.prod.submit(ctx, reqs)
}

// route resolves a message's destination: its topic (created on first use
// when allowed) and queue.
func (b *Broker) route(ctx context.Context, m *Message) (*produceReq, error) {
	t, err := b.topicForWrite(ctx, m.Topic)
	if err != nil {
		return nil, err
	}
	q := m.Queue
	switch {
	case q >= int(t.Queues):
		return nil, fmt.Errorf("%w: %s has %d queues, not %d", ErrBadQueue, t.Name, t.Queues, q)
	case q < 0 && m.ShardingKey != "":
		h := fnv.New32a()
		_, _ = h.Write([]byte(m.ShardingKey))
		q = int(h.Sum32() % t.Queues)
	case q < 0:
		q = int(b.prod.rr.Add(1) % uint64(t.Queues))
	}
	msg := m.Message
	msg.Properties = stripInternal(msg.Properties)
	if m.isCopy {
		msg.Properties = append(msg.Properties, batch.Property{Key: PropScheduledFrom, Value: strconv.FormatUint(m.scheduledFrom, 10)})
	}
	if msg.ID == ([16]byte{}) {
		msg.ID = b.newMessageID()
	}
	if msg.BornUnixMs == 0 {
		msg.BornUnixMs = time.Now().UnixMilli()
	}
	tagHash := batch.JavaStringHash(msg.Tags)
	msg.Destinations = []batch.Destination{{Topic: t.Name, QueueID: uint32(q), TagHash: tagHash}}
	for _, r := range m.Also {
		at, err := b.topicForWrite(ctx, r.Topic)
		if err != nil {
			return nil, err
		}
		if r.Queue >= at.Queues {
			return nil, fmt.Errorf("%w: %s has %d queues, not %d", ErrBadQueue, at.Name, at.Queues, r.Queue)
		}
		msg.Destinations = append(msg.Destinations, batch.Destination{Topic: r.Topic, QueueID: r.Queue, TagHash: tagHash})
	}
	if m.DeliverAt.IsZero() || !m.DeliverAt.After(time.Now()) {
		// Routers see the message as it is stored now; a delayed one
		// when its copy is made (it goes through route again then).
		b.routeMore(&msg, m, tagHash)
	}
	sys, scheduled, err := b.scheduleRoute(ctx, m, &msg, t.Name, q)
	if err != nil {
		return nil, err
	}
	if scheduled {
		msg.Destinations = []batch.Destination{{Topic: sys, QueueID: 0, TagHash: tagHash}}
	}
	if len(msg.Destinations) > batch.MaxDestinations {
		return nil, fmt.Errorf("broker: %d destinations, over %d", len(msg.Destinations), batch.MaxDestinations)
	}
	size := batch.EncodedSize(&msg)
	if size > b.cfg.MaxBatchBytes-batch.HeaderBytes || size > batch.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	return &produceReq{msg: msg, size: size, done: make(chan struct{})}, nil
}

// MaxMessageBytes is the largest encoded message Produce accepts (one
// message must fit one batch).
func (b *Broker) MaxMessageBytes() int {
	return min(b.cfg.MaxBatchBytes-batch.HeaderBytes, batch.MaxMessageBytes)
}

// newMessageID: this node's id, a sequence and the time — unique in the
// cluster without coordination.
func (b *Broker) newMessageID() [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint64(id[:], b.cfg.NodeID<<48|b.prod.seq.Add(1)&(1<<48-1))
	binary.BigEndian.PutUint64(id[8:], uint64(time.Now().UnixNano()))
	return id
}

type produceReq struct {
	msg  batch.Message
	size int
	// prev is the request before this one in the same Produce call. The
	// loop may cut a call into several groups, and groups are proposed
	// concurrently; a request whose prev is in an earlier group waits
	// until prev is stored, so the call's order is the log's order even
	// when an earlier group is dropped and retried.
	prev  *produceReq
	group uint64 // the group carrying it, set by the loop before sending
	res   Result
	err   error
	done  chan struct{}
}

// producer groups concurrent produce requests into batches (one Raft entry
// each) and keeps up to MaxInflightBatches of them in flight.
type producer struct {
	b      *Broker
	reqs   chan *produceReq
	slots  chan struct{}
	rr     atomic.Uint64
	seq    atomic.Uint64
	stop   chan struct{}
	exited chan struct{} // closed once loop and every send have returned
	wg     sync.WaitGroup
	closed atomic.Bool
}

func newProducer(b *Broker) *producer {
	p := &producer{
		b:      b,
		reqs:   make(chan *produceReq, b.cfg.MaxBatchMessages),
		slots:  make(chan struct{}, b.cfg.MaxInflightBatches),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *producer) submit(ctx context.Context, reqs []*produceReq) ([]Result, error) {
	for _, r := range reqs {
		select {
		case p.reqs <- r:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.stop:
			return nil, ErrClosed
		}
	}
	out := make([]Result, len(reqs))
	for k, r := range reqs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.exited:
			// The request may have slipped into the channel after the
			// loop stopped reading it: nobody will answer it.
			select {
			case <-r.done:
			default:
				return nil, ErrClosed
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		out[k] = r.res
	}
	return out, nil
}

// loop takes a slot, then gathers whatever requests are waiting (at least
// one) into a batch: under load batches grow by themselves.
func (p *producer) loop() {
	defer p.wg.Done()
	var gseq uint64
	for {
		var first *produceReq
		select {
		case first = <-p.reqs:
		case <-p.stop:
			p.failQueued()
			return
		}
		p.slots <- struct{}{}
		gseq++
		first.group = gseq
		group := []*produceReq{first}
		size := batch.HeaderBytes + first.size
	gather:
		for len(group) < p.b.cfg.MaxBatchMessages {
			select {
			case r := <-p.reqs:
				if size+r.size > p.b.cfg.MaxBatchBytes {
					p.wg.Add(1)
					go p.send(group)
					p.slots <- struct{}{}
					group, size = nil, batch.HeaderBytes
					gseq++
				}
				r.group = gseq
				group = append(group, r)
				size += r.size
			default:
				break gather
			}
		}
		p.wg.Add(1)
		go p.send(group)
	}
}

// send encodes one batch, proposes it and hands each request its result.
func (p *producer) send(group []*produceReq) {
	defer p.wg.Done()
	defer func() { <-p.slots }()
	group = inCallOrder(group)
	if len(group) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*p.b.cfg.ProposeTimeout)
	defer cancel()
	res, err := p.b.proposeBatch(ctx, group, nil)
	if err != nil {
		finish(group, err)
		return
	}
	for k, r := range group {
		r.res = res[k]
		close(r.done)
	}
}

// inCallOrder waits until each request's predecessor from an earlier
// group has its answer, and fails a request whose predecessor failed (a
// call's later message must not be stored without its earlier ones). It
// returns the requests still to propose. Predecessors are always in the
// same or an earlier group, so the waits cannot form a cycle.
func inCallOrder(group []*produceReq) []*produceReq {
	live := make([]*produceReq, 0, len(group))
	for _, r := range group {
		if pr := r.prev; pr != nil {
			if pr.group != r.group {
				<-pr.done
			}
			if pr.err != nil {
				r.err = pr.err
				close(r.done)
				continue
			}
		}
		live = append(live, r)
	}
	return live
}

// proposeBatch stores routed requests as one entry (attempts made while
// keep, if not nil, says so) and returns each one's result, in order.
func (b *Broker) proposeBatch(ctx context.Context, group []*produceReq, keep func() bool) ([]Result, error) {
	id := b.node.NewProposalID()
	var enc batch.Encoder
	enc.Reset(id, time.Now().UnixMilli())
	for _, r := range group {
		if err := enc.Add(&r.msg); err != nil {
			return nil, fmt.Errorf("broker: encode: %w", err)
		}
	}
	start := time.Now()
	idx, err := b.proposeWhile(ctx, enc.Bytes(), keep)
	if err != nil {
		return nil, err
	}
	res, ok := b.sm.takeResult(id)
	if !ok || len(res.offsets) != len(group) {
		return nil, fmt.Errorf("broker: entry %d applied without its result", idx)
	}
	b.m.produced(len(group), time.Since(start))
	out := make([]Result, len(group))
	for k, r := range group {
		d := r.msg.Destinations[0]
		out[k] = Result{ID: r.msg.ID, Index: idx, PhysOffset: res.offsets[k], Queue: d.QueueID, QueueOffset: res.queues[k][0]}
		if len(res.queues[k]) > 1 {
			out[k].Also = res.queues[k][1:]
		}
	}
	return out, nil
}

// failQueued answers the requests that arrived too late to be sent.
func (p *producer) failQueued() {
	for {
		select {
		case r := <-p.reqs:
			finish([]*produceReq{r}, ErrClosed)
		default:
			return
		}
	}
}

func finish(group []*produceReq, err error) {
	for _, r := range group {
		r.err = err
		close(r.done)
	}
}

func (p *producer) close() {
	if p.closed.CompareAndSwap(false, true) {
		close(p.stop)
		p.wg.Wait()
		close(p.exited)
	}
}

// validTopic: RocketMQ's rule (letters, digits, '%', '-', '_', '|'; up to
// 127 bytes), which is also a safe path component for the consume queues.
func validTopic(name string) bool {
	if name == "" || len(name) > 127 {
		return false
	}
	return strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("%-_|", r))
	}) < 0
}

// A Router adds queues to messages as any front door produces them: the
// AMQP door routes MQTT and RocketMQ messages through its amq.topic
// bindings this way, so they are stored once and indexed in each AMQP
// queue too. It runs on the node that takes the message, before the
// message is proposed, and must be quick. Routes to topics that do not
// exist, or repeat a destination, are ignored.
type Router func(m *Message) []Route

// AddRouter registers r and returns the function that removes it.
func (b *Broker) AddRouter(r Router) (remove func()) {
	b.routersMu.Lock()
	defer b.routersMu.Unlock()
	id := b.routerSeq
	b.routerSeq++
	next := map[uint64]Router{id: r}
	for k, v := range *b.routers.Load() {
		next[k] = v
	}
	b.routers.Store(&next)
	return func() {
		b.routersMu.Lock()
		defer b.routersMu.Unlock()
		next := map[uint64]Router{}
		for k, v := range *b.routers.Load() {
			if k != id {
				next[k] = v
			}
		}
		b.routers.Store(&next)
	}
}

// routeMore asks the routers for more destinations of msg.
func (b *Broker) routeMore(msg *batch.Message, m *Message, tagHash int64) {
	rs := *b.routers.Load()
	if len(rs) == 0 {
		return
	}
	view := *m
	view.Message = *msg
	for _, r := range rs {
		for _, rt := range r(&view) {
			t, ok := b.Topic(rt.Topic)
			if !ok || rt.Queue >= t.Queues || t.Perm&PermWrite == 0 {
				continue
			}
			dup := false
			for _, d := range msg.Destinations {
				dup = dup || d.Topic == rt.Topic && d.QueueID == rt.Queue
			}
			if !dup {
				msg.Destinations = append(msg.Destinations, batch.Destination{Topic: rt.Topic, QueueID: rt.Queue, TagHash: tagHash})
			}
		}
	}
}
