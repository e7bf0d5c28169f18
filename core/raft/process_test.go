//go:build unix

package raft

// Multi-process tests (raft.md §6.4): every node is a real OS process (this
// test binary re-executed), with its data on the real disk, a real TCP
// transport, and every directed link i→j running through a tcpproxy in the
// test process, so the test can kill -9 nodes and cut links.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/conflux-mq/conflux/internal/testport"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft/transport"
	"github.com/conflux-mq/conflux/internal/tcpproxy"
)

// procEnv marks a child process: set to "1", it makes the test binary run
// as a node, configured by the flags after "--" (see procArgs.flags).
const procEnv = "CONFLUX_RAFT_NODE_ARGS"

const procClusterID = 0xc0f1

type procArgs struct {
	ID       uint64
	Dir      string
	RaftAddr string
	HTTPAddr string
	Peers    map[uint64]string // this node → its raft address, others → proxy(this→other)
}

// flags renders a as the node's command-line flags.
func (a procArgs) flags() []string {
	ids := make([]uint64, 0, len(a.Peers))
	for id := range a.Peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var peers []string
	for _, id := range ids {
		peers = append(peers, fmt.Sprintf("%d=%s", id, a.Peers[id]))
	}
	return []string{"-id=" + fmt.Sprint(a.ID), "-dir=" + a.Dir, "-raft-addr=" + a.RaftAddr,
		"-http-addr=" + a.HTTPAddr, "-peers=" + strings.Join(peers, ",")}
}

func parseProcArgs(args []string) (procArgs, error) {
	var a procArgs
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.Uint64Var(&a.ID, "id", 0, "raft node id")
	fs.StringVar(&a.Dir, "dir", "", "data dir")
	fs.StringVar(&a.RaftAddr, "raft-addr", "", "raft listen address")
	fs.StringVar(&a.HTTPAddr, "http-addr", "", "HTTP API listen address")
	peers := fs.String("peers", "", "id=addr,... for every node, this one included")
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	a.Peers = map[uint64]string{}
	for _, kv := range strings.Split(*peers, ",") {
		k, v, ok := strings.Cut(kv, "=")
		id, err := strconv.ParseUint(k, 10, 64)
		if !ok || err != nil || v == "" {
			return a, fmt.Errorf("bad -peers entry %q", kv)
		}
		a.Peers[id] = v
	}
	if a.ID == 0 || a.Dir == "" || a.RaftAddr == "" || a.HTTPAddr == "" {
		return a, fmt.Errorf("missing flags in %q", args)
	}
	return a, nil
}

// TestNodeProcessMain is the entry point of a node process; run on its own
// it skips.
func TestNodeProcessMain(t *testing.T) {
	if os.Getenv(procEnv) == "" {
		t.Skip("helper for the TestProcess* tests: runs only as their child process")
	}
	os.Exit(procNodeMain(flag.Args()))
}

// procSM is testSM behind a mutex, so the HTTP API can read it while the
// loop applies. AppliedIndex is 0: a restarted node replays its log.
type procSM struct {
	mu sync.Mutex
	sm testSM
	at []int64 // when each entry of sm.applied was applied here (Unix ns)
}

func (s *procSM) Apply(ents []raftpb.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.sm.Apply(ents)
	now := time.Now().UnixNano()
	for len(s.at) < len(s.sm.applied) {
		s.at = append(s.at, now)
	}
	return err
}
func (s *procSM) AppliedIndex() uint64 { return 0 }
func (s *procSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sm.Snapshot()
}
func (s *procSM) Restore(data []byte, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.sm.Restore(data, index); err != nil {
		return err
	}
	s.at = make([]int64, len(s.sm.applied)) // applied elsewhere, time unknown
	return nil
}

// procNodeMain runs one node until SIGTERM, a node failure, or the parent's
// death; it returns the exit code.
func procNodeMain(args []string) int {
	a, err := parseProcArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node process: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", a.ID)
	ppid := os.Getppid()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)

	ln, err := net.Listen("tcp", a.HTTPAddr)
	if err != nil {
		logger.Error("http listen", "err", err)
		return 2
	}
	h := &NodeHandler{}
	tr, err := transport.New(transport.Config{
		ID: a.ID, ClusterID: procClusterID, ListenAddr: a.RaftAddr, Peers: a.Peers, Logger: logger,
	}, h)
	if err != nil {
		logger.Error("transport", "err", err)
		return 2
	}
	sm := &procSM{}
	node, err := Open(Config{
		ID: a.ID, Dir: a.Dir, Peers: a.Peers,
		// Smaller segments than the 1 GiB default, to spare the disk;
		// retention keeps its defaults, so nothing is compacted.
		Log:          clog.Config{SegmentSizeBytes: 64 << 20},
		TickInterval: 100 * time.Millisecond,
		StateMachine: sm, Transport: tr, ProposalID: testProposalID, Logger: logger,
	})
	if err != nil {
		logger.Error("open node", "err", err)
		return 2
	}
	h.Set(node)
	if err := tr.Start(); err != nil {
		logger.Error("transport start", "err", err)
		_ = node.Stop()
		return 2
	}
	go node.Run()
	srv := &http.Server{Handler: procMux(node, sm), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()

	code := 0
	parent := time.NewTicker(200 * time.Millisecond)
	defer parent.Stop()
wait:
	for {
		select {
		case <-sigc:
			break wait
		case <-node.Done():
			logger.Error("node loop exited on its own", "err", node.Err())
			code = 3
			break wait
		case <-parent.C:
			if os.Getppid() != ppid {
				logger.Error("parent test process is gone")
				code = 4
				break wait
			}
		}
	}
	_ = srv.Close()
	<-served
	if err := node.Stop(); err != nil {
		logger.Error("stop", "err", err)
		code = 5
	}
	if err := tr.Close(); err != nil {
		logger.Error("transport close", "err", err)
	}
	return code
}

func procMux(node *Node, sm *procSM) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /propose", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		timeout := 3 * time.Second
		if q := r.URL.Query().Get("timeout"); q != "" {
			if timeout, err = time.ParseDuration(q); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		idx, err := node.Propose(ctx, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%d\n", idx)
	})
	mux.HandleFunc("GET /applied", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		sm.mu.Lock()
		for k, e := range sm.sm.applied {
			id, _ := testProposalID([]byte(e.Data))
			fmt.Fprintf(&b, "%d %d %d %d %d\n", e.Index, id, len(e.Data), crc32.ChecksumIEEE([]byte(e.Data)), sm.at[k])
		}
		sm.mu.Unlock()
		_, _ = w.Write(b.Bytes())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(node.Status())
	})
	return mux
}

// ---- the parent side ----

// procBuffer collects one node's output over all its incarnations.
type procBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (p *procBuffer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.Write(b)
}

func (p *procBuffer) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.String()
}

// proc is one incarnation of a node process.
type proc struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed once Wait returned
	err      error         // Wait's result, set before done closes
	expected atomic.Bool   // the test killed or stopped it
}

type procNode struct {
	id       uint64
	dir      string
	raftAddr string
	httpAddr string
	peers    map[uint64]string
	out      procBuffer
	down     atomic.Bool // killed by the test and not restarted yet
	mu       sync.Mutex
	procs    []*proc
}

func (n *procNode) cur() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.procs) == 0 {
		return nil
	}
	return n.procs[len(n.procs)-1]
}

type procCluster struct {
	t       *testing.T
	ids     []uint64
	nodes   map[uint64]*procNode
	proxies map[[2]uint64]*tcpproxy.Proxy // [from, to]
	ctl     *http.Client                  // status and applied
	cli     *http.Client                  // proposals
}

// procFreeAddr returns a 127.0.0.1 address with a port free right now; the
// child binds it later (and again after a restart).
func procFreeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func newProcCluster(t *testing.T, size int) *procCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process raft test: starts node processes and waits for elections; skipped with -short")
	}
	base := t.TempDir() // before the cleanup below, so it is removed after the processes die
	c := &procCluster{
		t: t, nodes: map[uint64]*procNode{}, proxies: map[[2]uint64]*tcpproxy.Proxy{},
		ctl: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		cli: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
	t.Cleanup(c.cleanup)
	for i := 1; i <= size; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.nodes[id] = &procNode{
			id: id, dir: filepath.Join(base, fmt.Sprint("n", id)),
			raftAddr: procFreeAddr(t), httpAddr: procFreeAddr(t),
			peers: map[uint64]string{},
		}
	}
	plog := slog.New(slog.DiscardHandler)
	for _, from := range c.ids {
		c.nodes[from].peers[from] = c.nodes[from].raftAddr
		for _, to := range c.ids {
			if from == to {
				continue
			}
			p, err := tcpproxy.New("127.0.0.1:0", c.nodes[to].raftAddr, plog)
			if err != nil {
				t.Fatal(err)
			}
			c.proxies[[2]uint64{from, to}] = p
			c.nodes[from].peers[to] = p.Addr()
		}
	}
	return c
}

// cleanup kills every process still running, closes the proxies, and on
// failure prints every node's output.
func (c *procCluster) cleanup() {
	for _, id := range c.ids {
		if p := c.nodes[id].cur(); p != nil {
			p.expected.Store(true)
			_ = p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				c.t.Errorf("node %d (pid %d) did not exit after SIGKILL", id, p.cmd.Process.Pid)
			}
		}
	}
	for _, p := range c.proxies {
		_ = p.Close()
	}
	c.ctl.CloseIdleConnections()
	c.cli.CloseIdleConnections()
	if c.t.Failed() {
		for _, id := range c.ids {
			out := c.nodes[id].out.String()
			const keep = 48 << 10
			if len(out) > keep {
				out = "[...]\n" + out[len(out)-keep:]
			}
			c.t.Logf("---- output of node %d ----\n%s", id, out)
		}
	}
}

func (c *procCluster) start(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	a := procArgs{ID: id, Dir: n.dir, RaftAddr: n.raftAddr, HTTPAddr: n.httpAddr, Peers: n.peers}
	// "--" ends the test binary's flags; the node's follow (flag.Args).
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestNodeProcessMain$", "--"}, a.flags()...)...)
	cmd.Env = append(os.Environ(), procEnv+"=1")
	cmd.Stdout, cmd.Stderr = &n.out, &n.out
	cmd.WaitDelay = 5 * time.Second
	n.mu.Lock()
	inc := len(n.procs) + 1
	n.mu.Unlock()
	fmt.Fprintf(&n.out, "==== node %d incarnation %d starts at %s ====\n", id, inc, time.Now().Format("15:04:05.000"))
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	n.down.Store(false)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
}

func (c *procCluster) startAll() {
	for _, id := range c.ids {
		c.start(id)
	}
	for _, id := range c.ids {
		c.waitUp(id)
	}
}

// waitUp waits until the node answers on its HTTP API.
func (c *procCluster) waitUp(id uint64) {
	c.t.Helper()
	p := c.nodes[id].cur()
	procWaitFor(c.t, 30*time.Second, fmt.Sprintf("node %d to serve its API", id), func() bool {
		select {
		case <-p.done:
			c.t.Fatalf("node %d exited during start-up: %v", id, p.err)
		default:
		}
		_, err := c.status(id)
		return err == nil
	})
}

// kill SIGKILLs the node and waits for the process to be gone.
func (c *procCluster) kill(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	p := n.cur()
	p.expected.Store(true)
	n.down.Store(true)
	if err := p.cmd.Process.Kill(); err != nil {
		c.t.Fatalf("kill node %d: %v", id, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("node %d did not die after SIGKILL", id)
	}
}

// stopAll SIGTERMs every node and requires a clean exit (status 0: also no
// race report, which would make it 66).
func (c *procCluster) stopAll() {
	c.t.Helper()
	for _, id := range c.ids {
		if p := c.nodes[id].cur(); p != nil {
			p.expected.Store(true)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, id := range c.ids {
		p := c.nodes[id].cur()
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			if p.err != nil {
				c.t.Errorf("node %d did not exit cleanly on SIGTERM: %v", id, p.err)
			}
		case <-time.After(15 * time.Second):
			c.t.Errorf("node %d did not exit within 15s of SIGTERM", id)
		}
	}
}

// checkProcesses fails the test for a process that exited without being
// told to, and for races or panics in any node's output.
func (c *procCluster) checkProcesses() {
	c.t.Helper()
	for _, id := range c.ids {
		n := c.nodes[id]
		n.mu.Lock()
		procs := append([]*proc(nil), n.procs...)
		n.mu.Unlock()
		for k, p := range procs {
			select {
			case <-p.done:
				if !p.expected.Load() {
					c.t.Errorf("node %d incarnation %d exited on its own: %v", id, k+1, p.err)
				}
			default:
			}
		}
		out := n.out.String()
		for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
			if strings.Contains(out, bad) {
				c.t.Errorf("node %d output contains %q", id, bad)
			}
		}
	}
}

// isolate cuts every link into and out of id; heal restores them all.
func (c *procCluster) isolate(id uint64) {
	for k, p := range c.proxies {
		if k[0] == id || k[1] == id {
			p.Cut()
		}
	}
}

func (c *procCluster) healAll() {
	for _, p := range c.proxies {
		p.Heal()
	}
}

func (c *procCluster) url(id uint64, path string) string {
	return "http://" + c.nodes[id].httpAddr + path
}

func (c *procCluster) status(id uint64) (Status, error) {
	var st Status
	resp, err := c.ctl.Get(c.url(id, "/status"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

type procApplied struct {
	Index, ID uint64
	Len       int
	CRC       uint32
	at        int64 // when this node applied it (Unix ns); differs between nodes
}

func (a procApplied) same(b procApplied) bool {
	return a.Index == b.Index && a.ID == b.ID && a.Len == b.Len && a.CRC == b.CRC
}

func (c *procCluster) applied(id uint64) ([]procApplied, error) {
	resp, err := c.ctl.Get(c.url(id, "/applied"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("applied: %s", resp.Status)
	}
	var out []procApplied
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var a procApplied
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %d %d", &a.Index, &a.ID, &a.Len, &a.CRC, &a.at); err != nil {
			return nil, fmt.Errorf("bad applied line %q: %v", sc.Text(), err)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// leader returns the node that reports itself leader and ready for writes
// (the highest term wins if a deposed one has not noticed yet).
func (c *procCluster) leader() (uint64, Status, bool) {
	var best Status
	found := false
	for _, id := range c.ids {
		if c.nodes[id].down.Load() {
			continue
		}
		st, err := c.status(id)
		if err == nil && st.LeaderReady && (!found || st.Term > best.Term) {
			best, found = st, true
		}
	}
	return best.ID, best, found
}

func (c *procCluster) waitLeader(timeout time.Duration, not uint64) uint64 {
	c.t.Helper()
	var id uint64
	procWaitFor(c.t, timeout, "a leader ready for writes", func() bool {
		l, _, ok := c.leader()
		id = l
		return ok && l != not
	})
	return id
}

// converge waits until every node has applied the same index, equal to its
// commit and last index, and the applied histories are identical; it
// returns each node's history.
func (c *procCluster) converge(timeout time.Duration) map[uint64][]procApplied {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var sts []Status
		ok := true
		for _, id := range c.ids {
			st, err := c.status(id)
			if err != nil {
				ok, why = false, fmt.Sprintf("node %d: %v", id, err)
				break
			}
			sts = append(sts, st)
		}
		if ok {
			ready := 0
			for _, st := range sts {
				if st.LeaderReady {
					ready++
				}
				if st.Applied != sts[0].Applied || st.Commit != st.Applied || st.LastIndex != st.Applied {
					ok, why = false, fmt.Sprintf("statuses differ: %+v", sts)
				}
			}
			if ok && ready != 1 {
				ok, why = false, fmt.Sprintf("%d nodes ready to lead: %+v", ready, sts)
			}
		}
		if ok {
			var lists [][]procApplied
			for _, id := range c.ids {
				l, err := c.applied(id)
				if err != nil {
					ok, why = false, fmt.Sprintf("node %d applied: %v", id, err)
					break
				}
				lists = append(lists, l)
			}
			if ok {
				diff := ""
				for k := 1; k < len(lists) && diff == ""; k++ {
					diff = procDiff(lists[0], lists[k], c.ids[0], c.ids[k])
				}
				if diff == "" {
					out := map[uint64][]procApplied{}
					for k, id := range c.ids {
						out[id] = lists[k]
					}
					return out
				}
				ok, why = false, diff
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes did not converge within %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond) // the polling interval
	}
}

func procDiff(a, b []procApplied, ida, idb uint64) string {
	for k := range min(len(a), len(b)) {
		if !a[k].same(b[k]) {
			return fmt.Sprintf("applied histories differ at position %d: node %d has %+v, node %d has %+v", k, ida, a[k], idb, b[k])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("node %d applied %d entries, node %d applied %d", ida, len(a), idb, len(b))
	}
	return ""
}

// procWaitFor polls cond until it holds; the test fails after timeout.
func procWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // the polling interval
	}
}

// ---- load ----

func procPayload(id uint64) []byte { return testPayload(id, 24+int(id%97)) }

// Outcomes of one proposal, as the client saw them.
const (
	procAcked    = iota // 200: committed and applied at the returned index
	procRejected        // definitely not appended: ErrDropped, ErrBusy, connection refused
	procUnknown         // timed out, node stopped, connection lost: may or may not commit
)

type procEvent struct {
	node       uint64
	start, end time.Time
	index      uint64
	probe      bool
}

type procLoad struct {
	c      *procCluster
	nextID atomic.Uint64
	stop   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	acked    map[uint64]uint64 // id → index
	rejected map[uint64]string // id → error
	unknown  map[uint64]string
	unknownE map[uint64]procEvent
	success  []procEvent
}

// startLoad runs clients that propose unique payloads to random nodes with
// the node's default 3 s timeout, and one prober that proposes with a short
// timeout to every node that is up, so that the time to the first commit
// after a failure is not hidden behind 3 s waits on proposals lost with a
// dead leader.
func startLoad(c *procCluster, clients int) *procLoad {
	l := &procLoad{c: c, stop: make(chan struct{}),
		acked: map[uint64]uint64{}, rejected: map[uint64]string{}, unknown: map[uint64]string{},
		unknownE: map[uint64]procEvent{}}
	for k := range clients {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(k)))
		l.wg.Go(func() {
			for !l.stopped() {
				id := c.ids[rng.IntN(len(c.ids))]
				if l.propose(id, "", false) != procAcked {
					l.pause(20 * time.Millisecond)
				}
			}
		})
	}
	l.wg.Go(func() {
		for k := 0; !l.stopped(); k++ {
			id := c.ids[k%len(c.ids)]
			if c.nodes[id].down.Load() {
				continue
			}
			if l.propose(id, "300ms", true) != procAcked {
				l.pause(10 * time.Millisecond)
			}
		}
	})
	return l
}

func (l *procLoad) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *procLoad) pause(d time.Duration) {
	select {
	case <-l.stop:
	case <-time.After(d):
	}
}

// halt stops the clients and waits for their last proposals to end.
func (l *procLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

func (l *procLoad) propose(node uint64, timeout string, probe bool) int {
	id := l.nextID.Add(1)
	u := l.c.url(node, "/propose")
	if timeout != "" {
		u += "?timeout=" + timeout
	}
	start := time.Now()
	resp, err := l.c.cli.Post(u, "application/octet-stream", bytes.NewReader(procPayload(id)))
	var body []byte
	code := 0
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
	}
	end := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unknownE[id] = procEvent{node: node, start: start, end: end, probe: probe} // dropped below unless unknown
	defer func() {
		if _, ok := l.unknown[id]; !ok {
			delete(l.unknownE, id)
		}
	}()
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		l.rejected[id] = err.Error()
		return procRejected
	case err != nil:
		l.unknown[id] = err.Error()
		return procUnknown
	case code == http.StatusOK:
		idx, perr := strconv.ParseUint(strings.TrimSpace(string(body)), 10, 64)
		if perr != nil {
			l.unknown[id] = "bad reply " + string(body)
			return procUnknown
		}
		l.acked[id] = idx
		l.success = append(l.success, procEvent{node: node, start: start, end: end, index: idx, probe: probe})
		return procAcked
	default:
		msg := strings.TrimSpace(string(body))
		if strings.Contains(msg, ErrDropped.Error()) || strings.Contains(msg, ErrBusy.Error()) {
			l.rejected[id] = msg
			return procRejected
		}
		l.unknown[id] = fmt.Sprintf("%d %s", code, msg)
		return procUnknown
	}
}

func (l *procLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstSuccessAfter returns the earliest-ending acked proposal that started
// at or after t0.
func (l *procLoad) firstSuccessAfter(t0 time.Time) (procEvent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best procEvent
	found := false
	for _, e := range l.success {
		if !e.start.Before(t0) && (!found || e.end.Before(best.end)) {
			best, found = e, true
		}
	}
	return best, found
}

func (l *procLoad) successesBetween(a, b time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.success {
		if !e.start.Before(a) && e.end.Before(b) {
			n++
		}
	}
	return n
}

// waitSuccessAfter waits for a proposal started at or after t0 to be acked.
func (l *procLoad) waitSuccessAfter(t *testing.T, t0 time.Time, timeout time.Duration, what string) procEvent {
	t.Helper()
	var e procEvent
	procWaitFor(t, timeout, what, func() bool {
		var ok bool
		e, ok = l.firstSuccessAfter(t0)
		return ok
	})
	return e
}

// check verifies the converged history against what the clients saw.
func (l *procLoad) check(t *testing.T, hists map[uint64][]procApplied) {
	t.Helper()
	hist := hists[l.c.ids[0]]
	l.mu.Lock()
	defer l.mu.Unlock()
	maxID := l.nextID.Load()
	seen := make(map[uint64]uint64, len(hist))
	var prev uint64
	for _, a := range hist {
		if a.Index <= prev {
			t.Errorf("applied indexes not increasing: %d after %d", a.Index, prev)
		}
		prev = a.Index
		if at, dup := seen[a.ID]; dup {
			t.Errorf("payload %d applied twice: at %d and %d", a.ID, at, a.Index)
		}
		seen[a.ID] = a.Index
		if a.ID == 0 || a.ID > maxID {
			t.Errorf("entry %d carries id %d, which no client proposed", a.Index, a.ID)
			continue
		}
		want := procPayload(a.ID)
		if a.Len != len(want) || a.CRC != crc32.ChecksumIEEE(want) {
			t.Errorf("entry %d (id %d) has %d bytes crc %08x; want %d bytes crc %08x", a.Index, a.ID, a.Len, a.CRC, len(want), crc32.ChecksumIEEE(want))
		}
	}
	missing := 0
	for id, idx := range l.acked {
		got, ok := seen[id]
		if !ok || got != idx {
			missing++
			if missing <= 10 {
				t.Errorf("acked proposal %d (index %d) is at %d in the history (present %v)", id, idx, got, ok)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d acked proposals missing or misplaced", missing)
	}
	var appliedRejected []string
	for id, why := range l.rejected {
		if idx, ok := seen[id]; ok {
			appliedRejected = append(appliedRejected, fmt.Sprintf("%d at %d (%s)", id, idx, why))
		}
	}
	sort.Strings(appliedRejected)
	if len(appliedRejected) > 0 {
		t.Errorf("%d proposals reported as not appended were applied, e.g. %s", len(appliedRejected), appliedRejected[0])
	}
	var unknownApplied []string
	for id, why := range l.unknown {
		idx, ok := seen[id]
		if !ok {
			continue
		}
		// When did the node it was proposed to apply it, relative to
		// the request? (After a restart: when it replayed it.)
		e := l.unknownE[id]
		var at int64
		for _, a := range hists[e.node] {
			if a.Index == idx {
				at = a.at
			}
		}
		unknownApplied = append(unknownApplied, fmt.Sprintf("id %d at %d via node %d (%s): request took %v, node %d applied it %v after the request started",
			id, idx, e.node, why, e.end.Sub(e.start).Round(time.Millisecond), e.node, time.Unix(0, at).Sub(e.start).Round(time.Millisecond)))
	}
	sort.Strings(unknownApplied)
	if len(unknownApplied) > 0 {
		t.Logf("unknown outcomes that were applied:\n%s", strings.Join(unknownApplied, "\n"))
	}
	t.Logf("proposals: %d sent, %d acked, %d rejected (not appended), %d unknown (%d of them applied); history: %d entries, last index %d",
		maxID, len(l.acked), len(l.rejected), len(l.unknown), len(unknownApplied), len(hist), prev)
	if len(l.acked) == 0 {
		t.Error("no proposal was acked")
	}
}

func (l *procLoad) unknownSample(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, why := range l.unknown {
		out = append(out, fmt.Sprintf("%d: %s", id, why))
		if len(out) == n {
			break
		}
	}
	return out
}

// ---- status monitor: at most one leader per term ----

type procMonitor struct {
	c    *procCluster
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	leaders  map[uint64]uint64 // term → leader
	conflict string
	ready    []procReady
}

type procReady struct {
	at       time.Time
	id, term uint64
}

func startMonitor(c *procCluster) *procMonitor {
	m := &procMonitor{c: c, stop: make(chan struct{}), done: make(chan struct{}), leaders: map[uint64]uint64{}}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, id := range c.ids {
				if c.nodes[id].down.Load() {
					continue
				}
				st, err := c.status(id)
				if err != nil {
					continue
				}
				m.observe(st)
			}
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *procMonitor) observe(st Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.Role == "StateLeader" {
		if l, ok := m.leaders[st.Term]; ok && l != st.ID && m.conflict == "" {
			m.conflict = fmt.Sprintf("two leaders in term %d: %d and %d", st.Term, l, st.ID)
		}
		m.leaders[st.Term] = st.ID
	}
	if st.LeaderReady {
		m.ready = append(m.ready, procReady{at: time.Now(), id: st.ID, term: st.Term})
	}
}

// firstReadyAfter is when the monitor first saw a node other than not ready
// to lead after t0.
func (m *procMonitor) firstReadyAfter(t0 time.Time, not uint64) (procReady, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.ready {
		if r.at.After(t0) && r.id != not {
			return r, true
		}
	}
	return procReady{}, false
}

// waitReadyAfter is firstReadyAfter, given up to timeout for the monitor's
// next polls; it is for reporting only, so it does not fail the test.
func (m *procMonitor) waitReadyAfter(t0 time.Time, not uint64, timeout time.Duration) (procReady, bool) {
	deadline := time.Now().Add(timeout)
	for {
		r, ok := m.firstReadyAfter(t0, not)
		if ok || time.Now().After(deadline) {
			return r, ok
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
}

func (m *procMonitor) halt(t *testing.T) {
	t.Helper()
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conflict != "" {
		t.Error(m.conflict)
	}
	t.Logf("leaders by term: %v", m.leaders)
}

// ---- the tests ----

// TestProcessKillLeaderUnderLoad kills -9 the leader of a three-process
// cluster under load, measures how long writes are unavailable, restarts
// the node on its data dir and checks that the histories agree and hold
// every acknowledged write exactly once.
func TestProcessKillLeaderUnderLoad(t *testing.T) {
	c := newProcCluster(t, 3)
	c.startAll()
	t0 := time.Now()
	first := c.waitLeader(20*time.Second, 0)
	t.Logf("node %d leads after %v", first, time.Since(t0).Round(time.Millisecond))
	mon := startMonitor(c)
	ld := startLoad(c, 4)
	stopped := false
	defer func() {
		if !stopped {
			ld.halt()
			close(mon.stop)
			<-mon.done
		}
	}()

	procWaitFor(t, 15*time.Second, "100 acked proposals", func() bool { return ld.ackedCount() >= 100 })
	ld.pause(1500 * time.Millisecond) // a little more load before the fault

	victim, st, ok := c.leader()
	if !ok {
		t.Fatal("no leader to kill")
	}
	ackedBefore := ld.ackedCount()
	c.kill(victim)
	killedAt := time.Now()
	t.Logf("killed leader %d (term %d, commit %d) after %d acks", victim, st.Term, st.Commit, ackedBefore)

	ev := ld.waitSuccessAfter(t, killedAt, 20*time.Second, "a proposal to commit after the leader was killed")
	gap := ev.end.Sub(killedAt)
	t.Logf("kill -9 → first successful propose: %v (index %d, via node %d, probe %v)", gap.Round(time.Millisecond), ev.index, ev.node, ev.probe)
	if r, ok := mon.waitReadyAfter(killedAt, victim, 3*time.Second); ok {
		t.Logf("kill -9 → node %d seen ready to lead in term %d: %v", r.id, r.term, r.at.Sub(killedAt).Round(time.Millisecond))
	}
	if gap > 2*time.Second {
		t.Logf("NOTE: above the 2 s failover target")
	}
	if gap > 10*time.Second {
		t.Errorf("writes unavailable for %v after the leader was killed", gap)
	}

	ld.pause(2 * time.Second) // load on the two survivors
	c.start(victim)
	c.waitUp(victim)
	restartedAt := time.Now()
	procWaitFor(t, 20*time.Second, fmt.Sprintf("restarted node %d to catch up", victim), func() bool {
		s, err := c.status(victim)
		_, ls, ok := c.leader()
		return err == nil && ok && s.Applied >= ls.Commit && s.Leader == ls.ID
	})
	t.Logf("restarted node %d caught up in %v", victim, time.Since(restartedAt).Round(time.Millisecond))
	ld.pause(time.Second) // load with all three back

	stopped = true
	ld.halt()
	hists := c.converge(30 * time.Second)
	mon.halt(t)
	ld.check(t, hists)
	t.Logf("sample of unknown outcomes: %q", ld.unknownSample(3))
	c.stopAll()
	c.checkProcesses()
}

// TestProcessPartitionAndHeal cuts a follower, then the leader, off from
// the other two with the proxies while clients write; the majority must keep
// accepting writes, and after each heal all three converge.
func TestProcessPartitionAndHeal(t *testing.T) {
	c := newProcCluster(t, 3)
	c.startAll()
	leader := c.waitLeader(20*time.Second, 0)
	mon := startMonitor(c)
	ld := startLoad(c, 4)
	stopped := false
	defer func() {
		if !stopped {
			c.healAll()
			ld.halt()
			close(mon.stop)
			<-mon.done
		}
	}()
	procWaitFor(t, 15*time.Second, "50 acked proposals", func() bool { return ld.ackedCount() >= 50 })

	// Phase 1: a follower is cut off.
	follower := c.ids[0]
	if follower == leader {
		follower = c.ids[1]
	}
	c.isolate(follower)
	cutAt := time.Now()
	ev := ld.waitSuccessAfter(t, cutAt, 10*time.Second, "a write to commit with a follower cut off")
	t.Logf("follower %d cut: first write started after the cut acked %v after it (index %d via node %d)",
		follower, ev.end.Sub(cutAt).Round(time.Millisecond), ev.index, ev.node)
	ld.pause(time.Until(cutAt.Add(3 * time.Second)))
	if st, err := c.status(follower); err != nil || st.Role == "StateLeader" {
		t.Errorf("cut-off follower %d: %+v, %v", follower, st, err)
	}
	t.Logf("follower %d cut for 3s: %d writes acked meanwhile", follower, ld.successesBetween(cutAt, time.Now()))
	c.healAll()
	healedAt := time.Now()
	var target uint64
	if _, ls, ok := c.leader(); ok {
		target = ls.Commit
	}
	procWaitFor(t, 20*time.Second, fmt.Sprintf("follower %d to catch up after the heal", follower), func() bool {
		st, err := c.status(follower)
		return err == nil && st.Applied >= target && st.Leader != 0 && st.Leader != follower
	})
	t.Logf("follower %d caught up to %d in %v", follower, target, time.Since(healedAt).Round(time.Millisecond))

	// Phase 2: the leader is cut off.
	old, ost, ok := c.leader()
	if !ok {
		t.Fatal("no leader before phase 2")
	}
	c.isolate(old)
	cutAt = time.Now()
	t.Logf("cut leader %d (term %d)", old, ost.Term)
	newLeader := c.waitLeader(15*time.Second, old)
	nst, _ := c.status(newLeader)
	t.Logf("node %d leads in term %d %v after the cut", newLeader, nst.Term, time.Since(cutAt).Round(time.Millisecond))
	ev = ld.waitSuccessAfter(t, cutAt, 15*time.Second, "a write to commit with the leader cut off")
	t.Logf("leader %d cut: first write started after the cut acked %v after it (index %d via node %d, probe %v)",
		old, ev.end.Sub(cutAt).Round(time.Millisecond), ev.index, ev.node, ev.probe)
	procWaitFor(t, 10*time.Second, fmt.Sprintf("cut-off leader %d to step down", old), func() bool {
		st, err := c.status(old)
		return err == nil && st.Role != "StateLeader"
	})
	t.Logf("cut-off leader %d stepped down within %v", old, time.Since(cutAt).Round(time.Millisecond))
	ld.pause(time.Until(cutAt.Add(4 * time.Second)))
	t.Logf("leader %d cut for %v: %d writes acked meanwhile", old, time.Since(cutAt).Round(time.Millisecond), ld.successesBetween(cutAt, time.Now()))
	c.healAll()
	healedAt = time.Now()
	procWaitFor(t, 20*time.Second, fmt.Sprintf("old leader %d to catch up after the heal", old), func() bool {
		st, err := c.status(old)
		_, ls, ok := c.leader()
		return err == nil && ok && st.Leader == ls.ID && st.Applied >= ls.Commit
	})
	t.Logf("old leader %d caught up in %v", old, time.Since(healedAt).Round(time.Millisecond))
	ld.pause(time.Second)

	stopped = true
	ld.halt()
	hists := c.converge(30 * time.Second)
	mon.halt(t)
	ld.check(t, hists)
	c.stopAll()
	c.checkProcesses()
}
