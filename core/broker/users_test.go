package broker

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
)

var (
	loopback = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	remote   = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5000} // TEST-NET-1: an address, never dialled
)

// cheapHash keeps password hashing fast in tests.
func cheapHash(c *Config) { c.Auth.Hash = auth.HashParams{MemoryKiB: 64, Time: 1, Threads: 1} }

func TestDefaultUserAndLogins(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cheapHash(&cfg)
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "the default user", func() bool { u, ok := b.LookupUser("guest"); return ok && u.PasswordHash != "" })
	u, err := b.Authenticate("guest", "guest", loopback)
	if err != nil || !u.IsAdmin() {
		t.Fatalf("guest from loopback: %+v, %v", u, err)
	}
	if _, err := b.Authenticate("guest", "guest", remote); !errors.Is(err, ErrLoopbackOnly) {
		t.Fatalf("guest from another host: %v, want ErrLoopbackOnly", err)
	}
	if _, err := b.Authenticate("guest", "wrong", loopback); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := b.Authenticate("mallory", "guest", loopback); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("unknown user: %v", err)
	}
	stored, _ := b.LookupUser("guest")
	if stored.PasswordHash == "" || stored.PasswordHash == "guest" {
		t.Fatalf("the password is not stored as a hash: %q", stored.PasswordHash)
	}

	// A new user; then a changed password: the old one stops working at
	// once, even though it was verified (and cached) before.
	h, err := b.HashPassword("pw1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutUser(ctx(t), auth.User{Name: "dev", PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate("dev", "pw1", remote); err != nil {
		t.Fatalf("new user from another host: %v", err)
	}
	h2, _ := b.HashPassword("pw2")
	if err := b.PutUser(ctx(t), auth.User{Name: "dev", PasswordHash: h2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate("dev", "pw1", remote); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("old password after a change: %v", err)
	}
	if _, err := b.Authenticate("dev", "pw2", remote); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := b.DeleteUser(ctx(t), "dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate("dev", "pw2", remote); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("deleted user: %v", err)
	}
	if err := b.PutUser(ctx(t), auth.User{Name: "bad:name"}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("invalid user stored: %v", err)
	}
}

func TestDefaultUserReplacedAndNotRecreated(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cheapHash(&cfg)
	cfg.Auth.DefaultUser, cfg.Auth.DefaultPassword = "admin", "s3cret"
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the default user", func() bool { u, ok := b.LookupUser("admin"); return ok && u.PasswordHash != "" })
	if _, ok := b.LookupUser("guest"); ok {
		t.Fatal("guest exists although another default user was set")
	}
	if _, err := b.Authenticate("admin", "s3cret", remote); err != nil {
		t.Fatalf("the configured default user: %v", err)
	}
	if u, _ := b.LookupUser("admin"); u.RocketSecret != "" {
		t.Fatal("the default user got a RocketMQ secret key that was not configured")
	}
	if err := b.DeleteUser(ctx(t), "admin"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A restart must not bring the deleted default user back.
	b = openBroker(t, cfg)
	waitFor(t, 10*time.Second, "ready", b.Ready)
	if _, err := b.Authenticate("admin", "s3cret", loopback); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("deleted default user after a restart: %v", err)
	}
}

func TestFailedLoginsAreRateLimited(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cheapHash(&cfg)
	cfg.Auth.FailuresPerMinute = 5
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "the default user", func() bool { u, ok := b.LookupUser("guest"); return ok && u.PasswordHash != "" })
	for i := range 5 {
		if _, err := b.Authenticate("guest", "nope", loopback); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	// Even the right password is refused from that address now...
	if _, err := b.Authenticate("guest", "guest", loopback); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("after 5 failures: %v, want ErrTooManyFailures", err)
	}
	// ...but not from another one.
	other := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	if _, err := b.Authenticate("guest", "guest", other); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

// TestUserOnEveryNode: a user created through one node logs in on the
// others as soon as the change is applied there.
func TestUserOnEveryNode(t *testing.T) {
	bs, _ := openCluster(t, cheapHash)
	waitFor(t, 15*time.Second, "a leader", func() bool { return leaderIndex(bs) >= 0 })
	follower := bs[(leaderIndex(bs)+1)%3]
	h, _ := follower.HashPassword("pw")
	if err := follower.PutUser(ctx(t), auth.User{Name: "fleet", PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	for i, b := range bs {
		waitFor(t, 10*time.Second, "the user on every node", func() bool { _, ok := b.LookupUser("fleet"); return ok })
		if _, err := b.Authenticate("fleet", "pw", remote); err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
}

// TestFirstUserChangeKeepsTheDefaultUser: a user stored before the leader
// got round to creating the default user must not leave the cluster
// without it.
func TestFirstUserChangeKeepsTheDefaultUser(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cheapHash(&cfg)
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	h, _ := b.HashPassword("pw")
	// Right away: the bootstrap loop may not have run yet.
	if err := b.PutUser(ctx(t), auth.User{Name: "first", PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	if u, ok := b.LookupUser("guest"); !ok || u.PasswordHash == "" {
		t.Fatal("the first user change left the cluster without its stored default user")
	}
	if _, err := b.Authenticate("guest", "guest", loopback); err != nil {
		t.Fatalf("default user after the first change: %v", err)
	}
}
