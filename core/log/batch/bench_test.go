package batch

import (
	"fmt"
	"testing"
)

// messages64x1KiB is a producer batch of typical messages with 1 KiB bodies.
func messages64x1KiB() []Message {
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i] = Message{
			ID:         [16]byte{byte(i)},
			BornUnixMs: 1700000000000,
			BornHost:   "10.0.0.1:5555",
			Topic:      "orders",
			Tags:       "TagA",
			Keys:       []string{fmt.Sprintf("order-%d", i)},
			Properties: []Property{{Key: "UNIQ_KEY", Value: "0A00000100002A9F0000000000000001"}, {Key: "WAIT", Value: "true"}},
			Destinations: []Destination{
				{Topic: "orders", QueueID: uint32(i % 8), QueueOffset: uint64(i), TagHash: JavaStringHash("TagA")},
			},
			Body: make([]byte, 1024),
		}
	}
	return msgs
}

func BenchmarkEncode64x1KiB(b *testing.B) {
	msgs := messages64x1KiB()
	var e Encoder
	b.SetBytes(int64(len(encode(b, Header{}, msgs))))
	b.ReportAllocs()
	for b.Loop() {
		e.Reset(1, 1700000000000)
		for i := range msgs {
			if err := e.Add(&msgs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIterate64x1KiB measures the structural validation every replica
// runs on apply, touching the fields an index needs. It does not check body
// checksums.
func BenchmarkIterate64x1KiB(b *testing.B) {
	raw := encode(b, Header{}, messages64x1KiB())
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	var it Iterator
	for b.Loop() {
		if err := it.Init(raw); err != nil {
			b.Fatal(err)
		}
		n := 0
		for it.Next() {
			v := it.View()
			for _, d := range v.Destinations {
				n += int(d.QueueID) + len(d.Topic)
			}
			n += len(v.Tags())
		}
		if it.Err() != nil || n == 0 {
			b.Fatal(it.Err())
		}
	}
}
