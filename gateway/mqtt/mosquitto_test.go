package mqtt

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needTool skips a test whose command-line tool is missing, except under
// CI=true, where a missing tool is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (scripts/install-test-deps.sh installs mosquitto-clients)", name)
		}
		t.Skipf("%s not installed (apt-get install mosquitto-clients, or run scripts/install-test-deps.sh as root)", name)
	}
	return p
}

// TestMosquittoClients: Debian's mosquitto_sub and mosquitto_pub, MQTT 5
// and 3.1.1, against one node: topic, payload, QoS, a user property, and
// a retained message read with --retained-only.
func TestMosquittoClients(t *testing.T) {
	sub, pub := needTool(t, "mosquitto_sub"), needTool(t, "mosquitto_pub")
	n := startNode(t, nil)
	host, port, _ := net.SplitHostPort(n.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, v := range []string{"mqttv5", "mqttv311"} {
		t.Run(v, func(t *testing.T) {
			var out bytes.Buffer
			s := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-V", v, "-q", "1", "-t", "mosq/#",
				"-C", "1", "-W", "20", "-F", "%t|%p|%q|%P")
			s.Stdout, s.Stderr = &out, &out
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			// Publish until the subscriber is in (it subscribes after connecting).
			done := make(chan error, 1)
			go func() { done <- s.Wait() }()
			args := []string{"-h", host, "-p", port, "-V", v, "-q", "1", "-t", "mosq/dev1/t", "-m", "hello"}
			if v == "mqttv5" {
				args = append(args, "-D", "publish", "user-property", "unit", "C")
			}
			var err error
		loop:
			for {
				if b, perr := exec.CommandContext(ctx, pub, args...).CombinedOutput(); perr != nil {
					t.Fatalf("mosquitto_pub: %v: %s", perr, b)
				}
				select {
				case err = <-done:
					break loop
				case <-time.After(200 * time.Millisecond):
				}
			}
			if err != nil {
				t.Fatalf("mosquitto_sub: %v: %s", err, out.String())
			}
			want := "mosq/dev1/t|hello|1|"
			if v == "mqttv5" {
				want += "unit:C"
			}
			if got := strings.TrimSpace(out.String()); got != want {
				t.Fatalf("mosquitto_sub printed %q, want %q", got, want)
			}
		})
	}

	t.Run("retained", func(t *testing.T) {
		if b, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-q", "1", "-r", "-t", "mosq/ret", "-m", "kept").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, b)
		}
		waitFor(t, 10*time.Second, "the retained message", func() bool {
			b, err := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-t", "mosq/ret", "--retained-only",
				"-C", "1", "-W", "2", "-F", "%t|%p|%r").CombinedOutput()
			return err == nil && strings.TrimSpace(string(b)) == "mosq/ret|kept|1"
		})
	})
}
