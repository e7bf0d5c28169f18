package tcpproxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond) // the polling interval
	}
}

func testLogger() *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// echoServer echoes every connection back, and closes its side after the
// client's EOF.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.wg.Wait()
	})
	return e
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", target, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads the echo back.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
}

// expectClosed reads until the proxy closes c; a timeout means it did not.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection was not closed")
	}
}

// TestForward: bytes go both ways, a large payload arrives intact while the
// echo streams back, and a half-close travels through.
func TestForward(t *testing.T) {
	e := newEchoServer(t)
	p := newProxy(t, e.ln.Addr().String())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("hello"))

	big := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	var w sync.WaitGroup
	w.Go(func() {
		if _, err := c.Write(big); err != nil {
			t.Error(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Error(err)
		}
	})
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // ends with the echo server's EOF
	w.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("got %d bytes back, want %d, equal %v", len(got), len(big), bytes.Equal(got, big))
	}
	waitFor(t, 5*time.Second, func() bool {
		conns, n := p.Stats()
		return conns == 0 && n == 2*int64(len(big)+len("hello"))
	})
}

// TestCutHeal: Cut breaks a live connection and refuses new ones without
// reaching the target; Heal lets new connections through again.
func TestCutHeal(t *testing.T) {
	e := newEchoServer(t)
	p := newProxy(t, e.ln.Addr().String())
	live := dial(t, p.Addr())
	roundTrip(t, live, []byte("before"))
	if conns, _ := p.Stats(); conns != 1 {
		t.Fatalf("%d live connections, want 1", conns)
	}

	p.Cut()
	expectClosed(t, live)
	refused := dial(t, p.Addr())
	expectClosed(t, refused)
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("the target accepted %d connections, want 1", n)
	}
	waitFor(t, 5*time.Second, func() bool { conns, _ := p.Stats(); return conns == 0 })

	p.Heal()
	roundTrip(t, dial(t, p.Addr()), []byte("after"))
}

// TestDelay: with a delay each direction of a round trip waits it out;
// without, it does not.
func TestDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	e := newEchoServer(t)
	p := newProxy(t, e.ln.Addr().String())
	c := dial(t, p.Addr())
	p.SetDelay(delay)
	start := time.Now()
	roundTrip(t, c, []byte("slow"))
	if d := time.Since(start); d < 2*delay {
		t.Fatalf("round trip took %v, want at least %v", d, 2*delay)
	}
	p.SetDelay(0)
	start = time.Now()
	roundTrip(t, c, []byte("fast"))
	if d := time.Since(start); d >= 2*delay {
		t.Fatalf("round trip without delay took %v", d)
	}
}

// TestUnreachableTarget: a client of a proxy whose target is down gets a
// closed connection.
func TestUnreachableTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p := newProxy(t, target)
	expectClosed(t, dial(t, p.Addr()))
}

// TestCloseNoLeak: Close with live connections, some with chunks waiting out
// a delay, returns every goroutine.
func TestCloseNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("busy", func(t *testing.T) {
		e := newEchoServer(t)
		p := newProxy(t, e.ln.Addr().String())
		for range 3 {
			roundTrip(t, dial(t, p.Addr()), []byte("x"))
		}
		p.SetDelay(time.Hour)
		if _, err := dial(t, p.Addr()).Write([]byte("stuck in the delay")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() bool { conns, _ := p.Stats(); return conns == 4 })
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	})
	waitFor(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= base })
}
