package frame

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Property flag bits of basic's content header (see the package doc).
const (
	FlagContentType     uint16 = 1 << 15
	FlagContentEncoding uint16 = 1 << 14
	FlagHeaders         uint16 = 1 << 13
	FlagDeliveryMode    uint16 = 1 << 12
	FlagPriority        uint16 = 1 << 11
	FlagCorrelationID   uint16 = 1 << 10
	FlagReplyTo         uint16 = 1 << 9
	FlagExpiration      uint16 = 1 << 8
	FlagMessageID       uint16 = 1 << 7
	FlagTimestamp       uint16 = 1 << 6
	FlagType            uint16 = 1 << 5
	FlagUserID          uint16 = 1 << 4
	FlagAppID           uint16 = 1 << 3
	FlagClusterID       uint16 = 1 << 2

	// flagsUndefined are bits basic does not define: bit 1 is unused, bit
	// 0 announces a continuation flags word.
	flagsUndefined uint16 = 1<<1 | 1<<0
)

// headerFixed is class-id, weight and body-size: the content header
// payload before the property flags.
const headerFixed = 12

// Properties are basic's message properties. Flags says which are present:
// DecodeProperties sets exactly the bits it found, and AppendProperties
// writes exactly the properties whose bit is set (whatever the other fields
// hold), so a property present with an empty or zero value survives a round
// trip.
type Properties struct {
	ContentType     string
	ContentEncoding string
	Headers         Table
	DeliveryMode    uint8
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string
	MessageID       string
	Timestamp       time.Time // whole seconds, UTC when decoded
	Type            string
	UserID          string
	AppID           string
	ClusterID       string
	Flags           uint16
}

// ParseHeader splits the payload of a content-header frame. props is the
// property flags word and property list exactly as received: a sub-slice
// of payload (it aliases it), ending where the property list ends, so bytes
// after the list are dropped. It must decode with DecodeProperties,
// otherwise ParseHeader fails with an error wrapping ErrSyntax; a payload
// shorter than 14 bytes is ErrSyntax too. The weight field is not checked.
func ParseHeader(payload []byte) (classID uint16, bodySize uint64, props []byte, err error) {
	if len(payload) < headerFixed+2 {
		return 0, 0, nil, syntaxErr("content header of %d bytes, need at least 14", len(payload))
	}
	classID = binary.BigEndian.Uint16(payload[0:2])
	bodySize = binary.BigEndian.Uint64(payload[4:12])
	rest := payload[headerFixed:]
	r := reader{buf: rest}
	var p Properties
	r.properties(&p)
	if r.err != nil {
		return 0, 0, nil, r.err
	}
	n := len(rest) - len(r.buf)
	return classID, bodySize, rest[:n:n], nil
}

// AppendHeader appends a content-header payload (weight 0) to dst. props is
// the flags word and property list, as ParseHeader or AppendProperties
// produce them; it is copied as is.
func AppendHeader(dst []byte, classID uint16, bodySize uint64, props []byte) []byte {
	dst = appendShort(dst, classID)
	dst = appendShort(dst, 0)
	dst = appendLonglong(dst, bodySize)
	return append(dst, props...)
}

// AppendHeaderFrame appends a whole content-header frame to dst.
func AppendHeaderFrame(dst []byte, channel uint16, classID uint16, bodySize uint64, props []byte) []byte {
	dst = append(dst, TypeHeader)
	dst = appendShort(dst, channel)
	dst = appendLong(dst, uint32(headerFixed+len(props)))
	dst = AppendHeader(dst, classID, bodySize, props)
	return append(dst, FrameEnd)
}

// DecodeProperties decodes a property flags word and property list. Bytes
// after the list are ignored. A flags word with bit 0 (continuation) or the
// undefined bit 1 set, or a list that does not hold what the flags promise,
// is an error wrapping ErrSyntax. Headers nest at most MaxDepth levels.
func DecodeProperties(props []byte) (Properties, error) {
	r := reader{buf: props}
	var p Properties
	r.properties(&p)
	if r.err != nil {
		return Properties{}, r.err
	}
	return p, nil
}

func (r *reader) properties(p *Properties) {
	f := r.short()
	if r.err != nil {
		r.err = syntaxErr("property flags missing")
		return
	}
	if f&flagsUndefined != 0 {
		r.setErr(syntaxErr("property flags 0x%04x: bits 0-1 are not defined for basic", f))
		return
	}
	p.Flags = f
	if f&FlagContentType != 0 {
		p.ContentType = r.shortstr()
	}
	if f&FlagContentEncoding != 0 {
		p.ContentEncoding = r.shortstr()
	}
	if f&FlagHeaders != 0 {
		p.Headers = r.table()
	}
	if f&FlagDeliveryMode != 0 {
		p.DeliveryMode = r.octet()
	}
	if f&FlagPriority != 0 {
		p.Priority = r.octet()
	}
	if f&FlagCorrelationID != 0 {
		p.CorrelationID = r.shortstr()
	}
	if f&FlagReplyTo != 0 {
		p.ReplyTo = r.shortstr()
	}
	if f&FlagExpiration != 0 {
		p.Expiration = r.shortstr()
	}
	if f&FlagMessageID != 0 {
		p.MessageID = r.shortstr()
	}
	if f&FlagTimestamp != 0 {
		p.Timestamp = r.timestamp()
	}
	if f&FlagType != 0 {
		p.Type = r.shortstr()
	}
	if f&FlagUserID != 0 {
		p.UserID = r.shortstr()
	}
	if f&FlagAppID != 0 {
		p.AppID = r.shortstr()
	}
	if f&FlagClusterID != 0 {
		p.ClusterID = r.shortstr()
	}
}

// AppendProperties appends p's flags word and the properties whose bit is
// set in p.Flags to dst. Errors (dst is then returned unchanged): Flags with
// bit 0 or 1 set, a present shortstr property over 255 bytes, or Headers
// that AppendTable rejects.
func AppendProperties(dst []byte, p *Properties) ([]byte, error) {
	start := len(dst)
	f := p.Flags
	if f&flagsUndefined != 0 {
		return dst, fmt.Errorf("frame: property flags 0x%04x: bits 0-1 are not defined for basic", f)
	}
	dst = appendShort(dst, f)
	var err error
	str := func(bit uint16, name, s string) {
		if err != nil || f&bit == 0 {
			return
		}
		if err = checkShortstr(name, s); err == nil {
			dst = appendShortstr(dst, s)
		}
	}
	str(FlagContentType, "content-type", p.ContentType)
	str(FlagContentEncoding, "content-encoding", p.ContentEncoding)
	if err == nil && f&FlagHeaders != 0 {
		if dst, err = appendTable(dst, p.Headers, 1, false); err != nil {
			err = fmt.Errorf("frame: headers: %w", err)
		}
	}
	if f&FlagDeliveryMode != 0 {
		dst = append(dst, p.DeliveryMode)
	}
	if f&FlagPriority != 0 {
		dst = append(dst, p.Priority)
	}
	str(FlagCorrelationID, "correlation-id", p.CorrelationID)
	str(FlagReplyTo, "reply-to", p.ReplyTo)
	str(FlagExpiration, "expiration", p.Expiration)
	str(FlagMessageID, "message-id", p.MessageID)
	if f&FlagTimestamp != 0 {
		dst = appendTimestamp(dst, p.Timestamp)
	}
	str(FlagType, "type", p.Type)
	str(FlagUserID, "user-id", p.UserID)
	str(FlagAppID, "app-id", p.AppID)
	str(FlagClusterID, "cluster-id", p.ClusterID)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}
