package amqp

import "fmt"

// Reply codes (AMQP 0-9-1 §1.7 of our reference; RabbitMQ's use of them).
const (
	codeSuccess            = 200
	codeNoRoute            = 312
	codeConnectionForced   = 320
	codeAccessRefused      = 403
	codeNotFound           = 404
	codeResourceLocked     = 405
	codePreconditionFailed = 406
	codeFrameError         = 501
	codeSyntaxError        = 502
	codeCommandInvalid     = 503
	codeChannelError       = 504
	codeUnexpectedFrame    = 505
	codeResourceError      = 506
	codeNotAllowed         = 530
	codeNotImplemented     = 540
	codeInternalError      = 541
)

// amqpError is a protocol exception: soft ones close the channel, hard ones
// the connection. classID and methodID name the method that caused it.
type amqpError struct {
	code              uint16
	text              string
	classID, methodID uint16
	hard              bool
	// desync: the frame stream lost its footing (bad frame end, oversize
	// frame); nothing after it can be parsed.
	desync bool
}

func (e *amqpError) Error() string { return fmt.Sprintf("amqp %d: %s", e.code, e.text) }

func softErr(code uint16, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: shortText(fmt.Sprintf(format, args...))}
}

func hardErr(code uint16, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: shortText(fmt.Sprintf(format, args...)), hard: true}
}

// shortText keeps a reply text within a shortstr.
func shortText(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}
