package amqp

import (
	"strings"
	"testing"
)

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, key string
		want         bool
	}{
		{"site1.*.temp", "site1.dev42.temp", true},
		{"site1.*.temp", "site1.dev42.hum", false},
		{"site1.*.temp", "site1.temp", false},
		{"#", "", true},
		{"#.#", "", true},
		{"*", "", false},
		{"", "", true},
		{"", "a", false},
		{"a.#", "a", true},
		{"a.#", "a.b.c", true},
		{"#.c", "a.b.c", true},
		{"a.#.c", "a.c", true},
		{"a.#.c", "a.b.b.c", true},
		{"a.*.b", "a..b", true},
		{"a.#.b", "a..b", true},
		{"a.b", "a..b", false},
		{"A.b", "a.b", false},
		{"*.*", "a.b", true},
		{"*.*", "a.b.c", false},
		{"#.*", "", false},
		{"#.*", "x", true},
	} {
		if got := topicMatch(strings.Split(c.pattern, "."), strings.Split(c.key, ".")); got != c.want {
			t.Errorf("topicMatch(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// TestTopicMatchHostilePattern: 200 "#" against a 201-word key. A
// backtracking matcher needs 30 s at 8 of them and would never finish
// this (the package's test timeout fails it); the table takes P·W steps.
func TestTopicMatchHostilePattern(t *testing.T) {
	pattern := strings.Split(strings.Repeat("#.a.", 200)+"b", ".")
	key := strings.Split(strings.Repeat("a.", 200)+"a", ".")
	if topicMatch(pattern, key) {
		t.Fatal("matched a key without the final word")
	}
	if !topicMatch(pattern, append(key, "b")) {
		t.Fatal("did not match the key with the final word")
	}
}
