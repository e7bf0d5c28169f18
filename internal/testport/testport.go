// Package testport picks TCP ports for tests that hand them to other
// processes, which bind them later (and again after a restart).
//
// A port from listen-on-0 comes from the kernel's ephemeral range, the same
// range outgoing connections take their local ports from: between the
// check and the child's bind, any connection on the machine may take it.
// Ports below that range are never handed out implicitly, so a port found
// free there stays free unless another test picks the same one, which the
// random choice over thousands of ports makes unlikely.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

const (
	lowest = 20000
	// fallbackEphemeralStart is Linux's default when /proc says nothing.
	fallbackEphemeralStart = 32768
)

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallbackEphemeralStart
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fallbackEphemeralStart
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= lowest+1000 {
		return fallbackEphemeralStart
	}
	return n
}

// Pick returns n distinct ports, each free on every host right now, from
// below the ephemeral range.
func Pick(hosts []string, n int) ([]int, error) {
	top := ephemeralStart()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries >= 1000 {
			return nil, fmt.Errorf("testport: found %d of %d ports free on %v", len(ports), n, hosts)
		}
		p := lowest + rand.IntN(top-lowest)
		if free(hosts, p) && !contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// Addr returns one "127.0.0.1:port" address, free right now.
func Addr() (string, error) {
	ps, err := Pick([]string{"127.0.0.1"}, 1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ps[0])), nil
}

func free(hosts []string, port int) bool {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		held = append(held, l)
	}
	return true
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
