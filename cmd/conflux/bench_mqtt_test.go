package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestBenchMQTT runs `bench mqtt` for a second against an in-process
// broker and its MQTT front door: every acknowledged message arrives once.
func TestBenchMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("drives paho clients against an in-process broker")
	}
	addr := inProcessMQTT(t, inProcessBroker(t))

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := benchMQTTConfig{addrs: addr, pubs: 2, subs: 2, qos: 1, size: 64, duration: time.Second,
		topic: "benchtest", grace: 10 * time.Second}
	if err := runBenchMQTT(ctx, cfg, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	o := out.String()
	for _, want := range []string{"--- conflux bench mqtt", "published ", "lost          0 ", "duplicated    0"} {
		if !strings.Contains(o, want) {
			t.Fatalf("output lacks %q:\n%s", want, o)
		}
	}
}
