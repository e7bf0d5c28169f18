package mqtt

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/conflux-mq/conflux/core/auth"
)

func allow(action, filter string) auth.TopicRule {
	return auth.TopicRule{Allow: true, Action: action, Filter: filter}
}

func deny(action, filter string) auth.TopicRule {
	return auth.TopicRule{Allow: false, Action: action, Filter: filter}
}

// putUser creates or replaces a user (password "" keeps none: it can
// only log in with a certificate) and waits for it to be applied.
func putUser(t *testing.T, n *node, name, password string, rules ...auth.TopicRule) {
	t.Helper()
	u := auth.User{Name: name, MQTT: rules}
	if password != "" {
		h, err := n.b.HashPassword(password)
		if err != nil {
			t.Fatal(err)
		}
		u.PasswordHash = h
	}
	setUser(t, n, u)
}

func setUser(t *testing.T, n *node, u auth.User) {
	t.Helper()
	if err := n.b.PutUser(tctx(t), u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the user applied", func() bool {
		got, ok := n.b.LookupUser(u.Name)
		return ok && slices.Equal(got.MQTT, u.MQTT) && got.PasswordHash == u.PasswordHash
	})
}

// tryV3 connects a paho 3.1.1 client and returns the error of its CONNECT.
func tryV3(t *testing.T, url, id, user, password string) (paho.Client, error) {
	t.Helper()
	if !strings.Contains(url, "://") {
		url = "tcp://" + url
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect %s: no CONNACK", id)
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, tok.Error()
}

// tryV5 connects a paho.golang client over conn (plain or TLS) and
// returns the CONNACK and error.
func tryV5(t *testing.T, conn net.Conn, cp *paho5.Connect) (*v5client, *paho5.Connack, error) {
	t.Helper()
	vc := &v5client{}
	vc.c = paho5.NewClient(paho5.ClientConfig{Conn: conn, ClientID: cp.ClientID,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(r paho5.PublishReceived) (bool, error) {
			vc.mu.Lock()
			vc.in = append(vc.in, r.Packet)
			vc.mu.Unlock()
			return true, nil
		}},
		OnServerDisconnect: func(d *paho5.Disconnect) {
			vc.mu.Lock()
			vc.disc = d
			vc.mu.Unlock()
		}})
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ca, err := vc.c.Connect(tctx(t), cp)
	if err == nil {
		t.Cleanup(func() { _ = vc.c.Disconnect(&paho5.Disconnect{}) })
	}
	return vc, ca, err
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// loginV5 connects a paho.golang client with a user name and password.
func loginV5(t *testing.T, addr, id, user, password string) (*v5client, *paho5.Connack, error) {
	t.Helper()
	cp := &paho5.Connect{ClientID: id, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if password != "" {
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	return tryV5(t, dialTCP(t, addr), cp)
}

// rawConnack sends a hand-made CONNECT body and returns the CONNACK's
// return or reason code.
func rawConnack(t *testing.T, addr string, body []byte) byte {
	t.Helper()
	r := dialRaw(t, addr)
	r.write(frame(0x10, body))
	h, b, err := r.read()
	if err != nil || h != 0x20 || len(b) < 2 {
		t.Fatalf("CONNACK: header %#x body %v err %v", h, b, err)
	}
	return b[1]
}

// connectBody builds a CONNECT body with a user name and a password
// field (present even when empty).
func connectBody(version byte, id, user, password string) []byte {
	body := append(str16("MQTT"), version, 0xC2, 0, 30) // user name, password, clean
	if version == 5 {
		body = append(body, 0) // no properties
	}
	body = append(body, str16(id)...)
	body = append(body, str16(user)...)
	return append(body, str16(password)...)
}

// TestAuthLogin: user name and password logins with paho 3.1.1 and
// paho.golang (MQTT 5): a wrong password and an unknown user get CONNACK
// 0x04 (MQTT 5: 0x86), the right one gets in, a client without
// credentials from loopback is guest. An empty password is checked like
// any other (mochi alone answers 0x82, which 3.1.1 does not have).
func TestAuthLogin(t *testing.T) {
	var logs lockedBuffer
	n := startNode(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	putUser(t, n, "dev", "s3cret", allow(auth.ActAll, "#"))

	for _, c := range []struct{ name, user, pass string }{
		{"wrong password", "dev", "wrong"},
		{"unknown user", "nobody", "s3cret"},
		{"guest's password from loopback is fine, a wrong one is not", "guest", "nope"},
	} {
		t.Run("v3 "+c.name, func(t *testing.T) {
			if _, err := tryV3(t, n.addr, "v3bad", c.user, c.pass); !errors.Is(err, pahopackets.ErrorRefusedBadUsernameOrPassword) {
				t.Fatalf("CONNECT %s/%s: %v, want bad user name or password (0x04)", c.user, c.pass, err)
			}
		})
		t.Run("v5 "+c.name, func(t *testing.T) {
			_, ca, err := loginV5(t, n.addr, "v5bad", c.user, c.pass)
			if err == nil || ca == nil || ca.ReasonCode != 0x86 {
				t.Fatalf("CONNECT %s/%s: %+v %v, want CONNACK 0x86", c.user, c.pass, ca, err)
			}
		})
	}

	t.Run("refusals are logged without the password", func(t *testing.T) {
		if _, err := tryV3(t, n.addr, "v3log", "dev", "Guess-4711"); err == nil {
			t.Fatal("a wrong password got in")
		}
		waitFor(t, 5*time.Second, "the log line", func() bool {
			return strings.Contains(logs.String(), `msg="MQTT login refused" user=dev method=password addr=127.0.0.1:`)
		})
		if strings.Contains(logs.String(), "Guess-4711") {
			t.Fatal("the log has the password")
		}
	})

	t.Run("right password", func(t *testing.T) {
		if _, err := tryV3(t, n.addr, "v3good", "dev", "s3cret"); err != nil {
			t.Fatalf("v3: %v", err)
		}
		if _, ca, err := loginV5(t, n.addr, "v5good", "dev", "s3cret"); err != nil || ca.ReasonCode != 0 {
			t.Fatalf("v5: %+v %v", ca, err)
		}
		if cl, ok := n.srv.Mochi().Clients.Get("v5good"); !ok || string(cl.Properties.Username) != "dev" {
			t.Fatal("the v5 client is not logged in as dev")
		}
	})

	t.Run("anonymous from loopback is guest", func(t *testing.T) {
		if _, err := tryV3(t, n.addr, "v3anon", "", ""); err != nil {
			t.Fatalf("v3: %v", err)
		}
		if _, ca, err := loginV5(t, n.addr, "v5anon", "", ""); err != nil || ca.ReasonCode != 0 {
			t.Fatalf("v5: %+v %v", ca, err)
		}
		if cl, ok := n.srv.Mochi().Clients.Get("v5anon"); !ok || string(cl.Properties.Username) != "guest" {
			t.Fatal("the anonymous client is not logged in as guest")
		}
	})

	t.Run("empty password", func(t *testing.T) {
		if rc := rawConnack(t, n.addr, connectBody(4, "v3empty", "dev", "")); rc != 0x04 {
			t.Fatalf("3.1.1 CONNECT with an empty password: CONNACK %#x, want 0x04", rc)
		}
		if rc := rawConnack(t, n.addr, connectBody(5, "v5empty", "dev", "")); rc != 0x86 {
			t.Fatalf("MQTT 5 CONNECT with an empty password: CONNACK %#x, want 0x86", rc)
		}
		// The rewritten CONNECT is still read right: a user whose
		// password is right gets in through the same path.
		if rc := rawConnack(t, n.addr, connectBody(4, "v3raw", "dev", "s3cret")); rc != 0 {
			t.Fatalf("3.1.1 CONNECT with the right password: CONNACK %#x", rc)
		}
	})

	t.Run("v5 password without a user name", func(t *testing.T) {
		_, ca, err := tryV5(t, dialTCP(t, n.addr), &paho5.Connect{ClientID: "v5pw", CleanStart: true,
			Password: []byte("s3cret"), PasswordFlag: true})
		if err == nil || ca == nil || ca.ReasonCode != 0x86 {
			t.Fatalf("CONNECT: %+v %v, want CONNACK 0x86", ca, err)
		}
	})

	t.Run("v5 enhanced authentication is not offered", func(t *testing.T) {
		_, ca, err := tryV5(t, dialTCP(t, n.addr), &paho5.Connect{ClientID: "v5am", CleanStart: true,
			Properties: &paho5.ConnectProperties{AuthMethod: "SCRAM-SHA-1", AuthData: []byte("x")}})
		if err == nil || ca == nil || ca.ReasonCode != 0x8C {
			t.Fatalf("CONNECT: %+v %v, want CONNACK 0x8C", ca, err)
		}
	})

	t.Run("will the user may not publish", func(t *testing.T) {
		putUser(t, n, "willer", "pw", allow(auth.ActPublish, "wills/%u"))
		o := func(topic string) *paho5.Connect {
			return &paho5.Connect{ClientID: "willer", CleanStart: true, Username: "willer", UsernameFlag: true,
				Password: []byte("pw"), PasswordFlag: true, WillMessage: &paho5.WillMessage{Topic: topic, Payload: []byte("gone")}}
		}
		if _, ca, err := tryV5(t, dialTCP(t, n.addr), o("wills/other")); err == nil || ca == nil || ca.ReasonCode != 0x87 {
			t.Fatalf("CONNECT with a forbidden will: %+v %v, want CONNACK 0x87", ca, err)
		}
		if _, ca, err := tryV5(t, dialTCP(t, n.addr), o("wills/willer")); err != nil || ca.ReasonCode != 0 {
			t.Fatalf("CONNECT with an allowed will: %+v %v", ca, err)
		}
		opts := paho.NewClientOptions().AddBroker("tcp://"+n.addr).SetClientID("willer3").SetUsername("willer").
			SetPassword("pw").SetWill("wills/other", "gone", 0, false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		tok := paho.NewClient(opts).Connect()
		if !tok.WaitTimeout(10*time.Second) || !errors.Is(tok.Error(), pahopackets.ErrorRefusedNotAuthorised) {
			t.Fatalf("3.1.1 CONNECT with a forbidden will: %v, want not authorised (0x05)", tok.Error())
		}
	})
}

// TestAuthAnonymous: the anonymous user is configurable and may be
// refused; refusals are CONNACK 0x05 (MQTT 5: 0x87).
func TestAuthAnonymous(t *testing.T) {
	t.Run("AnonymousUser", func(t *testing.T) {
		n := startNode(t, func(c *Config) { c.AnonymousUser = "anon" })
		if _, err := tryV3(t, n.addr, "a3", "", ""); !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
			t.Fatalf("anonymous before the user exists: %v, want not authorised (0x05)", err)
		}
		putUser(t, n, "anon", "", allow(auth.ActAll, "public/#"))
		c, ca, err := loginV5(t, n.addr, "a5", "", "")
		if err != nil || ca.ReasonCode != 0 {
			t.Fatalf("anonymous once the user exists: %+v %v", ca, err)
		}
		// It has anon's rules, not guest's.
		if res, err := c.c.Publish(tctx(t), &paho5.Publish{Topic: "private/x", QoS: 1, Payload: []byte("x")}); err == nil || res == nil || res.ReasonCode != 0x87 {
			t.Fatalf("anonymous publish outside anon's rules: %+v %v, want 0x87", res, err)
		}
		if _, err := c.c.Publish(tctx(t), &paho5.Publish{Topic: "public/x", QoS: 1, Payload: []byte("x")}); err != nil {
			t.Fatalf("anonymous publish within anon's rules: %v", err)
		}
	})
	t.Run("NoAnonymous", func(t *testing.T) {
		n := startNode(t, func(c *Config) { c.NoAnonymous = true })
		if _, ca, err := loginV5(t, n.addr, "a5", "", ""); err == nil || ca == nil || ca.ReasonCode != 0x87 {
			t.Fatalf("anonymous: %+v %v, want CONNACK 0x87", ca, err)
		}
		if _, err := tryV3(t, n.addr, "g3", "guest", "guest"); err != nil {
			t.Fatalf("guest with its password: %v", err)
		}
	})
}

// TestACL: a user's MQTT rules, with %u and %c, for paho.golang (MQTT 5)
// and paho 3.1.1 clients. MQTT 5: a refused QoS 1/2 publish gets 0x87 in
// its PUBACK/PUBREC and the connection stays, a refused QoS 0 one is
// dropped; a refused filter gets 0x87 in the SUBACK. 3.1.1: a refused
// QoS 1/2 publish closes the connection (after the publishes before it),
// a refused filter gets 0x80. A $share subscription is checked on its
// filter. A permission taken away applies to the next packet.
func TestACL(t *testing.T) {
	n := startNode(t, nil)
	rules := []auth.TopicRule{
		allow(auth.ActAll, "users/%u/#"),
		allow(auth.ActPublish, "clients/%c/out"),
		allow(auth.ActSubscribe, "clients/%c/in/#"),
		deny(auth.ActSubscribe, "shared/secret"),
		allow(auth.ActSubscribe, "shared/#"),
	}
	putUser(t, n, "dev", "pw", rules...)
	// guest (an administrator without rules) sees everything stored.
	watch, _ := dialV5(t, n.addr, "watch", true, 0)
	if _, err := watch.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
		{Topic: "users/#", QoS: 1}, {Topic: "clients/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	seen := func() []string {
		var out []string
		for _, p := range watch.received() {
			out = append(out, p.Topic+"="+string(p.Payload))
		}
		return out
	}

	t.Run("v5", func(t *testing.T) {
		c, _, err := loginV5(t, n.addr, "c1", "dev", "pw")
		if err != nil {
			t.Fatal(err)
		}
		pub := func(topic string, qos byte) (*paho5.PublishResponse, error) {
			return c.c.Publish(tctx(t), &paho5.Publish{Topic: topic, QoS: qos, Payload: []byte("v5")})
		}
		for _, ok := range []string{"users/dev/a", "clients/c1/out"} {
			if res, err := pub(ok, 1); err != nil || res.ReasonCode != 0 {
				t.Fatalf("publish %s: %+v %v", ok, res, err)
			}
		}
		for _, x := range []struct {
			topic string
			qos   byte
		}{{"users/other/a", 1}, {"users/other/b", 2}, {"clients/c2/out", 1}, {"clients/c1/in/x", 2}} {
			res, err := pub(x.topic, x.qos)
			if res == nil || res.ReasonCode != 0x87 || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("QoS %d publish to %s: %+v %v, want 0x87", x.qos, x.topic, res, err)
			}
		}
		if _, err := pub("users/other/qos0", 0); err != nil {
			t.Fatal(err)
		}
		if res, err := pub("users/dev/after", 1); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish after the refusals: %+v %v", res, err)
		}
		if cl, ok := n.srv.Mochi().Clients.Get("c1"); !ok || cl.Closed() || cl.State.Inflight.Len() != 0 {
			t.Fatal("the connection closed, or kept inflight records for refused publishes")
		}

		sa, err := c.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
			{Topic: "users/dev/#", QoS: 1}, {Topic: "users/other/#", QoS: 1},
			{Topic: "clients/c1/in/#", QoS: 1}, {Topic: "clients/c2/in/#", QoS: 1},
			{Topic: "$share/g/shared/x", QoS: 1}, {Topic: "$share/g/shared/secret", QoS: 1},
			{Topic: "shared/secret", QoS: 1}, {Topic: "#", QoS: 0},
		}})
		// (paho.golang reports a SUBACK with a refusal as an error too.)
		if sa == nil || !slices.Equal(sa.Reasons, []byte{1, 0x87, 1, 0x87, 1, 0x87, 0x87, 0x87}) {
			t.Fatalf("SUBACK %+v %v, want [1 0x87 1 0x87 1 0x87 0x87 0x87]", sa, err)
		}
		cl, _ := n.srv.Mochi().Clients.Get("c1")
		if got := cl.State.Subscriptions.Len(); got != 3 {
			t.Fatalf("%d subscriptions in mochi, want the 3 granted", got)
		}
	})

	t.Run("v3", func(t *testing.T) {
		lost := make(chan error, 1)
		c := v3(t, n.addr, "c3", true, func(o *paho.ClientOptions) {
			o.SetUsername("dev").SetPassword("pw").SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		})
		tok := c.SubscribeMultiple(map[string]byte{"users/dev/#": 1, "users/other/#": 1, "$share/g/shared/secret": 0}, nil)
		wait(t, tok, "subscribe")
		want := map[string]byte{"users/dev/#": 1, "users/other/#": 0x80, "$share/g/shared/secret": 0x80}
		if got := tok.(*paho.SubscribeToken).Result(); len(got) != len(want) || got["users/dev/#"] != 1 ||
			got["users/other/#"] != 0x80 || got["$share/g/shared/secret"] != 0x80 {
			t.Fatalf("SUBACK %v, want %v", got, want)
		}
		// QoS 0: dropped, the connection stays.
		wait(t, c.Publish("users/other/qos0", 0, false, "v3"), "QoS 0 publish")
		wait(t, c.Publish("users/dev/v3", 1, false, "v3"), "allowed QoS 1 publish")
		// QoS 1: the connection closes; paho 3.1.1 never gets the PUBACK.
		c.Publish("users/other/v3", 1, false, "v3")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection stayed open after a refused QoS 1 publish")
		}
	})

	// What was stored: the allowed publishes only.
	want := []string{"users/dev/a=v5", "clients/c1/out=v5", "users/dev/after=v5", "users/dev/v3=v3"}
	waitFor(t, 10*time.Second, "the allowed publishes", func() bool { return len(seen()) >= len(want) })
	consistently(t, 300*time.Millisecond, "nothing else", func() bool { return len(seen()) == len(want) })
	if got := seen(); !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("delivered %q, want %q", got, want)
	}

	t.Run("revoked while connected", func(t *testing.T) {
		c, _, err := loginV5(t, n.addr, "c4", "dev", "pw")
		if err != nil {
			t.Fatal(err)
		}
		sub := func(f string) byte {
			sa, err := c.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: f, QoS: 1}}})
			if sa == nil || len(sa.Reasons) != 1 {
				t.Fatalf("subscribe %s: %+v %v", f, sa, err)
			}
			return sa.Reasons[0]
		}
		if rc := sub("users/dev/one"); rc != 1 {
			t.Fatalf("SUBACK %#x before the change", rc)
		}
		putUser(t, n, "dev", "pw", rules[1:]...) // users/%u/# taken away
		if rc := sub("users/dev/two"); rc != 0x87 {
			t.Fatalf("SUBACK %#x after the permission was taken away, want 0x87", rc)
		}
		if res, err := c.c.Publish(tctx(t), &paho5.Publish{Topic: "users/dev/x", QoS: 1, Payload: []byte("x")}); res == nil || res.ReasonCode != 0x87 {
			t.Fatalf("publish after the permission was taken away: %+v %v, want 0x87", res, err)
		}
		putUser(t, n, "dev", "pw", rules...)
		if rc := sub("users/dev/three"); rc != 1 {
			t.Fatalf("SUBACK %#x after the permission came back", rc)
		}
	})
}

// TestACLNoSubscribe is how the Eclipse Paho interoperability suites'
// test_subscribe_failure passes: the default administrator gets the rules
// of docs/security.md (conflux admin mqtt-acl set guest --rule 'deny
// subscribe test/nosubscribe' --rule 'allow all #'). 3.1.1 gets 0x80;
// MQTT 5 gets 0x87, or 0x80 with ObscureNotAuthorized (client_test5.py
// asserts 0x80).
func TestACLNoSubscribe(t *testing.T) {
	for _, obscure := range []bool{false, true} {
		n := startNode(t, func(c *Config) { c.ObscureNotAuthorized = obscure })
		g, _ := n.b.LookupUser(guestUser)
		g.MQTT = []auth.TopicRule{deny(auth.ActSubscribe, "test/nosubscribe"), allow(auth.ActAll, "#")}
		setUser(t, n, g)

		c3 := v3(t, n.addr, "myclientid", true, nil)
		tok := c3.SubscribeMultiple(map[string]byte{"test/nosubscribe": 2, "TopicA": 2}, nil)
		wait(t, tok, "subscribe")
		if got := tok.(*paho.SubscribeToken).Result(); got["test/nosubscribe"] != 0x80 || got["TopicA"] != 2 {
			t.Fatalf("3.1.1 SUBACK %v, want test/nosubscribe 0x80 and TopicA 2", got)
		}
		c5, _ := dialV5(t, n.addr, "myclientid2", true, 0)
		sa, err := c5.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
			{Topic: "test/nosubscribe", QoS: 2}, {Topic: "TopicA", QoS: 2}}})
		want := byte(0x87)
		if obscure {
			want = 0x80
		}
		if sa == nil || !slices.Equal(sa.Reasons, []byte{want, 2}) {
			t.Fatalf("MQTT 5 SUBACK (ObscureNotAuthorized %v) %+v %v, want [%#x 2]", obscure, sa, err, want)
		}
		// Publishing there is still allowed.
		if _, err := c5.c.Publish(tctx(t), &paho5.Publish{Topic: "test/nosubscribe", QoS: 1, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestACLSessionResume: a persistent session taken up by a client
// logging in as another user keeps only the subscriptions that user may
// have: whether resumed from its saved record or taken over from a live
// connection on the same node.
func TestACLSessionResume(t *testing.T) {
	n := startNode(t, nil)
	putUser(t, n, "alice", "pw", allow(auth.ActAll, "#"))
	putUser(t, n, "bob", "pw", allow(auth.ActAll, "b/#"))
	expiry := uint32(3600)
	login := func(id, user string, clean bool) (*v5client, *paho5.Connack) {
		cp := &paho5.Connect{ClientID: id, CleanStart: clean, Username: user, UsernameFlag: true,
			Password: []byte("pw"), PasswordFlag: true, Properties: &paho5.ConnectProperties{SessionExpiryInterval: &expiry}}
		c, ca, err := tryV5(t, dialTCP(t, n.addr), cp)
		if err != nil {
			t.Fatalf("%s as %s: %+v %v", id, user, ca, err)
		}
		return c, ca
	}
	filters := func(id string) []string {
		cl, ok := n.srv.Mochi().Clients.Get(id)
		if !ok {
			return nil
		}
		var out []string
		for f := range cl.State.Subscriptions.GetAll() {
			out = append(out, f)
		}
		slices.Sort(out)
		return out
	}
	subscribeAll := func(c *v5client) {
		sa, err := c.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
			{Topic: "a/#", QoS: 1}, {Topic: "b/#", QoS: 1}}})
		if err != nil || !slices.Equal(sa.Reasons, []byte{1, 1}) {
			t.Fatalf("SUBACK %+v %v", sa, err)
		}
	}

	t.Run("resumed from the record", func(t *testing.T) {
		a, _ := login("s1", "alice", true)
		subscribeAll(a)
		if err := a.c.Disconnect(&paho5.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the session saved", func() bool { _, ok := n.b.Record(nsSessions, "s1"); return ok && len(filters("s1")) == 0 })
		b, ca := login("s1", "bob", false)
		if !ca.SessionPresent {
			t.Fatal("session not present")
		}
		waitFor(t, 10*time.Second, "the resumed subscriptions", func() bool { return len(filters("s1")) > 0 })
		if got := filters("s1"); !slices.Equal(got, []string{"b/#"}) {
			t.Fatalf("subscriptions %q, want only b/#", got)
		}
		g, _ := dialV5(t, n.addr, "g1", true, 0)
		for _, topic := range []string{"a/x", "b/x"} {
			if _, err := g.c.Publish(tctx(t), &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, "b/x", func() bool { return len(b.received()) >= 1 })
		consistently(t, 300*time.Millisecond, "nothing from a/#", func() bool { return len(b.received()) == 1 })
	})

	t.Run("taken over from a live connection", func(t *testing.T) {
		a, _ := login("s2", "alice", true)
		subscribeAll(a)
		_, ca := login("s2", "bob", false)
		if !ca.SessionPresent {
			t.Fatal("session not present")
		}
		if got := filters("s2"); !slices.Equal(got, []string{"b/#"}) {
			t.Fatalf("subscriptions %q, want only b/#", got)
		}
	})
}

// lockedBuffer collects a logger's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
