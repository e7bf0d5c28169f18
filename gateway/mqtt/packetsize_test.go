package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestMaxPacketSizeFitsABrokerMessage guards MaxPacketSizeBytes against
// the broker's message limit (found in review): Validate allowed 2 MiB
// packets while the broker stores messages of at most MaxBatchBytes
// (1 MiB by default), so a PUBLISH within the advertised limit was
// refused by Produce, never acknowledged, and resent forever. Validate
// now refuses such a limit, and the largest one it accepts stores even a
// PUBLISH at that size with a long topic and the most user properties.
func TestMaxPacketSizeFitsABrokerMessage(t *testing.T) {
	probe := startNode(t, nil)
	if err := (Config{Broker: probe.b, MaxPacketSizeBytes: 2 << 20}).WithDefaults().Validate(); err == nil ||
		!strings.Contains(err.Error(), "MaxPacketSizeBytes") {
		t.Fatalf("MaxPacketSizeBytes over the broker's message size: Validate said %v", err)
	}
	limit := Config{Broker: probe.b}.WithDefaults().maxPacketBytes()

	n := startNode(t, func(c *Config) { c.MaxPacketSizeBytes = uint32(limit) })
	pub, _ := dialV5(t, n.addr, "psize", true, 0)
	topic := "psize/" + strings.Repeat("t", 4096-len("psize/"))
	var ups paho.UserProperties
	size := 5 + 2 + len(topic) + 2 + 4
	for range maxUserProperties {
		ups = append(ups, paho.UserProperty{Key: "k", Value: "v"})
		size += 1 + 2 + 1 + 2 + 1
	}
	payload := make([]byte, limit-size-64)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pub.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload,
		Properties: &paho.PublishProperties{User: ups}}); err != nil {
		t.Fatalf("a PUBLISH of about MaxPacketSizeBytes (%d): %v", limit, err)
	}
}
