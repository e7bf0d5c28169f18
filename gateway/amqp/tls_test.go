package amqp

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
	"github.com/conflux-mq/conflux/internal/tlsconf"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// serveTLS adds an AMQPS listener (a TLS listener over TCP, as the
// binary's --amqp-tls-addr) to a server and returns its address.
func serveTLS(t *testing.T, srv *Server, ca *tlstest.CA) string {
	t.Helper()
	pair := ca.Server("conflux")
	set, err := tlsconf.Load(tlsconf.Config{CertFile: pair.CertFile, KeyFile: pair.KeyFile, WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(tls.NewListener(ln, set.Server())); err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String()
}

func dialTLS(t *testing.T, addr string, ca *tlstest.CA) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.DialConfig("amqps://guest:guest@"+addr+"/", amqp091.Config{TLSClientConfig: ca.ClientConfig(nil),
		Heartbeat: 10 * time.Second, Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial amqps://%s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip publishes with confirms to a queue and consumes it back.
func roundTrip(t *testing.T, c *amqp091.Connection, queue string, n int) {
	t.Helper()
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		publishConfirmed(t, ch, "", queue, amqp091.Publishing{Body: fmt.Appendf(nil, "m%d", i)})
	}
	in, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	got.run(in, true)
	for i, d := range got.waitN(t, n) {
		if string(d.Body) != fmt.Sprint("m", i) {
			t.Fatalf("delivery %d: %q", i, d.Body)
		}
	}
	_ = ch.Close()
}

// TestAMQPS: the server serves a TLS listener beside the plain one (the
// same Serve); amqp091-go's DialTLS, verifying the server's certificate
// against the CA, publishes and consumes. A plain AMQP header on the TLS
// port and a TLS ClientHello on the plain port fail cleanly, and the
// clients already connected go on working.
func TestAMQPS(t *testing.T) {
	n := startAuthNode(t)
	ca := tlstest.NewCA(t, "amqps-ca")
	tlsAddr := serveTLS(t, n.srv, ca)

	c := dialTLS(t, tlsAddr, ca)
	roundTrip(t, c, "over-tls", 20)
	plain := dial(t, n.url)

	t.Run("plain header on the TLS port", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", tlsAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nc.Close() }()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(frame.ProtocolHeader[:]); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(nc)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the TLS port kept a plain client waiting")
		}
		if len(got) > 0 && got[0] != 0x15 { // nothing, or a TLS alert record
			t.Fatalf("the TLS port answered a plain header with %q", got)
		}
		if _, err := amqp091.Dial("amqp://guest:guest@" + tlsAddr + "/"); err == nil {
			t.Fatal("amqp091-go spoke plain AMQP to the TLS port")
		}
	})
	t.Run("TLS on the plain port", func(t *testing.T) {
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.addr(), ca.ClientConfig(nil))
		if err == nil {
			_ = tc.Close()
			t.Fatal("a TLS handshake succeeded on the plain port")
		}
		if _, err := amqp091.DialTLS("amqps://guest:guest@"+n.addr()+"/", ca.ClientConfig(nil)); err == nil {
			t.Fatal("amqp091-go spoke TLS to the plain port")
		}
	})
	t.Run("wrong password over TLS", func(t *testing.T) {
		putUser(t, n, auth.User{Name: "tls-user", VHosts: map[string]auth.VHostPerm{"/": allOf}}, "pw")
		_, err := amqp091.DialTLS("amqps://tls-user:nope@"+tlsAddr+"/", ca.ClientConfig(nil))
		wantCode(t, err, amqp091.AccessRefused, "")
		good, err := amqp091.DialTLS("amqps://tls-user:pw@"+tlsAddr+"/", ca.ClientConfig(nil))
		if err != nil {
			t.Fatal(err)
		}
		_ = good.Close()
	})

	// Both clients connected before are fine.
	roundTrip(t, c, "over-tls-after", 5)
	roundTrip(t, plain, "plain-after", 5)
}

// cluster3 is three brokers (one Raft group), each with an AMQP server
// whose plain door is advertised (so followers hand connections on) and a
// TLS door.
type cluster3 struct {
	nodes   []*node
	tlsAddr []string
}

func startCluster3(t *testing.T, ca *tlstest.CA) *cluster3 {
	t.Helper()
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		return l.Addr().String()
	}
	peers := map[uint64]string{1: free(), 2: free(), 3: free()}
	base := t.TempDir()
	var bs []*broker.Broker
	for id := uint64(1); id <= 3; id++ {
		cfg := broker.Config{DataDir: filepath.Join(base, fmt.Sprint("n", id)), NodeID: id, Peers: peers, RaftAddr: peers[id],
			Log: clog.Config{SegmentSizeBytes: 4 << 20}, Raft: raft.Config{TickInterval: 20 * time.Millisecond}}
		cfg.Auth.Hash = cheapHash
		b, err := broker.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		bs = append(bs, b)
	}
	waitFor(t, 20*time.Second, "a leader ready for writes", func() bool {
		for _, b := range bs {
			if b.Status().LeaderReady {
				return true
			}
		}
		return false
	})
	cl := &cluster3{}
	for i, b := range bs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Broker: b, NodeID: uint64(i + 1), AdvertiseAddr: ln.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(ln); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		n := &node{b: b, srv: srv, url: "amqp://guest:guest@" + ln.Addr().String() + "/"}
		cl.nodes = append(cl.nodes, n)
		cl.tlsAddr = append(cl.tlsAddr, serveTLS(t, srv, ca))
	}
	waitFor(t, 20*time.Second, "the doors announced and the default user", func() bool {
		for _, n := range cl.nodes {
			if _, ok := n.b.LookupUser("guest"); !ok {
				return false
			}
			for id := uint64(1); id <= 3; id++ {
				if _, ok := n.b.Record(recordNS, nodeKey(id)); !ok {
					return false
				}
			}
		}
		return true
	})
	return cl
}

// TestAMQPSHandOff: a TLS connection to a follower is decrypted there and
// its AMQP bytes handed to the leader's plain door, which serves it and
// logs the client in with the client's own address (not the follower's);
// the client publishes and consumes through it.
func TestAMQPSHandOff(t *testing.T) {
	ca := tlstest.NewCA(t, "amqps-ca")
	cl := startCluster3(t, ca)
	var leader, follower int = -1, -1
	for i, n := range cl.nodes {
		st := n.b.Status()
		if st.Leader == st.ID {
			leader = i
		} else if follower < 0 {
			follower = i
		}
	}
	if leader < 0 || follower < 0 {
		t.Fatal("no leader and follower")
	}
	c := dialTLS(t, cl.tlsAddr[follower], ca)
	f, l := cl.nodes[follower].srv, cl.nodes[leader].srv
	waitFor(t, 5*time.Second, "the connection handed on", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.proxied) == 1
	})
	var from string
	waitFor(t, 5*time.Second, "the leader serving the client", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for lc := range l.conns {
			if a := lc.from.Load(); a != nil {
				from = a.String()
				return true
			}
		}
		return false
	})
	if from != c.LocalAddr().String() {
		t.Fatalf("the leader sees the client as %s, want %s", from, c.LocalAddr())
	}
	roundTrip(t, c, "tls-handed-on", 10)
}
