package remoting

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// tlsDoors returns a door tuning that serves TLS with a certificate of a
// new test CA, and a client configuration that trusts that CA.
func tlsDoors(t *testing.T, only bool, handshake time.Duration) (func(*Config), *tls.Config) {
	t.Helper()
	ca := tlstest.NewCA(t, "rocketmq")
	pair := ca.Server("conflux")
	server := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair.TLS}}
	return func(c *Config) {
		c.TLS, c.TLSOnly, c.HandshakeTimeout = server, only, handshake
	}, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool}
}

// dialTLSWire is dialWire over TLS.
func dialTLSWire(t *testing.T, addr string, cfg *tls.Config) *wire {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &wire{t: t, c: c, r: bufio.NewReader(c)}
}

func maxOffsetReq() *command.RemotingCommand {
	return request(command.GetMaxOffset, nil, "topic", "T", "queueId", "0")
}

// TestTLSPermissive: with a TLS configuration, each port takes TLS and
// plain clients; garbage or silence on one connection harms no other.
func TestTLSPermissive(t *testing.T) {
	doors, client := tlsDoors(t, false, 500*time.Millisecond)
	e := startACL(t, doors)
	for name, addr := range map[string]string{"namesrv": e.nsAddr, "broker": e.brokerAddr} {
		t.Run(name, func(t *testing.T) {
			req := maxOffsetReq
			if addr == e.nsAddr {
				req = func() *command.RemotingCommand { return request(command.GetBrokerClusterInfo, nil) }
			}
			secure := dialTLSWire(t, addr, client)
			wantOK(t, "a request over TLS", secure.call(req()))
			plain := dialWire(t, addr)
			wantOK(t, "a plain request on the same port", plain.call(req()))

			// Garbage, a broken handshake and a silent client: each is
			// closed, the clients above go on.
			junk, _ := dial(t, addr)
			if _, err := junk.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, junk)
			badTLS, _ := dial(t, addr)
			if _, err := badTLS.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, badTLS)
			silent, _ := dial(t, addr)
			began := time.Now()
			expectClosed(t, silent) // HandshakeTimeout is 500 ms
			if d := time.Since(began); d > 5*time.Second {
				t.Fatalf("a silent connection was closed after %v", d)
			}
			wantOK(t, "the TLS client after the others", secure.call(req()))
			wantOK(t, "the plain client after the others", plain.call(req()))
		})
	}
}

// TestTLSOnly: TLSOnly refuses plain connections, TLS ones work.
func TestTLSOnly(t *testing.T) {
	doors, client := tlsDoors(t, true, 0)
	e := startACL(t, doors)
	for _, addr := range []string{e.nsAddr, e.brokerAddr} {
		plain, _ := dial(t, addr)
		frame, err := command.AppendFrame(nil, maxOffsetReq())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plain.Write(frame); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, plain)
		secure := dialTLSWire(t, addr, client)
		req := maxOffsetReq()
		if addr == e.nsAddr {
			req = request(command.GetBrokerClusterInfo, nil)
		}
		wantOK(t, "a request over TLS to a TLS-only port", secure.call(req))
	}
}

// TestTLSOnlyWithoutTLS: TLSOnly without a configuration refuses all,
// rather than serve plain connections someone meant to encrypt.
func TestTLSOnlyWithoutTLS(t *testing.T) {
	e := startACL(t, func(c *Config) { c.TLSOnly = true })
	plain, _ := dial(t, e.brokerAddr)
	frame, _ := command.AppendFrame(nil, maxOffsetReq())
	if _, err := plain.Write(frame); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, plain)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.brokerAddr,
		&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}) //nolint:gosec // the handshake must fail anyway
	if err == nil {
		_ = c.Close()
		t.Fatal("a TLS handshake succeeded without a TLS configuration")
	}
}

// tlsChildEnv hands the name server address to TestRealClientTLSChild.
const tlsChildEnv = "CONFLUX_RMQ_TLS_CHILD_NAMESRV"

// TestRealClientTLS: rocketmq-client-go's WithTls(true), with
// credentials, against TLS-only doors (so it cannot have fallen back to
// plain). The client offers only InsecureSkipVerify (no CA option), and
// WithTls sets a field of a package-level default configuration shared by
// every client of the process, so the client runs in a child process
// (TestRealClientTLSChild) where it cannot turn TLS on for other tests.
func TestRealClientTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	doors, _ := tlsDoors(t, true, 0)
	e := startACL(t, doors)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRealClientTLSChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), tlsChildEnv+"="+e.nsAddr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the TLS client: %v\n%s", err, out)
	}
	if got := storedBodies(t, e.b, aclTopic); got["over TLS"] != 1 {
		t.Fatalf("%s holds %v after the TLS client's send\n%s", aclTopic, got, out)
	}
}

// TestRealClientTLSChild is TestRealClientTLS's client.
func TestRealClientTLSChild(t *testing.T) {
	nsAddr := os.Getenv(tlsChildEnv)
	if nsAddr == "" {
		t.Skip("run by TestRealClientTLS")
	}
	quietClient()
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver([]string{nsAddr})),
		producer.WithGroupName("pg_tls"), producer.WithInstanceName("tls-producer"), producer.WithTls(true),
		producer.WithCredentials(primitive.Credentials{AccessKey: "alice", SecretKey: aliceSecret}))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.SendSync(ctx, primitive.NewMessage(aclTopic, []byte("over TLS"))); err != nil {
		t.Fatal(err)
	}
}
