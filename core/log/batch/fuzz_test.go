package batch

import (
	"bytes"
	"testing"
)

// FuzzIterator feeds arbitrary bytes to the decoders. They must never panic,
// and whatever decodes must be in canonical form: re-encoding the decoded
// header and messages gives back the input exactly.
func FuzzIterator(f *testing.F) {
	for _, fx := range Fixtures() {
		f.Add(fx.Raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, herr := ParseHeader(b)
		var it Iterator
		if err := it.Init(b); err != nil {
			return
		}
		if herr != nil {
			t.Fatalf("Init accepted a header ParseHeader rejects: %v", herr)
		}
		var msgs []Message
		for it.Next() {
			v := it.View()
			m, err := v.Decode()
			if err != nil {
				fromView(v) // the accessors must not panic on a bad checksum either
				continue
			}
			checkView(t, b, v, &m)
			msgs = append(msgs, m)
		}
		if it.Err() != nil || len(msgs) != int(it.Header().Count) {
			return
		}
		if re := encode(t, it.Header(), msgs); !bytes.Equal(re, b) {
			t.Fatalf("not canonical: re-encoding differs at byte %d", firstDiff(re, b))
		}
	})
}
