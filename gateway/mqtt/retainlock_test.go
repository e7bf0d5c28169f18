package mqtt

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStuckSubscribeDoesNotStallTheNode guards retainLock (found in
// review): a SUBSCRIBE holds it shared across mochi's SUBACK write and
// retained scan, and a client that stops reading (keepalive 0: no socket
// deadline) got its SUBACK write stuck with the lock held. Every retained
// update then waited for it, and behind that every delivery on the node,
// every retained publisher's ack and every other SUBSCRIBE. A subscriber
// holding the lock past retainHoldMax while an update waits is now
// disconnected.
func TestStuckSubscribeDoesNotStallTheNode(t *testing.T) {
	n := startNode(t, nil)
	var in inbox
	wait(t, v3(t, n.addr, "rlby", true, nil).Subscribe("rlnews/#", 1, in.handler), "subscribe")

	// The stuck client: keepalive 0, small receive buffer, never reads.
	c, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	r := &raw{t: t, c: c, r: bufio.NewReader(c)}
	body := append(str16("MQTT"), 4, 0x02, 0, 0) // clean, keepalive 0
	r.write(frame(0x10, append(body, str16("rlstuck")...)))
	if h, _, err := r.read(); err != nil || h != 0x20 {
		t.Fatalf("CONNACK %#x %v", h, err)
	}
	r.write(frame(0x82, append([]byte{0, 1}, append(str16("rlflood/#"), 0)...)))
	if h, _, err := r.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	// Fill its socket: the server's writer blocks in a conn write.
	pub := v3(t, n.addr, "rlpub", true, nil)
	payload := strings.Repeat("z", 256<<10)
	for range 100 {
		wait(t, pub.Publish("rlflood/x", 1, false, payload), "flood")
	}
	waitFor(t, 20*time.Second, "the flood injected", func() bool {
		var sum uint64
		for q, p := range n.srv.dl.positions() {
			if q.topic == "rlflood" {
				sum += p
			}
		}
		return sum >= 100
	})
	// It subscribes again: its SUBACK write blocks with retainLock held.
	r.write(frame(0x82, append([]byte{0, 2}, append(str16("rlother"), 0)...)))
	waitFor(t, 10*time.Second, "the stuck SUBSCRIBE holding retainLock", func() bool {
		n.srv.hook.mu.Lock()
		defer n.srv.hook.mu.Unlock()
		for cl, since := range n.srv.hook.readers {
			if cl.ID == "rlstuck" && !since.IsZero() {
				return true
			}
		}
		return false
	})

	wait(t, pub.Publish("rlnews/r", 1, true, "retained"), "a retained publish")
	wait(t, pub.Publish("rlnews/p", 1, false, "plain"), "a plain publish")
	in.waitN(t, 2, "messages to a bystander")
	wait(t, v3(t, n.addr, "rlother", true, nil).Subscribe("rlx/#", 1, nil), "another client's SUBSCRIBE")
}
