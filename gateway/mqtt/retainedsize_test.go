package mqtt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRetainedPublishOverRecordLimitRefused guards retained publishes
// whose record would pass the broker's record limit (found in review):
// string properties are JSON-escaped in the record ('<' takes 6 bytes),
// so a packet within MaxPacketSizeBytes can make a record over 4 MiB.
// It used to be produced first and its record refused after: delivered,
// never acknowledged, not retained, and stored again on every resend.
// Now it is refused before it is stored (MQTT 5: PUBACK 0x97) and the
// connection carries on.
func TestRetainedPublishOverRecordLimitRefused(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxPacketSizeBytes = 1000 << 10 })
	var in inbox
	wait(t, v3(t, n.addr, "rsizesub", true, nil).Subscribe("rsize/#", 1, in.handler), "subscribe")
	pub, _ := dialV5(t, n.addr, "rsizepub", true, 0)
	var ups paho.UserProperties
	for range 14 {
		ups = append(ups, paho.UserProperty{Key: "k", Value: strings.Repeat("<", 60000)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := pub.c.Publish(ctx, &paho.Publish{Topic: "rsize/r", QoS: 1, Retain: true, Payload: []byte("v"),
		Properties: &paho.PublishProperties{User: ups}})
	var code byte
	if res != nil {
		code = res.ReasonCode
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) || code != 0x97 {
		t.Fatalf("oversized retained publish: reason %#x, err %v; want PUBACK 0x97", code, err)
	}
	// The same connection still works, and the refused message was not stored.
	if _, err := pub.c.Publish(ctx, &paho.Publish{Topic: "rsize/ok", QoS: 1, Retain: true, Payload: []byte("ok")}); err != nil {
		t.Fatalf("a normal retained publish after it: %v", err)
	}
	in.waitN(t, 1, "the normal message")
	if got := in.payloads(); len(got) != 1 || got[0] != "ok" {
		t.Fatalf("subscriber got %q, want only the normal message", got)
	}
	if stored := storedIn(n, "rsize"); stored != 1 {
		t.Fatalf("%d messages stored in core topic rsize, want 1", stored)
	}
	if _, ok := n.b.Record(nsRetained, "rsize/r"); ok {
		t.Fatal("the refused message is retained")
	}
	if _, ok := n.b.Record(nsRetained, "rsize/ok"); !ok {
		t.Fatal("the normal retained message is not retained")
	}
}
