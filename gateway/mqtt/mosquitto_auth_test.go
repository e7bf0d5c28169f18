package mqtt

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// TestMosquittoAuth: Debian's mosquitto_pub and mosquitto_sub against
// the login and TLS paths: wrong credentials are refused (3.1.1 and 5),
// right ones work, --cafile on the TLS port, a client certificate logs in
// with CertLogin, an expired one is refused, and plain MQTT on the TLS
// port or TLS on the plain one fail while a good subscriber carries on.
func TestMosquittoAuth(t *testing.T) {
	subBin, pubBin := needTool(t, "mosquitto_sub"), needTool(t, "mosquitto_pub")
	ca := tlstest.NewCA(t, "conflux-test")
	n := startTLSNode(t, ca)
	putUser(t, n, "dev", "pw", allow(auth.ActAll, "mosq/#"))
	putUser(t, n, "dev1", "", allow(auth.ActAll, "mosq/#"))
	host, port, _ := net.SplitHostPort(n.addr)
	_, tlsPort, _ := net.SplitHostPort(n.tlsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := func(args ...string) (string, error) {
		b, err := exec.CommandContext(ctx, pubBin, append([]string{"-h", host, "-q", "1"}, args...)...).CombinedOutput()
		return string(b), err
	}

	t.Run("wrong credentials", func(t *testing.T) {
		for _, v := range []string{"mqttv311", "mqttv5"} {
			for _, creds := range [][]string{{"-u", "nobody", "-P", "wrong"}, {"-u", "dev", "-P", "wrong"}} {
				// mosquitto_pub exits with the CONNACK code: 4 or 134 (0x86).
				out, err := pub(append([]string{"-p", port, "-V", v, "-t", "mosq/x", "-m", "x"}, creds...)...)
				if lo := strings.ToLower(out); err == nil || !strings.Contains(lo, "bad user name or password") {
					t.Fatalf("%s %v: %v: %s", v, creds, err, out)
				}
			}
		}
	})

	// A subscriber on the TLS port with a client certificate (CertLogin:
	// it is dev1) waits for what the others publish.
	cert := ca.Client("dev1")
	var subOut bytes.Buffer
	sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", tlsPort, "--cafile", ca.File, "--cert", cert.CertFile,
		"--key", cert.KeyFile, "-q", "1", "-t", "mosq/#", "-C", "2", "-W", "50", "-F", "%t|%p", "-i", "mosq-cert-sub")
	sub.Stdout, sub.Stderr = &subOut, &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Wait() }()
	waitFor(t, 20*time.Second, "the certificate subscriber", func() bool {
		cl, ok := n.srv.Mochi().Clients.Get("mosq-cert-sub")
		return ok && string(cl.Properties.Username) == "dev1" && cl.State.Subscriptions.Len() == 1
	})

	t.Run("wrong protocol on each port", func(t *testing.T) {
		if out, err := pub("-p", tlsPort, "-u", "dev", "-P", "pw", "-t", "mosq/x", "-m", "plain-on-tls"); err == nil {
			t.Fatalf("plain MQTT on the TLS port worked: %s", out)
		}
		if out, err := pub("-p", port, "--cafile", ca.File, "-u", "dev", "-P", "pw", "-t", "mosq/x", "-m", "tls-on-plain"); err == nil {
			t.Fatalf("TLS on the plain port worked: %s", out)
		}
	})

	t.Run("expired certificate", func(t *testing.T) {
		old := ca.Expired("dev1")
		if out, err := pub("-p", tlsPort, "--cafile", ca.File, "--cert", old.CertFile, "--key", old.KeyFile,
			"-t", "mosq/x", "-m", "expired"); err == nil {
			t.Fatalf("an expired certificate worked: %s", out)
		}
	})

	t.Run("right credentials", func(t *testing.T) {
		if out, err := pub("-p", port, "-u", "dev", "-P", "pw", "-t", "mosq/plain", "-m", "password"); err != nil {
			t.Fatalf("password on the plain port: %v: %s", err, out)
		}
		if out, err := pub("-p", tlsPort, "--cafile", ca.File, "-u", "dev", "-P", "pw", "-V", "mqttv5",
			"-t", "mosq/tls", "-m", "cafile"); err != nil {
			t.Fatalf("password on the TLS port: %v: %s", err, out)
		}
	})

	select {
	case err := <-subDone:
		if err != nil {
			t.Fatalf("mosquitto_sub: %v: %s", err, subOut.String())
		}
	case <-ctx.Done():
		t.Fatal("mosquitto_sub did not finish")
	}
	if got, want := strings.TrimSpace(subOut.String()), "mosq/plain|password\nmosq/tls|cafile"; got != want {
		t.Fatalf("the certificate subscriber printed %q, want %q (nothing from the refused clients)", got, want)
	}
}
