package transport

import (
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/internal/tlsconf"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// peerTLS is a node's mutual-TLS pair from a certificate of ca.
func peerTLS(t *testing.T, ca *tlstest.CA, name string, cfg *Config) {
	t.Helper()
	pair := ca.Server(name)
	set, err := tlsconf.Load(tlsconf.Config{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.File, WatchInterval: -1},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerTLS, cfg.ClientTLS, err = set.Peer(); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLS: peers with certificates of the cluster's CA exchange
// messages; a node with another CA's certificate gets nothing through,
// in either direction.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	c1, c2 := testConfig(1), testConfig(2)
	peerTLS(t, ca, "n1", &c1)
	peerTLS(t, ca, "n2", &c2)
	a, b := startNode(t, c1), startNode(t, c2)
	connect(a, b)
	for i := range uint64(20) {
		a.Send([]raftpb.Message{heartbeat(1, 2, i+1)})
		b.Send([]raftpb.Message{heartbeat(2, 1, i+1)})
	}
	waitFor(t, 10*time.Second, func() bool { return b.rec.count() == 20 && a.rec.count() == 20 })

	other := tlstest.NewCA(t, "other")
	c3 := testConfig(3)
	peerTLS(t, other, "intruder", &c3)
	x := startNode(t, c3)
	x.AddPeer(1, a.addr())
	a.AddPeer(3, x.addr())
	for i := range uint64(20) {
		x.Send([]raftpb.Message{heartbeat(3, 1, i+1)})
		a.Send([]raftpb.Message{heartbeat(1, 3, i+1)})
	}
	// Both sides report the other unreachable: the handshakes fail.
	waitFor(t, 10*time.Second, func() bool { return x.rec.unreachableCount(1) > 0 && a.rec.unreachableCount(3) > 0 })
	if n := len(a.rec.from(3)); n != 0 {
		t.Fatalf("node 1 accepted %d messages from a peer with another CA's certificate", n)
	}
	if n := x.rec.count(); n != 0 {
		t.Fatalf("the intruder received %d messages", n)
	}
}
