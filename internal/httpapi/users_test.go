package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
)

// lockedBuffer is a log sink the handlers write while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type authEnv struct {
	base string
	srv  *Server
	b    *broker.Broker
	log  *lockedBuffer // the HTTP server's log
}

// startAuth serves the API of a single-node broker that checks
// credentials, with cheap password hashes, once the default user guest
// is stored.
func startAuth(t *testing.T, tune func(*Config)) authEnv {
	t.Helper()
	e := startAuthReady(t, tune)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, ok := e.b.LookupUser("guest"); !ok; _, ok = e.b.LookupUser("guest") {
		if time.Now().After(deadline) {
			t.Fatal("the default user guest was not created")
		}
		<-tick.C
	}
	return e
}

// startAuthReady is startAuth without waiting for the default user.
func startAuthReady(t *testing.T, tune func(*Config)) authEnv {
	t.Helper()
	reg := NewRegistry()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Registerer: reg,
		Auth: broker.AuthConfig{Hash: auth.HashParams{MemoryKiB: 64, Time: 1, Threads: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	logs := &lockedBuffer{}
	cfg := Config{Broker: b, Gatherer: reg, NodeID: 1, Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	if tune != nil {
		tune(&cfg)
	}
	base, srv := serve(t, cfg)
	waitReady(t, base)
	return authEnv{base: base, srv: srv, b: b, log: logs}
}

// TestFirstUserKeepsDefault: a user made the moment a new node is ready,
// with guest's login from before guest is stored, does not keep guest
// from being created.
func TestFirstUserKeepsDefault(t *testing.T) {
	e := startAuthReady(t, nil)
	if r := do(t, "PUT", e.base+"/api/v1/users/first", `{"password":"p"}`); r.code != http.StatusCreated {
		t.Fatalf("first user: %+v", r)
	}
	if u, ok := e.b.LookupUser("guest"); !ok || !u.IsAdmin() {
		t.Fatalf("no default administrator after the first user: %+v %v", u, ok)
	}
}

// serveFrom answers one request as if it came from remote.
func (e authEnv) serveFrom(remote, user, password, method, path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = remote
	req.SetBasicAuth(user, password)
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, r response) string {
	t.Helper()
	return decode[struct {
		Error string `json:"error"`
	}](t, r).Error
}

// TestAdminAuth: every API route wants an administrator's basic auth; the
// probes and metrics do not.
func TestAdminAuth(t *testing.T) {
	e := startAuth(t, nil)
	base := e.base

	routes := []struct{ method, path string }{
		{"GET", "/api/v1/cluster"}, {"GET", "/api/v1/topics"}, {"POST", "/api/v1/topics"}, {"POST", "/api/v1/dlq/resend"},
		{"GET", "/api/v1/users"}, {"GET", "/api/v1/users/guest"}, {"PUT", "/api/v1/users/x"}, {"DELETE", "/api/v1/users/guest"},
		{"GET", "/api/v1/permissions"}, {"PUT", "/api/v1/permissions/guest"}, {"DELETE", "/api/v1/permissions/guest"},
		{"GET", "/api/v1/users/guest/mqtt-acl"}, {"PUT", "/api/v1/users/guest/mqtt-acl"},
		{"GET", "/api/v1/users/guest/rocketmq-acl"}, {"PUT", "/api/v1/users/guest/rocketmq-acl"},
	}
	for _, rt := range routes {
		r := doAs(t, "", "", rt.method, base+rt.path, `{}`)
		if r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Basic realm="conflux"` ||
			!strings.Contains(errorOf(t, r), "needs a user name and password") {
			t.Errorf("%s %s without credentials: %d %v %q", rt.method, rt.path, r.code, r.header, r.body)
		}
	}

	// Unknown user and wrong password: one answer.
	wrong := doAs(t, "guest", "nope", "GET", base+"/api/v1/cluster", "")
	unknown := doAs(t, "mallory", "guest", "GET", base+"/api/v1/cluster", "")
	for _, r := range []response{wrong, unknown} {
		if r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Basic realm="conflux"` ||
			errorOf(t, r) != "bad user name or password" {
			t.Errorf("bad credentials: %d %v %q", r.code, r.header, r.body)
		}
	}
	if wrong.body != unknown.body {
		t.Errorf("wrong password %q and unknown user %q answer differently", wrong.body, unknown.body)
	}

	// A user who is not an administrator: 403, on reads too.
	if r := do(t, "PUT", base+"/api/v1/users/alice", `{"password":"alice-pw"}`); r.code != http.StatusCreated {
		t.Fatalf("create alice: %+v", r)
	}
	if r := doAs(t, "alice", "alice-pw", "GET", base+"/api/v1/topics", ""); r.code != http.StatusForbidden ||
		errorOf(t, r) != "user alice is not an administrator" || r.header.Get("WWW-Authenticate") != "" {
		t.Errorf("alice, not an administrator: %d %q", r.code, r.body)
	}
	if r := do(t, "PUT", base+"/api/v1/users/alice", `{"tags":["administrator"]}`); r.code != http.StatusOK {
		t.Fatalf("make alice an administrator: %+v", r)
	}
	if r := doAs(t, "alice", "alice-pw", "GET", base+"/api/v1/topics", ""); r.code != http.StatusOK {
		t.Errorf("alice, administrator: %d %q", r.code, r.body)
	}

	// guest works from loopback only (RabbitMQ's rule); other users from
	// anywhere.
	for _, c := range []struct {
		remote, user, password string
		code                   int
	}{
		{"192.0.2.7:5000", "guest", "guest", http.StatusUnauthorized},
		{"[2001:db8::1]:5000", "guest", "guest", http.StatusUnauthorized},
		{"not an address", "guest", "guest", http.StatusUnauthorized},
		{"127.0.0.1:5000", "guest", "guest", http.StatusOK},
		{"[::1]:5000", "guest", "guest", http.StatusOK},
		{"[::ffff:127.0.0.1]:5000", "guest", "guest", http.StatusOK},
		{"192.0.2.7:5000", "alice", "alice-pw", http.StatusOK},
	} {
		rec := e.serveFrom(c.remote, c.user, c.password, "GET", "/api/v1/cluster")
		if rec.Code != c.code || c.code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s from %s: %d %q, want %d", c.user, c.remote, rec.Code, rec.Body, c.code)
		}
	}
	if !strings.Contains(e.log.String(), broker.ErrLoopbackOnly.Error()) {
		t.Errorf("the log does not say why guest was refused:\n%s", e.log)
	}

	// The probes and /metrics stay open.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := doAs(t, "", "", "GET", base+path, ""); r.code != http.StatusOK {
			t.Errorf("%s without credentials: %d", path, r.code)
		}
	}
	if strings.Contains(e.log.String(), "alice-pw") {
		t.Errorf("a password in the log:\n%s", e.log)
	}
}

func TestMetricsAuth(t *testing.T) {
	e := startAuth(t, func(c *Config) { c.MetricsAuth = true })
	if r := doAs(t, "", "", "GET", e.base+"/metrics", ""); r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("/metrics without credentials: %d %v", r.code, r.header)
	}
	if r := do(t, "GET", e.base+"/metrics", ""); r.code != http.StatusOK || !strings.Contains(r.body, "conflux_raft_term") {
		t.Errorf("/metrics as guest: %d", r.code)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := doAs(t, "", "", "GET", e.base+path, ""); r.code != http.StatusOK {
			t.Errorf("%s without credentials: %d", path, r.code)
		}
	}
}

// TestUsersAPI drives the user, permission and ACL routes through their
// successes and failures; no answer holds a hash or a secret, and the log
// holds no password or secret.
func TestUsersAPI(t *testing.T) {
	e := startAuth(t, nil)
	const password, password2, secret = "pw-one-1f9c", "pw-two-77ab", "rocket-secret-5d21"
	var bodies []string
	call := func(method, path, body string, code int, header ...string) response {
		t.Helper()
		r := doAs(t, "guest", "guest", method, e.base+path, body, header...)
		bodies = append(bodies, r.body)
		if r.code != code {
			t.Fatalf("%s %s %s: %d %q, want %d", method, path, body, r.code, r.body, code)
		}
		return r
	}
	fails := func(method, path, body string, code int, want string, header ...string) {
		t.Helper()
		r := doAs(t, "guest", "guest", method, e.base+path, body, header...)
		bodies = append(bodies, r.body)
		if r.code != code || !strings.Contains(errorOf(t, r), want) {
			t.Errorf("%s %s %.60s: %d %q, want %d and %q", method, path, body, r.code, r.body, code, want)
		}
	}

	// Users: create, read, update.
	u := decode[auth.User](t, call("PUT", "/api/v1/users/bob", `{"password":"`+password+`","tags":["monitoring"],"rocketmqSecretKey":"`+secret+`"}`, 201))
	if u.Name != "bob" || u.PasswordHash != "" || u.RocketSecret != "(set)" || len(u.Tags) != 1 || u.Tags[0] != "monitoring" {
		t.Fatalf("created bob: %+v", u)
	}
	if stored, _ := e.b.LookupUser("bob"); stored.RocketSecret != secret || !strings.HasPrefix(stored.PasswordHash, "$argon2id$") {
		t.Fatalf("stored bob: secret %q hash %q", stored.RocketSecret, stored.PasswordHash)
	}
	if _, err := e.b.Authenticate("bob", password, nil); err != nil {
		t.Fatalf("bob's password: %v", err)
	}
	list := decode[UserList](t, call("GET", "/api/v1/users", "", 200))
	if len(list.Users) != 2 || list.Users[0].Name != "bob" || list.Users[1].Name != "guest" || list.Users[0].RocketSecret != "(set)" {
		t.Fatalf("users: %+v", list)
	}
	if got := decode[auth.User](t, call("GET", "/api/v1/users/bob", "", 200)); got.Name != "bob" || got.PasswordHash != "" {
		t.Fatalf("GET bob: %+v", got)
	}
	// Permissions survive an update of the password; tags are kept when
	// left out.
	call("PUT", "/api/v1/permissions/bob?vhost=%2Fprod", `{"configure":"^bob\\.","write":".*","read":""}`, 200)
	u = decode[auth.User](t, call("PUT", "/api/v1/users/bob", `{"password":"`+password2+`"}`, 200, "If-Match", "*"))
	if len(u.Tags) != 1 || u.VHosts["/prod"].Configure != `^bob\.` {
		t.Fatalf("bob after a password change: %+v", u)
	}
	if _, err := e.b.Authenticate("bob", password, nil); err == nil {
		t.Fatal("bob's old password still works")
	}
	if _, err := e.b.Authenticate("bob", password2, nil); err != nil {
		t.Fatalf("bob's new password: %v", err)
	}
	u = decode[auth.User](t, call("PUT", "/api/v1/users/bob", `{"tags":[],"rocketmqSecretKey":""}`, 200))
	if len(u.Tags) != 0 || u.RocketSecret != "" {
		t.Fatalf("bob without tags and secret: %+v", u)
	}

	fails("PUT", "/api/v1/users/carol", `{"tags":["administrator"]}`, 400, "needs a password")
	fails("PUT", "/api/v1/users/carol", `{"password":""}`, 400, "must not be empty")
	fails("PUT", "/api/v1/users/carol", `{"password":"`+strings.Repeat("x", auth.MaxPasswordBytes+1)+`"}`, 400, "password longer than")
	fails("PUT", "/api/v1/users/carol", `{"password":"p","tags":[""]}`, 400, "bad tag")
	fails("PUT", "/api/v1/users/carol", `{"password":"p","admin":true}`, 400, `unknown field "admin"`)
	fails("PUT", "/api/v1/users/carol", `{"password":"p"} {}`, 400, "more than one JSON value")
	fails("PUT", "/api/v1/users/carol", `{"password":"`+strings.Repeat("x", MaxRequestBodyBytes)+`"}`, 400, "request body too large")
	fails("PUT", "/api/v1/users/carol", `{"password":"p"}`, 412, "no such user", "If-Match", "*")
	fails("PUT", "/api/v1/users/carol", `{"password":"p"}`, 400, "only * is supported", "If-Match", `"v1"`)
	fails("PUT", "/api/v1/users/a%3Ab", `{"password":"p"}`, 400, "':'")
	fails("GET", "/api/v1/users/carol", "", 404, "no such user")
	fails("DELETE", "/api/v1/users/carol", "", 404, "no such user")
	if _, ok := e.b.LookupUser("carol"); ok {
		t.Fatal("a refused request created carol")
	}

	// The only administrator can be neither demoted nor deleted.
	fails("PUT", "/api/v1/users/guest", `{"tags":[]}`, 409, "only administrator")
	fails("DELETE", "/api/v1/users/guest", "", 409, "only administrator")

	// Permissions.
	call("PUT", "/api/v1/permissions/bob", `{"configure":"","write":"^in$","read":"^out$"}`, 200)
	perms := decode[PermissionList](t, call("GET", "/api/v1/permissions", "", 200))
	want := []Permission{
		{User: "bob", VHost: "/", Configure: "", Write: "^in$", Read: "^out$"},
		{User: "bob", VHost: "/prod", Configure: `^bob\.`, Write: ".*", Read: ""},
		{User: "guest", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"},
	}
	if len(perms.Permissions) != len(want) {
		t.Fatalf("permissions: %+v", perms)
	}
	for i := range want {
		if perms.Permissions[i] != want[i] {
			t.Errorf("permission %d: %+v, want %+v", i, perms.Permissions[i], want[i])
		}
	}
	fails("PUT", "/api/v1/permissions/bob", `{"configure":"(","write":"","read":""}`, 400, "regular expression")
	fails("PUT", "/api/v1/permissions/bob", `{"configure":".*","write":".*"}`, 400, "all required")
	fails("PUT", "/api/v1/permissions/bob?vhost=", `{"configure":"","write":"","read":""}`, 400, "bad vhost")
	fails("PUT", "/api/v1/permissions/nobody", `{"configure":"","write":"","read":""}`, 404, "no such user")
	fails("DELETE", "/api/v1/permissions/bob?vhost=%2Fnone", "", 404, "no permissions on vhost")
	fails("DELETE", "/api/v1/permissions/nobody", "", 404, "no such user")
	call("DELETE", "/api/v1/permissions/bob?vhost=%2Fprod", "", 204)
	if stored, _ := e.b.LookupUser("bob"); len(stored.VHosts) != 1 || stored.VHosts["/"].Write != "^in$" {
		t.Fatalf("bob's vhosts after clearing /prod: %+v", stored.VHosts)
	}

	// MQTT rules, in order, replaced whole.
	if acl := decode[MQTTACL](t, call("GET", "/api/v1/users/bob/mqtt-acl", "", 200)); acl.Rules == nil || len(acl.Rules) != 0 {
		t.Fatalf("no MQTT rules yet: %+v", acl)
	}
	rules := `{"rules":[{"allow":true,"action":"publish","filter":"devices/%u/#"},{"allow":false,"action":"all","filter":"#"}]}`
	call("PUT", "/api/v1/users/bob/mqtt-acl", rules, 200)
	acl := decode[MQTTACL](t, call("GET", "/api/v1/users/bob/mqtt-acl", "", 200))
	if len(acl.Rules) != 2 || acl.Rules[0] != (auth.TopicRule{Allow: true, Action: "publish", Filter: "devices/%u/#"}) || acl.Rules[1].Allow {
		t.Fatalf("MQTT rules: %+v", acl)
	}
	if stored, _ := e.b.LookupUser("bob"); !stored.AllowMQTT("c1", "devices/bob/t", false) || stored.AllowMQTT("c1", "devices/eve/t", false) {
		t.Fatalf("bob's stored rules do not apply: %+v", stored.MQTT)
	}
	fails("PUT", "/api/v1/users/bob/mqtt-acl", `{"rules":[{"allow":true,"action":"read","filter":"#"}]}`, 400, "want publish, subscribe or all")
	fails("PUT", "/api/v1/users/bob/mqtt-acl", `{}`, 400, "rules is required")
	fails("PUT", "/api/v1/users/nobody/mqtt-acl", `{"rules":[]}`, 404, "no such user")
	fails("GET", "/api/v1/users/nobody/mqtt-acl", "", 404, "no such user")
	call("PUT", "/api/v1/users/bob/mqtt-acl", `{"rules":[]}`, 200)
	if stored, _ := e.b.LookupUser("bob"); stored.MQTT != nil {
		t.Fatalf("rules left after clearing: %+v", stored.MQTT)
	}

	// RocketMQ permissions, replaced whole.
	rp := `{"defaultTopicPerm":"SUB","defaultGroupPerm":"DENY","topicPerms":{"orders":"PUB|SUB"},"groupPerms":{"g1":"SUB"}}`
	call("PUT", "/api/v1/users/bob/rocketmq-acl", rp, 200)
	got := decode[auth.RocketPerms](t, call("GET", "/api/v1/users/bob/rocketmq-acl", "", 200))
	if got.DefaultTopic != "SUB" || got.DefaultGroup != "DENY" || got.Topics["orders"] != "PUB|SUB" || got.Groups["g1"] != "SUB" {
		t.Fatalf("RocketMQ permissions: %+v", got)
	}
	call("PUT", "/api/v1/users/bob/rocketmq-acl", `{"topicPerms":{"t":"PUB"}}`, 200)
	if stored, _ := e.b.LookupUser("bob"); stored.Rocket.DefaultTopic != "" || len(stored.Rocket.Groups) != 0 || stored.Rocket.Topics["t"] != "PUB" {
		t.Fatalf("RocketMQ permissions not replaced whole: %+v", stored.Rocket)
	}
	fails("PUT", "/api/v1/users/bob/rocketmq-acl", `{"defaultTopicPerm":"ALL"}`, 400, "want DENY, PUB, SUB or PUB|SUB")
	fails("PUT", "/api/v1/users/bob/rocketmq-acl", `{"topics":{}}`, 400, "unknown field")
	fails("PUT", "/api/v1/users/nobody/rocketmq-acl", `{}`, 404, "no such user")
	fails("GET", "/api/v1/users/nobody/rocketmq-acl", "", 404, "no such user")

	// A second administrator: then guest may go.
	call("PUT", "/api/v1/users/root", `{"password":"`+password+`","tags":["administrator"],"rocketmqSecretKey":"`+secret+`"}`, 201)
	call("DELETE", "/api/v1/users/guest", "", 204)
	if r := doAs(t, "root", password, "DELETE", e.base+"/api/v1/users/bob", ""); r.code != http.StatusNoContent {
		t.Fatalf("root deletes bob: %+v", r)
	}
	if r := doAs(t, "root", password, "GET", e.base+"/api/v1/users", ""); r.code != 200 || len(decode[UserList](t, r).Users) != 1 {
		t.Fatalf("users left: %+v", r)
	} else {
		bodies = append(bodies, r.body)
	}

	for _, b := range bodies {
		if strings.Contains(b, "$argon2id") || strings.Contains(b, secret) || strings.Contains(b, password) || strings.Contains(b, password2) {
			t.Errorf("an answer gives a hash, password or secret away: %s", b)
		}
	}
	logs := e.log.String()
	for _, leak := range []string{password, password2, secret, "$argon2id"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log holds %q:\n%s", leak, logs)
		}
	}
	var sawChange bool
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "user updated" && rec["user"] == "bob" && rec["by"] == "guest" {
			sawChange = true
		}
	}
	if !sawChange {
		t.Errorf("no log line says who changed bob:\n%s", logs)
	}
}
