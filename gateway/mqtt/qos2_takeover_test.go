package mqtt

import (
	"encoding/binary"
	"testing"
)

// TestQoS2PubrecSurvivesMoveToAnotherNode guards outbound exactly-once
// across a node move (found in review): a QoS 2 message the client
// PUBREC'd on node A (and got the PUBREL for) must not be replayed as a
// new PUBLISH on node B, even when A's connection is still open and A
// cannot save the session at disconnect (B owns the id by then). The
// session is saved when the PUBREC arrives, before the PUBREL goes out.
func TestQoS2PubrecSurvivesMoveToAnotherNode(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]

	r, _ := connectRaw(t, a.addr, "q2move", false)
	r.write(frame(0x82, append([]byte{0, 1}, append(str16("q2move/#"), 2)...)))
	if h, _, err := r.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	pub := v3(t, c.addr, "q2movepub", true, nil)
	wait(t, pub.Publish("q2move/a", 2, false, "m0"), "publish m0")
	var p0 uint16
	for {
		h, body, err := r.read()
		if err != nil {
			t.Fatal(err)
		}
		if h&0xf0 == 0x30 {
			_, pid, payload := publishOf(body)
			if payload != "m0" {
				t.Fatalf("got %q", payload)
			}
			p0 = pid
			r.write(pidPacket(0x50, pid)) // PUBREC
		}
		if h&0xf0 == 0x60 && binary.BigEndian.Uint16(body) == p0 {
			break // PUBREL
		}
	}
	// Reconnect on B while the connection to A is still open.
	r2, present := connectRaw(t, b.addr, "q2move", false)
	if !present {
		t.Fatal("session present not set")
	}
	// m1 comes after m0 in the same queue: a replay of m0 would come first.
	wait(t, pub.Publish("q2move/a", 2, false, "m1"), "publish m1")
	pubrel := false
	for {
		h, body, err := r2.read()
		if err != nil {
			t.Fatalf("m1 not delivered on B: %v", err)
		}
		if h&0xf0 == 0x60 {
			pubrel = pubrel || binary.BigEndian.Uint16(body) == p0
			r2.write(pidPacket(0x70, binary.BigEndian.Uint16(body)))
			continue
		}
		if h&0xf0 != 0x30 {
			continue
		}
		_, pid, payload := publishOf(body)
		if payload == "m0" {
			t.Fatal("m0, PUBREC'd on A, delivered again on B")
		}
		if payload == "m1" {
			break
		}
		r2.write(pidPacket(0x50, pid))
	}
	if !pubrel {
		t.Error("the PUBREL of m0 was not resent on B")
	}
}

// TestQoS2InboundStoredOnceAcrossNodes guards inbound exactly-once
// across a node move (found in review): a QoS 2 PUBLISH stored and
// PUBREC'd on node A, resent with DUP on node B (the client has no
// PUBCOMP), is acknowledged on B, not stored a second time. The session
// record lists the pending PUBREC before the PUBREC is written.
func TestQoS2InboundStoredOnceAcrossNodes(t *testing.T) {
	ns := startCluster(t)
	a, b, c := ns[0], ns[1], ns[2]
	var in inbox
	wait(t, v3(t, c.addr, "q2inwatch", true, nil).Subscribe("q2in/#", 2, in.handler), "subscribe")
	r, _ := connectRaw(t, a.addr, "q2indev", false)
	body := append(str16("q2in/x"), 0, 9)
	body = append(body, "once"...)
	r.write(frame(0x34, body))
	if h, pb, err := r.read(); err != nil || h != 0x50 || binary.BigEndian.Uint16(pb) != 9 {
		t.Fatalf("want PUBREC 9, got %#x %v %v", h, pb, err)
	}
	r2, present := connectRaw(t, b.addr, "q2indev", false)
	if !present {
		t.Fatal("session present not set on B")
	}
	r2.write(frame(0x3C, body)) // the same PUBLISH, DUP set
	for {
		h, pb, err := r2.read()
		if err != nil {
			t.Fatal(err)
		}
		if h == 0x50 && binary.BigEndian.Uint16(pb) == 9 {
			break
		}
	}
	r2.write(pidPacket(0x62, 9))
	for {
		h, pb, err := r2.read()
		if err != nil {
			t.Fatal(err)
		}
		if h == 0x70 && binary.BigEndian.Uint16(pb) == 9 {
			break
		}
	}
	// A later message on the same topic from the same client: once it is
	// delivered, a second copy of "once" would have been too.
	after := append(str16("q2in/x"), 0, 10)
	after = append(after, "after"...)
	r2.write(frame(0x32, after))
	in.waitN(t, 2, "the QoS 2 message and the one after it")
	n := 0
	for _, p := range in.payloads() {
		if p == "once" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("one QoS 2 PUBLISH (resent with DUP after a move) delivered %d times: %v", n, in.payloads())
	}
}
