package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/gateway/mqtt"
)

// TestBenchMQTT runs `bench mqtt` for a second against an in-process
// broker and its MQTT front door: every acknowledged message arrives once.
func TestBenchMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("drives paho clients against an in-process broker")
	}
	b := inProcessBroker(t)
	ln := localListener(t)
	s, err := mqtt.New(mqtt.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := benchMQTTConfig{addrs: ln.Addr().String(), pubs: 2, subs: 2, qos: 1, size: 64, duration: time.Second,
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
