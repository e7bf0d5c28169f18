// Package httpapi is the HTTP server on --http-addr: health and readiness
// probes, Prometheus metrics and the admin REST API.
//
//	GET  /healthz          200 "ok" while the process runs
//	GET  /readyz           200 "ok" when the broker is ready, else 503 and the reason
//	GET  /metrics          Prometheus text exposition
//	GET  /api/v1/cluster   ClusterInfo: this node's view of the Raft group
//	GET  /api/v1/topics    TopicList
//	POST /api/v1/topics    create a topic from CreateTopicRequest
//	POST /api/v1/dlq/resend  put a dead letter back on its original topic
//	                         (ResendDeadLetterRequest → ResendDeadLetterResult)
//
// Errors of the API are JSON {"error": "..."} with a 4xx or 5xx status.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/raft"
)

// Broker is what the HTTP server needs of *broker.Broker.
type Broker interface {
	Status() raft.Status
	Ready() bool
	Done() <-chan struct{}
	Err() error
	Topics() []broker.Topic
	Topic(name string) (broker.Topic, bool)
	CreateTopic(ctx context.Context, t broker.Topic) error
}

// Limits of the API.
const (
	// DefaultQueues is the queue count of a topic created without one
	// (core/broker's default for auto-created topics).
	DefaultQueues = 8
	// MaxQueues is core/broker's bound on a topic's queues, checked here
	// too so that asking for more is a 400, not a 500.
	MaxQueues = broker.MaxQueues
	// MaxRequestBodyBytes bounds a request body.
	MaxRequestBodyBytes = 64 << 10
	// DefaultWriteTimeout bounds an admin write (a Raft round trip).
	DefaultWriteTimeout = 10 * time.Second
)

// Config configures a Server. Broker and Gatherer are required.
type Config struct {
	Broker Broker
	// Gatherer serves /metrics: the registry the broker registered into.
	Gatherer prometheus.Gatherer
	// Registerer, if set, receives the /metrics handler's own metrics.
	Registerer prometheus.Registerer

	// This node's id and addresses, and the configured peers (id → Raft
	// address), for /api/v1/cluster.
	NodeID   uint64
	RaftAddr string
	HTTPAddr string
	Peers    map[uint64]string

	// WriteTimeout bounds an admin write such as creating a topic
	// (DefaultWriteTimeout when 0).
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	http *http.Server
}

// NewRegistry returns a Prometheus registry holding the Go runtime and
// process collectors, for the broker to register its own into.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New builds a Server; Serve starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Broker == nil || cfg.Gatherer == nil {
		return nil, errors.New("httpapi: Broker and Gatherer are required")
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}

	var metrics http.Handler = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		Registry:            cfg.Registerer,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	if cfg.Registerer != nil {
		metrics = promhttp.InstrumentMetricHandler(cfg.Registerer, metrics)
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", metrics)
	s.mux.HandleFunc("GET /api/v1/cluster", s.cluster)
	s.mux.HandleFunc("GET /api/v1/topics", s.listTopics)
	s.mux.HandleFunc("POST /api/v1/topics", s.createTopic)
	s.mux.HandleFunc("POST /api/v1/dlq/resend", s.resendDeadLetter)

	s.http = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// Longer than an admin write may take, so its answer gets out.
		WriteTimeout:   cfg.WriteTimeout + 20*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler is the server's routes, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers on ln until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown closes the listener at once and waits, until ctx ends, for the
// requests in progress.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if reason := s.notReady(); reason != "" {
		writeText(w, http.StatusServiceUnavailable, reason)
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// notReady says why the broker is not ready, or "" if it is.
func (s *Server) notReady() string {
	b := s.cfg.Broker
	select {
	case <-b.Done():
		return fmt.Sprintf("broker stopped: %v", b.Err())
	default:
	}
	if b.Ready() {
		return ""
	}
	st := b.Status()
	switch {
	case st.Leader == 0:
		return fmt.Sprintf("no leader known (term %d, role %s)", st.Term, roleName(st.Role))
	case st.Applied < st.Commit:
		return fmt.Sprintf("catching up: applied %d of %d committed entries", st.Applied, st.Commit)
	default:
		return "not ready"
	}
}

// ClusterInfo is the answer of GET /api/v1/cluster: this node's view.
type ClusterInfo struct {
	Leader  uint64     `json:"leader"` // 0: none known
	Self    uint64     `json:"self"`
	Term    uint64     `json:"term"`
	Commit  uint64     `json:"commit"`
	Applied uint64     `json:"applied"`
	Ready   bool       `json:"ready"`
	Nodes   []NodeInfo `json:"nodes"`
}

// NodeInfo is one member. A node knows its own role; of the others it
// knows only which one is the leader: they are "follower", or "unknown"
// while no leader is known. Addresses come from the configured peers
// (HTTPAddr only for this node).
type NodeInfo struct {
	ID       uint64 `json:"id"`
	Role     string `json:"role"`
	RaftAddr string `json:"raftAddr,omitempty"`
	HTTPAddr string `json:"httpAddr,omitempty"`
}

func (s *Server) cluster(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.clusterInfo())
}

func (s *Server) clusterInfo() ClusterInfo {
	st := s.cfg.Broker.Status()
	self := s.cfg.NodeID
	if st.ID != 0 {
		self = st.ID
	}
	ids := []uint64{self}
	for id := range s.cfg.Peers {
		ids = append(ids, id)
	}
	ids = append(ids, st.Voters...)
	slices.Sort(ids)
	ids = slices.Compact(ids)

	info := ClusterInfo{Leader: st.Leader, Self: self, Term: st.Term, Commit: st.Commit, Applied: st.Applied,
		Ready: s.cfg.Broker.Ready(), Nodes: make([]NodeInfo, 0, len(ids))}
	for _, id := range ids {
		n := NodeInfo{ID: id, RaftAddr: s.cfg.Peers[id]}
		switch {
		case id == self:
			n.Role = roleName(st.Role)
			n.HTTPAddr = s.cfg.HTTPAddr
			if n.RaftAddr == "" {
				n.RaftAddr = s.cfg.RaftAddr
			}
		case id == st.Leader:
			n.Role = "leader"
		case st.Leader == 0:
			n.Role = "unknown"
		default:
			n.Role = "follower"
		}
		info.Nodes = append(info.Nodes, n)
	}
	return info
}

// roleName turns etcd raft's StateLeader into leader, StatePreCandidate
// into pre-candidate, and so on.
func roleName(state string) string {
	switch state {
	case "StateLeader":
		return "leader"
	case "StateFollower":
		return "follower"
	case "StateCandidate":
		return "candidate"
	case "StatePreCandidate":
		return "pre-candidate"
	case "":
		return "unknown"
	default:
		return strings.ToLower(strings.TrimPrefix(state, "State"))
	}
}

// TopicList is the answer of GET /api/v1/topics, sorted by name.
type TopicList struct {
	Topics []broker.Topic `json:"topics"`
}

func (s *Server) listTopics(w http.ResponseWriter, _ *http.Request) {
	ts := s.cfg.Broker.Topics()
	if ts == nil {
		ts = []broker.Topic{}
	}
	writeJSON(w, http.StatusOK, TopicList{Topics: ts})
}

// CreateTopicRequest is the body of POST /api/v1/topics. Queues 0 (or
// absent) is DefaultQueues.
type CreateTopicRequest struct {
	Name   string `json:"name"`
	Queues uint32 `json:"queues"`
}

// createTopic answers 201 and the topic when it creates it, 200 when it
// already exists with those queues, and 409 when it exists with others
// (changing a topic is not this endpoint's job).
func (s *Server) createTopic(w http.ResponseWriter, r *http.Request) {
	var req CreateTopicRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body (want {\"name\": ..., \"queues\": ...}): %w", err))
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, errors.New("bad request body: more than one JSON value"))
		return
	}
	if req.Queues == 0 {
		req.Queues = DefaultQueues
	}
	if req.Queues > MaxQueues {
		writeError(w, http.StatusBadRequest, fmt.Errorf("queues %d outside [1, %d]", req.Queues, MaxQueues))
		return
	}
	b := s.cfg.Broker
	if t, ok := b.Topic(req.Name); ok {
		if t.Queues != req.Queues {
			writeError(w, http.StatusConflict, fmt.Errorf("topic %s already exists with %d queues", t.Name, t.Queues))
			return
		}
		writeJSON(w, http.StatusOK, t)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	err := b.CreateTopic(ctx, broker.Topic{Name: req.Name, Queues: req.Queues})
	switch {
	case err == nil:
	case errors.Is(err, broker.ErrInvalidTopic):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, broker.ErrClosed), errors.Is(err, raft.ErrStopped):
		writeError(w, http.StatusServiceUnavailable, err)
		return
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Errorf("not committed within %s (is there a leader? see /readyz): %w", s.cfg.WriteTimeout, err))
		return
	default:
		s.log.Warn("create topic failed", "topic", req.Name, "queues", req.Queues, "err", err)
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	s.log.Info("topic created", "topic", req.Name, "queues", req.Queues)
	t, ok := b.Topic(req.Name)
	if !ok { // deleted again in between
		t = broker.Topic{Name: req.Name, Queues: req.Queues}
	}
	writeJSON(w, http.StatusCreated, t)
}

func writeText(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, text+"\n")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, code int, err error) {
	data, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}
