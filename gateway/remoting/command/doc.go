// Package command is the wire codec of RocketMQ "remoting", the protocol
// RocketMQ clients (rocketmq-client-go v2, the Java client) speak to the
// name server and the broker. It turns frames into RemotingCommand values and
// back, and holds the request and response code tables. It is a leaf
// package: no networking, nothing from core/; the gateway's session code
// owns connections and maps commands onto the broker.
//
// Every integer on the wire is big-endian. Every extFields value is a string
// (numbers in decimal).
//
// # Frame
//
//	off  size       field
//	  0     4       length (int32): bytes after this field = 4 + headerLen + bodyLen
//	  4     1       serialize type: 0 JSON, 1 ROCKETMQ (binary)
//	  5     3       headerLen (uint24)
//	  8     headerLen header, encoded by the serialize type
//	  8+headerLen   body: the rest of the frame (length - 4 - headerLen bytes), may be empty
//
// Bytes 4..7 are one int32 in Java: (type << 24) | (headerLen & 0xFFFFFF).
// There is no magic, version or checksum; a frame is only as trustworthy as
// its two lengths. Decoding therefore checks, before allocating anything:
//
//   - 4 <= length, and 4 + length <= the configured MaxFrameBytes (whole
//     frame, length field included; default DefaultMaxFrameBytes);
//   - serialize type is 0 or 1;
//   - headerLen <= length - 4 (Java: "decode error, bad header length"),
//     and headerLen is at least the smallest header of its type (2 bytes of
//     JSON "{}", 21 bytes of binary).
//
// Only then is the frame read, into one buffer of exactly length bytes; for
// frames over 64 KiB the buffer grows as bytes arrive, so a peer that
// announces 16 MiB and sends 8 bytes costs 64 KiB, not 16 MiB. Body aliases
// that buffer.
//
// Limits: Java caps a frame at 16 MiB (com.rocketmq.remoting.frameMaxLength,
// counted like MaxFrameBytes, length field included); Java's default
// maxMessageSize is 4 MiB. DefaultMaxFrameBytes is 16 MiB plus a 64 KiB
// header margin, so every frame a Java peer accepts is accepted here too.
// The Go client has no limit at all.
//
// # JSON header (serialize type 0)
//
// One JSON object, UTF-8. The Go client writes the keys in this order, with
// no whitespace, and so does AppendFrame:
//
//	{"code":105,"language":"GO","version":317,"opaque":1,"flag":0,"remark":"","extFields":{"topic":"TopicTest"}}
//
//	key        JSON type        RemotingCommand field, notes
//	code       number           Code; request code, or response code when flag bit 0 is set.
//	                            Java: int. Go client: int16 (a larger value fails its decode).
//	language   string           Language: "JAVA", "GO", ... (table in LanguageCode).
//	                            Decoded also from a number (the binary byte code) or null.
//	                            Written only when not empty.
//	version    number           Version: the sender's MQVersion ordinal (Go client: 317 =
//	                            V4_5_2). Read as int16, as the binary header and the Go client do.
//	opaque     number (int32)   Opaque: request id; a response echoes the request's.
//	flag       number (int32)   Flag: bit 0 response, bit 1 oneway (see Flags).
//	remark     string or null   Remark: error text. Java leaves it out when null; the Go client
//	                            and AppendFrame always write it ("" when empty).
//	extFields  object or null   ExtFields: string -> string. The Go client always writes an
//	                            object ({} when empty) and so does AppendFrame. A null value
//	                            means absent (Java leaves null header fields out).
//	serializeTypeCurrentRPC     Java adds "JSON". Ignored, like every other unknown key.
//
// Every key is optional on input (a missing number is 0, a missing string
// ""). Numbers must be JSON integers that fit the field (no fraction, no
// exponent, no quotes); an extFields value must be a JSON string or null,
// because the Go client decodes extFields as map[string]string and drops a
// whole frame over one number in it (remoting.md §13 trap 1). Keys match
// case-insensitively (encoding/json; the Go client's jsoniter does the
// same); when a key repeats, the last one wins. Invalid UTF-8 inside strings decodes as
// U+FFFD. A header that is not one JSON object is ErrMalformed, never a panic.
//
// AppendFrame escapes '"', '\\' and control characters (as \n, \r, \t or
// \u00XX: RocketMQ's property separators U+0001 and U+0002 become \u0001 and
// \u0002), writes invalid UTF-8 as \ufffd, writes everything else as is (no
// HTML escaping), and sorts extFields by key, so its output is canonical: a
// decoded command re-encodes to the same bytes every time.
//
// # ROCKETMQ binary header (serialize type 1)
//
//	off    size    field
//	  0       2    code (int16; Java truncates its int code with a cast)
//	  2       1    language byte code (LanguageCode table: JAVA 0 ... GO 9 ... NODE_JS 13)
//	  3       2    version (int16)
//	  5       4    opaque (int32)
//	  9       4    flag (int32)
//	 13       4    remarkLen (int32), then remarkLen bytes of UTF-8 remark (0 = empty)
//	 17+r     4    extLen (int32), then extLen bytes of ext fields (0 = none)
//	 21+r  extLen  ext fields, repeated until extLen is used up:
//	                 keyLen (int16), key bytes, valLen (int32), value bytes
//
// The fixed part is 21 bytes. Decoding rejects (ErrMalformed) a negative
// length, a length larger than the bytes left, and bytes left over after the
// ext fields: headerLen must equal 21 + remarkLen + extLen exactly (Java
// reads the body right after the ext fields, so trailing header bytes would
// shift it). A repeated key keeps its last value. A language byte with no
// name in the table decodes to its decimal string ("200") and encodes back
// to the same byte. Encoding needs Code to fit int16, a Language from the
// table (or such a decimal string) and keys of at most 32767 bytes, else it
// returns ErrInvalidCommand; ext fields are written sorted by key.
//
// Java 5.x reads an empty binary string (remark, key or value) as null, so
// an ext field whose value is "" arrives at a Java peer as a null value;
// this package keeps "".
//
// # Request, response, oneway
//
// Flag bit 0 (FlagResponse) marks a response, which must echo the request's
// Opaque: without the bit the Go client takes the frame for a request and
// the caller times out. Bit 1 (FlagOneway) marks a request that wants no
// reply, but the Go client never sets it: SendOneWay, UPDATE_CONSUMER_OFFSET
// and END_TRANSACTION arrive with flag 0 and cannot be told apart from
// ordinary requests (remoting.md §1.5, §13 trap 10). Answer them; the client
// drops replies to opaques it does not know.
//
// A reply goes out in the serialize type its request came in (NewResponse
// copies it). Both the Go and the Java client read either type on every
// frame. (A Java broker instead answers in its own configured type, JSON
// unless started with -Drocketmq.serialize.type=ROCKETMQ.)
//
// # Errors
//
// ReadFrame and DecodeFrame return io.EOF at a clean end of stream, and
// otherwise errors wrapping ErrTruncated, ErrFrameTooLarge or ErrMalformed
// (or the reader's own error). None of them can be answered, because the
// opaque is unknown or untrustworthy: the gateway's one mapping function
// closes the connection. AppendFrame returns ErrInvalidCommand or
// ErrFrameTooLarge. RocketMQ status travels in Code (the ResponseCode table),
// never as a Go error from this package.
package command
