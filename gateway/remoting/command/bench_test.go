package command

import (
	"bytes"
	"testing"
)

func BenchmarkDecodeFrame(b *testing.B) {
	for _, name := range []string{"json/request/SEND_MESSAGE_V2", "rocketmq/request/QUERY_CONSUMER_OFFSET"} {
		raw := fixtureBytes(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeFrame(raw, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadFrame(b *testing.B) {
	raw := fixtureBytes(b, "json/request/SEND_MESSAGE_V2")
	r := bytes.NewReader(raw)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		if _, err := ReadFrame(r, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, fx := range Fixtures() {
		if fx.Name != "json/request/SEND_MESSAGE_V2" && fx.Name != "rocketmq/request/QUERY_CONSUMER_OFFSET" {
			continue
		}
		b.Run(fx.Name, func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			b.SetBytes(int64(len(fx.RawBytes)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = AppendFrame(buf[:0], &fx.Command); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func fixtureBytes(b *testing.B, name string) []byte {
	for _, fx := range Fixtures() {
		if fx.Name == name {
			return fx.RawBytes
		}
	}
	b.Fatalf("no fixture %q", name)
	return nil
}
