package broker

import (
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
)

func TestReadMessageByPhysOffset(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "ready", b.Ready)

	// The second message's body is itself a valid encoded message, so an
	// offset inside it decodes cleanly: only the consume-queue cross-check
	// can tell it is not a message start.
	var enc batch.Encoder
	enc.Reset(1, 1)
	inner := batch.Message{Topic: "reads", Body: []byte("forged"),
		Destinations: []batch.Destination{{Topic: "reads", QueueID: 0}}}
	if err := enc.Add(&inner); err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), enc.Bytes()[batch.HeaderBytes:]...)

	sent := []Message{msg("reads", "a", "k1", "first"), msg("reads", "b", "k2", string(forged)), msg("reads", "c", "k3", "third")}
	for i := range sent {
		sent[i].Queue = 0
	}
	res, err := b.Produce(ctx(t), sent)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		m, err := b.ReadMessage(r.PhysOffset)
		if err != nil {
			t.Fatalf("read %d at %d: %v", i, r.PhysOffset, err)
		}
		if string(m.Body()) != string(sent[i].Body) || string(m.Topic()) != "reads" || m.ID() != r.ID || m.PhysOffset != r.PhysOffset {
			t.Fatalf("read %d: body %q topic %q id %x phys %d, want %q / %x / %d", i, m.Body(), m.Topic(), m.ID(), m.PhysOffset, sent[i].Body, r.ID, r.PhysOffset)
		}
		m.Release()
	}

	// Every offset inside a message, and past the end, is an error.
	bad := func(off uint64) {
		t.Helper()
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("ReadMessage(%d) panicked: %v", off, p)
			}
		}()
		if m, err := b.ReadMessage(off); err == nil {
			t.Errorf("ReadMessage(%d) = message %q at %d, want an error", off, m.Body(), m.PhysOffset)
			m.Release()
		}
	}
	for i, r := range res {
		m, err := b.ReadMessage(r.PhysOffset)
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(m.Len())
		m.Release()
		for off := r.PhysOffset + 1; off < r.PhysOffset+n; off++ {
			bad(off)
		}
		if i == len(res)-1 {
			bad(r.PhysOffset + n)
			bad(r.PhysOffset + n + 4096)
			bad(1 << 40)
		}
	}
	bad(0)
}
