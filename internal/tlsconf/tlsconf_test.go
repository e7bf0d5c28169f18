package tlsconf

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// echoServer accepts TLS (or, with sniff, TLS and plain) connections and
// echoes; it returns the address.
func echoServer(t *testing.T, cfg *tls.Config, sniff bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				isTLS := true
				if sniff {
					var err error
					if isTLS, c, err = Sniff(c, 5*time.Second); err != nil {
						return
					}
				}
				if isTLS {
					c = tls.Server(c, cfg)
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q %v", b, err)
	}
}

func TestReloadKeepsConnections(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	first := ca.Server("server")
	cfg := Config{CertFile: first.CertFile, KeyFile: first.KeyFile, WatchInterval: 20 * time.Millisecond}
	s, err := Load(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	addr := echoServer(t, s.Server(), false)
	old, err := tls.Dial("tcp", addr, ca.ClientConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	roundTrip(t, old)
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber

	// Replace the files; the watcher picks them up.
	second := ca.Server("server2")
	for src, dst := range map[string]string{second.CertFile: first.CertFile, second.KeyFile: first.KeyFile} {
		b, _ := os.ReadFile(src)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", addr, ca.ClientConfig(nil))
		if err != nil {
			t.Fatal(err)
		}
		got := c.ConnectionState().PeerCertificates[0].SerialNumber
		_ = c.Close()
		if got.Cmp(oldSerial) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new handshakes still use the old certificate")
		}
		time.Sleep(20 * time.Millisecond) // polling the watcher, bounded by the deadline
	}
	roundTrip(t, old) // the established connection is unaffected
}

func TestClientAuthRequire(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	other := tlstest.NewCA(t, "other")
	srv := ca.Server("server")
	s, err := Load(Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.File, ClientAuth: "require", WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, s.Server(), false)
	good := ca.Client("dev1")
	c, err := tls.Dial("tcp", addr, ca.ClientConfig(&good))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_ = c.Close()
	for name, pair := range map[string]*tlstest.Pair{"none": nil, "expired": ptr(ca.Expired("old")), "foreign CA": ptr(other.Client("x"))} {
		c, err := tls.Dial("tcp", addr, ca.ClientConfig(pair))
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			_, err = c.Write([]byte("ping"))
			if err == nil {
				_, err = io.ReadFull(c, make([]byte, 4))
			}
			_ = c.Close()
		}
		if err == nil {
			t.Errorf("%s: a connection without a valid client certificate was served", name)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestSniffServesBothOnOnePort(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	srv := ca.Server("server")
	s, err := Load(Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, s.Server(), true)
	tc, err := tls.Dial("tcp", addr, ca.ClientConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, tc)
	_ = tc.Close()
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, pc)
	_ = pc.Close()
}

func TestPeerTLSRefusesStrangers(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	other := tlstest.NewCA(t, "other")
	a, b := ca.Server("node1"), ca.Server("node2")
	sa, err := Load(Config{CertFile: a.CertFile, KeyFile: a.KeyFile, CAFile: ca.File, WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Load(Config{CertFile: b.CertFile, KeyFile: b.KeyFile, CAFile: ca.File, WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serverA, _, err := sa.Peer()
	if err != nil {
		t.Fatal(err)
	}
	_, clientB, _ := sb.Peer()
	addr := echoServer(t, serverA, false)
	c, err := tls.Dial("tcp", addr, clientB)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_ = c.Close()

	x := other.Server("intruder")
	sx, _ := Load(Config{CertFile: x.CertFile, KeyFile: x.KeyFile, CAFile: other.File, WatchInterval: -1}, slog.New(slog.DiscardHandler))
	_, clientX, _ := sx.Peer()
	if c, err := tls.Dial("tcp", addr, clientX); err == nil {
		_, err = c.Write([]byte("ping"))
		if err == nil {
			_, err = io.ReadFull(c, make([]byte, 4))
		}
		_ = c.Close()
		if err == nil {
			t.Fatal("a peer with another CA's certificate was served")
		}
	}
}

func TestValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"cert without key":   {CertFile: "a"},
		"require without CA": {CertFile: "a", KeyFile: "b", ClientAuth: "require"},
		"unknown policy":     {CertFile: "a", KeyFile: "b", ClientAuth: "maybe"},
		"CA without cert":    {CAFile: "ca"},
	} {
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPeerCAOfItsOwn: with PeerCAFile, a certificate of the clients' CA
// (say a device's, for MQTT certificate login) does not pass as a peer.
func TestPeerCAOfItsOwn(t *testing.T) {
	clients := tlstest.NewCA(t, "clients")
	peers := tlstest.NewCA(t, "peers")
	node := peers.Server("node1")
	s, err := Load(Config{CertFile: node.CertFile, KeyFile: node.KeyFile, CAFile: clients.File, PeerCAFile: peers.File,
		WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	server, _, err := s.Peer()
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, server, false)
	device := clients.Client("device-7")
	c, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{device.TLS}, InsecureSkipVerify: true}) //nolint:gosec // the server is not what is tested
	if err == nil {
		_, err = c.Write([]byte("ping"))
		if err == nil {
			_, err = io.ReadFull(c, make([]byte, 4))
		}
		_ = c.Close()
	}
	if err == nil {
		t.Fatal("a certificate of the clients' CA passed as a peer")
	}
	peer := peers.Server("node2")
	c, err = tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{peer.TLS}, InsecureSkipVerify: true}) //nolint:gosec // as above
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_ = c.Close()
}
