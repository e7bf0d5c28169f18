package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/gateway/remoting"
)

// benchServer starts an in-process broker with both RocketMQ front doors
// on 127.0.0.1 and returns the name server's address.
func benchServer(t *testing.T) string {
	t.Helper()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Log: clog.Config{SegmentSizeBytes: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !b.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("broker not ready in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	nsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	brLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := remoting.Config{Broker: b, BrokerAddr: brLn.Addr().String(), AutoCreateTopics: true}
	ns, br := remoting.NewNameServer(cfg), remoting.NewBroker(cfg)
	go func() { _ = ns.Serve(nsLn) }()
	go func() { _ = br.Serve(brLn) }()
	t.Cleanup(func() {
		_ = ns.Close()
		_ = br.Close()
		_ = b.Close()
	})
	return nsLn.Addr().String()
}

func TestBenchRemoting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go against an in-process broker")
	}
	nsAddr := benchServer(t)
	cfg := benchConfig{namesrv: nsAddr, topic: "BenchTopic", producers: 2, size: 256, duration: 2 * time.Second,
		group: "bench_test_g", queues: 3, grace: benchMaxGrace, progress: true}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := runBench(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("runBench: %v\n%s", err, out.String())
	}
	printSummary(&out, cfg, s)
	t.Logf("\n%s", out.String())
	if s.Sent <= 0 || !s.ConsumerRan || s.Consumed != s.Sent || s.Lost != 0 || s.Duplicated != 0 {
		t.Fatalf("summary %+v", s)
	}
	if !strings.Contains(out.String(), "sent/s") || !strings.Contains(out.String(), "lost          0") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// TestBenchRemotingCommand runs the subcommand through run(): a short run
// without a consumer exits 0; an unreachable name server exits 1.
func TestBenchRemotingCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go against an in-process broker")
	}
	nsAddr := benchServer(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"bench", "remoting", "--namesrv", nsAddr, "--duration", "1s", "--producers", "1", "--size", "64"},
		&stdout, &stderr, func(string) (string, bool) { return "", false })
	if code != exitOK || !strings.Contains(stdout.String(), "sent ") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if code := run(context.Background(), []string{"bench", "remoting", "--size", "4"}, &stdout, &stderr,
		func(string) (string, bool) { return "", false }); code != exitUsage {
		t.Fatalf("--size 4: exit %d", code)
	}
}
