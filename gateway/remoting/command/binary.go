package command

import (
	"encoding/binary"
	"math"
)

// decodeBinaryHeader decodes a ROCKETMQ header (doc.go). Every length is
// checked against the bytes left before it is used, and the header must be
// used up exactly.
func decodeBinaryHeader(h []byte, cmd *RemotingCommand) error {
	if len(h) < minBinaryHeaderBytes {
		return malformed("binary header of %d bytes, need at least %d", len(h), minBinaryHeaderBytes)
	}
	cmd.Code = int32(int16(binary.BigEndian.Uint16(h[0:])))
	cmd.Language = LanguageOf(h[2])
	cmd.Version = int16(binary.BigEndian.Uint16(h[3:]))
	cmd.Opaque = int32(binary.BigEndian.Uint32(h[5:]))
	cmd.Flag = int32(binary.BigEndian.Uint32(h[9:]))
	p := 13

	remarkLen := int64(int32(binary.BigEndian.Uint32(h[p:])))
	p += 4
	// 4 more bytes must follow the remark: extLen.
	if remarkLen < 0 || remarkLen > int64(len(h)-p-4) {
		return malformed("binary header remark length %d, %d bytes left", remarkLen, len(h)-p-4)
	}
	cmd.Remark = string(h[p : p+int(remarkLen)])
	p += int(remarkLen)

	extLen := int64(int32(binary.BigEndian.Uint32(h[p:])))
	p += 4
	if extLen != int64(len(h)-p) {
		return malformed("binary header ext fields length %d, but %d header bytes are left", extLen, len(h)-p)
	}
	ext, err := decodeBinaryExt(h[p:])
	if err != nil {
		return err
	}
	cmd.ExtFields = ext
	return nil
}

// decodeBinaryExt decodes keyLen(int16) key valLen(int32) value entries
// filling b exactly. A repeated key keeps its last value.
func decodeBinaryExt(b []byte) (map[string]string, error) {
	m := map[string]string{}
	for p := 0; p < len(b); {
		if len(b)-p < 2 {
			return nil, malformed("binary ext fields: %d bytes left, need a 2-byte key length", len(b)-p)
		}
		keyLen := int(int16(binary.BigEndian.Uint16(b[p:])))
		p += 2
		if keyLen < 0 || keyLen > len(b)-p {
			return nil, malformed("binary ext fields: key length %d, %d bytes left", keyLen, len(b)-p)
		}
		key := string(b[p : p+keyLen])
		p += keyLen
		if len(b)-p < 4 {
			return nil, malformed("binary ext fields: %d bytes left after key %q, need a 4-byte value length", len(b)-p, key)
		}
		valLen := int64(int32(binary.BigEndian.Uint32(b[p:])))
		p += 4
		if valLen < 0 || valLen > int64(len(b)-p) {
			return nil, malformed("binary ext fields: value length %d for key %q, %d bytes left", valLen, key, len(b)-p)
		}
		m[key] = string(b[p : p+int(valLen)])
		p += int(valLen)
	}
	return m, nil
}

// appendBinaryHeader writes a ROCKETMQ header, ext fields sorted by key.
// Lengths over MaxHeaderBytes are left for AppendFrame to reject.
func appendBinaryHeader(dst []byte, c *RemotingCommand) ([]byte, error) {
	if c.Code < math.MinInt16 || c.Code > math.MaxInt16 {
		return dst, invalid("code %d does not fit the binary header's int16", c.Code)
	}
	lang, ok := c.Language.Byte()
	if !ok {
		return dst, invalid("language %q has no binary byte code", c.Language)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(c.Code)))
	dst = append(dst, lang)
	dst = binary.BigEndian.AppendUint16(dst, uint16(c.Version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.Opaque))
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.Flag))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(c.Remark)))
	dst = append(dst, c.Remark...)

	extLenAt := len(dst)
	dst = append(dst, 0, 0, 0, 0) // patched below
	for _, k := range sortedKeys(c.ExtFields) {
		v := c.ExtFields[k]
		if len(k) > math.MaxInt16 {
			return dst, invalid("ext field key of %d bytes, the binary header allows %d", len(k), math.MaxInt16)
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(k)))
		dst = append(dst, k...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	binary.BigEndian.PutUint32(dst[extLenAt:], uint32(len(dst)-extLenAt-4))
	return dst, nil
}
