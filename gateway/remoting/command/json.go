package command

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// jsonHeader is the decoding shape of a JSON header. encoding/json ignores
// unknown keys (serializeTypeCurrentRPC, ...), rejects numbers that do not
// fit or are not integers, and rejects strings where numbers belong.
type jsonHeader struct {
	Code      int32              `json:"code"`
	Language  json.RawMessage    `json:"language"` // string, number or null
	Version   int16              `json:"version"`
	Opaque    int32              `json:"opaque"`
	Flag      int32              `json:"flag"`
	Remark    string             `json:"remark"`
	ExtFields map[string]*string `json:"extFields"` // nil pointer: JSON null
}

func decodeJSONHeader(h []byte, cmd *RemotingCommand) error {
	// encoding/json accepts a top-level null into a struct; a header must
	// be an object.
	if t := bytes.TrimLeft(h, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return malformed("JSON header is not an object")
	}
	var jh jsonHeader
	if err := json.Unmarshal(h, &jh); err != nil {
		return malformed("JSON header: %v", err)
	}
	lang, err := decodeJSONLanguage(jh.Language)
	if err != nil {
		return err
	}
	cmd.Code = jh.Code
	cmd.Language = lang
	cmd.Version = jh.Version
	cmd.Opaque = jh.Opaque
	cmd.Flag = jh.Flag
	cmd.Remark = jh.Remark
	cmd.ExtFields = make(map[string]string, len(jh.ExtFields))
	for k, v := range jh.ExtFields {
		if v != nil {
			cmd.ExtFields[k] = *v
		}
	}
	return nil
}

// decodeJSONLanguage accepts what the Go client accepts: a string (any),
// a number (the binary byte code, 0..255) or null/absent ("").
func decodeJSONLanguage(raw json.RawMessage) (LanguageCode, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", malformed("JSON header language: %v", err)
		}
		return LanguageCode(s), nil
	case c == '-' || ('0' <= c && c <= '9'):
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n < 0 || n > 255 {
			return "", malformed("JSON header language %s is not a byte code", raw)
		}
		return LanguageOf(byte(n)), nil
	}
	return "", malformed("JSON header language %.20s is not a string or number", raw)
}

// appendJSONHeader writes the header the way the Go client does: fixed key
// order, no whitespace, remark and extFields always present; plus sorted
// extFields so the output is canonical. language is left out when empty.
func appendJSONHeader(dst []byte, c *RemotingCommand) []byte {
	dst = append(dst, `{"code":`...)
	dst = strconv.AppendInt(dst, int64(c.Code), 10)
	if c.Language != "" {
		dst = append(dst, `,"language":`...)
		dst = appendJSONString(dst, string(c.Language))
	}
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, int64(c.Version), 10)
	dst = append(dst, `,"opaque":`...)
	dst = strconv.AppendInt(dst, int64(c.Opaque), 10)
	dst = append(dst, `,"flag":`...)
	dst = strconv.AppendInt(dst, int64(c.Flag), 10)
	dst = append(dst, `,"remark":`...)
	dst = appendJSONString(dst, c.Remark)
	dst = append(dst, `,"extFields":{`...)
	for i, k := range sortedKeys(c.ExtFields) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendJSONString(dst, c.ExtFields[k])
	}
	return append(dst, "}}"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string: '"' and '\\' escaped,
// control characters as \n, \r, \t or \u00XX, invalid UTF-8 as \ufffd,
// everything else (including non-ASCII) as is.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
