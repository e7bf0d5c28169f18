package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cluster3 is three `conflux serve` processes on 127.0.0.1, .2 and .3,
// all on the same ports (RocketMQ routes assume one broker port), with the
// front doors named in start and every other one disabled.
type cluster3 struct {
	bin   string
	hosts []string
	ports map[string]int // by flag: raft-addr, http-addr and each door's
	nodes []*node
	args  [][]string // each node's serve flags, for restart
}

// cluster3Options tunes startCluster3With.
type cluster3Options struct {
	doors []string // flags of the front doors to open ("mqtt-addr", ...)
	// dataDir returns node i's data dir (default: under a temp dir).
	dataDir func(i int) string
	extra   []string // more serve flags for every node
}

// startCluster3 starts the cluster with doors (flags such as
// "namesrv-addr", "mqtt-addr") listening, and waits for one leader with
// every node ready.
func startCluster3(t *testing.T, doors ...string) *cluster3 {
	return startCluster3With(t, cluster3Options{doors: doors})
}

func startCluster3With(t *testing.T, o cluster3Options) *cluster3 {
	t.Helper()
	c := &cluster3{hosts: []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, ports: map[string]int{}}
	flags := append([]string{"raft-addr", "http-addr"}, o.doors...)
	ports := sharedPorts(t, c.hosts, len(flags))
	for k, f := range flags {
		c.ports[f] = ports[k]
	}
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", c.addr(0, "raft-addr"), c.addr(1, "raft-addr"), c.addr(2, "raft-addr"))
	c.bin = buildBinary(t)
	if o.dataDir == nil {
		base := t.TempDir()
		o.dataDir = func(i int) string { return filepath.Join(base, strconv.Itoa(i+1)) }
	}
	for i := range c.hosts {
		args := []string{"--node-id", strconv.Itoa(i + 1), "--data-dir", o.dataDir(i),
			"--raft-addr", c.addr(i, "raft-addr"), "--peers", peers, "--advertise-host", c.hosts[i],
			"--segment-size-bytes", "4194304"}
		for _, door := range []string{"namesrv-addr", "broker-addr", "mqtt-addr", "mqtt-ws-addr", "amqp-addr"} {
			if _, on := c.ports[door]; on {
				args = append(args, "--"+door, c.addr(i, door))
			} else {
				args = append(args, "--"+door+"=")
			}
		}
		args = append(args, o.extra...)
		c.args = append(c.args, args)
		c.nodes = append(c.nodes, startNode(t, c.bin, fmt.Sprintf("node %d", i+1), c.addr(i, "http-addr"), args...))
	}
	return c
}

// restart starts node i again with its flags (after it exited).
func (c *cluster3) restart(t *testing.T, i int) {
	t.Helper()
	c.nodes[i] = startNode(t, c.bin, fmt.Sprintf("node %d", i+1), c.addr(i, "http-addr"), c.args[i]...)
}

// addr is node i's address for a flag.
func (c *cluster3) addr(i int, flag string) string {
	return net.JoinHostPort(c.hosts[i], strconv.Itoa(c.ports[flag]))
}

// addrs is every node's address for a flag.
func (c *cluster3) addrs(flag string) []string {
	var out []string
	for i := range c.hosts {
		out = append(out, c.addr(i, flag))
	}
	return out
}

// waitLeader waits until exactly one of ns leads and all are ready, and
// returns its index in ns.
func waitLeader(t *testing.T, ns []*node) int {
	t.Helper()
	var leader int
	waitFor(t, "one leader, all ready", readyDeadline, ns, func() (bool, string) {
		l, why := oneReadyLeader(ns)
		leader = l
		return l >= 0, why
	})
	return leader
}

// oneReadyLeader returns the index of the one leader among ns when every
// node is ready, else -1 and the state seen.
func oneReadyLeader(ns []*node) (int, string) {
	leader, leaders := -1, 0
	var state []string
	for i, n := range ns {
		m := n.metrics()
		code, _ := n.get("/readyz")
		state = append(state, fmt.Sprintf("%s: is_leader=%v readyz=%d", n.name, m["conflux_raft_is_leader"], code))
		if code != http.StatusOK {
			return -1, strings.Join(state, "; ")
		}
		if m["conflux_raft_is_leader"] == 1 {
			leaders++
			leader = i
		}
	}
	if leaders != 1 {
		return -1, strings.Join(state, "; ")
	}
	return leader, ""
}
