package mqtt

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// connectRaw opens a 3.1.1 connection and returns it with the CONNACK's
// session-present flag.
func connectRaw(t *testing.T, addr, id string, clean bool) (*raw, bool) {
	t.Helper()
	r := dialRaw(t, addr)
	r.write(connectPacket(id, clean))
	h, body, err := r.read()
	if err != nil || h != 0x20 || len(body) != 2 || body[1] != 0 {
		t.Fatalf("CONNACK %#x %v %v", h, body, err)
	}
	return r, body[0]&1 == 1
}

func pidPacket(typeFlags byte, pid uint16) []byte {
	return frame(typeFlags, binary.BigEndian.AppendUint16(nil, pid))
}

// publishOf splits a QoS 1/2 PUBLISH body.
func publishOf(body []byte) (topic string, pid uint16, payload string) {
	n := int(binary.BigEndian.Uint16(body))
	topic = string(body[2 : 2+n])
	pid = binary.BigEndian.Uint16(body[2+n:])
	return topic, pid, string(body[4+n:])
}

func savedSession(t *testing.T, n *node, cid string) (sessionRecord, bool) {
	raw, ok := n.b.Record(nsSessions, cid)
	var rec sessionRecord
	if ok && json.Unmarshal(raw, &rec) != nil {
		t.Fatalf("bad session record %q", raw)
	}
	return rec, ok
}

// TestQoS2AcrossNodes: QoS 2 stays exactly-once when a persistent 3.1.1
// session moves to another node mid-flow, in both directions. Raw sockets
// stop the flow at the interesting packet.
func TestQoS2AcrossNodes(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]

	t.Run("outbound: PUBREC'd message not sent again, PUBREL resent", func(t *testing.T) {
		r, _ := connectRaw(t, a.addr, "q2sub", false)
		r.write(frame(0x82, append([]byte{0, 1}, append(str16("q2/#"), 2)...)))
		if h, _, err := r.read(); err != nil || h != 0x90 {
			t.Fatalf("SUBACK %#x %v", h, err)
		}
		pub := v3(t, c.addr, "q2pub", true, nil)
		wait(t, pub.Publish("q2/a", 2, false, "m0"), "publish m0")
		wait(t, pub.Publish("q2/a", 2, false, "m1"), "publish m1")
		// m0 is PUBREC'd (its PUBREL comes, no PUBCOMP goes), m1 is left
		// unacknowledged; the packets may come in any order.
		var p0 uint16
		var seen []string
		gotRel := false
		for len(seen) < 2 || !gotRel {
			h, body, err := r.read()
			if err != nil {
				t.Fatalf("after %v (PUBREL %v): %v", seen, gotRel, err)
			}
			switch h & 0xf0 {
			case 0x30:
				_, pid, payload := publishOf(body)
				seen = append(seen, payload)
				if payload == "m0" {
					p0 = pid
					r.write(pidPacket(0x50, pid))
				}
			case 0x60:
				gotRel = binary.BigEndian.Uint16(body) == p0
			}
		}
		if !slices.Equal(seen, []string{"m0", "m1"}) {
			t.Fatalf("got %v, want [m0 m1]", seen)
		}
		r.c.Close()
		waitFor(t, 10*time.Second, "the session saved at disconnect", func() bool {
			rec, ok := savedSession(t, b, "q2sub")
			return ok && rec.DisconnectedMs > 0 && slices.Contains(rec.Rel, p0)
		})
		wait(t, pub.Publish("q2/a", 2, false, "m2"), "publish m2")

		r2, present := connectRaw(t, b.addr, "q2sub", false)
		if !present {
			t.Fatal("session present not set on the other node")
		}
		var got []string
		gotRel = false
		for !slices.Contains(got, "m2") {
			h, body, err := r2.read()
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			switch h & 0xf0 {
			case 0x60:
				gotRel = gotRel || binary.BigEndian.Uint16(body) == p0
				r2.write(pidPacket(0x70, binary.BigEndian.Uint16(body)))
			case 0x30:
				_, pid, payload := publishOf(body)
				got = append(got, payload)
				r2.write(pidPacket(0x50, pid))
			}
		}
		if !gotRel {
			t.Fatal("PUBREL of the PUBREC'd message not resent")
		}
		if !slices.Equal(got, []string{"m1", "m2"}) {
			t.Fatalf("after the move got %v, want [m1 m2] (m0 was delivered before)", got)
		}
	})

	t.Run("inbound: a resent PUBLISH is not stored twice", func(t *testing.T) {
		var in inbox
		wait(t, v3(t, c.addr, "q2watch", true, nil).Subscribe("q2in/#", 2, in.handler), "subscribe")
		r, _ := connectRaw(t, a.addr, "q2dev", false)
		body := append(str16("q2in/x"), 0, 9)
		body = append(body, "once"...)
		r.write(frame(0x34, body))
		if h, b, err := r.read(); err != nil || h != 0x50 || binary.BigEndian.Uint16(b) != 9 {
			t.Fatalf("want PUBREC 9, got %#x %v %v", h, b, err)
		}
		r.c.Close()
		waitFor(t, 10*time.Second, "the session saved with the pending PUBREC", func() bool {
			rec, ok := savedSession(t, b, "q2dev")
			return ok && rec.DisconnectedMs > 0 && slices.Contains(rec.In2, 9)
		})
		r2, present := connectRaw(t, b.addr, "q2dev", false)
		if !present {
			t.Fatal("session present not set")
		}
		r2.write(frame(0x3C, body)) // the same PUBLISH, DUP set
		for {
			h, b, err := r2.read()
			if err != nil {
				t.Fatal(err)
			}
			if h == 0x50 && binary.BigEndian.Uint16(b) == 9 {
				break // a PUBREC (possibly the resent one first)
			}
		}
		r2.write(pidPacket(0x62, 9))
		for {
			h, b, err := r2.read()
			if err != nil {
				t.Fatal(err)
			}
			if h == 0x70 && binary.BigEndian.Uint16(b) == 9 {
				break
			}
		}
		in.waitN(t, 1, "the QoS 2 message")
		consistently(t, 500*time.Millisecond, "one delivery of the QoS 2 message", func() bool { return in.len() == 1 })
	})
}
