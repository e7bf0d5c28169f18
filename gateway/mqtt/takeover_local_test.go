package mqtt

import (
	"fmt"
	"testing"

	paho5 "github.com/eclipse/paho.golang/paho"
)

// TestLocalTakeoverKeepsSubscriptions: a persistent session taken over
// by a new connection on the same node has its subscriptions at the
// CONNACK, every time. The watch loop used to end the old connection as
// if taken over from another node, racing with mochi's move of its
// subscriptions; a few takeovers in a hundred lost them under -race.
func TestLocalTakeoverKeepsSubscriptions(t *testing.T) {
	n := startNode(t, nil)
	for i := range 100 {
		id := fmt.Sprint("takeover-", i)
		old, _ := dialV5(t, n.addr, id, true, 3600)
		if _, err := old.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "x/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		if _, ca := dialV5(t, n.addr, id, false, 3600); !ca.SessionPresent {
			t.Fatalf("takeover %d: session not present", i)
		}
		if cl, ok := n.srv.Mochi().Clients.Get(id); !ok || cl.State.Subscriptions.Len() != 1 {
			t.Fatalf("takeover %d: the subscription is gone at the CONNACK", i)
		}
	}
}
