package frame

import "fmt"

// Method is one AMQP method with its arguments. Every type in
// methods_gen.go implements it (as a pointer, e.g. *BasicPublish); no
// other type can.
type Method interface {
	ClassID() uint16
	MethodID() uint16
	// Name is "class.method" as in the spec, e.g. "basic.publish".
	Name() string
	// HasContent: a content header and body frames follow the method
	// (basic.publish, basic.return, basic.deliver, basic.get-ok).
	HasContent() bool
	// Synchronous: the spec's synchronous attribute (a request that expects
	// a reply, or the reply itself).
	Synchronous() bool

	appendArgs(dst []byte) []byte
	readArgs(r *reader) error
	validate() error
}

// DecodeMethod decodes the payload of a method frame: class id, method id
// and arguments. An unknown class/method pair is an error wrapping
// ErrUnknownMethod; a payload too short for its arguments or otherwise
// malformed is an error wrapping ErrSyntax. Bytes after the arguments are
// ignored. The result does not alias payload.
func DecodeMethod(payload []byte) (Method, error) {
	r := reader{buf: payload}
	classID := r.short()
	methodID := r.short()
	if r.err != nil {
		return nil, syntaxErr("method frame payload of %d bytes, need at least 4", len(payload))
	}
	m := newMethod(classID, methodID)
	if m == nil {
		return nil, fmt.Errorf("%w: class %d method %d", ErrUnknownMethod, classID, methodID)
	}
	if err := m.readArgs(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name(), err)
	}
	return m, nil
}

// AppendMethod appends the payload of a method frame for m (class id,
// method id, arguments) to dst. Encoding cannot fail; arguments the wire
// cannot carry are handled as a last resort as ValidateMethod describes.
func AppendMethod(dst []byte, m Method) []byte {
	dst = appendShort(dst, m.ClassID())
	dst = appendShort(dst, m.MethodID())
	return m.appendArgs(dst)
}

// ValidateMethod reports whether AppendMethod can encode m faithfully: every
// shortstr argument at most 255 bytes, every longstr under 4 GiB, and every
// table encodable by AppendTable. Callers that build methods from
// untrusted or unchecked values call it first. When it fails AppendMethod
// still produces a well-formed frame, but not the same value: a shortstr is
// cut to its first 255 bytes, and a table value AppendTable would reject is
// written as void ('V') (a table key over 255 bytes is cut).
func ValidateMethod(m Method) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("%s: %w", m.Name(), err)
	}
	return nil
}
