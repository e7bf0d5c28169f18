package httpapi

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"

	"github.com/conflux-mq/conflux/core/broker"
)

// ResendDeadLetterRequest asks to put one dead-lettered message back on
// its original topic: POST /api/v1/dlq/resend.
type ResendDeadLetterRequest struct {
	// Topic is the dead-letter topic, e.g. "%DLQ%my_group".
	Topic  string `json:"topic"`
	Queue  uint32 `json:"queue"`
	Offset uint64 `json:"offset"`
}

// ResendDeadLetterResult says where the message went.
type ResendDeadLetterResult struct {
	Topic       string `json:"topic"`
	Queue       uint32 `json:"queue"`
	QueueOffset uint64 `json:"queueOffset"`
	MessageID   string `json:"messageId"`
}

// deadLetters is the optional part of Broker that resends dead letters
// (*broker.Broker has it).
type deadLetters interface {
	ResendDeadLetter(ctx context.Context, dlq string, queue uint32, offset uint64) (string, broker.Result, error)
}

func (s *Server) resendDeadLetter(w http.ResponseWriter, r *http.Request) {
	dl, ok := s.cfg.Broker.(deadLetters)
	if !ok {
		writeError(w, http.StatusNotImplemented, errors.New("this broker cannot resend dead letters"))
		return
	}
	var req ResendDeadLetterRequest
	if !decodeBody(w, r, &req, `{"topic": ..., "queue": ..., "offset": ...}`) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	topic, res, err := dl.ResendDeadLetter(ctx, req.Topic, req.Queue, req.Offset)
	switch {
	case err == nil:
	case errors.Is(err, broker.ErrNoTopic), errors.Is(err, broker.ErrBadQueue), errors.Is(err, broker.ErrOffsetTooHigh):
		writeError(w, http.StatusNotFound, err)
		return
	case errors.Is(err, broker.ErrNotDeadLetter):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, broker.ErrAlreadyResent):
		writeError(w, http.StatusConflict, err)
		return
	default:
		s.writeWriteError(w, err, "resend dead letter", "topic", req.Topic, "queue", req.Queue, "offset", req.Offset)
		return
	}
	s.log.Info("dead letter resent", "dlq", req.Topic, "offset", req.Offset, "topic", topic, "queue", res.Queue, "by", adminName(r))
	writeJSON(w, http.StatusOK, ResendDeadLetterResult{Topic: topic, Queue: res.Queue, QueueOffset: res.QueueOffset,
		MessageID: hex.EncodeToString(res.ID[:])})
}
