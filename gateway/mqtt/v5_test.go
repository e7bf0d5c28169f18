package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/conflux-mq/conflux/core/broker"
)

// v5client is a paho.golang (MQTT 5) client collecting what it receives.
type v5client struct {
	c    *paho.Client
	mu   sync.Mutex
	in   []*paho.Publish
	disc *paho.Disconnect // a DISCONNECT from the server
}

func (c *v5client) serverDisconnect() *paho.Disconnect {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disc
}

func (c *v5client) received() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.in...)
}

func dialV5(t *testing.T, addr, id string, cleanStart bool, expiry uint32) (*v5client, *paho.Connack) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	vc := &v5client{}
	vc.c = paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			vc.mu.Lock()
			vc.in = append(vc.in, r.Packet)
			vc.mu.Unlock()
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			vc.mu.Lock()
			vc.disc = d
			vc.mu.Unlock()
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: cleanStart, KeepAlive: 30}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ca, err := vc.c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = vc.c.Disconnect(&paho.Disconnect{}) })
	return vc, ca
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestMQTT5: paho.golang clients across a cluster. User properties and
// the other v5 publish properties survive the log in both directions;
// QoS 2 is delivered exactly once; NoLocal holds; a session with expiry
// resumes on another node with "session present" and what it missed.
func TestMQTT5(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]

	t.Run("properties and QoS 2", func(t *testing.T) {
		sub, _ := dialV5(t, b.addr, "sub5", true, 0)
		if _, err := sub.c.Subscribe(tctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "v5/#", QoS: 2}}}); err != nil {
			t.Fatal(err)
		}
		pub, _ := dialV5(t, a.addr, "pub5", true, 0)
		if _, err := pub.c.Subscribe(tctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "v5/#", QoS: 1, NoLocal: true}}}); err != nil {
			t.Fatal(err)
		}
		pf := byte(1)
		const n = 20
		for i := range n {
			p := &paho.Publish{Topic: "v5/dev7/temp", QoS: 2, Payload: fmt.Appendf(nil, "%d", i),
				Properties: &paho.PublishProperties{ContentType: "text/plain", ResponseTopic: "v5/reply",
					CorrelationData: []byte{1, 2, 3}, PayloadFormat: &pf,
					User: paho.UserProperties{{Key: "unit", Value: "C"}, {Key: "site", Value: "s1"}}}}
			if _, err := pub.c.Publish(tctx(t), p); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		waitFor(t, 10*time.Second, "QoS 2 messages on B", func() bool { return len(sub.received()) >= n })
		consistently(t, 300*time.Millisecond, "one delivery per QoS 2 message", func() bool { return len(sub.received()) == n })
		got := sub.received()
		if len(got) != n {
			t.Fatalf("QoS 2: %d deliveries, want %d", len(got), n)
		}
		for i, p := range got {
			pp := p.Properties
			if string(p.Payload) != fmt.Sprint(i) || p.QoS != 2 || pp == nil || pp.ContentType != "text/plain" ||
				pp.ResponseTopic != "v5/reply" || string(pp.CorrelationData) != "\x01\x02\x03" ||
				pp.PayloadFormat == nil || *pp.PayloadFormat != 1 || pp.User.Get("unit") != "C" || pp.User.Get("site") != "s1" {
				t.Fatalf("delivery %d: payload %q qos %d props %+v", i, p.Payload, p.QoS, pp)
			}
			for _, u := range pp.User {
				if reservedProp(u.Key) {
					t.Fatalf("internal property %q shown to the subscriber", u.Key)
				}
			}
		}
		if len(pub.received()) != 0 {
			t.Fatalf("NoLocal: the publisher got %d of its own messages", len(pub.received()))
		}
		// The RocketMQ view: user properties are message properties.
		var found bool
		tp, _ := c.b.Topic("v5")
		for q := range tp.Queues {
			msgs, _, err := c.b.Fetch("v5", q, 0, broker.FetchOptions{MaxMessages: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				props := map[string]string{}
				for k, v := range m.Properties {
					props[string(k)] = string(v)
				}
				found = props["unit"] == "C" && props["site"] == "s1" && props[PropTopic] == "v5/dev7/temp" && string(m.Tags()) == "dev7"
				m.Release()
			}
		}
		if !found {
			t.Fatal("user properties not stored as message properties")
		}
	})

	t.Run("session expiry: resume on another node", func(t *testing.T) {
		dev, ca := dialV5(t, a.addr, "dev5", true, 300)
		if ca.SessionPresent {
			t.Fatal("clean start answered with session present")
		}
		if _, err := dev.c.Subscribe(tctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd5/dev5/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		_ = dev.c.Disconnect(&paho.Disconnect{})
		waitFor(t, 10*time.Second, "the session saved as disconnected", func() bool {
			raw, ok := c.b.Record(nsSessions, "dev5")
			var rec sessionRecord
			return ok && json.Unmarshal(raw, &rec) == nil && rec.DisconnectedMs > 0
		})
		pub, _ := dialV5(t, b.addr, "ctl5", true, 0)
		for i := range 20 {
			if _, err := pub.c.Publish(tctx(t), &paho.Publish{Topic: "cmd5/dev5/set", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		dev2, ca2 := dialV5(t, c.addr, "dev5", false, 300)
		if !ca2.SessionPresent {
			t.Fatal("resume on another node: session present not set")
		}
		waitFor(t, 10*time.Second, "missed messages", func() bool { return len(dev2.received()) >= 20 })
		for i, p := range dev2.received()[:20] {
			if string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("missed message %d is %q", i, p.Payload)
			}
		}
	})
}

// TestWillDelayAcrossNodes: an MQTT 5 will with a delay is cancelled when
// the client id comes back on another node within the delay, and sent
// once when it does not.
func TestWillDelayAcrossNodes(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]
	watch, _ := dialV5(t, c.addr, "willwatch", true, 0)
	if _, err := watch.c.Subscribe(tctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "wd/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// connectWill connects "wd-dev" with a 2 s will delay and returns the
	// socket, to be dropped without DISCONNECT.
	connectWill := func(addr string) net.Conn {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "wd-dev"})
		delay, expiry := uint32(2), uint32(60)
		if _, err := cl.Connect(tctx(t), &paho.Connect{ClientID: "wd-dev", CleanStart: false, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
			WillMessage:    &paho.WillMessage{Topic: "wd/dev", QoS: 1, Payload: []byte("gone")},
			WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	conn := connectWill(a.addr)
	_ = conn.Close()
	waitFor(t, 5*time.Second, "the delayed will recorded", func() bool {
		_, ok := b.b.Record(nsWills, "wd-dev")
		return ok
	})
	conn = connectWill(b.addr) // back within the delay, elsewhere
	// Past the first will's due time: cancelled, so nothing comes.
	consistently(t, 2500*time.Millisecond, "no will while the client is back", func() bool { return len(watch.received()) == 0 })
	_ = conn.Close()
	waitFor(t, 10*time.Second, "the will after its delay", func() bool { return len(watch.received()) == 1 })
	consistently(t, 500*time.Millisecond, "the will sent once", func() bool { return len(watch.received()) == 1 })
	if got := watch.received()[0]; got.Topic != "wd/dev" || string(got.Payload) != "gone" {
		t.Fatalf("will: %s %q", got.Topic, got.Payload)
	}
}
