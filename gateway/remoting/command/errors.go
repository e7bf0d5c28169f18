package command

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors from this package wrap one of them (with %w), so
// callers branch with errors.Is and never on message text.
var (
	// ErrTruncated: the stream or buffer ended inside a frame. A stream
	// error also wraps io.ErrUnexpectedEOF.
	ErrTruncated = errors.New("remoting: truncated frame")
	// ErrFrameTooLarge: a frame's length is over the configured maximum
	// (decoding), or a header or frame does not fit its length field
	// (encoding). Nothing has been allocated for it.
	ErrFrameTooLarge = errors.New("remoting: frame too large")
	// ErrMalformed: the bytes cannot be a remoting frame: bad lengths,
	// unknown serialize type, a header that is not valid JSON or binary.
	ErrMalformed = errors.New("remoting: malformed frame")
	// ErrInvalidCommand: AppendFrame cannot encode the command as asked
	// (e.g. a code outside int16 in a binary header).
	ErrInvalidCommand = errors.New("remoting: command cannot be encoded")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidCommand}, args...)...)
}
