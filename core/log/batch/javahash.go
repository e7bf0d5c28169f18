package batch

import "unicode/utf16"

// JavaStringHash returns Java's String.hashCode of s, widened to int64, as
// RocketMQ computes a message's tag hash. Java hashes UTF-16 code units, so a
// rune outside the Basic Multilingual Plane counts as its surrogate pair.
// Invalid UTF-8 hashes as U+FFFD per bad byte, as Go decodes it; Java's own
// decoder may group malformed bytes differently.
func JavaStringHash(s string) int64 {
	var h int32 // Java int arithmetic: wraps on overflow
	for _, r := range s {
		if r < 0x10000 {
			h = 31*h + r
			continue
		}
		hi, lo := utf16.EncodeRune(r)
		h = 31*(31*h+hi) + lo
	}
	return int64(h)
}
