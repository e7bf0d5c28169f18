// Package frame is the wire codec of AMQP 0-9-1 as RabbitMQ and its clients
// speak it: frames, methods, field tables and content headers. It is a leaf
// package (standard library only, no networking); the server in
// gateway/amqp owns connections, channels and the protocol state machine.
//
// Decoding never panics and checks every length against the bytes present
// before allocating. Decoded values never alias the input, except the raw
// property bytes ParseHeader hands back. Every integer on the wire is
// big-endian (network order).
//
// # Protocol header
//
// A client opens with eight octets, ProtocolHeader:
//
//	'A' 'M' 'Q' 'P' 0 0 9 1
//
// A server that cannot speak the version the client asked for writes its own
// header and closes the connection.
//
// # Frame
//
//	off   size  field
//	  0      1  type: 1 method, 2 content header, 3 content body, 8 heartbeat
//	  1      2  channel (0 for the connection itself and for heartbeats)
//	  3      4  size: payload length in bytes
//	  7   size  payload
//	7+size   1  frame end, always 0xCE
//
// A frame is therefore its payload plus Overhead (8) bytes. The negotiated
// frame-max bounds a whole frame, so a body frame carries at most
// frame-max - 8 payload bytes; MinFrameMax (4096) is the floor every peer
// accepts. ReadFrame checks the size against the caller's limit before it
// allocates and checks the end octet after reading. A heartbeat frame has
// channel 0 and an empty payload.
//
// # Method payload
//
//	class-id u16 | method-id u16 | arguments
//
// Arguments follow each other with no padding and no per-field tags, in the
// order the specification lists them. Primitive types:
//
//	octet     u8
//	short     u16
//	long      u32
//	longlong  u64
//	shortstr  length u8, then that many bytes (so at most 255)
//	longstr   length u32, then that many bytes
//	timestamp u64, seconds since the Unix epoch
//	table     a field table (below)
//	bit       packed, see below
//
// Bits: a run of consecutive bit arguments shares octets. The first bit of a
// run is bit 0 (the least significant) of its octet, the next bit 1, and so
// on up to bit 7; a ninth consecutive bit starts a new octet. Any argument
// of another type ends the run, so the next bit after it starts a fresh
// octet. Example: queue.declare's passive, durable, exclusive, auto-delete,
// no-wait are one octet, passive in 0x01 ... no-wait in 0x10.
//
// Reserved arguments (reserved-1, reserved-2: the spec's deprecated ticket,
// out-of-band, known-hosts, cluster-id fields) are not struct fields. They
// are written as the zero value of their type (0, an empty string, a clear
// bit) and skipped when read, whatever they hold.
//
// DecodeMethod ignores bytes after the last argument. AppendMethod writes the
// class id, method id and arguments; AppendMethodFrame wraps them in a frame
// in one pass.
//
// # Field tables
//
//	size u32 | entries
//	entry = key shortstr | tag octet | value
//
// size counts the entry bytes that follow it. Keys are shortstrs. The value
// types are RabbitMQ's set, which every real client and broker uses; the
// 0-9-1 PDF's own list differs (it has 's' as a shortstr, 'l' unsigned and
// 'U', 'L' for wider integers) and is not followed:
//
//	tag  value                                       Go type
//	't'  boolean, one octet, non-zero is true        bool
//	'b'  signed 8-bit                                 int8
//	'B'  unsigned 8-bit                               uint8
//	's'  signed 16-bit                                int16
//	'u'  unsigned 16-bit                              uint16
//	'I'  signed 32-bit                                int32
//	'i'  unsigned 32-bit                              uint32
//	'l'  signed 64-bit                                int64
//	'f'  IEEE-754 single                              float32
//	'd'  IEEE-754 double                              float64
//	'D'  decimal: scale u8, then value as signed 32  Decimal
//	'S'  long string: length u32, bytes               string
//	'x'  byte array: length u32, bytes                []byte
//	'A'  array: size u32, then tagged values          []any
//	'T'  timestamp: u64 seconds since the epoch       time.Time (UTC)
//	'F'  nested table: as a table                     Table
//	'V'  void, no value bytes                         nil
//
// An array's size, like a table's, counts the bytes of its values, not
// their number. Any other tag is ErrSyntax. Tables and arrays nest at most
// MaxDepth (64) levels deep, so hostile input cannot exhaust the stack.
// AppendTable writes keys in sorted order, making its output deterministic.
//
// # Content header
//
// A content-bearing method (basic.publish, basic.return, basic.deliver,
// basic.get-ok) is followed on its channel by one content-header frame and
// then body frames carrying body-size bytes in total (none when it is 0).
// The header payload:
//
//	off  size  field
//	  0     2  class-id (60, basic)
//	  2     2  weight, always 0
//	  4     8  body-size u64
//	 12     2  property flags
//	 14     -  property list
//
// Each property present has its bit set in the flags word and appears in the
// list, in descending bit order. Bit 0 of a flags word would announce another
// flags word; basic never sets it, and this package rejects it (as well as
// the unused bit 1). The basic properties:
//
//	bit  property          type
//	 15  content-type      shortstr
//	 14  content-encoding  shortstr
//	 13  headers           table
//	 12  delivery-mode     octet (1 transient, 2 persistent)
//	 11  priority          octet
//	 10  correlation-id    shortstr
//	  9  reply-to          shortstr
//	  8  expiration        shortstr
//	  7  message-id        shortstr
//	  6  timestamp         timestamp (u64 seconds)
//	  5  type              shortstr
//	  4  user-id           shortstr
//	  3  app-id            shortstr
//	  2  cluster-id        shortstr (reserved)
//
// A server normally passes the flags word and property list through as raw
// bytes (ParseHeader, AppendHeader), so values it does not interpret survive
// exactly; DecodeProperties and AppendProperties convert to and from
// Properties when it needs to look inside.
//
// # Generated methods
//
// methods_gen.go holds one struct per method of every class, 64 in all,
// both directions, named ClassMethod in Go style (ConnectionStartOk,
// BasicGetEmpty, ...) with one field per non-reserved argument named the
// same way ("auto-delete" is AutoDelete, an "-id" suffix is ID, confirm
// select's "nowait" is NoWait; the class-id and method-id arguments of
// connection.close and channel.close are FailedClassID and FailedMethodID,
// because ClassID and MethodID are the Method interface's own methods).
// Argument types come from each field's domain, resolved through the
// specification's domain elements to a primitive type: octet uint8, short
// uint16, long uint32, longlong uint64, bit bool, shortstr and longstr
// string, table Table, timestamp time.Time.
//
// gen.go produces it from the specification XML that the
// github.com/rabbitmq/amqp091-go module ships,
// spec/amqp0-9-1.stripped.extended.xml (RabbitMQ's extended 0-9-1: confirm,
// exchange.bind/unbind, basic.nack, connection.blocked, update-secret). It
// finds the module with `go list -m`, so the module must be required in
// go.mod and present in the module cache. To regenerate:
//
//	go generate ./gateway/amqp/frame/
//
//go:generate go run gen.go
package frame
