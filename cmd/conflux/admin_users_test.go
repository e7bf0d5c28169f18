package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/internal/httpapi"
)

// The one line `conflux admin` prints when the node refuses its login.
const badLoginLine = "conflux admin: 401 Unauthorized: bad user name or password (use --user/--password or CONFLUX_ADMIN_USER/CONFLUX_ADMIN_PASSWORD)\n"

// adminIn runs `conflux admin args...` in this process with env as its
// environment.
func adminIn(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), append([]string{"admin"}, args...), &o, &e, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	return code, o.String(), e.String()
}

// apiStatus is the status of GET path on base as user (no credentials
// when user is ""); a connection error fails the test.
func apiStatus(t *testing.T, base, user, password, path string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s as %q: %v", base+path, user, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestAdminUserCommands drives the users, permissions, mqtt-acl and
// rocketmq-acl commands against an in-process node.
func TestAdminUserCommands(t *testing.T) {
	b := inProcessBroker(t)
	srv, err := httpapi.New(httpapi.Config{Broker: b, Gatherer: httpapi.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln := localListener(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	addr := ln.Addr().String()
	none := map[string]string{}
	ok := func(env map[string]string, args ...string) string {
		t.Helper()
		code, out, errOut := adminIn(env, append([]string{"--http-addr", addr}, args...)...)
		if code != exitOK {
			t.Fatalf("admin %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		return out
	}
	fails := func(wantCode int, wantErr string, env map[string]string, args ...string) {
		t.Helper()
		code, _, errOut := adminIn(env, append([]string{"--http-addr", addr}, args...)...)
		if code != wantCode || !strings.Contains(errOut, wantErr) {
			t.Errorf("admin %q: exit %d, stderr %q; want %d and %q", args, code, errOut, wantCode, wantErr)
		}
	}

	out := ok(none, "users", "add", "alice", "--password", "alice-pw", "--rocketmq-secret-key", "alice-secret")
	var u auth.User
	if json.Unmarshal([]byte(out), &u) != nil || u.Name != "alice" || u.PasswordHash != "" || u.RocketSecret != "(set)" {
		t.Fatalf("users add printed %q", out)
	}
	if out := ok(none, "users"); !strings.Contains(out, `"name": "alice"`) || !strings.Contains(out, `"name": "guest"`) ||
		strings.Contains(out, "argon2") || strings.Contains(out, "alice-secret") {
		t.Fatalf("users printed %q", out)
	}

	// Refusals: one line each, exit 1.
	for _, c := range []struct {
		env  map[string]string
		args []string
		line string
	}{
		{none, []string{"--password", "wrong", "cluster"}, badLoginLine},
		{map[string]string{"CONFLUX_ADMIN_PASSWORD": "wrong"}, []string{"topics"}, badLoginLine},
		{none, []string{"--user", "alice", "--password", "alice-pw", "cluster"},
			"conflux admin: 403 Forbidden: user alice is not an administrator (log in as a user with the administrator tag)\n"},
	} {
		code, out, errOut := adminIn(c.env, append([]string{"--http-addr", addr}, c.args...)...)
		if code != exitFailure || out != "" || errOut != c.line {
			t.Errorf("admin %q: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errOut, exitFailure, c.line)
		}
	}

	// Make alice an administrator (her password kept) and log in as her,
	// by flags and by the environment.
	ok(none, "users", "add", "alice", "--tags", "administrator")
	ok(none, "--user", "alice", "--password", "alice-pw", "cluster")
	aliceEnv := map[string]string{"CONFLUX_ADMIN_USER": "alice", "CONFLUX_ADMIN_PASSWORD": "alice-pw"}
	ok(aliceEnv, "users", "add", "bob", "--password", "bob-pw")
	// On users add, --password is the new user's: alice's own must come
	// from the environment.
	fails(exitUsage, "give alice's own in CONFLUX_ADMIN_PASSWORD", none, "--user", "alice", "users", "add", "carol", "--password", "c")
	ok(aliceEnv, "users", "passwd", "bob", "--password", "bob-pw2")
	if _, err := b.Authenticate("bob", "bob-pw2", nil); err != nil {
		t.Fatalf("bob's new password: %v", err)
	}
	fails(exitFailure, "no such user", none, "users", "passwd", "nobody", "--password", "x")
	fails(exitUsage, "needs --password", none, "users", "passwd", "bob")
	if _, ok := b.LookupUser("nobody"); ok {
		t.Fatal("users passwd created a user")
	}

	// Permissions.
	ok(none, "permissions", "set", "bob", "--vhost", "/prod", "--configure", "", "--write", ".*", "--read", "^q$")
	ok(none, "permissions", "set", "bob", "--configure", "^b", "--write", "", "--read", "")
	if out := ok(none, "permissions", "list"); !strings.Contains(out, `"vhost": "/prod"`) || !strings.Contains(out, `"read": "^q$"`) {
		t.Fatalf("permissions list printed %q", out)
	}
	if out := ok(none, "permissions", "clear", "bob", "--vhost", "/prod"); out != "" {
		t.Errorf("permissions clear printed %q", out)
	}
	if s, _ := b.LookupUser("bob"); len(s.VHosts) != 1 || s.VHosts["/"].Configure != "^b" {
		t.Fatalf("bob's vhosts: %+v", s.VHosts)
	}
	fails(exitUsage, "needs --configure, --write and --read", none, "permissions", "set", "bob", "--configure", ".*", "--write", ".*")
	fails(exitFailure, "regular expression", none, "permissions", "set", "bob", "--configure", "(", "--write", "", "--read", "")

	// MQTT rules: order kept, commas and spaces in filters kept.
	ok(none, "mqtt-acl", "set", "bob", "--rule", "allow publish devices/%u/#", "--rule", "allow  subscribe  a,b/c d", "--rule", "deny all #")
	var acl httpapi.MQTTACL
	if out := ok(none, "mqtt-acl", "show", "bob"); json.Unmarshal([]byte(out), &acl) != nil {
		t.Fatalf("mqtt-acl show printed %q", out)
	}
	want := []auth.TopicRule{{Allow: true, Action: "publish", Filter: "devices/%u/#"}, {Allow: true, Action: "subscribe", Filter: "a,b/c d"},
		{Allow: false, Action: "all", Filter: "#"}}
	if fmt.Sprint(acl.Rules) != fmt.Sprint(want) {
		t.Fatalf("MQTT rules %+v, want %+v", acl.Rules, want)
	}
	fails(exitUsage, "want allow|deny", none, "mqtt-acl", "set", "bob", "--rule", "permit publish #")
	fails(exitUsage, "want publish, subscribe or all", none, "mqtt-acl", "set", "bob", "--rule", "allow read #")
	fails(exitUsage, "no topic filter", none, "mqtt-acl", "set", "bob", "--rule", "allow publish")
	fails(exitUsage, "at least one --rule", none, "mqtt-acl", "set", "bob")
	ok(none, "mqtt-acl", "set", "bob", "--clear")
	if s, _ := b.LookupUser("bob"); s.MQTT != nil {
		t.Fatalf("rules after --clear: %+v", s.MQTT)
	}

	// RocketMQ permissions, case-insensitive words.
	ok(none, "rocketmq-acl", "set", "bob", "--default-topic", "sub", "--topic", "orders=PUB|SUB", "--topic", "audit=DENY", "--group", "g1=sub")
	if out := ok(none, "rocketmq-acl", "show", "bob"); !strings.Contains(out, `"orders": "PUB|SUB"`) {
		t.Fatalf("rocketmq-acl show printed %q", out)
	}
	if s, _ := b.LookupUser("bob"); s.Rocket.DefaultTopic != "SUB" || s.Rocket.DefaultGroup != "" || s.Rocket.Topics["audit"] != "DENY" ||
		s.Rocket.Groups["g1"] != "SUB" {
		t.Fatalf("bob's RocketMQ permissions: %+v", s.Rocket)
	}
	fails(exitUsage, "want NAME=PERM", none, "rocketmq-acl", "set", "bob", "--topic", "orders")
	fails(exitFailure, "want DENY, PUB, SUB or PUB|SUB", none, "rocketmq-acl", "set", "bob", "--default-group", "all")
	fails(exitFailure, "no such user", none, "rocketmq-acl", "show", "nobody")

	if out := ok(none, "users", "delete", "bob"); out != "" {
		t.Errorf("users delete printed %q", out)
	}
	fails(exitFailure, "no such user", none, "users", "delete", "bob")
}

// runAdminExit runs the binary's `conflux admin args...` with env added to
// the child environment, and returns its exit code and output.
func runAdminExit(t *testing.T, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"admin"}, args...)...)
	cmd.Env = append(childEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("conflux admin %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

// TestAdminUsersProcess: users made with `conflux admin` log in on a real
// node's API; the guest default works from this host; a wrong password is
// one line and exit 1.
func TestAdminUsersProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildBinary(t)
	ports := freePorts(t, 2)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	n := startNode(t, bin, "node", httpAddr, append([]string{"--data-dir", t.TempDir(),
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--segment-size-bytes", "4194304"}, disabled...)...)
	waitReady(t, n)
	status := func(user, password string) int { return apiStatus(t, n.http, user, password, "/api/v1/cluster") }

	if got := status("", ""); got != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", got)
	}
	runAdmin(t, bin, "--http-addr", httpAddr, "users", "add", "alice", "--password", "pw")
	if got := status("alice", "pw"); got != http.StatusForbidden {
		t.Fatalf("alice, not an administrator: %d, want 403", got)
	}
	runAdmin(t, bin, "--http-addr", httpAddr, "users", "add", "alice", "--tags", "administrator")
	if got := status("alice", "pw"); got != http.StatusOK {
		t.Fatalf("alice, administrator: %d, want 200", got)
	}
	runAdmin(t, bin, "--http-addr", httpAddr, "users", "passwd", "alice", "--password", "pw2")
	if old, cur := status("alice", "pw"), status("alice", "pw2"); old != http.StatusUnauthorized || cur != http.StatusOK {
		t.Fatalf("after passwd: old password %d, new %d; want 401 and 200", old, cur)
	}
	if code, out, _ := runAdminExit(t, bin, []string{"CONFLUX_ADMIN_USER=alice", "CONFLUX_ADMIN_PASSWORD=pw2"},
		"--http-addr", httpAddr, "users", "list"); code != 0 || !strings.Contains(out, `"name": "alice"`) {
		t.Fatalf("users list as alice from the environment: exit %d, %q", code, out)
	}
	runAdmin(t, bin, "--http-addr", httpAddr, "users", "delete", "alice")
	if got := status("alice", "pw2"); got != http.StatusUnauthorized {
		t.Fatalf("deleted alice: %d, want 401", got)
	}

	code, out, errOut := runAdminExit(t, bin, nil, "--http-addr", httpAddr, "--password", "wrong", "topics")
	if code != exitFailure || out != "" || errOut != badLoginLine {
		t.Fatalf("--password wrong: exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, exitFailure, badLoginLine)
	}
	n.stop()
}

// TestAdminUsersCluster3: a user created through node 1's API logs in on
// node 2's as soon as node 2 has applied it.
func TestAdminUsersCluster3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := startCluster3(t)
	waitLeader(t, c.nodes)
	runAdmin(t, c.bin, "--http-addr", c.addr(0, "http-addr"), "users", "add", "carol", "--password", "carol-pw", "--tags", "administrator")
	n2 := c.nodes[1]
	// Poll the list as guest, not carol's login: each failed login counts
	// towards the node's limit on failures from this address.
	waitFor(t, "carol on node 2", readyDeadline, c.nodes, func() (bool, string) {
		code, body := n2.get("/api/v1/users")
		return code == http.StatusOK && strings.Contains(body, `"name": "carol"`), fmt.Sprintf("%d %s", code, body)
	})
	if got := apiStatus(t, n2.http, "carol", "carol-pw", "/api/v1/cluster"); got != http.StatusOK {
		t.Fatalf("carol on node 2: %d, want 200", got)
	}
	if got := apiStatus(t, c.nodes[2].http, "carol", "wrong", "/api/v1/cluster"); got != http.StatusUnauthorized {
		t.Fatalf("carol with a wrong password on node 3: %d, want 401", got)
	}
}
