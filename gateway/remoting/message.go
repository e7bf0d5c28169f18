package remoting

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"net"
	"strconv"
	"strings"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
)

// Property keys the broker maps onto message fields.
const (
	propTags   = "TAGS"
	propKeys   = "KEYS"
	propUniq   = "UNIQ_KEY"
	nameSep    = '\x01'
	propSep    = '\x02'
	magicV1    = 0xDAA320A7
	fixedBytes = 84 // stored layout up to the body length, IPv4 hosts
)

// parseProperties splits RocketMQ's "k\x01v\x02" string, keeping order;
// pieces without exactly one separator are dropped, as the Go client does.
func parseProperties(s string) []batch.Property {
	var out []batch.Property
	for piece := range strings.SplitSeq(s, string(propSep)) {
		k, v, ok := strings.Cut(piece, string(nameSep))
		if !ok || k == "" || strings.IndexByte(v, nameSep) >= 0 {
			continue
		}
		out = append(out, batch.Property{Key: k, Value: v})
	}
	return out
}

// toBrokerMessage maps a RocketMQ property string onto a batch.Message:
// TAGS and KEYS become Tags and Keys, UNIQ_KEY (kept as a property, since
// clients compare it as an exact string) also sets the id when it is 32 hex
// characters.
func toBrokerMessage(topic string, props string, body []byte) batch.Message {
	m := batch.Message{Topic: topic, Body: body}
	for _, p := range parseProperties(props) {
		switch p.Key {
		case propTags:
			m.Tags = p.Value
		case propKeys:
			m.Keys = strings.Fields(p.Value)
		default:
			if p.Key == propUniq && len(p.Value) == 32 {
				if id, err := hex.DecodeString(p.Value); err == nil {
					m.ID = [16]byte(id)
				}
			}
			m.Properties = append(m.Properties, p)
		}
	}
	return m
}

// hostBytes encodes "ip:port" as 4 IPv4 bytes and a 4-byte port, or 16 + 4
// with v6 true; an unparsable address is 0.0.0.0:0.
func hostBytes(addr string) (b []byte, v6 bool) {
	host, port, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	p, _ := strconv.Atoi(port)
	switch {
	case err != nil || ip == nil:
		b = make([]byte, 4)
	case ip.To4() != nil:
		b = append([]byte(nil), ip.To4()...)
	default:
		b, v6 = append([]byte(nil), ip.To16()...), true
	}
	return binary.BigEndian.AppendUint32(b, uint32(p)), v6
}

// offsetMsgID is RocketMQ's offsetMsgId: upper hex of store host, port and
// physical offset.
func offsetMsgID(storeHost string, phys uint64) string {
	h, _ := hostBytes(storeHost)
	return strings.ToUpper(hex.EncodeToString(binary.BigEndian.AppendUint64(h, phys)))
}

// appendStored appends m in RocketMQ's stored-message layout (version 1,
// the one the Go client decodes; remoting.md §5.1).
func appendStored(dst []byte, m *broker.Fetched, queue uint32, storeHost string) []byte {
	body := m.Body()
	topic := m.Topic()
	if len(topic) > 127 {
		topic = topic[:127]
	}
	props := storedProperties(m)
	if len(props) > 32767 {
		props = props[:0]
	}
	sys := m.SysFlag() &^ 0x30
	born, bornV6 := hostBytes(string(m.BornHost()))
	store, storeV6 := hostBytes(storeHost)
	if bornV6 {
		sys |= 0x10
	}
	if storeV6 {
		sys |= 0x20
	}
	total := fixedBytes - 16 + len(born) + len(store) + 4 + len(body) + 1 + len(topic) + 2 + len(props)
	be := binary.BigEndian
	dst = be.AppendUint32(dst, uint32(total))
	dst = be.AppendUint32(dst, magicV1)
	dst = be.AppendUint32(dst, crc32.ChecksumIEEE(body)&0x7FFFFFFF)
	dst = be.AppendUint32(dst, queue)
	dst = be.AppendUint32(dst, m.Flag())
	dst = be.AppendUint64(dst, m.QueueOffset)
	dst = be.AppendUint64(dst, m.PhysOffset)
	dst = be.AppendUint32(dst, sys)
	dst = be.AppendUint64(dst, uint64(m.BornUnixMs()))
	dst = append(dst, born...)
	dst = be.AppendUint64(dst, uint64(m.BornUnixMs())) // store time: not kept apart from born time
	dst = append(dst, store...)
	dst = be.AppendUint32(dst, m.ReconsumeTimes())
	dst = be.AppendUint64(dst, 0)
	dst = be.AppendUint32(dst, uint32(len(body)))
	dst = append(dst, body...)
	dst = append(dst, byte(len(topic)))
	dst = append(dst, topic...)
	dst = be.AppendUint16(dst, uint16(len(props)))
	return append(dst, props...)
}

// storedProperties rebuilds the property string: the stored properties,
// TAGS and KEYS from their fields, and UNIQ_KEY from the id when the
// producer sent none.
func storedProperties(m *broker.Fetched) []byte {
	var b []byte
	add := func(k, v []byte) {
		b = append(b, k...)
		b = append(b, nameSep)
		b = append(b, v...)
		b = append(b, propSep)
	}
	hasUniq := false
	for k, v := range m.Properties {
		if string(k) == propUniq {
			hasUniq = true
		}
		add(k, v)
	}
	if t := m.Tags(); len(t) > 0 {
		add([]byte(propTags), t)
	}
	if m.NumKeys() > 0 {
		var keys []byte
		for k := range m.Keys {
			if len(keys) > 0 {
				keys = append(keys, ' ')
			}
			keys = append(keys, k...)
		}
		add([]byte(propKeys), keys)
	}
	if !hasUniq {
		id := m.ID()
		add([]byte(propUniq), []byte(strings.ToUpper(hex.EncodeToString(id[:]))))
	}
	return b
}
