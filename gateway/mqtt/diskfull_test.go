package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/conflux-mq/conflux/core/broker"
)

// fakeDisk is a free-space probe a test turns, as core/broker's tests do.
type fakeDisk struct{ free atomic.Uint64 }

func (d *fakeDisk) FreeBytes(string) (uint64, error) { return d.free.Load(), nil }

// startDiskNode: a node whose disk alarm checks d against a 100 MB limit
// every 10ms; d starts with room.
func startDiskNode(t *testing.T, d *fakeDisk, tune func(*Config)) *node {
	t.Helper()
	d.free.Store(1e9)
	return startNodeWith(t, func(c *broker.Config) {
		c.Disk = broker.DiskConfig{FreeLimitBytes: 100e6, CheckInterval: 10 * time.Millisecond, FreeBytes: d.FreeBytes}
	}, tune)
}

// setFree turns the fake disk and waits for the broker's alarm to follow.
func (d *fakeDisk) setFree(t *testing.T, n *node, free uint64) {
	t.Helper()
	d.free.Store(free)
	blocked := free < 100e6
	waitFor(t, 10*time.Second, fmt.Sprintf("the disk alarm blocked=%v", blocked), func() bool {
		return n.b.DiskStatus().Blocked == blocked
	})
}

// logLines collects a server's log, to count what it says.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

// count: the lines holding every one of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.buf.String()) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			n++
		}
	}
	return n
}

// TestDiskFullMQTT5: under the disk alarm an MQTT 5 publisher's QoS 1 and
// QoS 2 publishes are refused in their PUBACK/PUBREC (0x97, with a reason
// string) and the connection stays; a persistent subscriber resumes,
// receives what was stored before, and acks it; a QoS 0 publish gets
// DISCONNECT 0x97. Once space is back the same publisher's messages go
// through, and the subscriber gets exactly the stored ones. Each client is
// logged once per alarm, not once per refused publish.
func TestDiskFullMQTT5(t *testing.T) {
	var disk fakeDisk
	var logs logLines
	n := startDiskNode(t, &disk, func(c *Config) {
		// A small Receive Maximum: refusals that did not give the quota
		// back would get the publisher disconnected with 0x93.
		c.ReceiveMaximumMessages = 16
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	const refusedLog = "refused by the disk alarm"

	sub, _ := dialV5(t, n.addr, "df5sub", false, 3600)
	if _, err := sub.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "df5/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := sub.c.Disconnect(&paho5.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := dialV5(t, n.addr, "df5pub", true, 0)
	for _, m := range []string{"before-1", "before-2"} {
		if _, err := pub.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: 1, Payload: []byte(m)}); err != nil {
			t.Fatalf("publish %s: %v", m, err)
		}
	}

	disk.setFree(t, n, 1e6)
	for i := range 24 {
		qos := byte(1 + i%2)
		res, err := pub.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: qos, Payload: fmt.Appendf(nil, "refused-%d", i)})
		// paho.golang reports a refused QoS 1 publish as an error with
		// its PUBACK, a refused QoS 2 one by its PUBREC's code alone.
		if res == nil || res.ReasonCode != 0x97 || (qos == 1) != (err != nil) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("QoS %d publish %d under the disk alarm: response %+v, err %v; want reason 0x97", qos, i, res, err)
		}
		if res.Properties == nil || !strings.Contains(res.Properties.ReasonString, "disk is full") {
			t.Fatalf("QoS %d refusal without the disk reason: %+v", qos, res.Properties)
		}
	}
	cl, ok := n.srv.Mochi().Clients.Get("df5pub")
	if !ok || cl.Closed() {
		t.Fatal("the publisher's connection closed after refused QoS 1/2 publishes")
	}
	if k := cl.State.Inflight.Len(); k != 0 {
		t.Fatalf("%d inflight records left for refused publishes; their packet ids must be free", k)
	}
	if got := storedIn(n, "df5"); got != 2 {
		t.Fatalf("%d messages stored in df5 under the alarm, want the 2 from before", got)
	}

	// Reads, acks and session state go on: the subscriber resumes its
	// session and acks what it missed.
	sub, ca := dialV5(t, n.addr, "df5sub", false, 3600)
	if !ca.SessionPresent {
		t.Fatal("the subscriber's session is not present under the alarm")
	}
	waitFor(t, 10*time.Second, "the messages from before the alarm", func() bool { return len(sub.received()) >= 2 })
	waitFor(t, 10*time.Second, "the subscriber's acks", func() bool {
		cl, ok := n.srv.Mochi().Clients.Get("df5sub")
		return ok && cl.State.Inflight.Len() == 0
	})
	sa, err := sub.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "df5x/#", QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		t.Fatalf("SUBSCRIBE under the alarm: %+v, %v", sa, err)
	}
	if rec, _ := savedSession(t, n, "df5sub"); !slices.ContainsFunc(rec.Subs, func(s subRecord) bool { return s.Filter == "df5x/#" }) {
		t.Fatalf("the subscription made under the alarm is not saved: %+v", rec.Subs)
	}

	// QoS 0 has no ack to carry the refusal: DISCONNECT 0x97.
	pub0, _ := dialV5(t, n.addr, "df5pub0", true, 0)
	if _, err := pub0.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: 0, Payload: []byte("refused-qos0")}); err != nil {
		t.Fatalf("QoS 0 publish: %v", err)
	}
	waitFor(t, 10*time.Second, "DISCONNECT for the QoS 0 publish", func() bool { return pub0.serverDisconnect() != nil })
	if d := pub0.serverDisconnect(); d.ReasonCode != 0x97 || d.Properties == nil ||
		!strings.Contains(d.Properties.ReasonString, "disk is full") {
		t.Fatalf("DISCONNECT %#x %+v, want 0x97 with the disk reason", d.ReasonCode, d.Properties)
	}

	disk.setFree(t, n, 1e9)
	if _, err := pub.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: 1, Payload: []byte("after-1")}); err != nil {
		t.Fatalf("QoS 1 publish on the same connection after the alarm: %v", err)
	}
	if res, err := pub.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: 2, Payload: []byte("after-2")}); err != nil || res.ReasonCode != 0 {
		t.Fatalf("QoS 2 publish on the same connection after the alarm: %+v, %v", res, err)
	}
	if k := logs.count(refusedLog, "client=df5pub "); k != 1 {
		t.Fatalf("the publisher's refusals were logged %d times in one alarm, want once", k)
	}
	if k := logs.count(refusedLog, "client=df5pub0 "); k != 1 {
		t.Fatalf("the QoS 0 publisher's refusal was logged %d times, want once", k)
	}
	want := []string{"before-1", "before-2", "after-1", "after-2"}
	waitFor(t, 10*time.Second, "the messages from after the alarm", func() bool { return len(sub.received()) >= len(want) })
	consistently(t, 300*time.Millisecond, "nothing more delivered", func() bool { return len(sub.received()) == len(want) })
	var got []string
	for _, p := range sub.received() {
		got = append(got, string(p.Payload))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("subscriber got %q, want %q", got, want)
	}

	// A new alarm is logged again.
	disk.setFree(t, n, 1e6)
	if res, _ := pub.c.Publish(tctx(t), &paho5.Publish{Topic: "df5/t", QoS: 1, Payload: []byte("refused-again")}); res == nil || res.ReasonCode != 0x97 {
		t.Fatalf("publish in the second alarm: %+v, want 0x97", res)
	}
	if k := logs.count(refusedLog, "client=df5pub "); k != 2 {
		t.Fatalf("the publisher's refusals were logged %d times in two alarms, want twice", k)
	}
}

// TestDiskFullMQTT311: MQTT 3.1.1 has no refusal, so a publish under the
// disk alarm closes the connection without its ack; the client resends it
// after reconnecting once space is back. Every acknowledged message is
// delivered once, and the refused ones once after the alarm.
func TestDiskFullMQTT311(t *testing.T) {
	var disk fakeDisk
	n := startDiskNode(t, &disk, nil)
	var in inbox
	wait(t, v3(t, n.addr, "df3sub", true, nil).Subscribe("df3/#", 1, in.handler), "subscribe")

	var lost atomic.Int32
	pub := v3(t, n.addr, "df3pub", false, func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { lost.Add(1) })
	})
	for i := range 3 {
		wait(t, pub.Publish("df3/t", 1, false, fmt.Sprint("acked-", i)), "publish before the alarm")
	}
	in.waitN(t, 3, "the messages from before the alarm")

	disk.setFree(t, n, 1e6)
	var toks []paho.Token
	for i := range 3 {
		toks = append(toks, pub.Publish("df3/t", 1, false, fmt.Sprint("refused-", i)))
	}
	waitFor(t, 10*time.Second, "the connection closed", func() bool { return lost.Load() > 0 })
	for i, tok := range toks {
		if tok.WaitTimeout(0) && tok.Error() == nil {
			t.Fatalf("refused publish %d was acknowledged", i)
		}
	}
	if got := storedIn(n, "df3"); got != 3 {
		t.Fatalf("%d messages stored under the alarm, want the 3 from before", got)
	}

	disk.setFree(t, n, 1e9)
	// The same client object keeps the unacknowledged publishes (clean
	// session off) and resends them on connecting.
	wait(t, pub.Connect(), "reconnect after the alarm")
	wait(t, pub.Publish("df3/t", 1, false, "after"), "publish after the alarm")
	in.waitN(t, 7, "the resent and new messages")
	consistently(t, 300*time.Millisecond, "nothing twice", func() bool { return in.len() == 7 })
	got := in.payloads()
	if !slices.Equal(got[:3], []string{"acked-0", "acked-1", "acked-2"}) {
		t.Fatalf("subscriber got %q: the acknowledged messages first, in order", got)
	}
	rest := slices.Sorted(slices.Values(got[3:]))
	if want := []string{"after", "refused-0", "refused-1", "refused-2"}; !slices.Equal(rest, want) {
		t.Fatalf("after the alarm the subscriber got %q, want %q once each", got[3:], want)
	}
	if got := storedIn(n, "df3"); got != 7 {
		t.Fatalf("%d messages stored, want 7", got)
	}
}

// TestDiskFullMosquittoPub: Debian's mosquitto_pub at QoS 1 under the
// disk alarm: MQTT 5 reports the refusal with our reason string (2.0.11
// prints it as a warning and still exits 0), 3.1.1 fails with the
// connection lost. Once space is back it publishes.
func TestDiskFullMosquittoPub(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	var disk fakeDisk
	n := startDiskNode(t, &disk, nil)
	host, port, _ := net.SplitHostPort(n.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-h", host, "-p", port, "-V", "5", "-q", "1", "-t", "dfm/t", "-m", "x"}

	disk.setFree(t, n, 1e6)
	out, err := exec.CommandContext(ctx, pub, args...).CombinedOutput()
	if !strings.Contains(string(out), "Publish 1 failed: Quota exceeded") || !strings.Contains(string(out), "disk is full") {
		t.Fatalf("mosquitto_pub under the disk alarm: err %v, output %q; want the refusal and its reason", err, out)
	}

	// 3.1.1: the connection is closed (no DISCONNECT, which 3.1.1 does
	// not have and mosquitto would call a protocol error).
	out, err = exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-V", "mqttv311", "-q", "1", "-t", "dfm/t", "-m", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection was lost") {
		t.Fatalf("mosquitto_pub 3.1.1 under the disk alarm: err %v, output %q; want the connection lost", err, out)
	}

	disk.setFree(t, n, 1e9)
	if out, err := exec.CommandContext(ctx, pub, args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub after the alarm: %v: %s", err, out)
	}
	if got := storedIn(n, "dfm"); got != 1 {
		t.Fatalf("%d messages stored, want the one after the alarm", got)
	}
}
