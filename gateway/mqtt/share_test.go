package mqtt

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestSharedGroupMovesWithItsMembers: the node owning a $share group's
// deliveries loses its last member (here: its MQTT server closes); the
// node with the remaining member claims the group and gets the messages.
func TestSharedGroupMovesWithItsMembers(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]
	const filter = "$share/grp/mv/#"
	var onA, onB inbox
	wait(t, v3(t, a.addr, "memberA", true, nil).Subscribe(filter, 1, onA.handler), "subscribe on A")
	wait(t, v3(t, b.addr, "memberB", true, nil).Subscribe(filter, 1, onB.handler), "subscribe on B")
	if got, _ := c.b.Record(nsShares, filter); string(got) != "1" {
		t.Fatalf("group owner %q, want node 1 (first member)", got)
	}
	pub := v3(t, c.addr, "mvPub", true, nil)
	wait(t, pub.Publish("mv/x", 1, false, "before"), "publish")
	onA.waitN(t, 1, "the owner's member")
	if onB.len() != 0 {
		t.Fatalf("the non-owner's member got %d messages", onB.len())
	}

	if err := a.srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node 2 owning the group", func() bool {
		got, _ := c.b.Record(nsShares, filter)
		return string(got) == strconv.FormatUint(2, 10)
	})
	for i := range 20 {
		wait(t, pub.Publish("mv/x", 1, false, fmt.Sprint("after-", i)), "publish")
	}
	onB.waitN(t, 20, "messages at the remaining member")
}

// TestSharedResubscribeIsOneMember guards the local member count of a
// $share group (found in review): a client subscribing twice to the same
// shared filter was counted twice and once on UNSUBSCRIBE, so its node
// never released the group and the member on another node got nothing.
func TestSharedResubscribeIsOneMember(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]
	const filter = "$share/rsg/rsub/#"
	var onB inbox
	x := v3(t, a.addr, "rsubA", true, nil)
	wait(t, x.Subscribe(filter, 1, nil), "subscribe on A")
	wait(t, x.Subscribe(filter, 1, nil), "subscribe again on A")
	wait(t, v3(t, b.addr, "rsubB", true, nil).Subscribe(filter, 1, onB.handler), "subscribe on B")
	wait(t, x.Unsubscribe(filter), "unsubscribe on A")
	waitFor(t, 10*time.Second, "node 2 owning the group", func() bool {
		got, _ := c.b.Record(nsShares, filter)
		return string(got) == "2"
	})
	pub := v3(t, c.addr, "rsubPub", true, nil)
	wait(t, pub.Publish("rsub/x", 1, false, "m"), "publish")
	onB.waitN(t, 1, "the message at the group's only member")
}
