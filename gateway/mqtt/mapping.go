package mqtt

import (
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// Message properties written by the MQTT front door. PropTopic is the one
// other protocols read; the rest let delivery rebuild the MQTT packet.
const (
	PropTopic         = "MQTT_TOPIC"
	propQoS           = "MQTT_QOS"
	propClient        = "MQTT_CLIENT" // the publisher's client id, for NoLocal
	propRetain        = "MQTT_RETAIN" // "1": published with the retain flag
	propContentType   = "MQTT_CONTENT_TYPE"
	propResponseTopic = "MQTT_RESPONSE_TOPIC"
	propCorrelation   = "MQTT_CORRELATION_DATA"
	propPayloadFormat = "MQTT_PAYLOAD_FORMAT"
	propExpiry        = "MQTT_MESSAGE_EXPIRY" // seconds after BornUnixMs
	propTags          = "TAGS"
)

// rocketmqSystemProps are RocketMQ's own property names: not copied from
// MQTT user properties (they would change the message's meaning for
// RocketMQ consumers) and not shown to MQTT subscribers.
var rocketmqSystemProps = map[string]bool{
	"TAGS": true, "KEYS": true, "UNIQ_KEY": true, "WAIT": true, "DELAY": true,
	"RETRY_TOPIC": true, "REAL_TOPIC": true, "REAL_QID": true, "TRAN_MSG": true,
	"PGROUP": true, "MIN_OFFSET": true, "MAX_OFFSET": true, "CLUSTER": true,
	"MSG_REGION": true, "TRACE_ON": true, "CONSUME_START_TIME": true,
	"ORIGIN_MESSAGE_ID": true, "TRANSFER_FLAG": true, "CORRECTION_FLAG": true,
	"MQ2_FLAG": true, "RECONSUME_TIME": true, "MAX_RECONSUME_TIMES": true,
	"TRAN_PREPARED_QUEUE_OFFSET": true, "TRANSACTION_CHECK_TIMES": true,
	"CHECK_IMMUNITY_TIME_IN_SECONDS": true, "INSTANCE_ID": true,
	"CORRELATION_ID": true, "REPLY_TO_CLIENT": true, "TTL": true,
	"ARRIVE_TIME": true, "PUSH_REPLY_TIME": true, "SHARDING_KEY": true,
	"__STARTDELIVERTIME": true, "TIMER_DELIVER_MS": true, "TIMER_DELAY_SEC": true,
	"TIMER_DELAY_MS": true, "MSG_TYPE": true, "BORN_HOST": true,
}

// reservedProp says whether a property name belongs to the broker rather
// than to the application.
func reservedProp(k string) bool {
	return strings.HasPrefix(k, "MQTT_") || rocketmqSystemProps[k]
}

// validCoreTopic mirrors the broker's topic name rule (RocketMQ's), minus
// '%', which marks RocketMQ's internal topics (retry, DLQ, LMQ).
func validCoreTopic(name string) bool {
	if name == "" || len(name) > 127 {
		return false
	}
	return strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '|')
	}) < 0
}

// deliverableTopic says whether MQTT subscribers may see a core topic:
// RocketMQ's internal topics stay hidden even from a "#" subscriber.
func deliverableTopic(name string) bool {
	return validCoreTopic(name) && !strings.HasPrefix(name, "RMQ_SYS_") &&
		!strings.HasPrefix(name, "SCHEDULE_TOPIC") && name != "TBW102" && !strings.HasPrefix(name, "rmq_sys_")
}

// firstLevel returns the first level of an MQTT topic or filter.
func firstLevel(topic string) string {
	if i := strings.IndexByte(topic, '/'); i >= 0 {
		return topic[:i]
	}
	return topic
}

// coreTopicFor maps an MQTT topic to its core topic: the first level when
// it is a valid core topic name, else the fallback topic.
func coreTopicFor(mqttTopic, fallback string) string {
	if l := firstLevel(mqttTopic); validCoreTopic(l) {
		return l
	}
	return fallback
}

// tagFor is the second level of an MQTT topic (RocketMQ consumers filter
// on it as the tag), or "".
func tagFor(mqttTopic string) string {
	i := strings.IndexByte(mqttTopic, '/')
	if i < 0 {
		return ""
	}
	rest := mqttTopic[i+1:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return rest[:j]
	}
	return rest
}

// toMessage turns an inbound PUBLISH into a core message. The queue is
// chosen by the hash of the full MQTT topic, so one topic keeps its order.
func toMessage(pk *packets.Packet, clientID, fallback string) broker.Message {
	m := broker.Message{Queue: -1, ShardingKey: pk.TopicName}
	m.Topic = coreTopicFor(pk.TopicName, fallback)
	m.Tags = tagFor(pk.TopicName)
	m.Body = pk.Payload
	p := &pk.Properties
	props := make([]batch.Property, 0, 4+len(p.User))
	props = append(props, batch.Property{Key: PropTopic, Value: pk.TopicName},
		batch.Property{Key: propQoS, Value: strconv.Itoa(int(pk.FixedHeader.Qos))},
		batch.Property{Key: propClient, Value: clientID})
	if pk.FixedHeader.Retain {
		props = append(props, batch.Property{Key: propRetain, Value: "1"})
	}
	if p.ContentType != "" {
		props = append(props, batch.Property{Key: propContentType, Value: p.ContentType})
	}
	if p.ResponseTopic != "" {
		props = append(props, batch.Property{Key: propResponseTopic, Value: p.ResponseTopic})
	}
	if len(p.CorrelationData) > 0 {
		props = append(props, batch.Property{Key: propCorrelation, Value: string(p.CorrelationData)})
	}
	if p.PayloadFormatFlag {
		props = append(props, batch.Property{Key: propPayloadFormat, Value: strconv.Itoa(int(p.PayloadFormat))})
	}
	if p.MessageExpiryInterval > 0 {
		props = append(props, batch.Property{Key: propExpiry, Value: strconv.FormatUint(uint64(p.MessageExpiryInterval), 10)})
	}
	for _, u := range p.User {
		if !reservedProp(u.Key) {
			props = append(props, batch.Property{Key: u.Key, Value: u.Val})
		}
	}
	m.Properties = props
	return m
}

// stored is what delivery needs of a committed message, copied out of the
// log's mapping.
type stored struct {
	coreTopic string
	tags      string
	bornMs    int64
	props     []batch.Property
	body      []byte
}

// toPacket rebuilds the PUBLISH for a committed message, and the
// publisher's client id. A message from another protocol (no MQTT_TOPIC)
// is published on "<core topic>/<tag>", or "<core topic>" without a tag,
// at QoS 1. expired reports a message whose MQTT 5 expiry has passed.
func toPacket(m *stored, nowMs int64) (pk packets.Packet, origin string, expired bool) {
	pk.FixedHeader = packets.FixedHeader{Type: packets.Publish, Qos: 1}
	pk.Payload = m.body
	pk.TopicName = m.coreTopic
	if m.tags != "" {
		pk.TopicName += "/" + m.tags
	}
	p := &pk.Properties
	for _, kv := range m.props {
		switch kv.Key {
		case PropTopic:
			pk.TopicName = kv.Value
		case propQoS:
			if q, err := strconv.Atoi(kv.Value); err == nil && q >= 0 && q <= 2 {
				pk.FixedHeader.Qos = byte(q)
			}
		case propClient:
			origin = kv.Value
		case propRetain:
			pk.FixedHeader.Retain = kv.Value == "1"
		case propContentType:
			p.ContentType = kv.Value
		case propResponseTopic:
			p.ResponseTopic = kv.Value
		case propCorrelation:
			p.CorrelationData = []byte(kv.Value)
		case propPayloadFormat:
			if f, err := strconv.Atoi(kv.Value); err == nil && (f == 0 || f == 1) {
				p.PayloadFormat, p.PayloadFormatFlag = byte(f), true
			}
		case propExpiry:
			s, err := strconv.ParseInt(kv.Value, 10, 64)
			if err != nil || s <= 0 {
				continue
			}
			left := (m.bornMs + s*1000 - nowMs + 999) / 1000
			if left <= 0 {
				return pk, origin, true
			}
			p.MessageExpiryInterval = uint32(min(left, 1<<32-1))
		default:
			if !reservedProp(kv.Key) {
				p.User = append(p.User, packets.UserProperty{Key: kv.Key, Val: kv.Value})
			}
		}
	}
	return pk, origin, false
}
