package mqtt

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker/command"
)

// maxUserProperties bounds an inbound PUBLISH's user properties (the log
// takes 1024 properties per message, ours included).
const maxUserProperties = 512

// hook bridges mochi to the broker. Its methods run on client read
// goroutines, on the delivery goroutine (during InjectPacket) and on
// mochi's event loop, so all its state is locked or atomic.
type hook struct {
	mqtt.HookBase
	s *Server

	mu       sync.Mutex
	pipes    map[*mqtt.Client]*pipe
	sessions map[string]*session        // by client id, clients connected here
	shares   map[string]int             // shared filter → local members (len of members)
	members  map[string]map[string]bool // shared filter → client ids subscribed here
	// readers: clients holding retainLock shared (a SUBSCRIBE in
	// progress), with when their SUBACK was ready (zero before).
	readers map[*mqtt.Client]time.Time
	// denied: the filters of the SUBSCRIBE in progress (OnSubscribe to
	// OnPacketProcessed) that the client's user may not subscribe to,
	// for OnACLCheck; denying counts its entries.
	denied  map[*mqtt.Client]map[string]bool
	denying atomic.Int64
}

func newHook(s *Server) *hook {
	return &hook{s: s, pipes: map[*mqtt.Client]*pipe{}, sessions: map[string]*session{}, shares: map[string]int{},
		members: map[string]map[string]bool{}, readers: map[*mqtt.Client]time.Time{},
		denied: map[*mqtt.Client]map[string]bool{}}
}

func (h *hook) ID() string { return "conflux" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnWill,
		mqtt.OnPacketRead, mqtt.OnPacketProcessed, mqtt.OnPublish, mqtt.OnPublishDropped,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSelectSubscribers,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
	}, []byte{b})
}

// OnConnect refuses client ids and will topics over the limits (they key
// replicated records), then logs the client in (auth.go).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if len(cl.ID) > h.s.cfg.MaxClientIDBytes {
		_ = h.s.mochi.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	if len(cl.Properties.Will.TopicName) > h.s.cfg.MaxTopicBytes {
		if cl.Properties.ProtocolVersion == 5 {
			_ = h.s.mochi.SendConnack(cl, packets.ErrTopicNameInvalid, false, nil)
		}
		return packets.ErrTopicNameInvalid // 3.1.1 has no code for it: closed without CONNACK
	}
	return h.authenticate(cl, pk)
}

// OnConnectAuthenticate admits every client OnConnect let through: the
// login is checked there, where the CONNACK code can be chosen.
func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck refuses the filters of a SUBSCRIBE that OnSubscribe found
// the user may not have (SUBACK 0x80, MQTT 5 0x87). Publishes are
// checked in OnPublish instead, where a topic alias is resolved and the
// refusal can wait its turn among the acks. A subscription once granted
// is not checked again per message.
//
// For a delivery (write=false while delivery injects a message) it is
// the one per-client veto mochi offers: a session at its inflight bound
// gets nothing more, and is disconnected to resume later from its
// positions, so a slow subscriber never loses QoS 1/2 messages.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if len(topic) > h.s.cfg.MaxTopicBytes {
		return false // a filter over the limit: refused in the SUBACK
	}
	if write {
		return true
	}
	if h.subscriptionDenied(cl, topic) {
		// (A delivery to cl of a topic spelt like a denied filter, while
		// cl subscribes, is skipped too: its user may not read it.)
		return false
	}
	cur := h.s.dl.current()
	if cur == nil || cur.topicName != topic {
		return true // a SUBSCRIBE, a retained message for a new subscription
	}
	if cur.only != nil && cur.only != cl {
		return false // the last stretch of another client's resume
	}
	if cur.qos == 0 {
		return true
	}
	if cl.State.Inflight.Len() < int(h.s.cfg.MaxInflightMessages) {
		return true
	}
	h.overflow(cl, cur)
	return false
}

// OnPublishDropped: the client's write queue was full. Dropping a QoS 0
// message is within its contract; a QoS 1/2 one must come back later.
func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if cur := h.s.dl.current(); cur != nil && pk.Origin == cur.inline && pk.FixedHeader.Qos > 0 {
		h.overflow(cl, cur)
	}
}

// overflow remembers the first message a session missed and closes the
// connection; a persistent session replays from there when it returns.
func (h *hook) overflow(cl *mqtt.Client, cur *delivering) {
	if ss := h.tracking(cl); ss != nil {
		ss.noteFloor(cur.q, cur.offset)
		if ss.overflowed.CompareAndSwap(false, true) {
			h.s.log.Warn("subscriber too slow: disconnecting it", "client", cl.ID, "persistent", ss.persistent)
			go func() { _ = h.s.mochi.DisconnectClient(cl, packets.ErrQuotaExceeded) }()
		}
	}
}

func (h *hook) session(cl *mqtt.Client) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ss := h.sessions[cl.ID]; ss != nil && ss.cl == cl {
		return ss
	}
	return nil
}

// tracking returns the session whose positions a delivery to cl belongs
// to: cl's own, or, while a takeover on this node moves cl's inflight
// messages to a new connection, the new one's (they share the maps).
func (h *hook) tracking(cl *mqtt.Client) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ss := h.sessions[cl.ID]; ss != nil && (ss.cl == cl || ss.prev == cl) {
		return ss
	}
	return nil
}

// OnPacketRead closes the connection of a client publishing to a topic
// with a wildcard, as MQTT requires ([MQTT-3.3.2-2]); mochi would only
// drop the message.
//
// It also keeps QoS 2 exactly-once. A PUBREC from the client marks an
// outbound message delivered, and a persistent session is saved before
// mochi answers it with the PUBREL (a failed save closes the connection). An inbound QoS 2 PUBLISH whose id already
// has a PUBREC pending (the client resent it, typically after a
// reconnect) is acknowledged again instead of stored again: mochi would
// answer it with 0x91, so its record is taken out here and OnPublish
// re-acks it.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if strings.ContainsAny(pk.TopicName, "+#") || len(pk.TopicName) > h.s.cfg.MaxTopicBytes ||
			len(pk.Properties.User) > maxUserProperties {
			return pk, packets.ErrRejectPacket
		}
		if pk.FixedHeader.Qos == 2 {
			if r, ok := cl.State.Inflight.Get(pk.PacketID); ok && r.FixedHeader.Type == packets.Pubrec {
				if ss := h.session(cl); ss != nil {
					cl.State.Inflight.Delete(pk.PacketID)
					ss.markDup(pk.PacketID)
				}
			}
		}
	case packets.Pubrec:
		if ss := h.session(cl); ss != nil {
			ss.received(pk.PacketID)
			// The record says delivered before the PUBREL tells the
			// client so: a resume on any node must not send it again.
			if err := h.s.commitSession(ss); err != nil {
				h.s.log.Warn("QoS 2 delivery not saved: closing the connection", "client", cl.ID, "err", err)
				return pk, err
			}
		}
	}
	return pk, nil
}

// OnPublish sends every client publish through the log. Injected packets
// (already committed) pass through to mochi's fan-out.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline && cl.Net.Listener == applyListener {
		return pk, nil
	}
	if cl.Net.Inline {
		return pk, packets.ErrRejectPacket // mochi's own inline Publish is not used
	}
	if pk.FixedHeader.Qos == 2 {
		if ss := h.session(cl); ss != nil && ss.takeDup(pk.PacketID) {
			cl.State.Inflight.DecreaseReceiveQuota() // given back by the PUBREL
			h.pipe(cl).push(pending{qos: 2, pid: pk.PacketID, ackOnly: true})
			return pk, packets.ErrRejectPacket
		}
	}
	if !h.mayPublish(cl, pk.TopicName) {
		// Debug only: a client may repeat a refused publish endlessly.
		if h.s.log.Enabled(h.s.ctx, slog.LevelDebug) {
			h.s.log.Debug("publish refused: the user may not publish to the topic", "client", cl.ID,
				"user", string(cl.Properties.Username), "topic", pk.TopicName, "qos", pk.FixedHeader.Qos)
		}
		if x, ok := publishDenied(&pk); ok {
			cl.State.Inflight.DecreaseReceiveQuota() // given back with the ack
			h.pipe(cl).push(x)
		}
		return pk, packets.ErrRejectPacket
	}
	x := pending{msg: toMessage(&pk, cl.ID, h.s.cfg.FallbackTopic), qos: pk.FixedHeader.Qos, pid: pk.PacketID}
	if pk.FixedHeader.Retain {
		x.retained = retainedRecord(&pk)
		if len(x.retained.Value) > command.MaxRecordValueBytes {
			// Its record (properties JSON-escaped) would be refused after
			// the message is stored: refuse the publish instead.
			x.refused = packets.ErrQuotaExceeded.Code
		}
	}
	if x.qos > 0 {
		// mochi's Receive Maximum enforcement counts on this (0x93 when a
		// client sends more than it may); the ack path gives it back.
		cl.State.Inflight.DecreaseReceiveQuota()
	}
	h.pipe(cl).push(x)
	return pk, packets.ErrRejectPacket
}

func (h *hook) pipe(cl *mqtt.Client) *pipe {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pipes[cl]
	if p == nil {
		p = newPipe(h.s, cl)
		h.pipes[cl] = p
	}
	return p
}

func (h *hook) closePipes() {
	h.mu.Lock()
	ps := h.pipes
	h.pipes = map[*mqtt.Client]*pipe{}
	h.mu.Unlock()
	for _, p := range ps {
		p.close()
		<-p.done
	}
}

// OnQosPublish notes which log position an outbound QoS 1/2 message
// carries, so the session's saved positions never pass an unacked one.
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || resends != 0 {
		return
	}
	cur := h.s.dl.current()
	if cur == nil || pk.Origin != cur.inline {
		return
	}
	if ss := h.tracking(cl); ss != nil && ss.persistent {
		ss.track(pk.PacketID, cur.q, cur.offset)
	}
}

// OnQosComplete: an outbound message was acknowledged (PUBACK, PUBCOMP).
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if t := pk.FixedHeader.Type; t != packets.Puback && t != packets.Pubcomp {
		return
	}
	if ss := h.session(cl); ss != nil {
		ss.untrack(pk.PacketID)
	}
}

// OnQosDropped: mochi gave up on an outbound message (expired, error
// reason): it no longer holds the positions back.
func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if ss := h.session(cl); ss != nil && !ss.closing.Load() {
		ss.untrack(pk.PacketID)
	}
}

// OnSelectSubscribers keeps only the shared groups this node owns, so each
// message reaches one member of a group cluster-wide.
func (h *hook) OnSelectSubscribers(subs *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	if cur := h.s.dl.current(); cur != nil && cur.only != nil {
		clear(subs.Shared) // a resume's replay: shared groups are live only
		return subs
	}
	for filter := range subs.Shared {
		if !h.s.ownsShare(filter) {
			delete(subs.Shared, filter)
		}
	}
	return subs
}

// OnSubscribe holds retainLock shared until OnPacketProcessed, across
// mochi's scan of the retained messages (see Server.retainLock). It also
// picks the new filters past MaxSubscriptions, which OnSubscribed refuses.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.s.retainLock.RLock()
	h.mu.Lock()
	h.readers[cl] = time.Time{}
	h.mu.Unlock()
	denied := h.deniedFilters(cl, pk)
	if len(denied) > 0 {
		h.setDenied(cl, denied)
		h.s.log.Debug("subscriptions refused: the user may not subscribe to them", "client", cl.ID,
			"user", string(cl.Properties.Username), "filters", len(denied))
	}
	if ss := h.session(cl); ss != nil {
		n := cl.State.Subscriptions.Len()
		if ss.catchingUp.Load() && ss.resume != nil {
			n += len(ss.resume.Subs) // not in mochi until the replay ends
		}
		var over map[string]bool
		seen := map[string]bool{}
		for _, f := range pk.Filters {
			if _, ok := cl.State.Subscriptions.Get(f.Filter); ok || seen[f.Filter] || denied[f.Filter] {
				continue
			}
			seen[f.Filter] = true
			if n >= h.s.cfg.MaxSubscriptions {
				if over == nil {
					over = map[string]bool{}
				}
				over[f.Filter] = true
				continue
			}
			n++
		}
		ss.mu.Lock()
		ss.overLimit = over
		ss.mu.Unlock()
	}
	return pk
}

// refuseOverLimit takes back the subscriptions OnSubscribe found past
// MaxSubscriptions and changes their SUBACK codes (codes is the SUBACK's
// slice) to a refusal; mochi then sends them no retained messages.
func (h *hook) refuseOverLimit(cl *mqtt.Client, ss *session, pk packets.Packet, codes []byte) {
	ss.mu.Lock()
	over := ss.overLimit
	ss.overLimit = nil
	ss.mu.Unlock()
	if len(over) == 0 {
		return
	}
	refused := packets.ErrQuotaExceeded.Code
	if cl.Properties.ProtocolVersion < 5 {
		refused = packets.ErrUnspecifiedError.Code
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 || !over[f.Filter] {
			continue
		}
		if h.s.mochi.Topics.Unsubscribe(f.Filter, cl.ID) {
			atomic.AddInt64(&h.s.mochi.Info.Subscriptions, -1)
		}
		cl.State.Subscriptions.Delete(f.Filter)
		codes[i] = refused
	}
	h.s.log.Warn("subscriptions refused: the session is at MaxSubscriptions", "client", cl.ID,
		"max", h.s.cfg.MaxSubscriptions)
}

// OnPacketProcessed ends what OnSubscribe began; mochi calls it for every
// packet processed, after OnSubscribe for a SUBSCRIBE.
func (h *hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Subscribe {
		h.clearDenied(cl)
		h.mu.Lock()
		delete(h.readers, cl)
		h.mu.Unlock()
		h.s.retainLock.RUnlock()
	}
}

// OnSubscribed makes the subscription durable before the SUBACK: shared
// groups get an owner node, persistent sessions save their subscriptions.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	defer func() { // the SUBACK is written next: from now on it may get stuck
		h.mu.Lock()
		if _, ok := h.readers[cl]; ok {
			h.readers[cl] = time.Now()
		}
		h.mu.Unlock()
	}()
	if cl.Net.Inline {
		return
	}
	if ss := h.session(cl); ss != nil {
		h.refuseOverLimit(cl, ss, pk, codes)
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 && mqtt.IsSharedFilter(f.Filter) {
			h.joinShare(f.Filter, cl.ID)
			h.s.claimShare(h.s.ctx, f.Filter)
		}
	}
	if ss := h.session(cl); ss != nil && ss.persistent {
		h.s.saveSession(h.s.ctx, ss, false)
	}
}

// stopStuckSubscribers closes the connections of clients holding
// retainLock for more than d since their SUBACK was ready: their socket
// takes nothing (closing it fails the blocked write, and mochi's
// OnPacketProcessed releases the lock).
func (h *hook) stopStuckSubscribers(d time.Duration) {
	h.mu.Lock()
	var stuck []*mqtt.Client
	for cl, since := range h.readers {
		if !since.IsZero() && time.Since(since) > d {
			stuck = append(stuck, cl)
		}
	}
	h.mu.Unlock()
	for _, cl := range stuck {
		h.s.log.Warn("client takes no SUBACK while a retained update waits: disconnecting it", "client", cl.ID)
		cl.Stop(packets.ErrServerBusy)
	}
}

// OnUnsubscribed: the reverse, also called for every filter when a clean
// session ends.
func (h *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	for _, f := range pk.Filters {
		if !mqtt.IsSharedFilter(f.Filter) {
			continue
		}
		if h.leaveShare(f.Filter, cl.ID) {
			h.s.releaseShare(f.Filter)
		}
	}
	if ss := h.session(cl); ss != nil && ss.persistent && !ss.closing.Load() {
		h.s.saveSession(h.s.ctx, ss, false)
	}
}

// joinShare counts a client as a local member of a shared group; a
// client subscribing again to a filter it has is still one member.
func (h *hook) joinShare(filter, cid string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[filter]
	if m == nil {
		m = map[string]bool{}
		h.members[filter] = m
	}
	m[cid] = true
	h.shares[filter] = len(m)
}

// leaveShare removes a local member and reports whether it was the last.
func (h *hook) leaveShare(filter, cid string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[filter]
	delete(m, cid)
	if len(m) > 0 {
		h.shares[filter] = len(m)
		return false
	}
	delete(h.members, filter)
	delete(h.shares, filter)
	return true
}

// localShares lists the shared filters with members here.
func (h *hook) localShares() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.shares))
	for f := range h.shares {
		out = append(out, f)
	}
	return out
}

// OnSessionEstablish runs before the CONNACK: claim the client id
// cluster-wide (a connection elsewhere is told to go) and, for a
// persistent session saved anywhere in the cluster, prepare its resume.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	ss := h.s.establish(cl, pk)
	h.mu.Lock()
	h.sessions[cl.ID] = ss
	h.mu.Unlock()
}

// OnSessionEstablished runs after the CONNACK: replay what a resumed
// session missed, on the delivery goroutine, then let live delivery in.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	ss := h.session(cl)
	if ss != nil {
		ss.inherited.Store(true)
	}
	if ss != nil && ss.resume != nil {
		h.s.wg.Add(1)
		go func() {
			defer h.s.wg.Done()
			h.s.dl.catchUp(ss)
		}()
	}
}

// OnDisconnect saves a persistent session's positions and drops its
// state from this node: the replicated record is the session now, and
// any node can resume it.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	p := h.pipes[cl]
	delete(h.pipes, cl)
	ss := h.sessions[cl.ID]
	if ss != nil && ss.cl != cl {
		ss = nil // taken over on this node: the new connection owns it
	}
	h.mu.Unlock()
	if p != nil {
		p.close()
		<-p.done // acks and retained changes settle before the session is saved
	}
	if ss == nil {
		return
	}
	// The session stays registered until it is saved and unsubscribed:
	// a message delivered meanwhile is still tracked, so the saved
	// positions cannot pass it.
	defer func() {
		h.mu.Lock()
		if h.sessions[cl.ID] == ss {
			delete(h.sessions, cl.ID)
		}
		h.mu.Unlock()
	}()
	if cl.IsTakenOver() {
		return
	}
	ss.closing.Store(true)
	if cl.Properties.ProtocolVersion == 5 { // a DISCONNECT may have changed it
		ss.expirySec.Store(min(cl.Properties.Props.SessionExpiryInterval, uint32(h.s.cfg.MaxSessionExpiry/time.Second)))
	}
	h.s.endSession(ss, expire)
}

// OnWill publishes the will through the log (so every node delivers it,
// once) and hands mochi an empty will in its place. A delayed will waits
// in the records and is dropped if the session comes back anywhere.
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if !h.s.ownsSession(cl) {
		return mqtt.Will{}, nil // the session moved to another node
	}
	if !h.mayPublish(cl, will.TopicName) {
		// Allowed at CONNECT (or it would have been refused), not now.
		h.s.log.Info("will dropped: the user may no longer publish to its topic", "client", cl.ID,
			"user", string(cl.Properties.Username), "topic", will.TopicName)
		return mqtt.Will{}, nil
	}
	h.s.publishWill(cl, will)
	return mqtt.Will{}, nil
}
