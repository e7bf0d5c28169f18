package amqp

import (
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// cheapHash keeps the tests' password hashing fast.
var cheapHash = auth.HashParams{MemoryKiB: 64, Time: 1, Threads: 1}

// startAuthNode is startNode with cheap password hashes, once the cluster
// has its default user.
func startAuthNode(t *testing.T) *node {
	t.Helper()
	n := startNodeWith(t, func(c *broker.Config) { c.Auth.Hash = cheapHash }, nil)
	waitBootstrapped(t, n)
	return n
}

// waitBootstrapped waits for the default user's record: a user stored
// before it would keep the broker from creating guest at all.
func waitBootstrapped(t *testing.T, n *node) {
	t.Helper()
	waitFor(t, 10*time.Second, "the default user", func() bool { _, ok := n.b.LookupUser("guest"); return ok })
}

// addr is the node's door, host:port.
func (n *node) addr() string {
	return strings.TrimSuffix(strings.TrimPrefix(n.url, "amqp://guest:guest@"), "/")
}

// putUser stores u with password and waits until this node has it.
func putUser(t *testing.T, n *node, u auth.User, password string) {
	t.Helper()
	h, err := n.b.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	u.PasswordHash = h
	if err := n.b.PutUser(ctx(t), u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the user applied", func() bool {
		got, ok := n.b.LookupUser(u.Name)
		return ok && got.PasswordHash == h && len(got.VHosts) == len(u.VHosts) && len(got.MQTT) == len(u.MQTT)
	})
}

// userURL is the node's URL for user and password, on vhost.
func userURL(n *node, user, password, vhost string) string {
	return "amqp://" + url.UserPassword(user, password).String() + "@" + n.addr() + "/" + url.PathEscape(vhost)
}

func dialErr(url string, sasl ...amqp091.Authentication) error {
	c, err := amqp091.DialConfig(url, amqp091.Config{SASL: sasl, Dial: amqp091.DefaultDial(5 * time.Second)})
	if err == nil {
		_ = c.Close()
	}
	return err
}

// wantCode checks an error is the server's reply code with text
// containing want.
func wantCode(t *testing.T, err error, code int, want string) {
	t.Helper()
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != code || !strings.Contains(ae.Reason, want) {
		t.Fatalf("got %v, want %d with %q", err, code, want)
	}
}

// refusedAsync publishes on ch and expects the channel closed with code.
func refusedAsync(t *testing.T, ch *amqp091.Channel, exchange, key string, msg amqp091.Publishing, code int, want string) {
	t.Helper()
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.PublishWithContext(ctx(t), exchange, key, false, false, msg); err != nil {
		t.Fatal(err)
	}
	wantCode(t, closeErr(t, closed), code, want)
}

// publishConfirmed publishes on a channel in confirm mode and waits for
// the broker's ack.
func publishConfirmed(t *testing.T, ch *amqp091.Channel, exchange, key string, msg amqp091.Publishing) {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx(t), exchange, key, false, false, msg)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx(t)); !ok || err != nil {
		t.Fatalf("publish to %q/%q not confirmed: %v", exchange, key, err)
	}
}

var allOf = auth.VHostPerm{Configure: ".*", Write: ".*", Read: ".*"}

// TestAuthLogin: PLAIN and AMQPLAIN logins go through the broker's users;
// a wrong password or an unknown user is refused with 403 (amqp091-go does
// not announce authentication_failure_close, so the socket just ends and
// the client reports ErrCredentials, code 403).
func TestAuthLogin(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "alice", VHosts: map[string]auth.VHostPerm{"/": allOf}}, "s3cret:pw")

	c := dial(t, userURL(n, "alice", "s3cret:pw", "/"))
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("alice-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := dialErr(userURL(n, "alice", "", "/"), &amqp091.AMQPlainAuth{Username: "alice", Password: "s3cret:pw"}); err != nil {
		t.Fatalf("AMQPLAIN: %v", err)
	}
	for _, tc := range []struct {
		name string
		url  string
		sasl []amqp091.Authentication
	}{
		{"wrong password", userURL(n, "alice", "wrong", "/"), nil},
		{"unknown user", userURL(n, "mallory", "s3cret:pw", "/"), nil},
		{"AMQPLAIN wrong password", userURL(n, "x", "x", "/"), []amqp091.Authentication{&amqp091.AMQPlainAuth{Username: "alice", Password: "nope"}}},
	} {
		err := dialErr(tc.url, tc.sasl...)
		wantCode(t, err, amqp091.AccessRefused, "")
		if !errors.Is(err, amqp091.ErrCredentials) {
			t.Fatalf("%s: %v, want ErrCredentials", tc.name, err)
		}
	}
	// guest from loopback, as every other test does.
	if err := dialErr(n.url); err != nil {
		t.Fatalf("guest from loopback: %v", err)
	}
	// The refused attempts left the connection that was in.
	if _, err := ch.QueueDeclarePassive("alice-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
}

// rawLogin does the handshake up to start-ok with credentials, announcing
// authentication_failure_close when failureClose is set.
func rawLogin(t *testing.T, n *node, response string, failureClose bool) *raw {
	t.Helper()
	c := dialRaw(t, n)
	c.write(frame.ProtocolHeader[:])
	c.expect(&frame.ConnectionStart{})
	props := frame.Table{"product": "raw"}
	if failureClose {
		props["capabilities"] = frame.Table{"authentication_failure_close": true}
	}
	c.method(0, &frame.ConnectionStartOk{ClientProperties: props, Mechanism: "PLAIN", Response: response, Locale: "en_US"})
	return c
}

// TestAuthFailureClose: a client that announces
// authentication_failure_close gets RabbitMQ's connection.close 403; one
// that does not sees the socket end without a frame. A malformed PLAIN
// response is a refused login too.
func TestAuthFailureClose(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "alice", VHosts: map[string]auth.VHostPerm{"/": allOf}}, "pw")

	c := rawLogin(t, n, "\x00alice\x00wrong", true)
	m := c.expect(&frame.ConnectionClose{}).(*frame.ConnectionClose)
	const text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
	if m.ReplyCode != codeAccessRefused || m.ReplyText != text || m.FailedClassID != 10 || m.FailedMethodID != 11 {
		t.Fatalf("connection.close %+v", m)
	}
	c.method(0, &frame.ConnectionCloseOk{})
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		t.Fatalf("socket after close-ok: %v", err)
	}

	for _, resp := range []string{"\x00alice\x00wrong", "alice-no-nuls", "\x00\x00pw", "bob\x00alice\x00pw"} {
		c = rawLogin(t, n, resp, false)
		rest, err := io.ReadAll(c.r)
		if err != nil || len(rest) != 0 {
			t.Fatalf("response %q: after start-ok got %q, %v; want the socket closed", resp, rest, err)
		}
	}
	// authzid equal to the user is fine (RFC 4616).
	c = rawLogin(t, n, "alice\x00alice\x00pw", true)
	c.expect(&frame.ConnectionTune{})
}

// TestAuthVHost: a user may open only the vhosts it has permissions on;
// another is connection.close 530 with RabbitMQ's text.
func TestAuthVHost(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "alice", VHosts: map[string]auth.VHostPerm{"dev": allOf}}, "pw")
	err := dialErr(userURL(n, "alice", "pw", "/"))
	wantCode(t, err, amqp091.NotAllowed, "NOT_ALLOWED - access to vhost '/' refused for user 'alice'")
	ch := openCh(t, dial(t, userURL(n, "alice", "pw", "dev")))
	if _, err := ch.QueueDeclare("in-dev", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
}

// TestAuthPermissions: RabbitMQ's access-control table, method by method:
// configure for declare and delete, write on the destination and read on
// the source of a binding, write on the exchange of a publish, read on the
// queue of a purge, consume or get; a passive declare needs none. Each
// refusal is channel.close 403 with RabbitMQ's text.
func TestAuthPermissions(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "carol", VHosts: map[string]auth.VHostPerm{
		"/": {Configure: "^c-", Write: "^w-", Read: "^r-"}}}, "pw")
	admin := openCh(t, dial(t, n.url))
	for _, x := range []string{"w-x", "r-x", "c-x"} {
		if err := admin.ExchangeDeclare(x, "direct", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"w-q", "r-q", "c-q"} {
		if _, err := admin.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.QueueBind("r-q", "k", "w-x", false, nil); err != nil {
		t.Fatal(err)
	}
	c := dial(t, userURL(n, "carol", "pw", "/"))
	refusal := func(perm, kind, name string) string {
		return "ACCESS_REFUSED - " + perm + " access to " + kind + " '" + name + "' in vhost '/' refused for user 'carol'"
	}
	steps := []struct {
		name string
		do   func(ch *amqp091.Channel) error
		want string // "": allowed
	}{
		{"declare exchange c-new", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("c-new", "fanout", false, false, false, false, nil)
		}, ""},
		{"declare exchange w-new", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("w-new", "fanout", false, false, false, false, nil)
		}, refusal("configure", "exchange", "w-new")},
		{"redeclare existing w-x", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("w-x", "direct", false, false, false, false, nil)
		}, refusal("configure", "exchange", "w-x")},
		{"passive declare w-x", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive("w-x", "direct", false, false, false, false, nil)
		}, ""},
		{"delete exchange w-x", func(ch *amqp091.Channel) error { return ch.ExchangeDelete("w-x", false, false) },
			refusal("configure", "exchange", "w-x")},
		{"delete exchange c-new", func(ch *amqp091.Channel) error { return ch.ExchangeDelete("c-new", false, false) }, ""},
		{"declare queue c-q2", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("c-q2", false, false, false, false, nil)
			return err
		}, ""},
		{"declare queue r-q", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("r-q", false, false, false, false, nil)
			return err
		}, refusal("configure", "queue", "r-q")},
		{"server-named queue", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("", false, false, true, false, nil)
			return err
		}, "configure access to queue 'amq.gen-"},
		{"passive declare r-q", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("r-q", false, false, false, false, nil)
			return err
		}, ""},
		{"declare with a dead-letter exchange not writable", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("c-dl", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "r-x"})
			return err
		}, refusal("write", "exchange", "r-x")},
		{"declare with a dead-letter exchange, queue not readable", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("c-dl", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "w-x"})
			return err
		}, refusal("read", "queue", "c-dl")},
		{"delete queue r-q", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("r-q", false, false, false)
			return err
		}, refusal("configure", "queue", "r-q")},
		{"delete queue c-q2", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("c-q2", false, false, false)
			return err
		}, ""},
		{"purge r-q", func(ch *amqp091.Channel) error {
			_, err := ch.QueuePurge("r-q", false)
			return err
		}, ""},
		{"purge w-q", func(ch *amqp091.Channel) error {
			_, err := ch.QueuePurge("w-q", false)
			return err
		}, refusal("read", "queue", "w-q")},
		{"bind w-q to r-x", func(ch *amqp091.Channel) error { return ch.QueueBind("w-q", "k", "r-x", false, nil) }, ""},
		{"unbind w-q from r-x", func(ch *amqp091.Channel) error { return ch.QueueUnbind("w-q", "k", "r-x", nil) }, ""},
		{"bind r-q to r-x", func(ch *amqp091.Channel) error { return ch.QueueBind("r-q", "k", "r-x", false, nil) },
			refusal("write", "queue", "r-q")},
		{"bind w-q to w-x", func(ch *amqp091.Channel) error { return ch.QueueBind("w-q", "k", "w-x", false, nil) },
			refusal("read", "exchange", "w-x")},
		{"exchange-bind w-x from r-x", func(ch *amqp091.Channel) error { return ch.ExchangeBind("w-x", "k", "r-x", false, nil) }, ""},
		{"exchange-bind r-x from r-x", func(ch *amqp091.Channel) error { return ch.ExchangeBind("r-x", "k", "r-x", false, nil) },
			refusal("write", "exchange", "r-x")},
		{"consume r-q", func(ch *amqp091.Channel) error {
			_, err := ch.Consume("r-q", "", true, false, false, false, nil)
			return err
		}, ""},
		{"consume w-q", func(ch *amqp091.Channel) error {
			_, err := ch.Consume("w-q", "", true, false, false, false, nil)
			return err
		}, refusal("read", "queue", "w-q")},
		{"get r-q", func(ch *amqp091.Channel) error {
			_, _, err := ch.Get("r-q", true)
			return err
		}, ""},
		{"get w-q", func(ch *amqp091.Channel) error {
			_, _, err := ch.Get("w-q", true)
			return err
		}, refusal("read", "queue", "w-q")},
	}
	for _, s := range steps {
		ch := openCh(t, c)
		err := s.do(ch)
		if s.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			_ = ch.Close()
			continue
		}
		wantCode(t, err, amqp091.AccessRefused, s.want)
	}

	// Publishes: write on the exchange, the default one as amq.default.
	ch := openCh(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "w-x", "k", amqp091.Publishing{Body: []byte("allowed")})
	waitReady(t, n, "r-q", 1)
	refusedAsync(t, ch, "r-x", "k", amqp091.Publishing{Body: []byte("no")}, amqp091.AccessRefused, refusal("write", "exchange", "r-x"))
	refusedAsync(t, openCh(t, c), "", "r-q", amqp091.Publishing{Body: []byte("no")}, amqp091.AccessRefused,
		refusal("write", "exchange", "amq.default"))
	// A refused publish to an exchange that does not exist is refused,
	// not 404: the user learns nothing of it.
	refusedAsync(t, openCh(t, c), "r-none", "k", amqp091.Publishing{}, amqp091.AccessRefused, refusal("write", "exchange", "r-none"))
	// The connection is still good.
	d, ok, err := openCh(t, c).Get("r-q", true)
	if err != nil || !ok || string(d.Body) != "allowed" {
		t.Fatalf("get: ok %v err %v body %q", ok, err, d.Body)
	}
}

// TestAuthPermissionChange: permissions are read again at each method, so
// a change made while the client is connected applies to its next one.
func TestAuthPermissionChange(t *testing.T) {
	n := startAuthNode(t)
	u := auth.User{Name: "dave", VHosts: map[string]auth.VHostPerm{"/": allOf}}
	putUser(t, n, u, "pw")
	c := dial(t, userURL(n, "dave", "pw", "/"))
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("dave-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "", "dave-q", amqp091.Publishing{Body: []byte("1")})

	u.VHosts["/"] = auth.VHostPerm{Configure: ".*", Write: "", Read: ".*"}
	putUser(t, n, u, "pw")
	refusedAsync(t, ch, "", "dave-q", amqp091.Publishing{Body: []byte("2")}, amqp091.AccessRefused,
		"write access to exchange 'amq.default' in vhost '/' refused for user 'dave'")
	ch = openCh(t, c)
	if _, ok, err := ch.Get("dave-q", true); err != nil || !ok {
		t.Fatalf("read still allowed: ok %v err %v", ok, err)
	}

	u.VHosts["/"] = auth.VHostPerm{Configure: ".*", Write: ".*", Read: "^other$"}
	putUser(t, n, u, "pw")
	_, _, err := ch.Get("dave-q", true)
	wantCode(t, err, amqp091.AccessRefused, "read access to queue 'dave-q' in vhost '/' refused for user 'dave'")

	// Deleted: it may do nothing more on the connection it has.
	if err := n.b.DeleteUser(ctx(t), "dave"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the user deleted", func() bool { _, ok := n.b.LookupUser("dave"); return !ok })
	_, err = openCh(t, c).QueueDeclare("dave-q2", false, false, false, false, nil)
	wantCode(t, err, amqp091.AccessRefused, "configure access to queue 'dave-q2'")
}

// TestAuthUserID: as RabbitMQ, a publish whose user-id property is not
// the authenticated user is refused with 406; the user's own name passes.
func TestAuthUserID(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "eve", VHosts: map[string]auth.VHostPerm{"/": allOf}}, "pw")
	c := dial(t, userURL(n, "eve", "pw", "/"))
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("eve-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "", "eve-q", amqp091.Publishing{UserId: "eve", Body: []byte("mine")})
	refusedAsync(t, ch, "", "eve-q", amqp091.Publishing{UserId: "mallory", Body: []byte("forged")}, amqp091.PreconditionFailed,
		"PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'eve'")
	d, ok, err := openCh(t, c).Get("eve-q", true)
	if err != nil || !ok || string(d.Body) != "mine" || d.UserId != "eve" {
		t.Fatalf("get: ok %v err %v body %q user %q", ok, err, d.Body, d.UserId)
	}
}

// TestAuthSharedTopicSpace: amq.topic of vhost "/" is also the MQTT
// address space, so a read permission on it does not open other users'
// topics: a binding key must be a subscription the user's MQTT rules
// allow, a routing key a publish they allow, and what an exchange-to-
// exchange binding or a dead-letter exchange lets into the space too.
func TestAuthSharedTopicSpace(t *testing.T) {
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "bob", VHosts: map[string]auth.VHostPerm{"/": allOf, "v2": allOf},
		MQTT: []auth.TopicRule{{Allow: true, Action: auth.ActAll, Filter: "site1/%u/#"}}}, "pw")
	putUser(t, n, auth.User{Name: "carol", VHosts: map[string]auth.VHostPerm{"/": allOf, "v2": allOf}}, "pw")
	c := dial(t, userURL(n, "bob", "pw", "/"))
	setup := openCh(t, c)
	for _, q := range []string{"bob-q", "bob-other"} {
		if _, err := setup.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := setup.ExchangeDeclare("bob-fan", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := setup.ExchangeDeclare("bob-direct", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	topicRefusal := func(perm, key string) string {
		return "ACCESS_REFUSED - " + perm + " access to topic '" + key + "' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"
	}
	steps := []struct {
		name string
		do   func(ch *amqp091.Channel) error
		want string
	}{
		{"bind site1.bob.#", func(ch *amqp091.Channel) error { return ch.QueueBind("bob-q", "site1.bob.#", "amq.topic", false, nil) }, ""},
		{"bind site1.bob.*.temp", func(ch *amqp091.Channel) error {
			return ch.QueueBind("bob-q", "site1.bob.*.temp", "amq.topic", false, nil)
		}, ""},
		{"bind site1.#", func(ch *amqp091.Channel) error { return ch.QueueBind("bob-other", "site1.#", "amq.topic", false, nil) },
			topicRefusal("read", "site1.#")},
		{"bind site1.*.temp", func(ch *amqp091.Channel) error {
			return ch.QueueBind("bob-other", "site1.*.temp", "amq.topic", false, nil)
		}, topicRefusal("read", "site1.*.temp")},
		{"bind #", func(ch *amqp091.Channel) error { return ch.QueueBind("bob-other", "#", "amq.topic", false, nil) },
			topicRefusal("read", "#")},
		{"exchange-bind from amq.topic site1.other.#", func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("bob-fan", "site1.other.#", "amq.topic", false, nil)
		}, topicRefusal("read", "site1.other.#")},
		{"exchange-bind a fanout into amq.topic", func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("amq.topic", "", "bob-fan", false, nil)
		}, topicRefusal("write", "#")},
		{"exchange-bind a direct into amq.topic, own key", func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("amq.topic", "site1.bob.x", "bob-direct", false, nil)
		}, ""},
		{"exchange-bind a direct into amq.topic, other key", func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("amq.topic", "site1.other.x", "bob-direct", false, nil)
		}, topicRefusal("write", "site1.other.x")},
		{"dead letters into amq.topic with any key", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("bob-dl", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "amq.topic"})
			return err
		}, topicRefusal("write", "#")},
		{"dead letters into amq.topic with an own key", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("bob-dl", false, false, false, false,
				amqp091.Table{"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": "site1.bob.dead"})
			return err
		}, ""},
	}
	for _, s := range steps {
		ch := openCh(t, c)
		err := s.do(ch)
		if s.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			_ = ch.Close()
			continue
		}
		wantCode(t, err, amqp091.AccessRefused, s.want)
	}

	ch := openCh(t, c)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "amq.topic", "site1.bob.temp", amqp091.Publishing{Body: []byte("own")})
	refusedAsync(t, ch, "amq.topic", "site1.other.temp", amqp091.Publishing{Body: []byte("theirs")}, amqp091.AccessRefused,
		topicRefusal("write", "site1.other.temp"))

	// MQTT messages: site1/bob/temp is bob's, site1/bob.x/temp is not (its
	// key is site1.bob/x.temp, which site1.bob.# does not match).
	var msgs []broker.Message
	for _, topic := range []string{"site1/bob.x/temp", "site1/bob/temp"} {
		m := broker.Message{Queue: -1}
		m.Topic, m.Tags, m.Body = "site1", strings.Split(topic, "/")[1], []byte("mqtt "+topic)
		m.Properties = []batch.Property{{Key: propMQTTTopic, Value: topic}}
		msgs = append(msgs, m)
	}
	if _, err := n.b.Produce(ctx(t), msgs); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, "bob-q", 2)
	get := openCh(t, c)
	for _, want := range []struct{ body, key string }{{"own", "site1.bob.temp"}, {"mqtt site1/bob/temp", "site1.bob.temp"}} {
		d, ok, err := get.Get("bob-q", true)
		if err != nil || !ok || string(d.Body) != want.body || d.RoutingKey != want.key {
			t.Fatalf("get: ok %v err %v body %q key %q, want %+v", ok, err, d.Body, d.RoutingKey, want)
		}
	}

	// A user without MQTT rules may not use the shared space at all, but
	// amq.topic of another vhost is its own.
	cc := dial(t, userURL(n, "carol", "pw", "/"))
	cch := openCh(t, cc)
	if _, err := cch.QueueDeclare("carol-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	err := cch.QueueBind("carol-q", "carol.#", "amq.topic", false, nil)
	wantCode(t, err, amqp091.AccessRefused, "read access to topic 'carol.#' in exchange 'amq.topic' in vhost '/' refused for user 'carol'")
	v2 := openCh(t, dial(t, userURL(n, "carol", "pw", "v2")))
	if _, err := v2.QueueDeclare("carol-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := v2.QueueBind("carol-q", "#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	// guest, an administrator without MQTT rules, is not restricted.
	admin := openCh(t, dial(t, n.url))
	if err := admin.QueueBind("bob-other", "#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	// An unbind lets nothing into the space: bob may remove the fanout
	// binding guest made, which he could not have made.
	if err := admin.ExchangeBind("amq.topic", "", "bob-fan", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := openCh(t, c).ExchangeUnbind("amq.topic", "", "bob-fan", false, nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}
}

// TestMQTTViewOfKeys: amq.topic keys and MQTT topics map one to one ('/'
// and '.' swapped), and binding keys become MQTT filters.
func TestMQTTViewOfKeys(t *testing.T) {
	for _, tc := range []struct {
		key     string
		pattern bool
		want    string
	}{
		{"site1.dev42.temp", false, "site1/dev42/temp"},
		{"site1.bob/x.temp", false, "site1/bob.x/temp"},
		{"site1.*.temp", true, "site1/+/temp"},
		{"site1.*.temp", false, "site1/*/temp"},
		{"site1.#", true, "site1/#"},
		{"", false, ""},
	} {
		if got := mqttView(tc.key, tc.pattern); got != tc.want {
			t.Errorf("mqttView(%q, %v) = %q, want %q", tc.key, tc.pattern, got, tc.want)
		}
	}
	for _, topic := range []string{"site1/dev42/temp", "a.b/c", "x/y.z/", "/lead"} {
		if got := mqttView(foreignKey("site1", "", topic), false); got != topic {
			t.Errorf("round trip of %q: %q", topic, got)
		}
	}
	if got := foreignKey("orders", "paid.eu", ""); got != "orders.paid/eu" {
		t.Errorf("RocketMQ key %q", got)
	}
}

// TestHandOffClientAddress: a door that hands a connection on names the
// client's address, and the leader logs the client in with it (guest only
// from loopback), but only when the connection comes from an address a
// node advertises; from anywhere else the name is ignored.
func TestHandOffClientAddress(t *testing.T) {
	handOff := func(n *node, client string) *raw {
		c := dialRaw(t, n)
		ap, err := net.ResolveTCPAddr("tcp", client)
		if err != nil {
			t.Fatal(err)
		}
		c.write(handOffHeader(ap, nil))
		c.write(frame.ProtocolHeader[:])
		c.expect(&frame.ConnectionStart{})
		c.method(0, &frame.ConnectionStartOk{ClientProperties: frame.Table{"capabilities": frame.Table{"authentication_failure_close": true}},
			Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
		return c
	}
	// No node advertises 127.0.0.1: the name is not believed.
	plain := startAuthNode(t)
	handOff(plain, "192.0.2.7:4000").expect(&frame.ConnectionTune{})

	n := startNodeWith(t, func(c *broker.Config) { c.Auth.Hash = cheapHash }, func(c *Config) { c.AdvertiseAddr = "127.0.0.1:1" })
	waitBootstrapped(t, n)
	waitFor(t, 10*time.Second, "the door announced", func() bool { _, ok := n.b.Record(recordNS, nodeKey(1)); return ok })
	handOff(n, "127.0.0.1:4000").expect(&frame.ConnectionTune{})
	if m := handOff(n, "192.0.2.7:4000").expect(&frame.ConnectionClose{}).(*frame.ConnectionClose); m.ReplyCode != codeAccessRefused {
		t.Fatalf("guest handed on from 192.0.2.7: %+v", m)
	}
}

// TestAuthDisabled: with the broker's checking off (development), any
// user and password are accepted, nothing is refused, and user-id is not
// compared with anyone.
func TestAuthDisabled(t *testing.T) {
	n := startNodeWith(t, func(c *broker.Config) { c.Auth.Disabled = true }, nil)
	c := dial(t, userURL(n, "anyone", "anything", "some-vhost"))
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("free", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "", "free", amqp091.Publishing{UserId: "someone-else", Body: []byte("x")})
}
