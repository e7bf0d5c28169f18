package main

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e, func(string) (string, bool) { return "", false })
	return code, o.String(), e.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	if code != 0 || !strings.HasPrefix(out, "conflux ") || !strings.Contains(out, "\ncommit ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"serve", "--no-such-flag"},
		{"serve", "extra"},
		{"serve", "--node-id=0"},
		{"serve", "--peers=1=a"},
		{"version", "x"},
		{"admin", "topics", "create"},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "conflux: ") {
			t.Errorf("%q: exit %d, stderr %q; want %d and a message", args, code, stderr, exitUsage)
		}
	}
	if code, _, stderr := runCmd("serve", "--node-id=0", "--data-dir="); !strings.Contains(stderr, "--node-id must be at least 1") ||
		!strings.Contains(stderr, "--data-dir must not be empty") || code != exitUsage {
		t.Errorf("validation errors: %d %q", code, stderr)
	}
	if code, out, _ := runCmd(); code != 0 || !strings.Contains(out, "serve") || !strings.Contains(out, "admin") {
		t.Errorf("no arguments: %d %q", code, out)
	}
}

func TestAdminUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if code, _, stderr := runCmd("admin", "--http-addr", addr, "cluster"); code != exitFailure || !strings.Contains(stderr, "connection refused") {
		t.Errorf("admin against nothing: %d %q", code, stderr)
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":         "http://127.0.0.1:8080",
		":8080":                  "http://127.0.0.1:8080",
		"0.0.0.0:8081":           "http://127.0.0.1:8081",
		"[::]:8082":              "http://127.0.0.1:8082",
		"node2:8080":             "http://node2:8080",
		"[::1]:8080":             "http://[::1]:8080",
		"https://conflux.local/": "https://conflux.local",
	} {
		if got, err := baseURL(in); err != nil || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "8080", "host"} {
		if _, err := baseURL(in); err == nil {
			t.Errorf("baseURL(%q): no error", in)
		}
	}
}

func TestAdvertisedAddr(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, tc := range []struct{ configured, want string }{
		{":8080", "10.0.0.5:8080"},
		{"0.0.0.0:8080", "10.0.0.5:8080"},
		{"127.0.0.1:0", "127.0.0.1:8080"},
		{"conflux-1:8080", "conflux-1:8080"},
	} {
		if got := advertisedAddr(bound, tc.configured, "10.0.0.5"); got != tc.want {
			t.Errorf("advertisedAddr(%q) = %q, want %q", tc.configured, got, tc.want)
		}
	}
}
