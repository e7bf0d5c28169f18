package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// Authentication and permissions, as RabbitMQ has them (docs/security.md,
// section "AMQP"):
//
//   - connection.start-ok's PLAIN or AMQPLAIN credentials go to the
//     broker's Authenticate with the client's address; a refusal is
//     connection.close 403 for a client that announced the capability
//     authentication_failure_close, and a closed socket for the others.
//   - connection.open of a vhost the user has no permissions on is
//     connection.close 530.
//   - Each method then checks configure, write or read on the names it
//     touches, where RabbitMQ's access-control table says, reading the
//     user again each time so a changed permission applies to the next
//     method. A refusal is channel.close 403.
//   - amq.topic of vhost "/" is also the MQTT and RocketMQ address space
//     (foreign.go), so there the user's MQTT rules decide as well: a
//     binding key is an MQTT subscription, a routing key an MQTT publish.

// errBadResponse: start-ok's response could not be read as the mechanism's
// credentials.
var errBadResponse = errors.New("amqp: malformed SASL response")

// saslCredentials reads a user name and password from start-ok.
func saslCredentials(mechanism, response string) (name, password string, err error) {
	switch mechanism {
	case "PLAIN":
		// RFC 4616: authzid NUL authcid NUL passwd. Acting as another
		// user (an authzid of its own) is not something we grant.
		parts := strings.SplitN(response, "\x00", 3)
		if len(parts) != 3 || parts[1] == "" || parts[0] != "" && parts[0] != parts[1] {
			return "", "", errBadResponse
		}
		return parts[1], parts[2], nil
	case "AMQPLAIN":
		// A field table without its 4-byte length (RabbitMQ's and the
		// clients' encoding), keys LOGIN and PASSWORD.
		b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(response)), uint32(len(response)))
		t, _, err := frame.ReadTable(append(b, response...))
		if err != nil {
			return "", "", fmt.Errorf("%w: %w", errBadResponse, err)
		}
		login, ok1 := t["LOGIN"].(string)
		pass, ok2 := t["PASSWORD"].(string)
		if !ok1 || !ok2 || login == "" {
			return "", "", errBadResponse
		}
		return login, pass, nil
	}
	return "", "", errBadResponse
}

// login authenticates start-ok's credentials when the broker checks them,
// and keeps the user on the connection. The password is never logged.
func (c *conn) login(so *frame.ConnectionStartOk) error {
	if !c.s.b.AuthEnabled() {
		return nil
	}
	name, password, err := saslCredentials(so.Mechanism, so.Response)
	var u auth.User
	if err == nil {
		u, err = c.s.b.Authenticate(name, password, c.remoteAddr())
	}
	if err != nil {
		c.s.log.Info("amqp login refused", "user", name, "remote", c.remoteAddr().String(), "mechanism", so.Mechanism, "err", err)
		if c.capability("authentication_failure_close") {
			return withMethod(hardErr(codeAccessRefused, "Login was refused using authentication mechanism %s. For details see the broker logfile.", so.Mechanism), so)
		}
		// The spec's way, for clients that do not expect a close this
		// early: the socket ends without a word.
		return fmt.Errorf("amqp: login of %q refused: %w", name, err)
	}
	c.user = &u
	return nil
}

// perms returns the connection's user as it is now, so a permission
// changed while the client is connected applies to its next method; nil
// when the broker does not check credentials. Reading the user record
// costs microseconds (a JSON decode), too much for every publish, so the
// user read last is kept until the broker applies anything at all: a
// record changes only in an apply. A user deleted since login may do
// nothing. The default user a new cluster accepts before its record is
// applied here (it has no password hash) keeps what it logged in with.
func (c *conn) perms() *auth.User {
	if c.user == nil {
		return nil
	}
	if c.permsValid != nil {
		select {
		case <-c.permsValid:
		default:
			return c.permsUser
		}
	}
	// Taken before the read: an apply during it closes this one.
	valid := c.s.b.Changed()
	u, ok := c.s.b.LookupUser(c.user.Name)
	// LookupUser knows the default user before the cluster stored it;
	// a user missing now was deleted and may do nothing.
	if ok {
		c.permsUser = &u
	} else {
		c.permsUser = &auth.User{Name: c.user.Name}
	}
	c.permsValid = valid
	return c.permsUser
}

// Object kinds in refusal texts.
const (
	kindExchangeObj = "exchange"
	kindQueueObj    = "queue"
)

// allow checks one of RabbitMQ's permissions on an exchange or queue of
// the connection's vhost (the default exchange is amq.default).
func (c *conn) allow(u *auth.User, a auth.AMQPAction, kind, name string) error {
	if u == nil || u.AllowAMQP(c.vhost, a, name) {
		return nil
	}
	if name == "" && kind == kindExchangeObj {
		name = "amq.default"
	}
	return softErr(codeAccessRefused, "%s access to %s '%s' in vhost '%s' refused for user '%s'", a, kind, name, c.vhost, u.Name)
}

// sharedSpace reports whether exchange is amq.topic of vhost "/", the
// address space AMQP shares with MQTT and RocketMQ.
func (c *conn) sharedSpace(exchange string) bool {
	return c.vhost == foreignVHost && exchange == foreignExchange
}

// mqttClientID stands for %c in the user's MQTT rules when they are
// checked for AMQP. It is empty, not the client's connection_name: that is
// free text any client may set to another device's client id.
const mqttClientID = ""

// allowTopic checks the user's MQTT rules for a key of the shared space:
// a binding key as a subscription (pattern: * is +, # is #), a routing key
// as a publish. A refused subscription is named a read, a refused publish
// a write, as RabbitMQ's topic permissions are.
func (c *conn) allowTopic(u *auth.User, key string, pattern, subscribe bool) error {
	if u == nil || u.AllowMQTT(mqttClientID, mqttView(key, pattern), subscribe) {
		return nil
	}
	a := auth.Write
	if subscribe {
		a = auth.Read
	}
	return softErr(codeAccessRefused, "%s access to topic '%s' in exchange '%s' in vhost '%s' refused for user '%s'",
		a, key, foreignExchange, c.vhost, u.Name)
}

// mqttView is the MQTT topic (or filter, for a pattern) that an amq.topic
// key stands for: the inverse of foreignKey, which swaps '/' and '.' as
// RabbitMQ's MQTT plugin does. In a pattern the words * and # are MQTT's +
// and #. A # in a routing key stays #: MQTT reads it as a wildcard, so
// only rules that allow every topic there let it through.
func mqttView(key string, pattern bool) string {
	words := strings.Split(key, ".")
	for i, w := range words {
		if pattern && w == "*" {
			words[i] = "+"
			continue
		}
		words[i] = strings.ReplaceAll(w, "/", ".")
	}
	return strings.Join(words, "/")
}

// allowPublishThrough checks what may flow into the shared space from
// exchange source through a binding with key: for a direct or topic source
// the key bounds the routing keys that pass (a topic pattern is checked as
// an MQTT filter), for any other kind every key may pass, so the user must
// be allowed to publish to every topic.
func (c *conn) allowPublishThrough(u *auth.User, sourceKind, key string) error {
	switch sourceKind {
	case kindDirect:
		return c.allowTopic(u, key, false, false)
	case kindTopic:
		return c.allowTopic(u, key, true, false)
	}
	return c.allowTopic(u, "#", true, false)
}

// checkUserID is RabbitMQ's validated user id: a publish whose user-id
// property is not the authenticated user's name is refused (406).
func (c *conn) checkUserID(props []byte) error {
	if c.user == nil || len(props) < 2 || binary.BigEndian.Uint16(props)&frame.FlagUserID == 0 {
		return nil
	}
	p, err := frame.DecodeProperties(props)
	if err != nil {
		return frameErr(err)
	}
	if p.UserID != c.user.Name {
		return softErr(codePreconditionFailed, "user_id property set to '%s' but authenticated user was '%s'", p.UserID, c.user.Name)
	}
	return nil
}
