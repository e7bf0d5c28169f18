package main

import (
	"net"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/gateway/mqtt"
)

// inProcessBroker opens a single-node broker in a temporary directory,
// closed at the end of the test, and waits until it takes writes.
func inProcessBroker(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Log: clog.Config{SegmentSizeBytes: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	for deadline := time.Now().Add(10 * time.Second); !b.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("broker not ready in 10 s")
		}
	}
	return b
}

// localListener listens on a free 127.0.0.1 port.
func localListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// inProcessMQTT serves an MQTT door of b on a free 127.0.0.1 port, closed
// at the end of the test, and returns its address.
func inProcessMQTT(t *testing.T, b *broker.Broker) string {
	t.Helper()
	ln := localListener(t)
	s, err := mqtt.New(mqtt.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}
