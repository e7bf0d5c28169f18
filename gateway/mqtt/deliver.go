package mqtt

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// maxInlineClients bounds the cached inline clients (one per publisher
// client id, so mochi's NoLocal check sees the right origin).
const maxInlineClients = 4096

// delivering is the message being injected right now.
type delivering struct {
	q         qpos
	offset    uint64
	inline    string // the inline client's id: pk.Origin of its copies
	topicName string
	qos       byte
	// only: the one client this injection is for (the last stretch of a
	// resume); OnACLCheck vetoes the others.
	only *mqtt.Client
}

// deliverer tails every deliverable consume queue from where it was when
// the node started and injects each committed message into mochi, which
// fans it out to this node's subscribers. One goroutine does it all, so
// per queue the order is commit order, and resumes of persistent sessions
// slot in between two messages.
type deliverer struct {
	s     *Server
	cur   atomic.Pointer[delivering]
	kickc chan struct{}
	jobs  chan *resumeJob

	mu  sync.Mutex
	pos map[qpos]uint64 // next offset to inject

	inlines map[string]*mqtt.Client // delivery goroutine only
	lastErr time.Time
}

func newDeliverer(s *Server) *deliverer {
	return &deliverer{s: s, kickc: make(chan struct{}, 1), jobs: make(chan *resumeJob, 1024),
		pos: map[qpos]uint64{}, inlines: map[string]*mqtt.Client{}}
}

func (d *deliverer) current() *delivering { return d.cur.Load() }

// kick wakes delivery early (after a local commit).
func (d *deliverer) kick() {
	select {
	case d.kickc <- struct{}{}:
	default:
	}
}

func (d *deliverer) enqueueResume(j *resumeJob) {
	select {
	case d.jobs <- j:
	case <-d.s.ctx.Done():
	}
}

// positions copies the delivery positions.
func (d *deliverer) positions() map[qpos]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[qpos]uint64, len(d.pos))
	for k, v := range d.pos {
		out[k] = v
	}
	return out
}

func (d *deliverer) setPos(q qpos, p uint64) {
	d.mu.Lock()
	d.pos[q] = p
	d.mu.Unlock()
}

func (d *deliverer) run(ctx context.Context) {
	// Start at the end: what was committed before this node started is
	// for persistent sessions to replay, not for live subscribers.
	for _, t := range d.s.b.Topics() {
		for q := range t.Queues {
			_, hi := d.s.b.QueueRange(t.Name, q)
			d.setPos(qpos{t.Name, q}, hi)
		}
	}
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		changed := d.s.b.Changed()
		for drained := false; !drained; {
			select {
			case j := <-d.jobs:
				d.finishResume(j)
			default:
				drained = true
			}
		}
		if d.pass() {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		idle.Reset(time.Second)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-d.kickc:
		case j := <-d.jobs:
			d.finishResume(j)
		case <-idle.C:
		}
	}
}

// pass delivers one batch from every queue that has new messages and
// reports whether it delivered anything.
func (d *deliverer) pass() bool {
	b := d.s.b
	// With no subscription here there is nobody to deliver to: skip ahead.
	// A SUBSCRIBE counts before its SUBACK, so nothing committed after a
	// SUBACK is skipped.
	active := atomic.LoadInt64(&d.s.mochi.Info.Subscriptions) > 0
	progressed := false
	for _, t := range b.Topics() {
		if !deliverableTopic(t.Name) {
			continue
		}
		for q := range t.Queues {
			qp := qpos{t.Name, q}
			lo, hi := b.QueueRange(t.Name, q)
			d.mu.Lock()
			p, ok := d.pos[qp]
			if !ok || p < lo {
				p = lo // a topic created since: from its start
				d.pos[qp] = p
			}
			d.mu.Unlock()
			if p >= hi {
				continue
			}
			if !active {
				d.setPos(qp, hi)
				continue
			}
			msgs, next, err := b.Fetch(t.Name, q, p, broker.FetchOptions{MaxMessages: d.s.cfg.FetchMessages})
			if err != nil {
				d.logErr("delivery cannot read a queue", qp, err)
				continue
			}
			now := time.Now().UnixMilli()
			for i := range msgs {
				st := copyStored(t.Name, &msgs[i])
				off := msgs[i].QueueOffset
				msgs[i].Release()
				d.inject(qp, off, st, now, nil)
				d.setPos(qp, off+1)
			}
			d.setPos(qp, next)
			progressed = progressed || next > p
		}
	}
	return progressed
}

func (d *deliverer) logErr(msg string, q qpos, err error) {
	if time.Since(d.lastErr) > 10*time.Second {
		d.lastErr = time.Now()
		d.s.log.Warn(msg, "queue", q.String(), "err", err)
	}
}

// copyStored copies what delivery needs out of the log's mapping.
func copyStored(topic string, m *broker.Fetched) *stored {
	st := &stored{coreTopic: topic, tags: string(m.Tags()), bornMs: m.BornUnixMs(),
		body: append([]byte(nil), m.Body()...)}
	for k, v := range m.Properties {
		st.props = append(st.props, batch.Property{Key: string(k), Value: string(v)})
	}
	return st
}

// inject hands one committed message to mochi's fan-out (to only one
// client, if only is set).
func (d *deliverer) inject(q qpos, off uint64, st *stored, nowMs int64, only *mqtt.Client) {
	pk, origin, expired := toPacket(st, nowMs)
	if expired {
		return
	}
	if pk.FixedHeader.Qos > 0 {
		pk.PacketID = 1 // mochi validates that QoS 1/2 carry one; subscribers get their own
	}
	cl := d.inline(origin)
	if pk.FixedHeader.Retain {
		// mochi stores a retained publish in its index as it fans it out
		// (subscribers with RetainAsPublished see the flag); the records,
		// written after the message, stay the truth for the index.
		d.s.lockRetained()
		defer func() {
			d.s.resetRetainedLocked(pk.TopicName)
			d.s.unlockRetained()
		}()
	}
	d.cur.Store(&delivering{q: q, offset: off, inline: cl.ID, topicName: pk.TopicName, qos: pk.FixedHeader.Qos, only: only})
	err := d.s.mochi.InjectPacket(cl, pk)
	d.cur.Store(nil)
	if err != nil {
		d.logErr("mochi refused a committed message", q, err)
	}
}

// inline returns the cached inline client standing for a publisher.
func (d *deliverer) inline(origin string) *mqtt.Client {
	if origin == "" {
		origin = "\x00conflux" // another protocol: matches no MQTT client id
	}
	if cl := d.inlines[origin]; cl != nil {
		return cl
	}
	if len(d.inlines) >= maxInlineClients {
		clear(d.inlines)
	}
	cl := d.s.mochi.NewClient(nil, applyListener, origin, true)
	cl.Properties.ProtocolVersion = 5
	d.inlines[origin] = cl
	return cl
}

// matcher tells which of a session's subscriptions match a topic.
type matcher struct {
	idx      *mqtt.TopicsIndex
	all      bool            // a filter starts with a wildcard
	topics   map[string]bool // core topics named by the filters
	fallback string
}

func newMatcher(subs []subRecord, fallback string) *matcher {
	m := &matcher{idx: mqtt.NewTopicsIndex(), topics: map[string]bool{}, fallback: fallback}
	for _, s := range subs {
		if mqtt.IsSharedFilter(s.Filter) {
			continue // shared groups are delivered live only
		}
		m.idx.Subscribe("s", s.sub())
		switch l := firstLevel(s.Filter); l {
		case "+", "#":
			m.all = true
		default:
			m.topics[coreTopicFor(s.Filter, fallback)] = true
		}
	}
	return m
}

func (m *matcher) mayMatch(coreTopic string) bool { return m.all || m.topics[coreTopic] }

func (m *matcher) match(topic string) (packets.Subscription, bool) {
	subs := m.idx.Subscribers(topic)
	s, ok := subs.Subscriptions["s"]
	return s, ok
}

// errStopReplay ends a replay early (the client went, or overflowed).
var errStopReplay = errors.New("mqtt: replay stopped")

// Catch-up of a resumed persistent session: the bulk of its backlog is
// replayed on a goroutine of its own, at the pace the client acknowledges
// (the delivery goroutine must not wait for one slow client); the last
// stretch, and the switch to live delivery, happen on the delivery
// goroutine between two injections, so the session gets every message
// once and in order.
const (
	maxCatchUpRounds = 16
	// catchUpAckWait bounds how long catch-up waits for the client to
	// acknowledge something when its window is full.
	catchUpAckWait = time.Minute
)

// resumeJob hands a caught-up session to the delivery goroutine.
type resumeJob struct {
	ss     *session
	m      *matcher
	cursor map[qpos]uint64
}

// catchUp runs on its own goroutine after the CONNACK of a resumed session.
func (d *deliverer) catchUp(ss *session) {
	rec := ss.resume
	if rec == nil {
		ss.catchingUp.Store(false)
		return
	}
	j := &resumeJob{ss: ss, m: newMatcher(rec.Subs, d.s.cfg.FallbackTopic), cursor: map[qpos]uint64{}}
	for range maxCatchUpRounds {
		n, err := d.replayTo(j, d.positions(), true)
		if err != nil {
			d.replayFailed(ss, err)
			return
		}
		if n < d.s.cfg.FetchMessages {
			break
		}
	}
	d.enqueueResume(j)
}

func (d *deliverer) replayFailed(ss *session, err error) {
	if !errors.Is(err, errStopReplay) && d.s.ctx.Err() == nil {
		d.s.log.Warn("replay of a resumed session failed: disconnecting it", "client", ss.cid, "err", err)
		_ = d.s.mochi.DisconnectClient(ss.cl, packets.ErrUnspecifiedError)
	}
}

// replayTo sends the session what it has not had up to target, from its
// cursor (or its saved positions), and returns how many messages it read.
func (d *deliverer) replayTo(j *resumeJob, target map[qpos]uint64, wait bool) (int, error) {
	b := d.s.b
	read := 0
	for q, end := range target {
		if !j.m.mayMatch(q.topic) {
			continue
		}
		lo, _ := b.QueueRange(q.topic, q.queue)
		p, ok := j.cursor[q]
		if !ok {
			p, ok = j.ss.resume.Pos[q.String()]
		}
		if !ok || p < lo {
			p = lo
		}
		for p < end {
			if err := d.s.ctx.Err(); err != nil {
				return read, errStopReplay
			}
			msgs, next, err := b.Fetch(q.topic, q.queue, p, broker.FetchOptions{MaxMessages: d.s.cfg.FetchMessages})
			if err != nil {
				return read, err
			}
			now := time.Now().UnixMilli()
			for i := range msgs {
				off := msgs[i].QueueOffset
				if off >= end {
					break
				}
				if j.ss.skipped(q, off) {
					j.cursor[q] = off + 1
					continue // delivered at QoS 2 before (its PUBREL is pending)
				}
				st := copyStored(q.topic, &msgs[i])
				if !wait {
					// On the delivery goroutine: through mochi's write
					// queue like live messages (a direct write could
					// block every delivery on this client's socket).
					d.inject(q, off, st, now, j.ss.cl)
				} else if err := d.replayOne(j.ss, j.m, q, off, st, now); err != nil {
					releaseFetched(msgs)
					return read, err
				}
				read++
				j.cursor[q] = off + 1
			}
			releaseFetched(msgs)
			if next <= p {
				break
			}
			p = min(next, end)
			j.cursor[q] = p
		}
	}
	return read, nil
}

// finishResume, on the delivery goroutine: the last stretch of the
// replay, then the subscriptions go live.
func (d *deliverer) finishResume(j *resumeJob) {
	ss := j.ss
	if ss.cl.Closed() || d.s.hook.session(ss.cl) != ss {
		return // gone, or taken over (the new connection resumes afresh)
	}
	// The subscriptions go live first: the last stretch is injected for
	// this client alone, through its subscriptions in mochi, before any
	// later message.
	for _, r := range ss.resume.Subs {
		sub := r.sub()
		if d.s.mochi.Topics.Subscribe(ss.cid, sub) {
			atomic.AddInt64(&d.s.mochi.Info.Subscriptions, 1)
		}
		ss.cl.State.Subscriptions.Add(sub.Filter, sub)
		if mqtt.IsSharedFilter(sub.Filter) {
			d.s.hook.joinShare(sub.Filter, ss.cid)
			go d.s.claimShare(d.s.ctx, sub.Filter)
		}
	}
	if _, err := d.replayTo(j, d.positions(), false); err != nil {
		d.replayFailed(ss, err)
	}
	ss.catchingUp.Store(false)
	go d.s.saveSession(d.s.ctx, ss, false)
}

func releaseFetched(ms []broker.Fetched) {
	for i := range ms {
		ms[i].Release()
	}
}

// window is how many QoS 1/2 messages the client may have unacknowledged.
func (d *deliverer) window(cl *mqtt.Client) int {
	w := int(d.s.cfg.MaxInflightMessages)
	if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < w {
		w = rm
	}
	return w
}

// replayOne sends one missed message straight to the resumed client (off
// the delivery goroutine); a full window waits for acknowledgements.
func (d *deliverer) replayOne(ss *session, m *matcher, q qpos, off uint64, st *stored, nowMs int64) error {
	pk, origin, expired := toPacket(st, nowMs)
	if expired {
		return nil
	}
	sub, ok := m.match(pk.TopicName)
	if !ok || sub.NoLocal && origin == ss.cid {
		return nil
	}
	cl := ss.cl
	if cl.Closed() {
		return errStopReplay
	}
	out := pk
	out.Origin = origin
	out.Created = time.Now().Unix()
	if out.FixedHeader.Qos > sub.Qos {
		out.FixedHeader.Qos = sub.Qos
	}
	for _, id := range sub.Identifiers {
		out.Properties.SubscriptionIdentifier = append(out.Properties.SubscriptionIdentifier, id)
	}
	if out.FixedHeader.Qos > 0 {
		deadline := time.Now().Add(catchUpAckWait)
		for cl.State.Inflight.Len() >= d.window(cl) && !cl.Closed() && d.s.ctx.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if cl.Closed() || d.s.ctx.Err() != nil {
			return errStopReplay
		}
		if cl.State.Inflight.Len() >= d.window(cl) {
			ss.noteFloor(q, off)
			d.s.log.Info("resumed session backlog over the inflight bound: it continues on its next connection",
				"client", ss.cid)
			_ = d.s.mochi.DisconnectClient(cl, packets.ErrQuotaExceeded)
			return errStopReplay
		}
		id, err := cl.NextPacketID()
		if err != nil {
			ss.noteFloor(q, off)
			_ = d.s.mochi.DisconnectClient(cl, packets.ErrQuotaExceeded)
			return errStopReplay
		}
		out.PacketID = uint16(id)
		cl.State.Inflight.Set(out)
		cl.State.Inflight.DecreaseSendQuota()
		ss.track(out.PacketID, q, off)
	}
	if err := cl.WritePacket(out); err != nil {
		return errStopReplay // the positions still hold it: the next resume sends it
	}
	return nil
}
