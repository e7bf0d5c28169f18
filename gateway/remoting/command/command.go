package command

import (
	"slices"
	"strconv"
	"strings"
)

// RemotingCommand is one remoting frame, request or response. The field
// names and JSON keys are Java's RemotingCommand's; doc.go has the layout.
type RemotingCommand struct {
	// Code is a RequestCode, or a ResponseCode when Flag has FlagResponse.
	// int32 because Java's code is an int and Java 5.x POP requests use
	// codes above 200000 (JSON only: the binary header has 16 bits).
	Code int32
	// Language names the sender's client language: "GO", "JAVA", ...
	Language LanguageCode
	// Version is the sender's MQVersion ordinal (Go client: VersionV4_5_2).
	// int16: the binary header and the Go client hold 16 bits.
	Version int16
	// Opaque is the request id; a response carries its request's.
	Opaque int32
	// Flag holds FlagResponse and FlagOneway.
	Flag int32
	// Remark is free text, usually the error of a response.
	Remark string
	// ExtFields is the "custom header": request and response parameters,
	// every value a string. Decoding always sets a non-nil map.
	ExtFields map[string]string
	// Body is the payload after the header; nil when empty. After decoding
	// it aliases the frame's buffer.
	Body []byte
	// SerializeType is the header encoding the frame came in or goes out in.
	SerializeType SerializeType
}

// Flag bits.
const (
	// FlagResponse (bit 0) marks a response. A response without it is taken
	// for a request by the Go client, and the caller times out.
	FlagResponse int32 = 1 << 0
	// FlagOneway (bit 1) marks a request that wants no reply. Trap: the Go
	// client never sets it; its "oneway" sends (SendOneWay,
	// UPDATE_CONSUMER_OFFSET, END_TRANSACTION) arrive with flag 0. Java
	// sets it on broker->client CHECK_TRANSACTION_STATE and
	// NOTIFY_CONSUMER_IDS_CHANGED.
	FlagOneway int32 = 1 << 1
)

// IsResponse reports whether the command is a response (FlagResponse set).
func (c *RemotingCommand) IsResponse() bool { return c.Flag&FlagResponse != 0 }

// IsOneway reports whether FlagOneway is set. False does not mean the sender
// waits for a reply: the Go client sends its oneway requests with flag 0.
func (c *RemotingCommand) IsOneway() bool { return c.Flag&FlagOneway != 0 }

// NewResponse returns a reply to req: code and remark, req's Opaque,
// FlagResponse, language JAVA (the broker answers as a Java broker would),
// an empty ExtFields and req's SerializeType, because the broker answers in
// the format the request came in. Version is left 0 for the session to set
// (the Go client only needs it to be >= 0; Java clients record it from the
// HEART_BEAT reply).
func NewResponse(req *RemotingCommand, code ResponseCode, remark string) *RemotingCommand {
	return &RemotingCommand{
		Code:          int32(code),
		Language:      LanguageJava,
		Opaque:        req.Opaque,
		Flag:          FlagResponse,
		Remark:        remark,
		ExtFields:     map[string]string{},
		SerializeType: req.SerializeType,
	}
}

// CodeName names the command's code for logs, as a response code when the
// command is a response and as a request code otherwise.
func (c *RemotingCommand) CodeName() string { return Name(c.Code, c.IsResponse()) }

// String describes the command for logs: code name, opaque, flag, remark,
// ext fields (sorted) and body length, never the body itself, nor the
// values of the ACL's Signature and SecurityToken fields (RedactedFields).
func (c *RemotingCommand) String() string {
	var b strings.Builder
	b.WriteString("RemotingCommand{")
	b.WriteString(c.CodeName())
	b.WriteString(" opaque=")
	b.WriteString(strconv.FormatInt(int64(c.Opaque), 10))
	b.WriteString(" flag=")
	b.WriteString(strconv.FormatInt(int64(c.Flag), 10))
	b.WriteString(" " + c.SerializeType.String() + " " + string(c.Language) + " v")
	b.WriteString(strconv.FormatInt(int64(c.Version), 10))
	if c.Remark != "" {
		b.WriteString(" remark=")
		b.WriteString(strconv.Quote(c.Remark))
	}
	b.WriteString(" ext={")
	for i, k := range sortedKeys(c.ExtFields) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if slices.Contains(RedactedFields, k) {
			b.WriteString("(redacted)")
			continue
		}
		b.WriteString(strconv.Quote(c.ExtFields[k]))
	}
	b.WriteString("} body=")
	b.WriteString(strconv.Itoa(len(c.Body)))
	b.WriteString("B}")
	return b.String()
}

// RedactedFields are the ext fields String leaves out: an ACL signature
// (which, with the request, lets an attacker test guesses of the secret
// offline) and a security token.
var RedactedFields = []string{"Signature", "SecurityToken"}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// SerializeType is the header encoding, byte 4 of a frame.
type SerializeType byte

const (
	// JSON headers: what the Go client always sends, and Java's default.
	JSON SerializeType = 0
	// RocketMQ binary headers (Java: -Drocketmq.serialize.type=ROCKETMQ).
	RocketMQ SerializeType = 1
)

func (t SerializeType) String() string {
	switch t {
	case JSON:
		return "JSON"
	case RocketMQ:
		return "ROCKETMQ"
	}
	return "SerializeType(" + strconv.Itoa(int(t)) + ")"
}

// LanguageCode is a client language as JSON headers name it. The binary
// header carries a byte code instead; LanguageCode.Byte and LanguageOf
// convert. Any string is a valid LanguageCode in JSON.
type LanguageCode string

// Java's LanguageCode enum (name and byte code), apache/rocketmq develop.
const (
	LanguageJava   LanguageCode = "JAVA"    // 0
	LanguageCPP    LanguageCode = "CPP"     // 1
	LanguageDotNet LanguageCode = "DOTNET"  // 2
	LanguagePython LanguageCode = "PYTHON"  // 3
	LanguageDelphi LanguageCode = "DELPHI"  // 4
	LanguageErlang LanguageCode = "ERLANG"  // 5
	LanguageRuby   LanguageCode = "RUBY"    // 6
	LanguageOther  LanguageCode = "OTHER"   // 7
	LanguageHTTP   LanguageCode = "HTTP"    // 8
	LanguageGo     LanguageCode = "GO"      // 9
	LanguagePHP    LanguageCode = "PHP"     // 10
	LanguageOMS    LanguageCode = "OMS"     // 11
	LanguageRust   LanguageCode = "RUST"    // 12
	LanguageNodeJS LanguageCode = "NODE_JS" // 13
)

// languageByCode is indexed by the binary byte code.
var languageByCode = [...]LanguageCode{
	LanguageJava, LanguageCPP, LanguageDotNet, LanguagePython, LanguageDelphi,
	LanguageErlang, LanguageRuby, LanguageOther, LanguageHTTP, LanguageGo,
	LanguagePHP, LanguageOMS, LanguageRust, LanguageNodeJS,
}

// LanguageOf returns the LanguageCode of a binary byte code. A byte with no
// name in the table comes back as its decimal string ("200"), which Byte
// turns back into the same byte.
func LanguageOf(code byte) LanguageCode {
	if int(code) < len(languageByCode) {
		return languageByCode[code]
	}
	return LanguageCode(strconv.Itoa(int(code)))
}

// Byte returns the binary byte code of l: its index in the table, or the
// value of a canonical decimal string 0..255. ok is false for anything
// else, including "".
func (l LanguageCode) Byte() (code byte, ok bool) {
	if i := slices.Index(languageByCode[:], l); i >= 0 {
		return byte(i), true
	}
	n, err := strconv.Atoi(string(l))
	if err != nil || n < 0 || n > 255 || strconv.Itoa(n) != string(l) {
		return 0, false
	}
	return byte(n), true
}

// Versions (Java MQVersion.Version ordinals) that matter on the wire.
const (
	// VersionV4_5_2 is what the Go client sends in every request.
	VersionV4_5_2 int16 = 317
	// VersionV4_9_4: a Java name server writes brokerAddrs with unquoted
	// numeric keys to clients below this version (remoting.md §3.1).
	VersionV4_9_4 int16 = 401
	// VersionV5_3_1 and VersionV5_3_3 are recent Java releases
	// (V5_3_3 is CURRENT_VERSION on apache/rocketmq develop, 2025-09).
	VersionV5_3_1 int16 = 475
	VersionV5_3_3 int16 = 479
)
