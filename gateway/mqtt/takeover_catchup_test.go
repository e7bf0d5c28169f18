package mqtt

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestTakeoverDuringCatchUpKeepsSubscriptions guards a same-node takeover
// of a persistent session still replaying its backlog (found in review):
// the new connection must resume the saved subscriptions (in its record
// and live in mochi), not inherit the empty live state of the old one.
func TestTakeoverDuringCatchUpKeepsSubscriptions(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxInflightMessages = 16 })

	r, _ := connectRaw(t, n.addr, "tcu", false)
	r.write(frame(0x82, append([]byte{0, 1}, append(str16("tcu/#"), 1)...)))
	if h, _, err := r.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	r.c.Close()
	waitFor(t, 10*time.Second, "saved at disconnect", func() bool {
		rec, ok := savedSession(t, n, "tcu")
		return ok && rec.DisconnectedMs > 0 && len(rec.Subs) == 1
	})
	pub := v3(t, n.addr, "tcupub", true, nil)
	for i := range 40 { // more than the inflight window
		wait(t, pub.Publish("tcu/x", 1, false, fmt.Sprint("m", i)), "publish")
	}

	// Resume without acknowledging: catch-up stalls at the window.
	r2, present := connectRaw(t, n.addr, "tcu", false)
	if !present {
		t.Fatal("no session present")
	}
	for range 16 {
		if h, _, err := r2.read(); err != nil || h&0xf0 != 0x30 {
			t.Fatalf("replayed PUBLISH: %#x %v", h, err)
		}
	}

	// Taken over on the same node while the old connection is open.
	r3, present := connectRaw(t, n.addr, "tcu", false)
	if !present {
		t.Fatal("no session present on takeover")
	}
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			h, body, err := r3.read()
			if err != nil {
				return
			}
			if h&0xf0 == 0x30 {
				_, pid, payload := publishOf(body)
				mu.Lock()
				got = append(got, payload)
				mu.Unlock()
				_, _ = r3.c.Write(pidPacket(0x40, pid))
			}
		}
	}()
	waitFor(t, 10*time.Second, "the subscription live again", func() bool {
		return len(n.srv.mochi.Topics.Subscribers("tcu/x").Subscriptions) == 1
	})
	wait(t, pub.Publish("tcu/x", 1, false, "live"), "publish live")
	waitFor(t, 10*time.Second, "the live message delivered to the new connection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got, "live")
	})
	rec, ok := savedSession(t, n, "tcu")
	if !ok || len(rec.Subs) != 1 || rec.Subs[0].Filter != "tcu/#" {
		t.Fatalf("saved record after the takeover: ok=%v subs=%v", ok, rec.Subs)
	}
}
