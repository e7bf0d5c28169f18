package mqtt

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/broker/command"
)

// retainedValue is a retained message in the records.
type retainedValue struct {
	Topic         string      `json:"t"`
	QoS           byte        `json:"q"`
	Payload       []byte      `json:"p"`
	User          [][2]string `json:"u,omitempty"`
	ContentType   string      `json:"ct,omitempty"`
	ResponseTopic string      `json:"rt,omitempty"`
	Correlation   []byte      `json:"cd,omitempty"`
	PayloadFormat *byte       `json:"pf,omitempty"`
	ExpiresMs     int64       `json:"exp,omitempty"`
}

// retainedRecord is the record change a retained PUBLISH makes: an empty
// payload deletes the topic's retained message.
func retainedRecord(pk *packets.Packet) *command.Record {
	if len(pk.Payload) == 0 {
		return &command.Record{Op: command.RecordDelete, Namespace: nsRetained, Key: pk.TopicName}
	}
	v := retainedValue{Topic: pk.TopicName, QoS: pk.FixedHeader.Qos, Payload: pk.Payload,
		ContentType: pk.Properties.ContentType, ResponseTopic: pk.Properties.ResponseTopic,
		Correlation: pk.Properties.CorrelationData}
	for _, u := range pk.Properties.User {
		v.User = append(v.User, [2]string{u.Key, u.Val})
	}
	if pk.Properties.PayloadFormatFlag {
		f := pk.Properties.PayloadFormat
		v.PayloadFormat = &f
	}
	if e := pk.Properties.MessageExpiryInterval; e > 0 {
		v.ExpiresMs = time.Now().UnixMilli() + int64(e)*1000
	}
	raw, _ := json.Marshal(v) // plain data: cannot fail
	return &command.Record{Op: command.RecordPut, Namespace: nsRetained, Key: pk.TopicName, Value: raw}
}

func (v *retainedValue) packet() packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: v.QoS, Retain: true},
		TopicName: v.Topic, Payload: v.Payload, Created: time.Now().Unix(), Origin: "\x00retained"}
	pk.Properties.ContentType, pk.Properties.ResponseTopic, pk.Properties.CorrelationData = v.ContentType, v.ResponseTopic, v.Correlation
	for _, u := range v.User {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u[0], Val: u[1]})
	}
	if v.PayloadFormat != nil {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = *v.PayloadFormat, true
	}
	if v.ExpiresMs > 0 {
		pk.Expiry = v.ExpiresMs / 1000
		pk.Properties.MessageExpiryInterval = uint32(max(1, (v.ExpiresMs-time.Now().UnixMilli())/1000))
	}
	return pk
}

// retainedMirror is what this node last copied from the records into
// mochi's retained index.
type retainedMirror struct {
	mu   sync.Mutex
	seen map[string]string
}

func (s *Server) loadRetained() { s.syncRetained() }

// lockRetained takes the retained mirror, then mochi's retained index,
// for writing (always in that order).
func (s *Server) lockRetained() {
	s.ret.mu.Lock()
	if s.ret.seen == nil {
		s.ret.seen = map[string]string{}
	}
	s.lockRetainIndex()
}

// retainHoldMax bounds how long a SUBSCRIBE may hold retainLock after
// its SUBACK is ready (writing it, then the retained messages) while a
// retained update waits: a client whose socket takes no SUBACK for that
// long is disconnected, so one client cannot stall delivery node-wide.
const retainHoldMax = time.Second

// lockRetainIndex takes retainLock for writing. While it waits (and
// blocks every new SUBSCRIBE), a watchdog disconnects the subscribers
// holding it past retainHoldMax.
func (s *Server) lockRetainIndex() {
	if s.retainLock.TryLock() {
		return
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(retainHoldMax / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.hook.stopStuckSubscribers(retainHoldMax)
			}
		}
	}()
	s.retainLock.Lock()
	close(done)
}

func (s *Server) unlockRetained() {
	s.retainLock.Unlock()
	s.ret.mu.Unlock()
}

// resetRetainedLocked makes mochi's retained message of one topic what
// the records say (lockRetained held).
func (s *Server) resetRetainedLocked(topic string) {
	raw, ok := s.b.Record(nsRetained, topic)
	var v retainedValue
	if !ok || json.Unmarshal(raw, &v) != nil {
		s.mochi.Topics.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: topic})
		delete(s.ret.seen, topic)
		return
	}
	s.mochi.Topics.RetainMessage(v.packet())
	s.ret.seen[topic] = string(raw)
}

// syncRetained makes mochi's retained index (which answers SUBSCRIBE on
// this node) equal to the replicated records.
func (s *Server) syncRetained() {
	s.lockRetained()
	defer s.unlockRetained()
	m := &s.ret
	recs := s.b.Records(nsRetained)
	for topic := range m.seen {
		if _, ok := recs[topic]; !ok {
			s.mochi.Topics.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: topic})
			delete(m.seen, topic)
		}
	}
	for topic, raw := range recs {
		if m.seen[topic] == string(raw) {
			continue
		}
		var v retainedValue
		if json.Unmarshal(raw, &v) != nil {
			continue
		}
		s.mochi.Topics.RetainMessage(v.packet())
		m.seen[topic] = string(raw)
	}
}

// retainedMessages lists mochi's retained messages matching filter.
func (s *Server) retainedMessages(filter string) []packets.Packet {
	s.retainLock.RLock()
	defer s.retainLock.RUnlock()
	return s.mochi.Topics.Messages(filter)
}

// Shared subscriptions: one node owns each group's deliveries.

func (s *Server) ownsShare(filter string) bool {
	got, ok := s.b.Record(nsShares, filter)
	return ok && string(got) == strconv.FormatUint(s.cfg.NodeID, 10)
}

func (s *Server) claimShare(ctx context.Context, filter string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	if _, err := s.b.PutRecordIfAbsent(ctx, nsShares, filter, []byte(strconv.FormatUint(s.cfg.NodeID, 10))); err != nil {
		s.log.Warn("cannot claim a shared subscription group", "filter", filter, "err", err)
	}
}

// releaseShare gives up a group whose last local member left (before the
// UNSUBACK, or as the connection ends), so a node with members claims it.
func (s *Server) releaseShare(filter string) {
	if !s.ownsShare(filter) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CommitTimeout)
	defer cancel()
	if err := s.b.DeleteRecord(ctx, nsShares, filter); err != nil {
		s.log.Warn("cannot release a shared subscription group", "filter", filter, "err", err)
	}
}

// reclaimShares claims the groups with local members that have no owner,
// or whose owner the cluster view calls down.
func (s *Server) reclaimShares(ctx context.Context) {
	down := s.b.DownNodes()
	for _, f := range s.hook.localShares() {
		got, ok := s.b.Record(nsShares, f)
		if ok {
			id, _ := strconv.ParseUint(string(got), 10, 64)
			if !down[id] {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
			_ = s.b.DeleteRecord(cctx, nsShares, f)
			cancel()
		}
		s.claimShare(ctx, f)
	}
}

// Wills.

// willRecord is a delayed will waiting in the records.
type willRecord struct {
	Node   uint64      `json:"node"`
	DueMs  int64       `json:"due_ms"`
	Topic  string      `json:"t"`
	QoS    byte        `json:"q"`
	Retain bool        `json:"r,omitempty"`
	Body   []byte      `json:"p"`
	User   [][2]string `json:"u,omitempty"`
}

func (w *willRecord) packet() packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: w.QoS, Retain: w.Retain},
		TopicName: w.Topic, Payload: w.Body}
	for _, u := range w.User {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u[0], Val: u[1]})
	}
	return pk
}

// publishWill sends a will through the log now, or records it to be sent
// after its delay unless the session comes back first.
func (s *Server) publishWill(cl *mqtt.Client, will mqtt.Will) {
	w := willRecord{Node: s.cfg.NodeID, Topic: will.TopicName, QoS: will.Qos, Retain: will.Retain, Body: will.Payload}
	for _, u := range will.User {
		w.User = append(w.User, [2]string{u.Key, u.Val})
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
	defer cancel()
	if will.WillDelayInterval > 0 {
		w.DueMs = time.Now().UnixMilli() + int64(will.WillDelayInterval)*1000
		raw, _ := json.Marshal(w)
		if err := s.b.PutRecord(ctx, nsWills, cl.ID, raw); err != nil {
			s.log.Warn("cannot record a delayed will", "client", cl.ID, "err", err)
		}
		return
	}
	if err := s.produceWill(ctx, cl.ID, &w); err != nil {
		s.log.Warn("will not published", "client", cl.ID, "err", err)
	}
}

func (s *Server) produceWill(ctx context.Context, cid string, w *willRecord) error {
	pk := w.packet()
	msg := toMessage(&pk, cid, s.cfg.FallbackTopic)
	if _, err := s.b.Produce(ctx, []broker.Message{msg}); err != nil {
		return err
	}
	if w.Retain {
		if err := s.b.ChangeRecords(ctx, *retainedRecord(&pk)); err != nil {
			return err
		}
	}
	s.dl.kick()
	return nil
}

func (s *Server) cancelWill(ctx context.Context, cid string) {
	if _, ok := s.b.Record(nsWills, cid); ok {
		_ = s.b.DeleteRecord(ctx, nsWills, cid)
	}
}

// fireDueWills publishes the delayed wills that are due. The node that
// recorded a will fires it; a will of a node the cluster calls down is
// fired by the leader. Deleting the record first (only one deleter
// sees it) keeps it to one publish.
func (s *Server) fireDueWills(ctx context.Context) {
	st := s.b.Status()
	down := s.b.DownNodes()
	now := time.Now().UnixMilli()
	for cid, raw := range s.b.Records(nsWills) {
		var w willRecord
		if json.Unmarshal(raw, &w) != nil || w.DueMs > now {
			continue
		}
		if w.Node != s.cfg.NodeID && !(down[w.Node] && st.Leader == st.ID) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
		if err := s.b.DeleteRecord(cctx, nsWills, cid); err == nil {
			if err := s.produceWill(cctx, cid, &w); err != nil {
				s.log.Warn("delayed will not published", "client", cid, "err", err)
			}
		}
		cancel()
	}
}
