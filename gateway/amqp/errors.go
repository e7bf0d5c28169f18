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

// codeNames are the reply codes' names, as RabbitMQ puts them in front of
// every reply text ("ACCESS_REFUSED - …"): people search for those
// strings, and some tools match them.
var codeNames = map[uint16]string{
	codeConnectionForced: "CONNECTION_FORCED", codeAccessRefused: "ACCESS_REFUSED", codeNotFound: "NOT_FOUND",
	codeResourceLocked: "RESOURCE_LOCKED", codePreconditionFailed: "PRECONDITION_FAILED", codeFrameError: "FRAME_ERROR",
	codeSyntaxError: "SYNTAX_ERROR", codeCommandInvalid: "COMMAND_INVALID", codeChannelError: "CHANNEL_ERROR",
	codeUnexpectedFrame: "UNEXPECTED_FRAME", codeResourceError: "RESOURCE_ERROR", codeNotAllowed: "NOT_ALLOWED",
	codeNotImplemented: "NOT_IMPLEMENTED", codeInternalError: "INTERNAL_ERROR",
}

// replyText is the text of the channel.close or connection.close that
// carries the error: RabbitMQ's "NAME - text".
func (e *amqpError) replyText() string {
	if n, ok := codeNames[e.code]; ok {
		return shortText(n + " - " + e.text)
	}
	return e.text
}

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
