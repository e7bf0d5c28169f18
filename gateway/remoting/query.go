package remoting

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Properties the send-back path sets (remoting.md §4.8).
const (
	propRetryTopic = "RETRY_TOPIC"
	propOriginID   = "ORIGIN_MESSAGE_ID"
	propDelay      = "DELAY"
	// maxQueryMessages bounds QUERY_MESSAGE's maxNum.
	maxQueryMessages = 64
)

// parsePhysOffset reads a commit-log offset given as a decimal number (the
// `offset` field Java tools send) or as an offsetMsgId: 32 hex characters
// (IPv4 store host) or 56 (IPv6), the offset in the last 8 bytes.
func parsePhysOffset(s string) (uint64, bool) {
	if len(s) != 32 && len(s) != 56 {
		v, err := strconv.ParseUint(s, 10, 63)
		return v, err == nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return 0, false
	}
	v := binary.BigEndian.Uint64(b[len(b)-8:])
	return v, v < 1<<63
}

// appendStoredMessage appends a message read by physical offset in the
// stored layout, with the queue and queue offset of its first destination
// (the queue as its broker name shows it).
func appendStoredMessage(dst []byte, s shards, m clog.Message, storeHost string) []byte {
	var queue uint32
	f := broker.Fetched{Message: m}
	if m.NumDestinations() > 0 {
		dv := m.Destination(0)
		_, queue = s.local(dv.QueueID)
		f.QueueOffset = dv.QueueOffset
	}
	return appendStored(dst, &f, queue, storeHost)
}

// viewMessage answers VIEW_MESSAGE_BY_ID: the message at a commit-log
// offset, in the stored layout. Anything but the start of a retained
// message is SYSTEM_ERROR, as in Java.
func (d *brokerDoor) viewMessage(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	s := req.ExtFields["offset"]
	if s == "" {
		s = req.ExtFields["msgId"]
	}
	off, ok := parsePhysOffset(s)
	if !ok {
		return reply(req, command.SystemError, "bad offset or offsetMsgId "+strconv.Quote(s))
	}
	m, err := d.b.ReadMessage(off)
	if err != nil {
		return reply(req, command.SystemError, "can not find message by the offset "+u(off))
	}
	defer m.Release()
	// A message of any topic can be asked for by its offset: the caller
	// needs SUB on its topic (a half or timer message's is a system topic,
	// for administrators).
	if refused := permit(ctx, d.b, req, onTopic(string(m.Topic()), auth.PermSub)); refused != nil {
		return refused
	}
	r := reply(req, command.Success, "")
	r.Body = appendStoredMessage(nil, d.shards, m, d.cfg.BrokerAddr)
	return r
}

// queryMessage answers QUERY_MESSAGE: up to maxNum messages of topic with
// key (a KEYS entry, or the UNIQ_KEY when no KEYS entry matches) stored in
// [beginTimestamp, endTimestamp], back to back. The broker keeps no index
// update time of its own, so indexLastUpdateTimestamp/Phyoffset describe
// the newest message found.
func (d *brokerDoor) queryMessage(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	topic, key := req.ExtFields["topic"], req.ExtFields["key"]
	maxN := int(extInt(req, "maxNum", 32))
	if maxN <= 0 || maxN > maxQueryMessages {
		maxN = maxQueryMessages
	}
	begin, end := extInt(req, "beginTimestamp", 0), extInt(req, "endTimestamp", 0)
	if topic == "" || key == "" {
		return reply(req, command.QueryNotFound, "no message: topic and key are required")
	}
	msgs, err := d.b.QueryByKey(topic, key, begin, end, maxN)
	if err != nil {
		return reply(req, command.SystemError, err.Error())
	}
	defer func() {
		for _, m := range msgs {
			m.Release()
		}
	}()
	if len(msgs) == 0 && len(key) == 32 {
		if id, err := hex.DecodeString(key); err == nil {
			if m, err := d.b.QueryByID([16]byte(id)); err == nil {
				born := m.BornUnixMs()
				if bytes.Equal(m.Topic(), []byte(topic)) && (begin == 0 && end == 0 || born >= begin && born <= end) {
					msgs = append(msgs, m)
				} else {
					m.Release()
				}
			}
		}
	}
	if len(msgs) == 0 {
		return reply(req, command.QueryNotFound, "can not find message, maybe time range not correct")
	}
	var body []byte
	var lastMs int64
	var lastOff uint64
	for _, m := range msgs {
		body = appendStoredMessage(body, d.shards, m, d.cfg.BrokerAddr)
		if m.PhysOffset >= lastOff {
			lastOff, lastMs = m.PhysOffset, m.BornUnixMs()
		}
	}
	r := reply(req, command.Success, "",
		"indexLastUpdateTimestamp", strconv.FormatInt(lastMs, 10),
		"indexLastUpdatePhyoffset", u(lastOff))
	r.Body = body
	return r
}

// ensureTopic creates a one-queue, read-write topic unless it exists.
func (d *brokerDoor) ensureTopic(ctx context.Context, name string) error {
	if _, ok := d.b.Topic(name); ok {
		return nil
	}
	return d.b.CreateTopic(ctx, broker.Topic{Name: name, Queues: 1, Perm: broker.PermRead | broker.PermWrite})
}

// sendBack answers CONSUMER_SEND_MSG_BACK (remoting.md §4.8): the consumed
// message, read by its commit-log offset, is stored again in
// %RETRY%<group> with its reconsume count + 1, or in %DLQ%<group> once the
// count reached maxReconsumeTimes (or delayLevel < 0). It keeps its id
// (UNIQ_KEY), body, flags, tags, keys and properties, gains RETRY_TOPIC
// (its first topic) and ORIGIN_MESSAGE_ID.
//
// The retry is delayed by the level's back-off (delay level 3 + reconsume
// times unless the consumer asked for a level), through the core's timer
// store; no DELAY property is kept.
func (d *brokerDoor) sendBack(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	group := req.ExtFields["group"]
	if group == "" {
		return reply(req, command.SubscriptionGroupNotExist, "no consumer group")
	}
	off, ok := parsePhysOffset(req.ExtFields["offset"])
	if !ok {
		return reply(req, command.SystemError, "bad offset "+strconv.Quote(req.ExtFields["offset"]))
	}
	delayLevel := extInt(req, "delayLevel", 0)
	maxTimes := extInt(req, "maxReconsumeTimes", -1)
	if maxTimes < 0 {
		maxTimes = defaultMaxReconsume
	}
	orig, err := d.b.ReadMessage(off)
	if err != nil {
		return reply(req, command.SystemError, "look message by offset failed, "+u(off))
	}
	// The offset may name a message of any topic, which this would copy
	// into the group's retry topic for the caller to consume: it must be
	// one the caller may read (Java checks only the group).
	if refused := permit(ctx, d.b, req, onTopic(string(orig.Topic()), auth.PermSub)); refused != nil {
		orig.Release()
		return refused
	}
	m := batch.Message{
		ID: orig.ID(), Flag: orig.Flag(), SysFlag: orig.SysFlag(), BornUnixMs: orig.BornUnixMs(),
		ReconsumeTimes: orig.ReconsumeTimes() + 1, BornHost: string(orig.BornHost()),
		Tags: string(orig.Tags()), Body: bytes.Clone(orig.Body()),
	}
	for k := range orig.Keys {
		m.Keys = append(m.Keys, string(k))
	}
	var retryTopic, originID, uniq string
	for k, v := range orig.Properties {
		switch string(k) {
		case propDelay:
			continue
		case propRetryTopic:
			retryTopic = string(v)
		case propOriginID:
			originID = string(v)
		case propUniq:
			uniq = string(v)
		}
		m.Properties = append(m.Properties, batch.Property{Key: string(k), Value: string(v)})
	}
	if retryTopic == "" {
		retryTopic = string(orig.Topic())
		m.Properties = append(m.Properties, batch.Property{Key: propRetryTopic, Value: retryTopic})
	}
	if originID == "" {
		switch {
		case req.ExtFields["originMsgId"] != "":
			originID = req.ExtFields["originMsgId"]
		case uniq != "":
			originID = uniq
		default:
			originID = offsetMsgID(d.cfg.BrokerAddr, off)
		}
		m.Properties = append(m.Properties, batch.Property{Key: propOriginID, Value: originID})
	}
	reconsumed := int64(orig.ReconsumeTimes())
	orig.Release()

	bm := broker.Message{Message: m, Queue: -1}
	bm.Topic = retryPrefix + group
	if reconsumed >= maxTimes || delayLevel < 0 {
		// Dead-lettered: no delay; it keeps RETRY_TOPIC (its first topic),
		// ORIGIN_MESSAGE_ID and its reconsume count (the failures), and
		// gains RocketMQ 5's DLQ_ORIGIN_* for tools that read those.
		bm.Topic = dlqPrefix + group
		bm.Properties = append(bm.Properties,
			batch.Property{Key: "DLQ_ORIGIN_TOPIC", Value: retryTopic},
			batch.Property{Key: "DLQ_ORIGIN_MESSAGE_ID", Value: originID})
	} else {
		// Back-off from the delay table (delay.go): the copy is stored as
		// a timer and reaches %RETRY%<group> when due.
		bm.DeliverAt = time.Now().Add(d.retryDelay(delayLevel, reconsumed))
	}
	if err := d.ensureTopic(ctx, bm.Topic); err != nil {
		return reply(req, command.SystemError, err.Error())
	}
	if _, err := d.b.Produce(ctx, []broker.Message{bm}); err != nil {
		// Under the disk alarm the client's fallback send to %RETRY% is
		// refused too; it then consumes the message again itself (5 s).
		return d.produceFailed(req, err)
	}
	return reply(req, command.Success, "")
}
