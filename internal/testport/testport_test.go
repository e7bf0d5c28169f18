package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestPickGivesDistinctBindablePortsBelowTheEphemeralRange(t *testing.T) {
	ports, err := Pick([]string{"127.0.0.1"}, 20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	top := ephemeralStart()
	for _, p := range ports {
		if p < lowest || p >= top || seen[p] {
			t.Fatalf("port %d: outside [%d, %d) or repeated (%v)", p, lowest, top, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not bindable: %v", p, err)
		}
		_ = l.Close()
	}
	// A port in use is never picked: hold one, ask many times.
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	if free([]string{"127.0.0.1"}, ports[0]) {
		t.Fatalf("port %d reported free while held", ports[0])
	}
}
