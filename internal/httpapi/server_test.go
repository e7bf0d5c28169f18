package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/raft"
)

// serve starts a Server for cfg on 127.0.0.1:0 and returns its base URL.
func serve(t *testing.T, cfg Config) (string, *Server) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return "http://" + ln.Addr().String(), s
}

type response struct {
	code   int
	body   string
	header http.Header
}

// do sends a request as the default administrator, guest (from
// loopback, where guest may log in).
func do(t *testing.T, method, url, body string) response {
	t.Helper()
	return doAs(t, "guest", "guest", method, url, body)
}

// doAs sends a request with basic auth as user (none when user is "").
func doAs(t *testing.T, user, password, method, url, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, string(data), res.Header}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

// waitReady polls /readyz until 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last response
	for time.Now().Before(deadline) {
		if last = do(t, "GET", base+"/readyz", ""); last.code == http.StatusOK {
			return
		}
		<-tick.C
	}
	t.Fatalf("not ready within the deadline: %d %q", last.code, last.body)
}

// TestRealBroker drives every route against a single-node broker in a
// temp dir.
func TestRealBroker(t *testing.T) {
	reg := NewRegistry()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	base, _ := serve(t, Config{Broker: b, Gatherer: reg, Registerer: reg, NodeID: 1, RaftAddr: "127.0.0.1:40911", HTTPAddr: "127.0.0.1:8080"})

	if r := do(t, "GET", base+"/healthz", ""); r.code != 200 || r.body != "ok\n" {
		t.Fatalf("healthz: %+v", r)
	}
	waitReady(t, base)

	m := do(t, "GET", base+"/metrics", "")
	for _, want := range []string{"\nconflux_raft_is_leader 1\n", "\nconflux_raft_term ", "\nconflux_raft_applied_index ",
		"\ngo_goroutines ", "\nprocess_open_fds ", "\npromhttp_metric_handler_requests_total{code=\"200\"} "} {
		if m.code != 200 || !strings.Contains(m.body, want) {
			t.Errorf("metrics (%d) lack %q", m.code, strings.TrimSpace(want))
		}
	}

	ci := decode[ClusterInfo](t, do(t, "GET", base+"/api/v1/cluster", ""))
	if ci.Leader != 1 || ci.Self != 1 || ci.Term == 0 || !ci.Ready || ci.Applied < ci.Commit || len(ci.Nodes) != 1 ||
		ci.Nodes[0] != (NodeInfo{ID: 1, Role: "leader", RaftAddr: "127.0.0.1:40911", HTTPAddr: "127.0.0.1:8080"}) {
		t.Fatalf("cluster: %+v", ci)
	}

	if r := do(t, "GET", base+"/api/v1/topics", ""); r.code != 200 || strings.Join(strings.Fields(r.body), "") != `{"topics":[]}` {
		t.Fatalf("empty topic list: %+v", r)
	}
	r := do(t, "POST", base+"/api/v1/topics", `{"name":"orders","queues":4}`)
	if r.code != http.StatusCreated || decode[broker.Topic](t, r) != (broker.Topic{Name: "orders", Queues: 4, Perm: broker.PermRead | broker.PermWrite}) {
		t.Fatalf("create: %+v", r)
	}
	if r := do(t, "POST", base+"/api/v1/topics", `{"name":"default-queues"}`); r.code != http.StatusCreated || decode[broker.Topic](t, r).Queues != DefaultQueues {
		t.Fatalf("create with default queues: %+v", r)
	}
	if r := do(t, "POST", base+"/api/v1/topics", `{"name":"orders","queues":4}`); r.code != http.StatusOK {
		t.Fatalf("create again, same queues: %+v", r)
	}
	list := decode[TopicList](t, do(t, "GET", base+"/api/v1/topics", ""))
	if len(list.Topics) != 2 || list.Topics[0].Name != "default-queues" || list.Topics[1].Name != "orders" {
		t.Fatalf("list: %+v", list)
	}

	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/api/v1/topics", `{"name":"orders","queues":5}`, 409, "already exists with 4 queues"},
		{"POST", "/api/v1/topics", `{"name":"a/b","queues":1}`, 400, "invalid topic name"},
		{"POST", "/api/v1/topics", `{"name":"","queues":1}`, 400, "invalid topic name"},
		{"POST", "/api/v1/topics", `{"name":"big","queues":2000}`, 400, "queues 2000 outside [1, 1024]"},
		{"POST", "/api/v1/topics", `{"name":"x","queues":-1}`, 400, "bad request body"},
		{"POST", "/api/v1/topics", `{"name":"x","perm":6}`, 400, `unknown field \"perm\"`},
		{"POST", "/api/v1/topics", `{"name":"x"} {"name":"y"}`, 400, "more than one JSON value"},
		{"POST", "/api/v1/topics", `not json`, 400, "bad request body"},
		{"POST", "/api/v1/topics", `{"name":"` + strings.Repeat("x", MaxRequestBodyBytes) + `"}`, 400, "request body too large"},
		{"DELETE", "/api/v1/topics", "", 405, ""},
		{"GET", "/api/v1/nothing", "", 404, ""},
	} {
		r := do(t, tc.method, base+tc.path, tc.body)
		if r.code != tc.code || !strings.Contains(r.body, tc.want) {
			t.Errorf("%s %s %.40q: %d %q, want %d and %q", tc.method, tc.path, tc.body, r.code, r.body, tc.code, tc.want)
		}
	}
}

// fakeBroker has a settable status, for the states a real single node
// passes through too quickly to test.
type fakeBroker struct {
	mu     sync.Mutex
	st     raft.Status
	done   chan struct{}
	err    error
	create func(ctx context.Context, t broker.Topic) error
}

func newFake(st raft.Status) *fakeBroker { return &fakeBroker{st: st, done: make(chan struct{})} }

func (f *fakeBroker) Status() raft.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeBroker) Ready() bool {
	st := f.Status()
	return st.Leader != 0 && st.Applied >= st.Commit
}
func (f *fakeBroker) Done() <-chan struct{}                                 { return f.done }
func (f *fakeBroker) Err() error                                            { return f.err }
func (f *fakeBroker) Topics() []broker.Topic                                { return nil }
func (f *fakeBroker) Topic(string) (broker.Topic, bool)                     { return broker.Topic{}, false }
func (f *fakeBroker) CreateTopic(ctx context.Context, t broker.Topic) error { return f.create(ctx, t) }

// The fake checks no credentials: its API is open.
func (f *fakeBroker) AuthEnabled() bool { return false }
func (f *fakeBroker) Authenticate(string, string, net.Addr) (auth.User, error) {
	return auth.User{}, broker.ErrAuthFailed
}
func (f *fakeBroker) LookupUser(string) (auth.User, bool)      { return auth.User{}, false }
func (f *fakeBroker) Users() []auth.User                       { return nil }
func (f *fakeBroker) PutUser(context.Context, auth.User) error { return broker.ErrClosed }
func (f *fakeBroker) DeleteUser(context.Context, string) error { return broker.ErrClosed }
func (f *fakeBroker) HashPassword(string) (string, error)      { return "", broker.ErrClosed }

func TestReadyzReasons(t *testing.T) {
	f := newFake(raft.Status{ID: 1, Term: 3, Role: "StatePreCandidate"})
	base, _ := serve(t, Config{Broker: f, Gatherer: prometheus.NewRegistry()})
	check := func(code int, want string) {
		t.Helper()
		if r := do(t, "GET", base+"/readyz", ""); r.code != code || !strings.Contains(r.body, want) {
			t.Errorf("readyz: %d %q, want %d %q", r.code, r.body, code, want)
		}
	}
	check(503, "no leader known (term 3, role pre-candidate)")
	f.mu.Lock()
	f.st = raft.Status{ID: 1, Leader: 2, Term: 3, Commit: 10, Applied: 7}
	f.mu.Unlock()
	check(503, "catching up: applied 7 of 10 committed entries")
	f.mu.Lock()
	f.st.Applied = 10
	f.mu.Unlock()
	check(200, "ok")
	f.err = errors.New("disk full")
	close(f.done)
	check(503, "broker stopped: disk full")
	if r := do(t, "GET", base+"/healthz", ""); r.code != 200 {
		t.Errorf("healthz while the broker is down: %+v", r)
	}
}

func TestClusterRoles(t *testing.T) {
	peers := map[uint64]string{1: "a:40911", 2: "b:40912", 3: "c:40913"}
	f := newFake(raft.Status{ID: 2, Leader: 3, Term: 5, Commit: 9, Applied: 9, Role: "StateFollower", Voters: []uint64{1, 2, 3, 4}})
	base, _ := serve(t, Config{Broker: f, Gatherer: prometheus.NewRegistry(), NodeID: 2, RaftAddr: ":40912", HTTPAddr: "b:8082", Peers: peers})
	ci := decode[ClusterInfo](t, do(t, "GET", base+"/api/v1/cluster", ""))
	want := []NodeInfo{
		{ID: 1, Role: "follower", RaftAddr: "a:40911"},
		{ID: 2, Role: "follower", RaftAddr: "b:40912", HTTPAddr: "b:8082"},
		{ID: 3, Role: "leader", RaftAddr: "c:40913"},
		{ID: 4, Role: "follower"}, // a voter added later: no configured address
	}
	if ci.Leader != 3 || ci.Self != 2 || ci.Term != 5 || !ci.Ready || len(ci.Nodes) != len(want) {
		t.Fatalf("cluster: %+v", ci)
	}
	for i := range want {
		if ci.Nodes[i] != want[i] {
			t.Errorf("node %d: %+v, want %+v", i, ci.Nodes[i], want[i])
		}
	}

	f.mu.Lock()
	f.st = raft.Status{ID: 2, Term: 6, Role: "StateCandidate"}
	f.mu.Unlock()
	ci = decode[ClusterInfo](t, do(t, "GET", base+"/api/v1/cluster", ""))
	for _, n := range ci.Nodes {
		if want := map[uint64]string{1: "unknown", 2: "candidate", 3: "unknown"}[n.ID]; n.Role != want {
			t.Errorf("no leader: node %d role %q, want %q", n.ID, n.Role, want)
		}
	}
}

func TestCreateTopicTimeout(t *testing.T) {
	f := newFake(raft.Status{ID: 1})
	f.create = func(ctx context.Context, _ broker.Topic) error { <-ctx.Done(); return ctx.Err() }
	base, _ := serve(t, Config{Broker: f, Gatherer: prometheus.NewRegistry(), WriteTimeout: 50 * time.Millisecond})
	if r := do(t, "POST", base+"/api/v1/topics", `{"name":"t","queues":1}`); r.code != http.StatusGatewayTimeout || !strings.Contains(r.body, "not committed within 50ms") {
		t.Fatalf("create without a leader: %+v", r)
	}
	f.create = func(context.Context, broker.Topic) error { return broker.ErrClosed }
	if r := do(t, "POST", base+"/api/v1/topics", `{"name":"t","queues":1}`); r.code != http.StatusServiceUnavailable {
		t.Fatalf("create on a closed broker: %+v", r)
	}
}

func TestServerLimits(t *testing.T) {
	s, err := New(Config{Broker: newFake(raft.Status{}), Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := s.http
	if h.ReadHeaderTimeout <= 0 || h.ReadTimeout <= 0 || h.WriteTimeout <= s.cfg.WriteTimeout || h.IdleTimeout <= 0 || h.MaxHeaderBytes <= 0 {
		t.Fatalf("server without limits: %+v", h)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a broker succeeded")
	}
}
