package mqtt

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestSlowSubscriberLosesNothing: a persistent QoS 1 subscriber that
// stops acknowledging reaches MaxInflightMessages; it is disconnected
// rather than having messages dropped, and on its next connection gets
// every message (the unacknowledged ones again).
func TestSlowSubscriberLosesNothing(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxInflightMessages = 16 })
	r := dialRaw(t, n.addr)
	r.write(connectPacket("slow", false))
	if h, body, err := r.read(); err != nil || h != 0x20 || body[1] != 0 {
		t.Fatalf("CONNACK %#x %v %v", h, body, err)
	}
	r.write(frame(0x82, append([]byte{0, 1}, append(str16("slow/#"), 1)...)))
	if h, _, err := r.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	pub := v3(t, n.addr, "fast", true, nil)
	const total = 100
	for i := range total {
		wait(t, pub.Publish("slow/x", 1, false, fmt.Sprint(i)), "publish")
	}
	// Read without acknowledging until the server gives up on us.
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h, _, err := r.read()
		if err != nil {
			break
		}
		if h&0xf0 == 0x30 {
			got++
		}
	}
	if got == 0 || got > 16 {
		t.Fatalf("received %d publishes before the disconnect, want 1..16", got)
	}
	var in inbox
	c := v3(t, n.addr, "slow", false, func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in.handler) })
	waitFor(t, 15*time.Second, "every message after the reconnect", func() bool {
		seen := map[string]bool{}
		for _, p := range in.payloads() {
			seen[p] = true
		}
		return len(seen) == total
	})
	c.Disconnect(100)
}
