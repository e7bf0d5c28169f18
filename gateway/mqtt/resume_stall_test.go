package mqtt

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestResumeLastStretchDoesNotBlockDelivery guards the switch of a resumed
// session to live delivery (found in review): its last stretch of replay
// runs on the node's delivery goroutine and used direct, blocking socket
// writes, so a resumed client that stopped reading (keepalive 0: no
// deadline) stopped delivery for every client on the node. The stretch
// now goes through mochi's write queue like live messages.
func TestResumeLastStretchDoesNotBlockDelivery(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxInflightMessages = 16 })
	var in inbox
	wait(t, v3(t, n.addr, "lsby", true, nil).Subscribe("lsnews/#", 1, in.handler), "bystander subscribe")

	r, _ := connectRaw(t, n.addr, "ls", false)
	sub := append([]byte{0, 1}, append(str16("lsslow/#"), 1)...)
	sub = append(sub, append(str16("lsbig/#"), 0)...)
	r.write(frame(0x82, sub))
	if h, _, err := r.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	r.c.Close()
	waitFor(t, 10*time.Second, "saved", func() bool {
		rec, ok := savedSession(t, n, "ls")
		return ok && rec.DisconnectedMs > 0
	})
	pub := v3(t, n.addr, "lspub", true, nil)
	for range 20 {
		wait(t, pub.Publish("lsslow/x", 1, false, "s"), "publish slow")
	}

	c, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	body := append(str16("MQTT"), 4, 0x00, 0, 0) // persistent, keepalive 0
	r2 := &raw{t: t, c: c, r: bufio.NewReader(c)}
	r2.write(frame(0x10, append(body, str16("ls")...)))
	if h, b, err := r2.read(); err != nil || h != 0x20 || b[0] != 1 {
		t.Fatalf("CONNACK %#x %v %v", h, b, err)
	}
	var pids []uint16
	for len(pids) < 16 { // the window: catch-up waits for acks
		h, b, err := r2.read()
		if err != nil {
			t.Fatal(err)
		}
		if h&0xf0 == 0x30 {
			_, pid, _ := publishOf(b)
			pids = append(pids, pid)
		}
	}
	// A backlog the client will not read, committed while catch-up waits:
	// it is the last stretch, replayed on the delivery goroutine.
	payload := strings.Repeat("z", 256<<10)
	for range 100 {
		wait(t, pub.Publish("lsbig/x", 1, false, payload), "publish big")
	}
	for _, p := range pids {
		r2.write(pidPacket(0x40, p))
	}
	for got := 0; got < 4; {
		h, b, err := r2.read()
		if err != nil {
			t.Fatal(err)
		}
		if h&0xf0 == 0x30 {
			if _, pid, pl := publishOf(b); pl == "s" {
				r2.write(pidPacket(0x40, pid))
				got++
			}
		}
	}
	// The client reads nothing more.
	waitFor(t, 20*time.Second, "the resumed session live", func() bool {
		n.srv.hook.mu.Lock()
		defer n.srv.hook.mu.Unlock()
		ss := n.srv.hook.sessions["ls"]
		return ss == nil || !ss.catchingUp.Load()
	})
	wait(t, pub.Publish("lsnews/1", 1, false, "hello"), "publish news")
	in.waitN(t, 1, "a message to a bystander on the same node")
}
