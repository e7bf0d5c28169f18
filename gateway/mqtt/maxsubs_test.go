package mqtt

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMaxSubscriptionsRefusedNotLost guards the subscription bound of a
// session (found in review): without it a session's record could outgrow
// the broker's record limit, its SUBACKs said granted for subscriptions
// that were never saved, and its refused record failed the checkpoint
// batch of every other session on the node. Past MaxSubscriptions a new
// filter is refused in the SUBACK; what is granted is saved, and other
// sessions keep being checkpointed.
func TestMaxSubscriptionsRefusedNotLost(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxSubscriptions = 5 })

	vic, _ := connectRaw(t, n.addr, "msvictim", false)
	vic.write(frame(0x82, append([]byte{0, 1}, append(str16("msv/#"), 1)...)))
	if h, _, err := vic.read(); err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}

	big, _ := connectRaw(t, n.addr, "msbig", false)
	body := binary.BigEndian.AppendUint16(nil, 2)
	for k := range 7 {
		body = append(body, append(str16(fmt.Sprintf("%02d", k)+strings.Repeat("x", 4000)), 1)...)
	}
	body = append(body, append(str16(fmt.Sprintf("%02d", 0)+strings.Repeat("x", 4000)), 1)...) // a repeat
	big.write(frame(0x82, body))
	h, sb, err := big.read()
	if err != nil || h != 0x90 {
		t.Fatalf("SUBACK %#x %v", h, err)
	}
	want := []byte{1, 1, 1, 1, 1, 0x80, 0x80, 1}
	if got := sb[2:]; string(got) != string(want) {
		t.Fatalf("SUBACK codes %x, want %x", got, want)
	}
	// A filter it already has is still granted; a new one is not.
	body = binary.BigEndian.AppendUint16(nil, 3)
	body = append(body, append(str16(fmt.Sprintf("%02d", 1)+strings.Repeat("x", 4000)), 0)...)
	body = append(body, append(str16("another"), 0)...)
	big.write(frame(0x82, body))
	if h, sb, err = big.read(); err != nil || h != 0x90 || string(sb[2:]) != string([]byte{0, 0x80}) {
		t.Fatalf("second SUBACK %#x %x %v", h, sb, err)
	}
	rec, ok := savedSession(t, n, "msbig")
	if !ok || len(rec.Subs) != 5 {
		t.Fatalf("saved record: ok=%v, %d subscriptions, want 5", ok, len(rec.Subs))
	}
	if got := len(n.srv.mochi.Topics.Subscribers("05" + strings.Repeat("x", 4000)).Subscriptions); got != 0 {
		t.Fatalf("a refused filter is live in mochi (%d subscribers)", got)
	}

	// The other persistent session is still checkpointed.
	before, _ := savedSession(t, n, "msvictim")
	pub := v3(t, n.addr, "mspub", true, nil)
	for i := range 5 {
		wait(t, pub.Publish("msv/x", 1, false, fmt.Sprint("m", i)), "publish")
	}
	for got := 0; got < 5; {
		h, body, err := vic.read()
		if err != nil {
			t.Fatal(err)
		}
		if h&0xf0 == 0x30 {
			_, pid, _ := publishOf(body)
			vic.write(pidPacket(0x40, pid))
			got++
		}
	}
	sum := func(m map[string]uint64) (s uint64) {
		for _, v := range m {
			s += v
		}
		return s
	}
	waitFor(t, 10*time.Second, "the victim's positions checkpointed", func() bool {
		after, _ := savedSession(t, n, "msvictim")
		return sum(after.Pos) >= sum(before.Pos)+5
	})
}

// TestMaxSubscriptionsDefaultFitsARecord: the default bound, and any bound
// Validate accepts, keeps a session's subscriptions within its record
// budget, whatever MaxTopicBytes is (found in review).
func TestMaxSubscriptionsDefaultFitsARecord(t *testing.T) {
	n := startNode(t, nil)
	for _, tb := range []int{64, 4096, 5000, maxRecordKeyBytes} {
		c := Config{Broker: n.b, MaxTopicBytes: tb}.WithDefaults()
		if c.MaxSubscriptions < 1 || c.MaxSubscriptions*subRecordBound(tb) > subsRecordBudget {
			t.Errorf("MaxTopicBytes %d: default MaxSubscriptions %d", tb, c.MaxSubscriptions)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("MaxTopicBytes %d: the defaults do not validate: %v", tb, err)
		}
		c.MaxSubscriptions = subsRecordBudget/subRecordBound(tb) + 1
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "MaxSubscriptions") {
			t.Errorf("MaxTopicBytes %d: MaxSubscriptions %d accepted", tb, c.MaxSubscriptions)
		}
	}
}
