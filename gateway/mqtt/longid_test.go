package mqtt

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestLongClientIDIsRefusedAndHarmless: a CONNECT whose client id is
// 40000 bytes (legal MQTT: a u16 length) once made the session record's
// key too long for broker.db, which stopped every replica when applied.
// Now the client is refused and the broker keeps serving. (Found in
// review.)
func TestLongClientIDIsRefusedAndHarmless(t *testing.T) {
	n := startNode(t, nil)
	o := paho.NewClientOptions().AddBroker("tcp://" + n.addr).SetClientID(strings.Repeat("c", 40000)).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("no answer to the CONNECT within 10 s")
	}
	if tok.Error() == nil {
		c.Disconnect(0)
		t.Fatal("a 40000-byte client id was accepted")
	}
	// The broker still takes writes and answers a normal client.
	ok := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + n.addr).SetClientID("after-long-id").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := ok.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("a normal client after the long id: %v", tok.Error())
	}
	defer ok.Disconnect(0)
	if tok := ok.Publish("site1/dev/t", 1, false, "x"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("QoS 1 publish after the long id: %v", tok.Error())
	}
	select {
	case <-n.b.Done():
		t.Fatalf("the broker stopped: %v", n.b.Err())
	default:
	}
}
