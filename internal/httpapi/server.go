// Package httpapi is the HTTP server on --http-addr: health and readiness
// probes, Prometheus metrics and the admin REST API.
//
//	GET    /healthz          200 "ok" while the process runs
//	GET    /readyz           200 "ok" when the broker is ready, else 503 and the reason
//	GET    /metrics          Prometheus text exposition
//	GET    /api/v1/cluster   ClusterInfo: this node's view of the Raft group
//	GET    /api/v1/topics    TopicList
//	POST   /api/v1/topics    create a topic from CreateTopicRequest
//	POST   /api/v1/dlq/resend  put a dead letter back on its original topic
//	                           (ResendDeadLetterRequest → ResendDeadLetterResult)
//	GET    /api/v1/users     UserList
//	GET    /api/v1/users/{name}  one user (auth.User.Public)
//	PUT    /api/v1/users/{name}  create (201) or update (200) from PutUserRequest;
//	                             "If-Match: *" updates only (412 if there is no such user)
//	DELETE /api/v1/users/{name}  204
//	GET    /api/v1/permissions   PermissionList: every user's AMQP permissions by vhost
//	PUT    /api/v1/permissions/{user}?vhost=/  set them from PermissionRequest (→ Permission)
//	DELETE /api/v1/permissions/{user}?vhost=/  204
//	GET    /api/v1/users/{name}/mqtt-acl       MQTTACL: the user's ordered MQTT rules
//	PUT    /api/v1/users/{name}/mqtt-acl       replace them (→ MQTTACL)
//	GET    /api/v1/users/{name}/rocketmq-acl   auth.RocketPerms
//	PUT    /api/v1/users/{name}/rocketmq-acl   replace them (→ auth.RocketPerms)
//
// Every /api/v1 route answers administrators only, when the broker checks
// credentials (Broker.AuthEnabled): HTTP basic auth with a user tagged
// "administrator". No or bad credentials are a 401 with
// WWW-Authenticate: Basic realm="conflux", a user who is not an
// administrator a 403. The probes stay open, and so does /metrics unless
// Config.MetricsAuth. The vhost parameter defaults to "/".
//
// Answers never hold a password hash or a RocketMQ secret key (the user's
// "rocketSecret" reads "(set)" when there is one), and the log gets user
// names and what changed, never a password or secret.
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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conflux-mq/conflux/core/auth"
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

	// Users: see core/broker/users.go.
	AuthEnabled() bool
	Authenticate(name, password string, addr net.Addr) (auth.User, error)
	LookupUser(name string) (auth.User, bool)
	Users() []auth.User
	PutUser(ctx context.Context, u auth.User) error
	DeleteUser(ctx context.Context, name string) error
	HashPassword(password string) (string, error)
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
	// MetricsAuth puts /metrics behind the administrators' check too, for
	// sites that show nothing about a node without a login.
	MetricsAuth bool
	Logger      *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	http *http.Server

	// usersMu serializes this node's read-modify-write changes of users,
	// so that two requests changing one user do not undo each other.
	usersMu sync.Mutex
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
	if cfg.MetricsAuth {
		metrics = s.adminOnly(metrics)
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", metrics)
	// Each API handler is wrapped on its own, rather than the mux behind
	// a path-prefix check, so that no spelling of a path can reach one
	// unchecked.
	api := func(pattern string, h http.HandlerFunc) { s.mux.Handle(pattern, s.adminOnly(h)) }
	api("GET /api/v1/cluster", s.cluster)
	api("GET /api/v1/topics", s.listTopics)
	api("POST /api/v1/topics", s.createTopic)
	api("POST /api/v1/dlq/resend", s.resendDeadLetter)
	api("GET /api/v1/users", s.listUsers)
	api("GET /api/v1/users/{name}", s.getUser)
	api("PUT /api/v1/users/{name}", s.putUser)
	api("DELETE /api/v1/users/{name}", s.deleteUser)
	api("GET /api/v1/permissions", s.listPermissions)
	api("PUT /api/v1/permissions/{user}", s.putPermission)
	api("DELETE /api/v1/permissions/{user}", s.deletePermission)
	api("GET /api/v1/users/{name}/mqtt-acl", s.getMQTTACL)
	api("PUT /api/v1/users/{name}/mqtt-acl", s.putMQTTACL)
	api("GET /api/v1/users/{name}/rocketmq-acl", s.getRocketACL)
	api("PUT /api/v1/users/{name}/rocketmq-acl", s.putRocketACL)

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
	if !decodeBody(w, r, &req, `{"name": ..., "queues": ...}`) {
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
	default:
		s.writeWriteError(w, err, "create topic", "topic", req.Name, "queues", req.Queues)
		return
	}
	s.log.Info("topic created", "topic", req.Name, "queues", req.Queues, "by", adminName(r))
	t, ok := b.Topic(req.Name)
	if !ok { // deleted again in between
		t = broker.Topic{Name: req.Name, Queues: req.Queues}
	}
	writeJSON(w, http.StatusCreated, t)
}

// decodeBody reads the request body, one JSON value of at most
// MaxRequestBodyBytes without unknown fields, into v. On failure it has
// answered 400, naming the shape it wants, and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, want string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body (want %s): %w", want, err))
		return false
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, errors.New("bad request body: more than one JSON value"))
		return false
	}
	return true
}

// statusError is a handler's failure with the status it answers.
type statusError struct {
	code int
	err  error
}

func (e statusError) Error() string { return e.err.Error() }
func (e statusError) Unwrap() error { return e.err }

func errStatus(code int, format string, args ...any) error {
	return statusError{code, fmt.Errorf(format, args...)}
}

// writeWriteError answers a failed admin write: the handler's own status
// (statusError), the broker's refusals, and the Raft round trip's
// failures. Only the unexpected ones are logged, with what and attrs.
func (s *Server) writeWriteError(w http.ResponseWriter, err error, what string, attrs ...any) {
	var se statusError
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &se):
		code = se.code
	case errors.Is(err, broker.ErrNoUser):
		code = http.StatusNotFound
	case errors.Is(err, broker.ErrBadRecord):
		code = http.StatusBadRequest
	case errors.Is(err, broker.ErrClosed), errors.Is(err, raft.ErrStopped):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
		err = fmt.Errorf("not committed within %s (is there a leader? see /readyz): %w", s.cfg.WriteTimeout, err)
	default:
		s.log.Warn(what+" failed", append(attrs, "err", err)...)
	}
	writeError(w, code, err)
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
