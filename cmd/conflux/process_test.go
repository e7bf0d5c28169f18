package main

// End-to-end tests: they build the conflux binary and run it as separate
// processes on 127.0.0.1, talking to them over HTTP and with signals.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/conflux-mq/conflux/internal/testport"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/internal/httpapi"
)

// Deadlines, generous for a race-enabled binary on a busy 2-core machine.
const (
	readyDeadline = 60 * time.Second
	exitDeadline  = 30 * time.Second
	pollInterval  = 50 * time.Millisecond
)

// buildBinary builds cmd/conflux into a temp dir (with -race when this
// test binary has it) and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "conflux")
	args := []string{"build", "-o", bin, "-ldflags", "-X main.version=e2e-test -X main.commit=e2e"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePorts returns n distinct TCP ports free on 127.0.0.1, from below
// the ephemeral range (see internal/testport).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := testport.Pick([]string{"127.0.0.1"}, n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// childEnv is this process's environment without CONFLUX_* variables, so
// the caller's shell cannot change what the test runs.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONFLUX_") {
			env = append(env, kv)
		}
	}
	return env
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// node is one `conflux serve` process.
type node struct {
	t      *testing.T
	name   string
	http   string // base URL
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
}

// startNode runs `conflux serve args...`. Cleanup kills it if it still runs
// and prints its stderr if the test failed.
func startNode(t *testing.T, bin, name, httpAddr string, args ...string) *node {
	t.Helper()
	n := &node{t: t, name: name, http: "http://" + httpAddr, stderr: &syncBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(bin, append([]string{"serve", "--http-addr", httpAddr}, args...)...)
	n.cmd.Env = childEnv()
	n.cmd.Stdout, n.cmd.Stderr = n.stderr, n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		select {
		case <-n.done:
		default:
			_ = n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("stderr of %s (%s):\n%s", name, strings.Join(n.cmd.Args, " "), n.stderr.String())
		}
	})
	return n
}

func (n *node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and requires exit code 0 within exitDeadline.
func (n *node) stop() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatalf("SIGTERM %s: %v", n.name, err)
	}
	n.waitExit(0)
}

func (n *node) waitExit(want int) {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(exitDeadline):
		n.t.Fatalf("%s did not exit within %s of SIGTERM", n.name, exitDeadline)
	}
	if code := n.cmd.ProcessState.ExitCode(); code != want {
		n.t.Fatalf("%s exited with %d (%v), want %d", n.name, code, n.err, want)
	}
}

// get fetches path as the default administrator, guest (the API wants
// one; the probes and /metrics ignore it); a connection error is status 0.
func (n *node) get(path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.http+path, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err.Error()
	}
	return res.StatusCode, string(body)
}

// metrics returns the unlabelled samples of /metrics by name.
func (n *node) metrics() map[string]float64 {
	code, body := n.get("/metrics")
	out := map[string]float64{}
	if code != http.StatusOK {
		return out
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func (n *node) cluster() httpapi.ClusterInfo {
	n.t.Helper()
	code, body := n.get("/api/v1/cluster")
	var ci httpapi.ClusterInfo
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ci) != nil {
		n.t.Fatalf("%s /api/v1/cluster: %d %q", n.name, code, body)
	}
	return ci
}

func (n *node) topics() []broker.Topic {
	n.t.Helper()
	code, body := n.get("/api/v1/topics")
	var tl httpapi.TopicList
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tl) != nil {
		n.t.Fatalf("%s /api/v1/topics: %d %q", n.name, code, body)
	}
	return tl.Topics
}

// waitFor polls cond until it holds, failing at the deadline with cond's
// last explanation, or at once if a node has exited.
func waitFor(t *testing.T, what string, deadline time.Duration, nodes []*node, cond func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	end := time.Now().Add(deadline)
	for {
		for _, n := range nodes {
			if n.exited() {
				t.Fatalf("waiting for %s: %s exited early (%v)", what, n.name, n.err)
			}
		}
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s: %s", what, deadline, why)
		}
		<-tick.C
	}
}

func waitReady(t *testing.T, nodes ...*node) {
	t.Helper()
	waitFor(t, "/readyz", readyDeadline, nodes, func() (bool, string) {
		for _, n := range nodes {
			if code, body := n.get("/readyz"); code != http.StatusOK {
				return false, fmt.Sprintf("%s: %d %s", n.name, code, strings.TrimSpace(body))
			}
		}
		return true, ""
	})
}

// runAdmin runs `conflux admin args...` and returns its stdout.
func runAdmin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"admin"}, args...)...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("conflux admin %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func hasTopic(ts []broker.Topic, name string, queues uint32) bool {
	for _, tp := range ts {
		if tp.Name == name && tp.Queues == queues {
			return true
		}
	}
	return false
}

// disabled turns off every listener not implemented yet.
var disabled = []string{"--namesrv-addr=", "--broker-addr=", "--mqtt-addr=", "--mqtt-ws-addr=", "--amqp-addr="}

// TestServeSingleNode: start, become ready and leader, create a topic with
// `conflux admin`, stop with SIGTERM (exit 0), restart on the same data
// dir and find the topic again.
func TestServeSingleNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	ports := freePorts(t, 3)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := append([]string{"--data-dir", dataDir, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--segment-size-bytes", "4194304"}, disabled...)

	n := startNode(t, bin, "node", httpAddr, args...)
	waitReady(t, n)
	if code, body := n.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	_, text := n.get("/metrics")
	for _, want := range []string{"\nconflux_raft_is_leader 1\n", "\nconflux_raft_term ", "\nconflux_raft_applied_index "} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	m := n.metrics()
	if m["conflux_raft_term"] < 1 || m["conflux_raft_applied_index"] < 1 {
		t.Errorf("term %v, applied index %v: want both at least 1", m["conflux_raft_term"], m["conflux_raft_applied_index"])
	}

	out := runAdmin(t, bin, "--http-addr", httpAddr, "topics", "create", "orders", "--queues", "4")
	var created broker.Topic
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "orders" || created.Queues != 4 {
		t.Fatalf("admin topics create printed %q (%v)", out, err)
	}
	if ts := n.topics(); !hasTopic(ts, "orders", 4) {
		t.Fatalf("/api/v1/topics after create: %+v", ts)
	}
	var ci httpapi.ClusterInfo
	if out := runAdmin(t, bin, "--http-addr", httpAddr, "cluster"); json.Unmarshal([]byte(out), &ci) != nil ||
		ci.Leader != 1 || ci.Self != 1 || len(ci.Nodes) != 1 || ci.Nodes[0].Role != "leader" {
		t.Fatalf("admin cluster printed %q", out)
	}
	if !strings.Contains(n.stderr.String(), `"msg":"starting conflux"`) {
		t.Errorf("no startup line with the effective configuration")
	}
	n.stop()

	// Restart on the same data dir, this time with MQTT configured: it
	// listens there and says so.
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	n2 := startNode(t, bin, "node (restarted)", httpAddr, append(args, "--mqtt-addr", mqttAddr)...)
	waitReady(t, n2)
	if ts := n2.topics(); !hasTopic(ts, "orders", 4) {
		t.Fatalf("topic lost over a restart: %+v", ts)
	}
	if c, err := net.DialTimeout("tcp", mqttAddr, time.Second); err != nil {
		t.Errorf("nothing listens on the MQTT address %s: %v", mqttAddr, err)
	} else {
		c.Close()
	}
	if s := n2.stderr.String(); !strings.Contains(s, "MQTT front door listening") || !strings.Contains(s, mqttAddr) {
		t.Errorf("no log line for the configured MQTT front door")
	}
	n2.stop()
}

// TestServeThreeNodes: three processes with --peers elect exactly one
// leader, all become ready, and agree on it in /api/v1/cluster; a topic
// created through a follower reaches all three; SIGTERM stops each with 0.
func TestServeThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildBinary(t)
	ports := freePorts(t, 6)
	raft := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	httpAddr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[3+i]) }
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", raft(0), raft(1), raft(2))
	base := t.TempDir()
	var nodes []*node
	for i := range 3 {
		args := append([]string{"--node-id", strconv.Itoa(i + 1), "--data-dir", filepath.Join(base, strconv.Itoa(i+1)),
			"--raft-addr", raft(i), "--peers", peers, "--segment-size-bytes", "4194304"}, disabled...)
		nodes = append(nodes, startNode(t, bin, fmt.Sprintf("node %d", i+1), httpAddr(i), args...))
	}

	var leader int // index into nodes
	waitFor(t, "one leader, all ready", readyDeadline, nodes, func() (bool, string) {
		leaders := 0
		var state []string
		for i, n := range nodes {
			m := n.metrics()
			code, body := n.get("/readyz")
			state = append(state, fmt.Sprintf("%s: is_leader=%v readyz=%d %s", n.name, m["conflux_raft_is_leader"], code, strings.TrimSpace(body)))
			if code != http.StatusOK {
				return false, strings.Join(state, "; ")
			}
			if m["conflux_raft_is_leader"] == 1 {
				leaders++
				leader = i
			}
		}
		return leaders == 1, strings.Join(state, "; ")
	})
	t.Logf("leader: %s", nodes[leader].name)

	for i, n := range nodes {
		ci := n.cluster()
		if ci.Leader != uint64(leader+1) || ci.Self != uint64(i+1) || len(ci.Nodes) != 3 {
			t.Errorf("%s /api/v1/cluster: leader %d self %d %d nodes, want leader %d self %d 3 nodes",
				n.name, ci.Leader, ci.Self, len(ci.Nodes), leader+1, i+1)
			continue
		}
		for j, nd := range ci.Nodes {
			wantRole := "follower"
			if j == leader {
				wantRole = "leader"
			}
			if nd.ID != uint64(j+1) || nd.Role != wantRole || nd.RaftAddr != raft(j) {
				t.Errorf("%s sees node %+v, want id %d role %s raft %s", n.name, nd, j+1, wantRole, raft(j))
			}
		}
	}

	follower := (leader + 1) % 3
	runAdmin(t, bin, "--http-addr", httpAddr(follower), "topics", "create", "events", "--queues", "2")
	waitFor(t, "the topic on every node", readyDeadline, nodes, func() (bool, string) {
		for _, n := range nodes {
			if ts := n.topics(); !hasTopic(ts, "events", 2) {
				return false, fmt.Sprintf("%s lists %+v", n.name, ts)
			}
		}
		return true, ""
	})

	for _, n := range nodes {
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM %s: %v", n.name, err)
		}
	}
	for _, n := range nodes {
		n.waitExit(0)
	}
}
