package httpapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/raft"
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
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body (want {\"topic\": ..., \"queue\": ..., \"offset\": ...}): %w", err))
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, errors.New("bad request body: more than one JSON value"))
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
	case errors.Is(err, broker.ErrClosed), errors.Is(err, raft.ErrStopped):
		writeError(w, http.StatusServiceUnavailable, err)
		return
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Errorf("not committed within %s: %w", s.cfg.WriteTimeout, err))
		return
	default:
		s.log.Warn("resend dead letter failed", "topic", req.Topic, "queue", req.Queue, "offset", req.Offset, "err", err)
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	s.log.Info("dead letter resent", "dlq", req.Topic, "offset", req.Offset, "topic", topic, "queue", res.Queue)
	writeJSON(w, http.StatusOK, ResendDeadLetterResult{Topic: topic, Queue: res.Queue, QueueOffset: res.QueueOffset,
		MessageID: hex.EncodeToString(res.ID[:])})
}
