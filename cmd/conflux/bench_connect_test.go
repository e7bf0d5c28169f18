package main

import (
	"context"
	"testing"
	"time"
)

// TestBenchConnect runs `bench connect` against an in-process MQTT door:
// guest's own password lets every client in, a wrong one none.
func TestBenchConnect(t *testing.T) {
	if testing.Short() {
		t.Skip("drives paho clients against an in-process broker")
	}
	addr := inProcessMQTT(t, inProcessBroker(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := benchConnectConfig{protocol: "mqtt", addrs: addr, clients: 40, concurrency: 8, hold: true,
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
