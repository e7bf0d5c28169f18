package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/gateway/amqp"
)

// TestBenchAMQP runs `bench amqp` for a second against an in-process
// broker and its AMQP front door: every confirmed message arrives once.
func TestBenchAMQP(t *testing.T) {
	if testing.Short() {
		t.Skip("drives amqp091-go clients against an in-process broker")
	}
	b := inProcessBroker(t)
	ln := localListener(t)
	s, err := amqp.New(amqp.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := benchAMQPConfig{urls: "amqp://guest:guest@" + ln.Addr().String() + "/", pubs: 2, cons: 2, size: 64,
		window: 16, prefetch: 50, duration: time.Second, queue: "benchtest", grace: 10 * time.Second}
	if err := runBenchAMQP(ctx, cfg, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	o := out.String()
	for _, want := range []string{"--- conflux bench amqp", "confirmed ", "nacked 0", "lost          0 ", "duplicated    0"} {
		if !strings.Contains(o, want) {
			t.Fatalf("output lacks %q:\n%s", want, o)
		}
	}
}
