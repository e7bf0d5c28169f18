package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/broker/command"
)

// Record namespaces (core/broker records, replicated to every node).
const (
	nsSessions = "mqtt.sessions" // client id → sessionRecord (persistent sessions)
	nsOwners   = "mqtt.owners"   // client id → "<node>/<claim>": where it is connected
	nsRetained = "mqtt.retained" // MQTT topic → retainedValue
	nsShares   = "mqtt.shares"   // shared filter → owner node id
	nsWills    = "mqtt.wills"    // client id → willRecord (delayed wills)
)

// qpos names a consume queue.
type qpos struct {
	topic string
	queue uint32
}

func (q qpos) String() string { return q.topic + "/" + strconv.FormatUint(uint64(q.queue), 10) }

func parseQpos(s string) (qpos, bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return qpos{}, false
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 32)
	return qpos{topic: s[:i], queue: uint32(n)}, err == nil
}

type qoff struct {
	q   qpos
	off uint64
	rec bool // QoS 2: the client's PUBREC came, the message is delivered
}

// subRecord is one saved subscription.
type subRecord struct {
	Filter  string `json:"f"`
	QoS     byte   `json:"q"`
	NoLocal bool   `json:"nl,omitempty"`
	RAP     bool   `json:"rap,omitempty"`
	RH      byte   `json:"rh,omitempty"`
	ID      int    `json:"id,omitempty"`
}

func (r subRecord) sub() packets.Subscription {
	s := packets.Subscription{Filter: r.Filter, Qos: r.QoS, NoLocal: r.NoLocal, RetainAsPublished: r.RAP,
		RetainHandling: r.RH, Identifier: r.ID}
	if r.ID > 0 {
		s.Identifiers = map[string]int{r.Filter: r.ID}
	}
	return s
}

// sessionRecord is a persistent session as the cluster keeps it: its
// subscriptions and, per consume queue, the next offset it has not been
// given (or has not acknowledged). Resuming replays from there.
type sessionRecord struct {
	Proto     byte              `json:"proto"`
	ExpirySec uint32            `json:"expiry_s"`
	Subs      []subRecord       `json:"subs"`
	Pos       map[string]uint64 `json:"pos"`
	// Skip lists offsets at or past Pos already delivered at QoS 2 (PUBREC
	// received): the replay must not send them again.
	Skip map[string][]uint64 `json:"skip,omitempty"`
	// Rel: outbound QoS 2 packet ids waiting for PUBCOMP (PUBREL is
	// resent on resume). In2: inbound QoS 2 packet ids stored and
	// PUBREC'd, waiting for PUBREL (a resent PUBLISH is not stored again).
	Rel            []uint16 `json:"rel,omitempty"`
	In2            []uint16 `json:"in2,omitempty"`
	DisconnectedMs int64    `json:"disconnected_ms,omitempty"`
	Node           uint64   `json:"node"`
}

// session is this node's state of a connected client.
type session struct {
	cid        string
	cl         *mqtt.Client
	prev       *mqtt.Client // the connection this one took over here, if any
	persistent bool
	claim      string
	proto      byte
	expirySec  atomic.Uint32  // MQTT 5 lets DISCONNECT change it
	resume     *sessionRecord // the saved session being resumed, until replayed

	catchingUp atomic.Bool
	inherited  atomic.Bool // the CONNACK went: mochi's inflight holds the resumed Rel/In2
	closing    atomic.Bool
	overflowed atomic.Bool

	mu       sync.Mutex
	inflight map[uint16]qoff          // outbound QoS 1/2 packet id → its log position
	floors   map[qpos]uint64          // first position dropped at an overflow
	skips    map[qpos]map[uint64]bool // delivered at QoS 2 past the positions (from the resumed record)
	dups     map[uint16]bool          // inbound QoS 2 ids seen again while PUBREC'd
	saved    string                   // last record written, to skip unchanged ones
	// overLimit: filters of the SUBSCRIBE being processed that are past
	// MaxSubscriptions (OnSubscribe to OnSubscribed).
	overLimit map[string]bool
	tooBig    atomic.Bool // a record over the broker's limit was logged
}

func (ss *session) track(pid uint16, q qpos, off uint64) {
	ss.mu.Lock()
	ss.inflight[pid] = qoff{q: q, off: off}
	ss.mu.Unlock()
}

// received marks an outbound QoS 2 message as delivered (its PUBREC came).
func (ss *session) received(pid uint16) {
	ss.mu.Lock()
	if x, ok := ss.inflight[pid]; ok {
		x.rec = true
		ss.inflight[pid] = x
	}
	ss.mu.Unlock()
}

// markDup notes an inbound QoS 2 PUBLISH whose PUBREC is pending: it is
// acknowledged again, not stored again.
func (ss *session) markDup(pid uint16) {
	ss.mu.Lock()
	ss.dups[pid] = true
	ss.mu.Unlock()
}

func (ss *session) takeDup(pid uint16) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	d := ss.dups[pid]
	delete(ss.dups, pid)
	return d
}

func (ss *session) skipped(q qpos, off uint64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.skips[q][off]
}

func (ss *session) untrack(pid uint16) {
	ss.mu.Lock()
	delete(ss.inflight, pid)
	ss.mu.Unlock()
}

func (ss *session) noteFloor(q qpos, off uint64) {
	ss.mu.Lock()
	if f, ok := ss.floors[q]; !ok || off < f {
		ss.floors[q] = off
	}
	ss.mu.Unlock()
}

// establish claims the client id and prepares a resume (OnSessionEstablish).
func (s *Server) establish(cl *mqtt.Client, pk packets.Packet) *session {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
	defer cancel()
	v5 := cl.Properties.ProtocolVersion == 5
	ss := &session{cid: cl.ID, cl: cl, proto: cl.Properties.ProtocolVersion,
		claim:    fmt.Sprintf("%d/%d", s.cfg.NodeID, time.Now().UnixNano()),
		inflight: map[uint16]qoff{}, floors: map[qpos]uint64{}, skips: map[qpos]map[uint64]bool{},
		dups: map[uint16]bool{}}
	if v5 {
		ss.expirySec.Store(min(cl.Properties.Props.SessionExpiryInterval, uint32(s.cfg.MaxSessionExpiry/time.Second)))
		ss.persistent = ss.expirySec.Load() > 0
	} else {
		ss.persistent = !pk.Connect.Clean
		ss.expirySec.Store(uint32(s.cfg.MaxSessionExpiry / time.Second))
	}
	// Taking the id over tells a connection on another node to go (see
	// watch); a delayed will of the previous connection is cancelled.
	if err := s.b.PutRecord(ctx, nsOwners, cl.ID, []byte(ss.claim)); err != nil {
		s.log.Warn("cannot claim the client id cluster-wide", "client", cl.ID, "err", err)
	}
	s.cancelWill(ctx, cl.ID)

	s.hook.mu.Lock()
	old := s.hook.sessions[cl.ID]
	s.hook.mu.Unlock()
	existing, local := s.mochi.Clients.Get(cl.ID)
	switch {
	case pk.Connect.Clean:
		if _, ok := s.b.Record(nsSessions, cl.ID); ok {
			if err := s.b.DeleteRecord(ctx, nsSessions, cl.ID); err != nil {
				s.log.Warn("cannot drop the saved session", "client", cl.ID, "err", err)
			}
		}
	case local && old != nil && old.cl == existing && !old.catchingUp.Load():
		// A live connection here is taken over: mochi moves its
		// subscriptions and inflight messages, we move the positions.
		// (One still replaying its saved session has no subscriptions
		// in mochi yet: the new connection resumes the saved record
		// afresh, below.)
		old.mu.Lock()
		ss.inflight, ss.floors, ss.skips = old.inflight, old.floors, old.skips
		old.mu.Unlock()
		ss.prev = existing
		s.hook.pruneTakenOver(cl, existing)
	default:
		raw, ok := s.b.Record(nsSessions, cl.ID)
		if !ok {
			break
		}
		var rec sessionRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			s.log.Warn("unreadable saved session: starting afresh", "client", cl.ID, "err", err)
			break
		}
		rec.Subs = s.hook.allowedSubs(cl, rec.Subs)
		ss.resume = &rec
		ss.catchingUp.Store(true)
		// A dormant client makes mochi answer "session present"; the
		// subscriptions join it after the replay (deliverer.finishResume).
		if local {
			_ = s.mochi.DisconnectClient(existing, packets.ErrSessionTakenOver)
			s.mochi.Clients.Delete(cl.ID)
		}
		dormant := s.mochi.NewClient(nil, cl.Net.Listener, cl.ID, false)
		dormant.Properties.ProtocolVersion = rec.Proto
		dormant.Properties.Clean = false
		// QoS 2 in mid-flight: mochi resends the PUBRELs when the new
		// connection takes the dormant client over, and finds the PUBREC
		// records when PUBRELs come in.
		now := time.Now().Unix()
		exp := now + s.mochi.Options.Capabilities.MaximumMessageExpiryInterval
		for _, pid := range rec.Rel {
			dormant.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
				PacketID: pid, Created: now, Expiry: exp})
		}
		for _, pid := range rec.In2 {
			dormant.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
				PacketID: pid, Created: now, Expiry: exp})
		}
		for k, offs := range rec.Skip {
			if q, ok := parseQpos(k); ok {
				ss.skips[q] = map[uint64]bool{}
				for _, o := range offs {
					ss.skips[q][o] = true
				}
			}
		}
		dormant.Stop(packets.ErrSessionTakenOver)
		s.mochi.Clients.Add(dormant)
	}
	return ss
}

// snapshot builds the record to save for a session: its subscriptions
// and, for each queue its filters can match, the lowest position not yet
// acknowledged.
func (s *Server) snapshot(ss *session) sessionRecord {
	rec := sessionRecord{Proto: ss.proto, ExpirySec: ss.expirySec.Load(), Node: s.cfg.NodeID, Pos: map[string]uint64{}}
	skips := map[qpos][]uint64{}
	var rels []uint16
	if r := ss.resume; ss.catchingUp.Load() {
		// Not replayed yet: what was saved still stands, plus what the
		// replay has had PUBREC'd since (below).
		rec.Subs = r.Subs
		for k, v := range r.Pos {
			rec.Pos[k] = v
		}
		for k, offs := range r.Skip {
			if q, ok := parseQpos(k); ok {
				skips[q] = append(skips[q], offs...)
			}
		}
		if !ss.inherited.Load() {
			// Before the CONNACK mochi's inflight is not the resumed
			// one yet: the saved PUBRELs and PUBRECs still stand.
			rels = append(rels, r.Rel...)
			rec.In2 = append(rec.In2, r.In2...)
		}
		ss.mu.Lock()
		for pid, x := range ss.inflight {
			if x.rec {
				skips[x.q] = append(skips[x.q], x.off)
				rels = append(rels, pid)
			}
		}
		ss.mu.Unlock()
	} else {
		for _, sub := range ss.cl.State.Subscriptions.GetAll() {
			id := sub.Identifier
			for _, v := range sub.Identifiers {
				id = v
			}
			rec.Subs = append(rec.Subs, subRecord{Filter: sub.Filter, QoS: sub.Qos, NoLocal: sub.NoLocal,
				RAP: sub.RetainAsPublished, RH: sub.RetainHandling, ID: id})
		}
		m := newMatcher(rec.Subs, s.cfg.FallbackTopic)
		pos := s.dl.positions()
		ss.mu.Lock()
		for q, p := range pos {
			if !m.mayMatch(q.topic) {
				continue
			}
			if f, ok := ss.floors[q]; ok && f < p {
				p = f
			}
			rec.Pos[q.String()] = p
		}
		for pid, x := range ss.inflight {
			if x.rec {
				// PUBREC'd (mochi may not have swapped in its PUBREL
				// yet): delivered, and its PUBREL is owed.
				skips[x.q] = append(skips[x.q], x.off)
				rels = append(rels, pid)
				continue
			}
			k := x.q.String()
			if p, ok := rec.Pos[k]; !ok || x.off < p {
				rec.Pos[k] = x.off
			}
		}
		for q, offs := range ss.skips {
			for o := range offs {
				skips[q] = append(skips[q], o)
			}
		}
		ss.mu.Unlock()
	}
	for q, offs := range skips {
		k := q.String()
		for _, o := range offs {
			if p, ok := rec.Pos[k]; ok && o >= p && !slices.Contains(rec.Skip[k], o) {
				if rec.Skip == nil {
					rec.Skip = map[string][]uint64{}
				}
				rec.Skip[k] = append(rec.Skip[k], o)
			}
		}
		slices.Sort(rec.Skip[k])
	}
	// mochi's inflight holds the PUBRELs and PUBRECs pending, also those
	// a resumed session inherited from its record.
	for _, pk := range ss.cl.State.Inflight.GetAll(false) {
		switch pk.FixedHeader.Type {
		case packets.Pubrel:
			rels = append(rels, pk.PacketID)
		case packets.Pubrec:
			rec.In2 = append(rec.In2, pk.PacketID)
		}
	}
	slices.Sort(rels)
	rec.Rel = slices.Compact(rels)
	slices.Sort(rec.In2)
	rec.In2 = slices.Compact(rec.In2)
	return rec
}

// errNotOwner: the client id was claimed by a newer connection.
var errNotOwner = errors.New("mqtt: the session was taken over")

// commitSession saves a persistent session now and reports whether it
// could: QoS 2 steps (an outbound PUBREC received, an inbound PUBLISH
// stored) are saved before the packet that confirms them to the client
// (PUBREL, PUBREC) is sent, so a takeover on any node sees them.
func (s *Server) commitSession(ss *session) error {
	if !ss.persistent {
		return nil
	}
	if !s.ownsSession(ss.cl) {
		return errNotOwner
	}
	r, ok := s.sessionChange(ss, false)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
	defer cancel()
	if err := s.b.ChangeRecords(ctx, r); err != nil {
		return err
	}
	ss.markSaved(r)
	return nil
}

// sessionChange is the record write that saves a persistent session, or
// false when nothing changed since the last one. final marks the write at
// disconnect.
func (s *Server) sessionChange(ss *session, final bool) (command.Record, bool) {
	if !ss.persistent || !s.ownsSession(ss.cl) {
		return command.Record{}, false
	}
	rec := s.snapshot(ss)
	if final {
		rec.DisconnectedMs = time.Now().UnixMilli()
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return command.Record{}, false
	}
	if len(raw) > command.MaxRecordValueBytes {
		// MaxSubscriptions keeps records well below this; never let one
		// session's record fail the checkpoint batch it shares.
		if ss.tooBig.CompareAndSwap(false, true) {
			s.log.Error("session record over the broker's record limit: not saved", "client", ss.cid, "bytes", len(raw))
		}
		return command.Record{}, false
	}
	ss.mu.Lock()
	same := ss.saved == string(raw)
	ss.mu.Unlock()
	return command.Record{Op: command.RecordPut, Namespace: nsSessions, Key: ss.cid, Value: raw}, !same
}

func (ss *session) markSaved(r command.Record) {
	ss.mu.Lock()
	ss.saved = string(r.Value)
	ss.mu.Unlock()
}

// saveSession writes one persistent session's record if it changed.
func (s *Server) saveSession(ctx context.Context, ss *session, final bool) {
	r, ok := s.sessionChange(ss, final)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	if err := s.b.ChangeRecords(ctx, r); err != nil {
		s.log.Warn("cannot save the session", "client", ss.cid, "err", err)
		return
	}
	ss.markSaved(r)
}

// endSession runs when a connection ends (not taken over on this node).
func (s *Server) endSession(ss *session, expire bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CommitTimeout)
	defer cancel()
	if !ss.persistent || expire {
		if _, ok := s.b.Record(nsSessions, ss.cid); ok && s.ownsSession(ss.cl) {
			_ = s.b.DeleteRecord(ctx, nsSessions, ss.cid)
		}
		return
	}
	s.saveSession(ctx, ss, true)
	// The saved record is the session from now on; a dormant copy here
	// would keep collecting messages the replay delivers again.
	if cur, ok := s.mochi.Clients.Get(ss.cid); ok && cur == ss.cl {
		s.mochi.UnsubscribeClient(ss.cl)
		ss.cl.ClearInflights()
		s.mochi.Clients.Delete(ss.cid)
	}
}

// ownsSession says whether cl's claim on its client id is still the
// cluster's latest.
func (s *Server) ownsSession(cl *mqtt.Client) bool {
	s.hook.mu.Lock()
	ss := s.hook.sessions[cl.ID]
	s.hook.mu.Unlock()
	claim := ""
	if ss != nil && ss.cl == cl {
		claim = ss.claim
	}
	if claim == "" {
		return true // ended here already: nobody else claimed it since
	}
	got, ok := s.b.Record(nsOwners, cl.ID)
	return !ok || string(got) == claim
}

// Intervals of the background sweeps.
const (
	retainedSyncInterval = 500 * time.Millisecond
	sessionSweepInterval = 2 * time.Second
)

// Bounds of one checkpoint command.
const (
	checkpointBatchSessions = 256
	checkpointBatchBytes    = 512 << 10
)

// checkpointLoop saves connected persistent sessions' positions, so a
// node crash replays at most CheckpointInterval of deliveries.
func (s *Server) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.hook.mu.Lock()
		var list []*session
		for _, ss := range s.hook.sessions {
			if ss.persistent && !ss.catchingUp.Load() && !ss.closing.Load() {
				list = append(list, ss)
			}
		}
		s.hook.mu.Unlock()
		// Many sessions' checkpoints share one replicated command.
		for len(list) > 0 {
			var batch []*session
			var recs []command.Record
			size := 0
			for len(list) > 0 && len(recs) < checkpointBatchSessions && size < checkpointBatchBytes {
				ss := list[0]
				list = list[1:]
				if r, ok := s.sessionChange(ss, false); ok {
					batch, recs = append(batch, ss), append(recs, r)
					size += len(r.Value)
				}
			}
			if len(recs) == 0 {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
			err := s.b.ChangeRecords(cctx, recs...)
			cancel()
			if errors.Is(err, broker.ErrBadRecord) && len(recs) > 1 {
				// A record the broker refuses must not hold the others
				// back: one at a time.
				for i, ss := range batch {
					cctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
					if err := s.b.ChangeRecords(cctx, recs[i]); err == nil {
						ss.markSaved(recs[i])
					} else {
						s.log.Warn("cannot checkpoint the session", "client", ss.cid, "err", err)
					}
					cancel()
				}
				continue
			}
			if err != nil {
				s.log.Warn("cannot checkpoint sessions", "sessions", len(recs), "err", err)
				break
			}
			for i, ss := range batch {
				ss.markSaved(recs[i])
			}
		}
		s.expireSessions(ctx)
	}
}

// expireSessions drops saved sessions past their expiry; the leader does
// it, so the nodes do not race each other, every sessionSweepInterval
// (it reads every saved session).
func (s *Server) expireSessions(ctx context.Context) {
	st := s.b.Status()
	if st.Leader != st.ID || time.Since(s.lastSweep) < sessionSweepInterval {
		return
	}
	s.lastSweep = time.Now()
	now := time.Now().UnixMilli()
	for cid, raw := range s.b.Records(nsSessions) {
		var rec sessionRecord
		if json.Unmarshal(raw, &rec) != nil || rec.DisconnectedMs == 0 {
			continue
		}
		if now-rec.DisconnectedMs > int64(rec.ExpirySec)*1000 {
			_ = s.b.DeleteRecord(ctx, nsSessions, cid)
		}
	}
}

// watch follows the records: a client id claimed on another node
// disconnects the connection here, shared groups whose owner went away
// get a new one, and the retained messages mirror into mochi's index.
func (s *Server) watch(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastRetained time.Time
	ownPrefix := fmt.Sprintf("%d/", s.cfg.NodeID) // claims made here (establish)
	for {
		ch := s.b.Changed()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
		s.hook.mu.Lock()
		var gone []*session
		for cid, ss := range s.hook.sessions {
			// A newer claim made on this node is a takeover here, which
			// mochi ends itself (inheritClientSession) once it has moved
			// the old connection's subscriptions. Ending it from here too
			// would race with that move: the old connection's
			// OnDisconnect could save and drop the session first, and the
			// new connection take it over empty.
			if got, ok := s.b.Record(nsOwners, cid); ok && string(got) != ss.claim && !strings.HasPrefix(string(got), ownPrefix) {
				gone = append(gone, ss)
			}
		}
		s.hook.mu.Unlock()
		for _, ss := range gone {
			s.log.Info("client id taken over on another node: disconnecting", "client", ss.cid)
			_ = s.mochi.DisconnectClient(ss.cl, packets.ErrSessionTakenOver)
		}
		// A full comparison of the retained records is not cheap, and
		// every apply wakes this loop: at most twice a second. (The node
		// a retained message is published on updates its index before the
		// ack; the other nodes follow within retainedSyncInterval.)
		if time.Since(lastRetained) >= retainedSyncInterval {
			s.syncRetained()
			lastRetained = time.Now()
		}
		s.reclaimShares(ctx)
		s.fireDueWills(ctx)
		// Coalesce bursts of applies (every message batch is one).
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
