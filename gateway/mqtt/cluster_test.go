package mqtt

import (
	"fmt"
	"sort"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestClusterDelivery: one three-node cluster, paho 3.1.1 clients on
// different nodes: publish on A, receive on B and C once each; retained
// on A answers a subscription on C; a will of a client dropped on B
// reaches subscribers on A once; a $share group with members on two
// nodes gets each message exactly once.
func TestClusterDelivery(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]

	t.Run("publish on A, receive on B and C", func(t *testing.T) {
		var inB, inC inbox
		wait(t, v3(t, b.addr, "subB", true, nil).Subscribe("x/#", 1, inB.handler), "subscribe B")
		wait(t, v3(t, c.addr, "subC", true, nil).Subscribe("x/+/t", 1, inC.handler), "subscribe C")
		pub := v3(t, a.addr, "pubA", true, nil)
		for i := range 100 {
			wait(t, pub.Publish("x/d1/t", 1, false, fmt.Sprint(i)), "publish")
		}
		inB.waitN(t, 100, "on B")
		inC.waitN(t, 100, "on C")
		for _, in := range []*inbox{&inB, &inC} {
			got := in.payloads()
			for i := range 100 {
				if got[i] != fmt.Sprint(i) {
					t.Fatalf("message %d is %q: order or duplicates", i, got[i])
				}
			}
		}
		consistently(t, 300*time.Millisecond, "100 deliveries on B and on C", func() bool {
			return inB.len() == 100 && inC.len() == 100
		})
	})

	t.Run("retained", func(t *testing.T) {
		pub := v3(t, a.addr, "retPub", true, nil)
		wait(t, pub.Publish("ret/dev1/state", 1, true, "on"), "publish retained")
		var in inbox
		waitFor(t, 10*time.Second, "retained on C", func() bool {
			cl := v3(t, c.addr, fmt.Sprint("retSub", time.Now().UnixNano()), true, nil)
			wait(t, cl.Subscribe("ret/#", 1, in.handler), "subscribe")
			deadline := time.Now().Add(300 * time.Millisecond)
			for in.len() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			cl.Disconnect(0)
			return in.len() > 0
		})
		in.mu.Lock()
		m := in.msgs[0]
		in.mu.Unlock()
		if m.Topic() != "ret/dev1/state" || string(m.Payload()) != "on" || !m.Retained() {
			t.Fatalf("retained: topic %q payload %q retained %v", m.Topic(), m.Payload(), m.Retained())
		}
		// An empty retained publish clears it everywhere.
		wait(t, pub.Publish("ret/dev1/state", 1, true, ""), "clear retained")
		waitFor(t, 10*time.Second, "retained cleared on B", func() bool {
			return len(b.srv.retainedMessages("ret/#")) == 0
		})
	})

	t.Run("will fires once", func(t *testing.T) {
		var in inbox
		wait(t, v3(t, a.addr, "willWatch", true, nil).Subscribe("will/#", 1, in.handler), "subscribe")
		dying := v3(t, b.addr, "dying", true, func(o *paho.ClientOptions) {
			o.SetWill("will/dying", "gone", 1, false)
		})
		_ = dying
		// Drop the connection without DISCONNECT: the server sees a
		// broken connection and must send the will.
		for _, cl := range b.srv.mochi.Clients.GetAll() {
			if cl.ID == "dying" {
				_ = cl.Net.Conn.Close()
			}
		}
		in.waitN(t, 1, "the will")
		if got := in.payloads(); got[0] != "gone" {
			t.Fatalf("will payload %q", got[0])
		}
		consistently(t, 300*time.Millisecond, "one delivery of the will", func() bool { return in.len() == 1 })
	})

	t.Run("shared subscription", func(t *testing.T) {
		var in1, in2 inbox
		wait(t, v3(t, a.addr, "m1", true, nil).Subscribe("$share/g/sh/#", 1, in1.handler), "subscribe m1")
		wait(t, v3(t, c.addr, "m2", true, nil).Subscribe("$share/g/sh/#", 1, in2.handler), "subscribe m2")
		pub := v3(t, b.addr, "shPub", true, nil)
		const n = 60
		for i := range n {
			wait(t, pub.Publish(fmt.Sprintf("sh/k%d", i%7), 1, false, fmt.Sprint(i)), "publish")
		}
		waitFor(t, 15*time.Second, "every shared message", func() bool { return in1.len()+in2.len() >= n })
		consistently(t, 300*time.Millisecond, "one delivery per message in the group", func() bool { return in1.len()+in2.len() == n })
		got := append(in1.payloads(), in2.payloads()...)
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		if len(got) != n {
			t.Fatalf("group got %d messages, want %d (m1 %d, m2 %d)", len(got), n, in1.len(), in2.len())
		}
	})
}

// TestPersistentSessionMovesNode: a 3.1.1 client with clean session off
// subscribes on A and goes; messages published meanwhile on C reach it
// when it reconnects to B, in order and with "session present".
func TestPersistentSessionMovesNode(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]
	var in inbox
	dev := v3(t, a.addr, "dev1", false, func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in.handler) })
	wait(t, dev.Subscribe("cmd/dev1/#", 1, in.handler), "subscribe")
	dev.Disconnect(100)
	waitFor(t, 10*time.Second, "the session saved", func() bool {
		_, ok := c.b.Record(nsSessions, "dev1")
		return ok
	})
	pub := v3(t, c.addr, "ctl", true, nil)
	const n = 50
	for i := range n {
		wait(t, pub.Publish("cmd/dev1/set", 1, false, fmt.Sprint(i)), "publish")
	}
	dev2 := v3(t, b.addr, "dev1", false, func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in.handler) })
	in.waitN(t, n, "missed messages after the move")
	got := in.payloads()
	for i := range n {
		if got[i] != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, got[i])
		}
	}
	// Live delivery continues after the replay.
	wait(t, pub.Publish("cmd/dev1/set", 1, false, "live"), "publish live")
	in.waitN(t, n+1, "the live message")
	if got := in.payloads(); got[n] != "live" {
		t.Fatalf("after the replay got %q", got[n])
	}
	dev2.Disconnect(100)
}
