package command

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// golden are byte-annotated encodings.
var golden = []struct {
	name string
	cmd  Command
	raw  []byte
}{
	{"create topic", Command{Kind: KindCreateTopic, ID: 0x0102, Topic: "ab", Queues: 8, Perm: 6}, []byte{
		0x43, 0x43, // magic "CC"
		1,          // version
		1,          // kind: create topic
		0, 0, 0, 0, // reserved
		0x02, 0x01, 0, 0, 0, 0, 0, 0, // proposal id 0x0102
		2, 0, 'a', 'b', // topic "ab"
		8, 0, 0, 0, // queues
		6, 0, 0, 0, // perm: read|write
	}},
	{"delete topic", Command{Kind: KindDeleteTopic, ID: 1, Topic: "t"}, []byte{
		0x43, 0x43, 1, 2, 0, 0, 0, 0, // magic, version, kind delete, reserved
		1, 0, 0, 0, 0, 0, 0, 0, // id 1
		1, 0, 't', // topic "t"
	}},
	{"commit offsets", Command{Kind: KindCommitOffsets, ID: 9, Group: "g", Offsets: []Offset{{Topic: "t", Queue: 3, Offset: 42}}}, []byte{
		0x43, 0x43, 1, 3, 0, 0, 0, 0, // magic, version, kind commit, reserved
		9, 0, 0, 0, 0, 0, 0, 0, // id 9
		1, 0, 'g', // group "g"
		1, 0, 0, 0, // one offset
		1, 0, 't', // topic "t"
		3, 0, 0, 0, // queue 3
		42, 0, 0, 0, 0, 0, 0, 0, // offset 42
	}},
	{"settle", Command{Kind: KindSettle, ID: 2, Subscription: "s", Settles: []Settle{{Offset: 5, Outcome: Acked}, {Offset: 6, Outcome: Failed}}}, []byte{
		0x43, 0x43, 1, 4, 0, 0, 0, 0, // magic, version, kind settle, reserved
		2, 0, 0, 0, 0, 0, 0, 0, // id 2
		1, 0, 's', // subscription "s"
		2, 0, 0, 0, // two settles
		5, 0, 0, 0, 0, 0, 0, 0, 1, // offset 5 acked
		6, 0, 0, 0, 0, 0, 0, 0, 2, // offset 6 failed
	}},
	{"subscribe", Command{Kind: KindSubscribe, ID: 3, Subscription: "s", Topic: "t", Queue: 1, StartOffset: 7, AckWaitMs: 30000, MaxDeliveries: 16, DeadLetter: "d"}, []byte{
		0x43, 0x43, 1, 5, 0, 0, 0, 0, // magic, version, kind subscribe, reserved
		3, 0, 0, 0, 0, 0, 0, 0, // id 3
		1, 0, 's', // subscription "s"
		1, 0, 't', // topic "t"
		1, 0, 0, 0, // queue 1
		7, 0, 0, 0, 0, 0, 0, 0, // start offset 7
		0x30, 0x75, 0, 0, // ack wait 30000 ms
		16, 0, 0, 0, // max deliveries
		1, 0, 'd', // dead-letter topic "d"
	}},
	{"unsubscribe", Command{Kind: KindUnsubscribe, ID: 4, Subscription: "s"}, []byte{
		0x43, 0x43, 1, 6, 0, 0, 0, 0, // magic, version, kind unsubscribe, reserved
		4, 0, 0, 0, 0, 0, 0, 0, // id 4
		1, 0, 's', // subscription "s"
	}},
	{"records", Command{Kind: KindRecords, ID: 5, Records: []Record{
		{Op: RecordPut, Namespace: "n", Key: "k", Value: []byte("vv")},
		{Op: RecordDelete, Namespace: "n", Key: "x"},
	}}, []byte{
		0x43, 0x43, 1, 7, 0, 0, 0, 0, // magic, version, kind records, reserved
		5, 0, 0, 0, 0, 0, 0, 0, // id 5
		2, 0, 0, 0, // two records
		1,         // put
		1, 0, 'n', // namespace "n"
		1, 0, 'k', // key "k"
		2, 0, 0, 0, 'v', 'v', // value "vv"
		2,         // delete
		1, 0, 'n', // namespace "n"
		1, 0, 'x', // key "x"
		0, 0, 0, 0, // no value
	}},
	{"schedule", Command{Kind: KindSchedule, ID: 6, Scheds: []Sched{
		{Op: SchedCommit, Phys: 0x1000},
		{Op: SchedChecked, Phys: 8, AtMs: 0x0102},
	}}, []byte{
		0x43, 0x43, 1, 8, 0, 0, 0, 0, // magic, version, kind schedule, reserved
		6, 0, 0, 0, 0, 0, 0, 0, // id 6
		2, 0, 0, 0, // two ops
		1,                         // commit
		0, 0x10, 0, 0, 0, 0, 0, 0, // physical offset 0x1000
		0, 0, 0, 0, 0, 0, 0, 0, // at 0
		3,                      // checked
		8, 0, 0, 0, 0, 0, 0, 0, // physical offset 8
		2, 1, 0, 0, 0, 0, 0, 0, // at 0x0102 ms
	}},
	{"lock queues", Command{Kind: KindLockQueues, ID: 8, LockOp: LockAcquire, Group: "g", Owner: "c",
		AtMs: 0x0102, LeaseMs: 60000, LockQueues: []LockQueue{{Topic: "t", Broker: "b", Queue: 3}}}, []byte{
		0x43, 0x43, 1, 9, 0, 0, 0, 0, // magic, version, kind lock queues, reserved
		8, 0, 0, 0, 0, 0, 0, 0, // id 8
		1,         // acquire
		1, 0, 'g', // group "g"
		1, 0, 'c', // owner "c"
		2, 1, 0, 0, 0, 0, 0, 0, // at 0x0102 ms
		0x60, 0xea, 0, 0, // lease 60000 ms
		1, 0, 0, 0, // one queue
		1, 0, 't', // topic "t"
		1, 0, 'b', // broker "b"
		3, 0, 0, 0, // queue 3
	}},
	{"schedule barrier", Command{Kind: KindSchedule, ID: 7}, []byte{
		0x43, 0x43, 1, 8, 0, 0, 0, 0, // magic, version, kind schedule, reserved
		7, 0, 0, 0, 0, 0, 0, 0, // id 7
		0, 0, 0, 0, // no ops: a barrier
	}},
}

func TestGolden(t *testing.T) {
	for _, g := range golden {
		got, err := Encode(nil, &g.cmd)
		if err != nil || !bytes.Equal(got, g.raw) {
			t.Fatalf("%s: Encode = % x, %v; want % x", g.name, got, err, g.raw)
		}
		dec, err := Decode(g.raw)
		if err != nil || !reflect.DeepEqual(dec, g.cmd) {
			t.Fatalf("%s: Decode = %+v, %v", g.name, dec, err)
		}
		if id, ok := ProposalID(g.raw); !ok || id != g.cmd.ID {
			t.Fatalf("%s: ProposalID = %d, %v", g.name, id, ok)
		}
		for n := range len(g.raw) {
			if _, err := Decode(g.raw[:n]); err == nil {
				t.Fatalf("%s: truncated to %d bytes decoded", g.name, n)
			}
		}
	}
}

func TestRejects(t *testing.T) {
	if _, err := Decode([]byte("CB..")); !errors.Is(err, ErrNotCommand) {
		t.Fatalf("batch magic: %v", err)
	}
	raw := append([]byte(nil), golden[1].raw...)
	if _, err := Decode(append(raw, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	raw[3] = 99
	if _, err := Decode(raw); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown kind: %v", err)
	}
	long := make([]byte, MaxNameBytes+1)
	if _, err := Encode(nil, &Command{Kind: KindDeleteTopic, Topic: string(long)}); err == nil {
		t.Fatal("an oversize name encoded")
	}
	if id, ok := ProposalID([]byte{0x43, 0x42, 1, 1, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}); !ok || id != 7 {
		t.Fatalf("batch ProposalID = %d, %v", id, ok)
	}
}

func FuzzDecode(f *testing.F) {
	for _, g := range golden {
		f.Add(g.raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(nil, &c)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded command does not re-encode to its bytes: % x vs % x (%v)", again, b, err)
		}
	})
}
