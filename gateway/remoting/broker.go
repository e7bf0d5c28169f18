package remoting

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	bcmd "github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Pull limits.
const (
	maxPullMessages = 32
	maxPullBytes    = 256 << 10
	// maxSuspend keeps a held pull under the Go client's 30 s timeout.
	maxSuspend     = 25 * time.Second
	defaultSuspend = 15 * time.Second
	retryPrefix    = "%RETRY%"
	dlqPrefix      = "%DLQ%"
	// defaultMaxReconsume is Java's subscription-group retryMaxTimes.
	defaultMaxReconsume = 16
)

type brokerDoor struct {
	cfg    Config
	b      *broker.Broker
	shards shards
	opaque atomic.Int32

	mu sync.Mutex
	// groups: consumer group -> connection -> clientID.
	groups map[string]map[*Conn]string
	// subs: consumer group -> topic -> tags (nil: every message).
	subs map[string]map[string][]string
	// producers: producer group -> connection -> clientID.
	producers map[string]map[*Conn]string
	// users: the user of each connection's last heartbeat (auth on), so
	// that a transaction check goes only to a producer that may publish
	// to the message's topic (txn.go).
	users map[*Conn]string
	// beats: each client connection's last heartbeat; swept: last sweep.
	beats map[*Conn]time.Time
	swept time.Time
}

// NewBroker returns the broker front door for cfg.Broker.
func NewBroker(cfg Config) *Server {
	cfg.defaults()
	d := &brokerDoor{cfg: cfg, b: cfg.Broker, shards: newShards(&cfg),
		groups: map[string]map[*Conn]string{}, subs: map[string]map[string][]string{},
		producers: map[string]map[*Conn]string{}, users: map[*Conn]string{}, beats: map[*Conn]time.Time{}}
	s := NewServer("rocketmq-broker", cfg.Logger, cfg.MaxFrameBytes)
	cfg.secure(s)
	s.Handle(command.HeartBeat, d.heartbeat)
	s.Handle(command.SendMessage, d.send)
	s.Handle(command.SendMessageV2, d.send)
	s.Handle(command.SendBatchMessage, d.send)
	s.Handle(command.PullMessage, d.pull)
	s.Handle(command.QueryConsumerOffset, d.queryOffset)
	s.Handle(command.UpdateConsumerOffset, d.updateOffset)
	s.Handle(command.GetMaxOffset, d.maxOffset)
	s.Handle(command.GetMinOffset, d.minOffset)
	s.Handle(command.SearchOffsetByTimestamp, d.searchOffset)
	s.Handle(command.UpdateAndCreateTopic, d.createTopic)
	s.Handle(command.DeleteTopicInBroker, d.deleteTopic)
	s.Handle(command.GetConsumerListByGroup, d.consumerList)
	s.Handle(command.UnregisterClient, d.unregister)
	s.Handle(command.ViewMessageByID, d.viewMessage)
	s.Handle(command.QueryMessage, d.queryMessage)
	s.Handle(command.ConsumerSendMsgBack, d.sendBack)
	s.Handle(command.EndTransaction, d.endTransaction)
	d.b.SetTxnChecker(d.checkTxn)
	lk := newLocks(d.b, cfg.Logger, lockExpiry, func(g string) { d.notifyGroup(g, nil) })
	s.Handle(command.LockBatchMQ, lk.lock)
	s.Handle(command.UnlockBatchMQ, lk.unlock)
	s.OnClose(d.forget)
	return s
}

func reply(req *command.RemotingCommand, code command.ResponseCode, remark string, ext ...string) *command.RemotingCommand {
	r := command.NewResponse(req, code, remark)
	for i := 0; i+1 < len(ext); i += 2 {
		r.ExtFields[ext[i]] = ext[i+1]
	}
	return r
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// sendTimeout bounds one send's wait for its commit.
const sendTimeout = 10 * time.Second

// queueOf maps a request's broker name and queueId to the topic's queue.
func (d *brokerDoor) queueOf(req *command.RemotingCommand) uint32 {
	q := extInt(req, "queueId", 0)
	if q < 0 || q > math.MaxUint32 {
		return noQueue // answers as for an empty queue
	}
	return d.shards.core(d.shards.slotOf(req), uint32(q))
}

// ---- heartbeat and membership ----

type heartbeatData struct {
	ClientID        string `json:"clientID"`
	ProducerDataSet []struct {
		GroupName string `json:"groupName"`
	} `json:"producerDataSet"`
	ConsumerDataSet []struct {
		GroupName           string `json:"groupName"`
		SubscriptionDataSet []struct {
			Topic          string   `json:"topic"`
			SubString      string   `json:"subString"`
			TagsSet        []string `json:"tagsSet"`
			ExpressionType string   `json:"expressionType"`
		} `json:"subscriptionDataSet"`
	} `json:"consumerDataSet"`
}

func (d *brokerDoor) heartbeat(ctx context.Context, c *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	var hb heartbeatData
	if err := json.Unmarshal(req.Body, &hb); err != nil {
		return reply(req, command.SystemError, "bad heartbeat body: "+err.Error())
	}
	// Retry topics first, so they are routable when the consumer asks.
	for _, cd := range hb.ConsumerDataSet {
		rt := retryPrefix + cd.GroupName
		if _, ok := d.b.Topic(rt); !ok && cd.GroupName != "" {
			if err := d.b.CreateTopic(ctx, broker.Topic{Name: rt, Queues: 1, Perm: broker.PermRead | broker.PermWrite}); err != nil {
				d.cfg.Logger.Warn("cannot create retry topic", "topic", rt, "err", err)
			}
		}
	}
	var notify []string
	now := time.Now()
	d.mu.Lock()
	d.beats[c] = now
	if name := callerName(ctx); name != "" {
		d.users[c] = name
	}
	silent := d.silentLocked(now)
	for _, pd := range hb.ProducerDataSet {
		m := d.producers[pd.GroupName]
		if m == nil {
			m = map[*Conn]string{}
			d.producers[pd.GroupName] = m
		}
		m[c] = hb.ClientID
	}
	for _, cd := range hb.ConsumerDataSet {
		m := d.groups[cd.GroupName]
		if m == nil {
			m = map[*Conn]string{}
			d.groups[cd.GroupName] = m
		}
		if old, ok := m[c]; !ok || old != hb.ClientID {
			notify = append(notify, cd.GroupName)
		}
		m[c] = hb.ClientID
		subs := map[string][]string{}
		for _, sd := range cd.SubscriptionDataSet {
			subs[sd.Topic] = tagFilter(sd.SubString)
		}
		d.subs[cd.GroupName] = subs
	}
	d.mu.Unlock()
	for _, sc := range silent {
		d.cfg.Logger.Info("closing a client connection without heartbeats", "remote", sc.RemoteAddr().String(), "expiry", d.cfg.ClientExpiry)
		sc.Close() // forget runs and tells its groups
	}
	for _, g := range notify {
		d.notifyGroup(g, c)
	}
	return reply(req, command.Success, "")
}

// silentLocked returns the client connections whose last heartbeat is
// older than ClientExpiry, at most once per tenth of it. Sweeping on
// other clients' heartbeats needs no goroutine: with nobody beating,
// nobody's group view depends on the silent ones.
func (d *brokerDoor) silentLocked(now time.Time) []*Conn {
	if now.Sub(d.swept) < d.cfg.ClientExpiry/10 {
		return nil
	}
	d.swept = now
	var out []*Conn
	for c, at := range d.beats {
		if now.Sub(at) > d.cfg.ClientExpiry {
			out = append(out, c)
			delete(d.beats, c)
		}
	}
	return out
}

// tagFilter parses a TAG expression: nil for every message.
func tagFilter(expr string) []string {
	expr = strings.TrimSpace(expr)
	if expr == "" || expr == "*" {
		return nil
	}
	var tags []string
	for t := range strings.SplitSeq(expr, "||") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// notifyGroup sends NOTIFY_CONSUMER_IDS_CHANGED to the group's connections
// other than skip (nil: all). No reply comes back.
func (d *brokerDoor) notifyGroup(group string, skip *Conn) {
	d.mu.Lock()
	var conns []*Conn
	for c := range d.groups[group] {
		if c != skip {
			conns = append(conns, c)
		}
	}
	d.mu.Unlock()
	for _, c := range conns {
		cmd := &command.RemotingCommand{Code: int32(command.NotifyConsumerIDsChanged), Language: command.LanguageJava,
			Version: brokerVersion, Opaque: d.opaque.Add(1), Flag: command.FlagOneway,
			ExtFields: map[string]string{"consumerGroup": group}}
		go c.Send(cmd)
	}
}

// forget drops a closed connection from every group and tells the rest.
func (d *brokerDoor) forget(c *Conn) {
	var left []string
	d.mu.Lock()
	delete(d.beats, c)
	delete(d.users, c)
	for g, m := range d.groups {
		if _, ok := m[c]; ok {
			delete(m, c)
			if len(m) == 0 {
				delete(d.groups, g)
			} else {
				left = append(left, g)
			}
		}
	}
	for g, m := range d.producers {
		delete(m, c)
		if len(m) == 0 {
			delete(d.producers, g)
		}
	}
	d.mu.Unlock()
	for _, g := range left {
		d.notifyGroup(g, nil)
	}
}

func (d *brokerDoor) unregister(_ context.Context, c *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	left := false
	d.mu.Lock()
	if g := req.ExtFields["consumerGroup"]; g != "" {
		if _, ok := d.groups[g][c]; ok {
			delete(d.groups[g], c)
			left = true
		}
	}
	if g := req.ExtFields["producerGroup"]; g != "" {
		delete(d.producers[g], c)
	}
	d.mu.Unlock()
	if left {
		d.notifyGroup(req.ExtFields["consumerGroup"], nil)
	}
	return reply(req, command.Success, "")
}

func (d *brokerDoor) consumerList(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	group := req.ExtFields["consumerGroup"]
	d.mu.Lock()
	ids := []string{}
	for _, id := range d.groups[group] {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	slices.Sort(ids)
	body, _ := json.Marshal(map[string][]string{"consumerIdList": ids})
	code, remark := command.Success, ""
	if len(ids) == 0 {
		code, remark = command.SystemError, "no consumer for group "+group
	}
	r := reply(req, code, remark)
	r.Body = body
	return r
}

// ---- send ----

// sendHeader reads SEND_MESSAGE's long keys or the V2 one-letter keys.
type sendHeader struct {
	topic, props                    string
	queue, sysFlag, flag, reconsume int64
	born                            int64
	maxReconsume                    int64
	batch                           bool
}

func parseSendHeader(req *command.RemotingCommand) sendHeader {
	long := req.Code == int32(command.SendMessage) || req.Code == int32(command.SendReplyMessage)
	k := func(l, s string) string {
		if long {
			return l
		}
		return s
	}
	return sendHeader{
		topic:        req.ExtFields[k("topic", "b")],
		queue:        extInt(req, k("queueId", "e"), -1),
		sysFlag:      extInt(req, k("sysFlag", "f"), 0),
		born:         extInt(req, k("bornTimestamp", "g"), 0),
		flag:         extInt(req, k("flag", "h"), 0),
		props:        req.ExtFields[k("properties", "i")],
		reconsume:    extInt(req, k("reconsumeTimes", "j"), 0),
		maxReconsume: extInt(req, k("maxReconsumeTimes", "l"), 0),
		batch:        req.Code == int32(command.SendBatchMessage) || req.ExtFields[k("batch", "m")] == "true",
	}
}

func (d *brokerDoor) send(ctx context.Context, c *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	h := parseSendHeader(req)
	slot := d.shards.slotOf(req)
	if h.queue >= 0 {
		h.queue = int64(d.shards.core(slot, uint32(h.queue)))
	}
	if group, ok := strings.CutPrefix(h.topic, retryPrefix); ok && !h.batch {
		// A retry past its limit goes to the group's dead-letter topic
		// (Java: reconsumeTimes > maxReconsumeTimes, default 16).
		limit := h.maxReconsume
		if limit <= 0 {
			limit = defaultMaxReconsume
		}
		if h.reconsume > limit {
			dlq := dlqPrefix + group
			if _, ok := d.b.Topic(dlq); !ok {
				if err := d.b.CreateTopic(ctx, broker.Topic{Name: dlq, Queues: 1, Perm: broker.PermRead | broker.PermWrite}); err != nil {
					return d.produceFailed(req, err)
				}
			}
			h.topic, h.queue = dlq, 0
		}
	}
	if _, ok := d.b.Topic(h.topic); !ok && !d.cfg.AutoCreateTopics {
		return reply(req, command.TopicNotExist, "topic["+h.topic+"] not exist, apply first please!")
	}
	var msgs []broker.Message
	base := batch.Message{Flag: uint32(h.flag), SysFlag: uint32(h.sysFlag), BornUnixMs: h.born,
		ReconsumeTimes: uint32(h.reconsume), BornHost: c.RemoteAddr().String()}
	if h.batch {
		inner, err := decodeBatch(req.Body)
		if err != nil {
			return reply(req, command.MessageIllegal, err.Error())
		}
		for _, in := range inner {
			m := toBrokerMessage(h.topic, in.props, in.body)
			copyHeader(&m, &base)
			m.Flag = in.flag
			msgs = append(msgs, broker.Message{Message: m, Queue: int(h.queue)})
		}
	} else {
		m := toBrokerMessage(h.topic, h.props, req.Body)
		copyHeader(&m, &base)
		msgs = []broker.Message{{Message: m, Queue: int(h.queue)}}
	}
	if len(msgs) == 0 {
		return reply(req, command.MessageIllegal, "empty batch")
	}
	// Delays, timers and half messages (delay.go).
	if code, remark := d.schedule(msgs, h.sysFlag, time.Now()); code != command.Success {
		return reply(req, code, remark)
	}
	if h.queue < 0 {
		// One queue for the whole batch, as Java does, among this broker
		// name's (the answer names a queue of it).
		if t, ok := d.b.Topic(h.topic); ok {
			q := int(time.Now().UnixNano() % int64(t.Queues))
			if n := d.shards.count(slot, t.Queues); n > 0 {
				q = int(d.shards.core(slot, uint32(time.Now().UnixNano()%int64(n))))
			}
			for i := range msgs {
				msgs[i].Queue = q
			}
		}
	}
	// Bounded: a node cut off from the leader must answer (and the
	// client retry elsewhere) rather than hold the send.
	pctx, cancel := context.WithTimeout(ctx, sendTimeout)
	res, err := d.b.Produce(pctx, msgs)
	cancel()
	if err != nil {
		return d.produceFailed(req, err)
	}
	_, localQueue := d.shards.local(res[0].Queue)
	ids := make([]string, len(res))
	for i, r := range res {
		ids[i] = offsetMsgID(d.cfg.BrokerAddr, r.PhysOffset)
	}
	txID := ""
	if len(msgs) == 1 {
		for _, p := range msgs[0].Properties {
			if p.Key == propUniq {
				txID = p.Value
			}
		}
	}
	return reply(req, command.Success, "",
		"msgId", strings.Join(ids, ","),
		"queueId", u(uint64(localQueue)),
		"queueOffset", u(res[0].QueueOffset),
		"transactionId", txID,
		"MSG_REGION", "DefaultRegion",
		"TRACE_ON", "true")
}

func copyHeader(m, h *batch.Message) {
	m.SysFlag, m.BornUnixMs, m.ReconsumeTimes, m.BornHost = h.SysFlag, h.BornUnixMs, h.ReconsumeTimes, h.BornHost
	m.Flag = h.Flag
}

func produceCode(err error) command.ResponseCode {
	switch {
	case errors.Is(err, broker.ErrDiskFull):
		// Java's answer to a full disk: the Go client retries it at once,
		// on another broker name when the route has one.
		return command.ServiceNotAvailable
	case errors.Is(err, broker.ErrNoTopic):
		return command.TopicNotExist
	case errors.Is(err, broker.ErrNotWritable):
		return command.NoPermission
	case errors.Is(err, broker.ErrInvalidTopic):
		return command.InvalidParameter
	case errors.Is(err, broker.ErrTooLarge):
		return command.MessageIllegal
	case errors.Is(err, broker.ErrNotLeader), errors.Is(err, broker.ErrClosed):
		return command.ServiceNotAvailable
	}
	return command.SystemError
}

// produceFailed answers a write the core refused, with produceCode's
// code. A refusal by the disk alarm carries its reason in the remark,
// which the Go client's error quotes after its last retry: the user learns
// which node is short of space and which setting sets the limit, not only
// that the service was unavailable.
func (d *brokerDoor) produceFailed(req *command.RemotingCommand, err error) *command.RemotingCommand {
	remark := err.Error()
	if errors.Is(err, broker.ErrDiskFull) {
		remark = "[DISK_FULL] service not available now: " + remark
		if !d.b.DiskStatus().Local {
			// Refused for a quorum of other nodes, whose own limits apply;
			// the core's reason names the nodes but not the setting.
			remark += "; each node refuses producers below its --disk-free-limit-bytes"
		}
	}
	return reply(req, produceCode(err), remark)
}

type innerMessage struct {
	flag  uint32
	body  []byte
	props string
}

var errBadBatch = errors.New("malformed batch body")

// decodeBatch splits a SEND_BATCH_MESSAGE body (remoting.md §4.2).
func decodeBatch(b []byte) ([]innerMessage, error) {
	be := binary.BigEndian
	var out []innerMessage
	for len(b) > 0 {
		if len(b) < 20 {
			return nil, errBadBatch
		}
		total := int(be.Uint32(b))
		flag := be.Uint32(b[12:])
		bodyLen := int(be.Uint32(b[16:]))
		if total < 22 || total > len(b) || bodyLen < 0 || 20+bodyLen+2 > total {
			return nil, errBadBatch
		}
		body := b[20 : 20+bodyLen]
		pl := int(be.Uint16(b[20+bodyLen:]))
		if 22+bodyLen+pl > total {
			return nil, errBadBatch
		}
		props := string(b[22+bodyLen : 22+bodyLen+pl])
		out = append(out, innerMessage{flag: flag, body: body, props: props})
		b = b[total:]
	}
	return out, nil
}

// ---- pull ----

func (d *brokerDoor) pull(ctx context.Context, c *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	group := req.ExtFields["consumerGroup"]
	topic := req.ExtFields["topic"]
	queue := extInt(req, "queueId", -1)
	offset := extInt(req, "queueOffset", -1)
	maxN := int(min(max(extInt(req, "maxMsgNums", maxPullMessages), 1), maxPullMessages))
	sysFlag := extInt(req, "sysFlag", 0)
	if queue < 0 || queue > 1<<31 || offset < 0 {
		return reply(req, command.InvalidParameter, "bad queueId or queueOffset")
	}
	queue = int64(d.shards.core(d.shards.slotOf(req), uint32(queue)))
	if t := req.ExtFields["expressionType"]; t != "" && t != "TAG" {
		return reply(req, command.SubscriptionParseFailed, "expression type "+t+" not supported")
	}
	if sysFlag&1 != 0 {
		if co := extInt(req, "commitOffset", -1); co >= 0 && group != "" {
			_ = d.b.CommitOffsets(ctx, group, []bcmd.Offset{{Topic: topic, Queue: uint32(queue), Offset: uint64(co)}})
		}
	}
	var tags []string
	if sysFlag&4 != 0 {
		tags = tagFilter(req.ExtFields["subscription"])
	} else {
		d.mu.Lock()
		tags = d.subs[group][topic]
		d.mu.Unlock()
	}
	var hashes map[int64]bool
	if len(tags) > 0 {
		hashes = map[int64]bool{}
		for _, t := range tags {
			hashes[batch.JavaStringHash(t)] = true
		}
	}
	resp, wait := d.read(req, topic, uint32(queue), uint64(offset), maxN, hashes)
	if !wait || sysFlag&2 == 0 {
		return resp
	}
	hold := time.Duration(extInt(req, "suspendTimeoutMillis", int64(defaultSuspend/time.Millisecond))) * time.Millisecond
	hold = min(max(hold, 0), maxSuspend)
	d.cfg.Logger.Debug("holding pull", "topic", topic, "queue", queue, "offset", offset, "hold", hold)
	wctx, cancel := context.WithTimeout(ctx, hold)
	err := d.b.WaitForMessages(wctx, topic, uint32(queue), uint64(offset))
	cancel()
	if err != nil && ctx.Err() != nil {
		return nil // connection gone
	}
	resp, _ = d.read(req, topic, uint32(queue), uint64(offset), maxN, hashes)
	d.cfg.Logger.Debug("held pull answered", "topic", topic, "queue", queue, "offset", offset, "code", resp.Code, "wait_err", err)
	return resp
}

// read answers a pull without waiting; wait reports that the reply is
// PULL_NOT_FOUND at the queue's end, which a long poll may hold.
func (d *brokerDoor) read(req *command.RemotingCommand, topic string, queue uint32, offset uint64, maxN int, hashes map[int64]bool) (*command.RemotingCommand, bool) {
	t, ok := d.b.Topic(topic)
	if !ok {
		return reply(req, command.TopicNotExist, "topic["+topic+"] not exist"), false
	}
	lo, hi := d.b.QueueRange(topic, queue)
	res := func(code command.ResponseCode, next uint64) *command.RemotingCommand {
		return reply(req, code, "", "nextBeginOffset", u(next), "minOffset", u(lo), "maxOffset", u(hi), "suggestWhichBrokerId", "0")
	}
	switch {
	case queue >= t.Queues:
		return res(command.PullNotFound, 0), false
	case hi == 0 && offset == 0:
		return res(command.PullNotFound, 0), true
	case hi == 0:
		return res(command.PullOffsetMoved, 0), false
	case offset < lo:
		return res(command.PullOffsetMoved, lo), false
	case offset > hi:
		return res(command.PullOffsetMoved, hi), false
	case offset == hi:
		return res(command.PullNotFound, offset), true
	}
	msgs, next, err := d.b.Fetch(topic, queue, offset, broker.FetchOptions{MaxMessages: maxN, MaxBytes: maxPullBytes, TagHashes: hashes})
	if err != nil {
		if errors.Is(err, broker.ErrOffsetTooHigh) {
			return res(command.PullOffsetMoved, next), false
		}
		return reply(req, command.SystemError, err.Error()), false
	}
	if len(msgs) == 0 {
		if next > offset {
			return res(command.PullRetryImmediately, next), false
		}
		return res(command.PullNotFound, offset), false
	}
	var body []byte
	_, local := d.shards.local(queue)
	for i := range msgs {
		body = appendStored(body, &msgs[i], local, d.cfg.BrokerAddr)
		msgs[i].Release()
	}
	r := res(command.Success, next)
	r.Body = body
	return r, false
}

// ---- offsets ----

func (d *brokerDoor) queryOffset(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	group, topic := req.ExtFields["consumerGroup"], req.ExtFields["topic"]
	queue := d.queueOf(req)
	if off, ok := d.b.Offset(group, topic, queue); ok {
		return reply(req, command.Success, "", "offset", u(off))
	}
	// Java's rule: no stored offset and a queue never truncated -> 0.
	if lo, _ := d.b.QueueRange(topic, queue); lo == 0 {
		return reply(req, command.Success, "", "offset", "0")
	}
	return reply(req, command.QueryNotFound, "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first")
}

func (d *brokerDoor) updateOffset(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	group, topic := req.ExtFields["consumerGroup"], req.ExtFields["topic"]
	queue := extInt(req, "queueId", -1)
	off := extInt(req, "commitOffset", -1)
	if off < 0 || queue < 0 || queue > 1<<31 || group == "" {
		return reply(req, command.Success, "")
	}
	queue = int64(d.queueOf(req))
	if cur, ok := d.b.Offset(group, topic, uint32(queue)); ok && cur == uint64(off) {
		return reply(req, command.Success, "")
	}
	if err := d.b.CommitOffsets(ctx, group, []bcmd.Offset{{Topic: topic, Queue: uint32(queue), Offset: uint64(off)}}); err != nil {
		return reply(req, command.SystemError, err.Error())
	}
	return reply(req, command.Success, "")
}

func (d *brokerDoor) maxOffset(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	_, hi := d.b.QueueRange(req.ExtFields["topic"], d.queueOf(req))
	return reply(req, command.Success, "", "offset", u(hi))
}

func (d *brokerDoor) minOffset(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	lo, _ := d.b.QueueRange(req.ExtFields["topic"], d.queueOf(req))
	return reply(req, command.Success, "", "offset", u(lo))
}

// searchOffset finds the first offset of a queue whose message was born at
// or after the timestamp (the broker keeps no separate store time), or the
// queue's end. Born times are close to ordered, so a binary search serves.
func (d *brokerDoor) searchOffset(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	topic := req.ExtFields["topic"]
	queue := d.queueOf(req)
	ts := extInt(req, "timestamp", 0)
	lo, hi := d.b.QueueRange(topic, queue)
	for lo < hi {
		mid := lo + (hi-lo)/2
		msgs, _, err := d.b.Fetch(topic, queue, mid, broker.FetchOptions{MaxMessages: 1})
		if err != nil || len(msgs) == 0 {
			break
		}
		born := msgs[0].BornUnixMs()
		msgs[0].Release()
		if born >= ts {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return reply(req, command.Success, "", "offset", u(lo))
}

// ---- admin ----

func (d *brokerDoor) createTopic(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	queues := max(extInt(req, "writeQueueNums", 0), extInt(req, "readQueueNums", 0))
	if queues <= 0 {
		queues = defaultTopicQueues
	}
	perm := extInt(req, "perm", broker.PermRead|broker.PermWrite) & (broker.PermRead | broker.PermWrite)
	if queues > broker.MaxQueues || perm == 0 {
		return reply(req, command.InvalidParameter, "bad queue count or perm")
	}
	t := broker.Topic{Name: req.ExtFields["topic"], Queues: uint32(queues), Perm: uint32(perm)}
	if err := d.b.CreateTopic(ctx, t); err != nil {
		return d.produceFailed(req, err)
	}
	return reply(req, command.Success, "")
}

func (d *brokerDoor) deleteTopic(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	if err := d.b.DeleteTopic(ctx, req.ExtFields["topic"]); err != nil && !errors.Is(err, broker.ErrNoTopic) {
		return reply(req, command.SystemError, err.Error())
	}
	return reply(req, command.Success, "")
}
