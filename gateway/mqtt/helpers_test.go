package mqtt

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft"
)

// node is one in-process broker with its MQTT front door on 127.0.0.1.
type node struct {
	b      *broker.Broker
	srv    *Server
	addr   string // MQTT over TCP
	wsAddr string
	// With Config.TLS set: MQTT over TLS and over secure WebSocket.
	tlsAddr, wssAddr string
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consistently requires cond to hold throughout d (checking that nothing
// more arrives, such as a duplicate).
func consistently(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatalf("no longer true: %s", what)
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func freeAddr(t *testing.T) string {
	ln := listen(t)
	defer ln.Close()
	return ln.Addr().String()
}

func brokerConfig(dir string) broker.Config {
	return broker.Config{DataDir: dir, Log: clog.Config{SegmentSizeBytes: 4 << 20},
		Raft: raft.Config{TickInterval: 20 * time.Millisecond}, DefaultQueues: 4,
		// Cheap password hashes: tests create users and log in often.
		Auth: broker.AuthConfig{Hash: auth.HashParams{MemoryKiB: 64, Time: 1, Threads: 1}}}
}

func startServer(t *testing.T, b *broker.Broker, id uint64, tune func(*Config)) *node {
	t.Helper()
	cfg := Config{Broker: b, NodeID: id, CheckpointInterval: 100 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls := Listeners{TCP: listen(t), WS: listen(t)}
	if cfg.TLS != nil {
		ls.TLS, ls.WSS = listen(t), listen(t)
	}
	if err := srv.StartListeners(ls); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if b.AuthEnabled() {
		// Clients without credentials are the default user, guest: wait
		// for the cluster to have created it.
		waitFor(t, 10*time.Second, "the default user", func() bool { _, ok := b.LookupUser(guestUser); return ok })
	}
	n := &node{b: b, srv: srv, addr: ls.TCP.Addr().String(), wsAddr: ls.WS.Addr().String()}
	if ls.TLS != nil {
		n.tlsAddr, n.wssAddr = ls.TLS.Addr().String(), ls.WSS.Addr().String()
	}
	return n
}

// startNode: a single-node broker and its MQTT server.
func startNode(t *testing.T, tune func(*Config)) *node {
	t.Helper()
	return startNodeWith(t, nil, tune)
}

// startNodeWith is startNode with the broker's config tuned too.
func startNodeWith(t *testing.T, tuneBroker func(*broker.Config), tune func(*Config)) *node {
	t.Helper()
	cfg := brokerConfig(t.TempDir())
	if tuneBroker != nil {
		tuneBroker(&cfg)
	}
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	waitFor(t, 10*time.Second, "the broker ready", b.Ready)
	return startServer(t, b, 1, tune)
}

// startCluster: three in-process brokers (one Raft group) with an MQTT
// server each.
func startCluster(t *testing.T) []*node {
	t.Helper()
	peers := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	base := t.TempDir()
	var bs []*broker.Broker
	for id := uint64(1); id <= 3; id++ {
		cfg := brokerConfig(filepath.Join(base, fmt.Sprint("n", id)))
		cfg.NodeID, cfg.Peers, cfg.RaftAddr = id, peers, peers[id]
		b, err := broker.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		bs = append(bs, b)
	}
	waitFor(t, 15*time.Second, "a leader ready for writes", func() bool {
		for _, b := range bs {
			if b.Status().LeaderReady {
				return true
			}
		}
		return false
	})
	var ns []*node
	for i, b := range bs {
		ns = append(ns, startServer(t, b, uint64(i+1), nil))
	}
	return ns
}

// storedIn counts the messages stored in a core topic, all queues.
func storedIn(n *node, topic string) uint64 {
	var stored uint64
	for _, tp := range n.b.Topics() {
		if tp.Name == topic {
			for q := range tp.Queues {
				lo, hi := n.b.QueueRange(topic, q)
				stored += hi - lo
			}
		}
	}
	return stored
}

// v3 connects a paho 3.1.1 client.
func v3(t *testing.T, url, id string, clean bool, tune func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	if !strings.Contains(url, "://") {
		url = "tcp://" + url
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
	if tune != nil {
		tune(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func wait(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v (timed out: %v)", what, tok.Error(), !tok.WaitTimeout(0))
	}
}

// inbox collects received messages.
type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (in *inbox) handler(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

func (in *inbox) payloads() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, m := range in.msgs {
		out = append(out, string(m.Payload()))
	}
	return out
}

func (in *inbox) waitN(t *testing.T, n int, what string) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d messages (%s)", n, what), func() bool { return in.len() >= n })
}
