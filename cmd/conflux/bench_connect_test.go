package main

import (
	"context"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/gateway/mqtt"
)

// TestBenchConnect runs `bench connect` against an in-process MQTT door:
// guest's own password lets every client in, a wrong one none.
func TestBenchConnect(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := benchConnectConfig{protocol: "mqtt", addrs: ln.Addr().String(), clients: 40, concurrency: 8, hold: true,
		login: benchLogin{user: "guest", password: "guest"}}
	got, err := runBenchConnect(ctx, cfg)
	if err != nil || got.ok != 40 || got.failed != 0 {
		t.Fatalf("right password: %+v, %v", got, err)
	}
	cfg.login.password = "wrong"
	got, err = runBenchConnect(ctx, cfg)
	if err != nil || got.ok != 0 || got.failed != 40 || got.firstErr == nil {
		t.Fatalf("wrong password: %+v, %v", got, err)
	}
}
