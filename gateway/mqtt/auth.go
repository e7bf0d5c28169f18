package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/auth"
)

// Authentication and authorisation of MQTT clients (docs/security.md).
//
// A connection's identity is its user name, kept where mochi keeps the
// CONNECT's (cl.Properties.Username; certificate and anonymous logins
// overwrite it), so nothing per connection is added for it. Every
// publish and subscribe reads the user again (a map lookup in the
// applied records), so a changed rule applies from the next packet on,
// on every node as soon as the change is applied there.

// guestUser may log in from loopback addresses only, on every door
// (core/broker/users.go); anonymous and certificate logins, which do not
// go through Broker.Authenticate, keep that rule here.
const guestUser = "guest"

// Login refusals, by the CONNACK they get. Which broker error refused a
// password is never told to the client (core/broker/users.go).
var (
	// errBadCredentials: CONNACK 0x04 (MQTT 5: 0x86).
	errBadCredentials = errors.New("mqtt: bad user name or password")
	// errNotAuthorized: CONNACK 0x05 (MQTT 5: 0x87).
	errNotAuthorized = errors.New("mqtt: not authorized")
	// errAuthMethod: MQTT 5 enhanced authentication is not offered (0x8C).
	errAuthMethod = errors.New("mqtt: authentication method not supported")
)

// authenticate logs a client in, from OnConnect, and refuses the
// connection with its own CONNACK if it may not: mochi's refusal (from
// OnConnectAuthenticate) would say 0x05 to a 3.1.1 client whose password
// was wrong, where 3.1.1 has 0x04.
func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Inline || !h.s.b.AuthEnabled() {
		return nil
	}
	addr := cl.Net.Conn.RemoteAddr()
	name, method, err := h.login(cl, pk, addr)
	if err == nil {
		if string(cl.Properties.Username) != name {
			cl.Properties.Username = []byte(name)
		}
		h.s.log.Debug("MQTT login", "user", name, "method", method, "addr", addr.String(), "client", cl.ID)
		return nil
	}
	// Once per attempt, with who and from where; never the password.
	h.s.log.Info("MQTT login refused", "user", name, "method", method, "addr", addr.String(),
		"client", cl.ID, "listener", cl.Net.Listener, "err", err)
	return h.refuseConnect(cl, err)
}

// login finds who the client is: the common name of a verified client
// certificate (CertLogin), the user name and password, or the anonymous
// user. It returns the name (for the log when refused) and the method.
func (h *hook) login(cl *mqtt.Client, pk packets.Packet, addr net.Addr) (string, string, error) {
	b, cfg := h.s.b, h.s.cfg
	if pk.Properties.AuthenticationMethod != "" {
		return string(pk.Connect.Username), "enhanced", errAuthMethod
	}
	var u auth.User
	name, method := string(pk.Connect.Username), "password"
	var cert *x509.Certificate
	if cfg.CertLogin {
		cert = peerCertificate(cl.Net.Conn)
	}
	switch {
	case cert != nil && cert.Subject.CommonName != "":
		name, method = cert.Subject.CommonName, "certificate"
		if name == guestUser && !isLoopback(addr) {
			return name, method, errNotAuthorized
		}
		var ok bool
		if u, ok = b.LookupUser(name); !ok {
			return name, method, errNotAuthorized
		}
	case len(pk.Connect.Username) == 0 && len(pk.Connect.Password) == 0:
		name, method = cfg.AnonymousUser, "anonymous"
		if cfg.NoAnonymous || !isLoopback(addr) && (!cfg.AnonymousAnyAddress || name == guestUser) {
			return name, method, errNotAuthorized
		}
		// LookupUser knows the configured default user even before a new
		// cluster has stored it.
		var ok bool
		if u, ok = b.LookupUser(name); !ok {
			return name, method, errNotAuthorized
		}
	case len(pk.Connect.Username) == 0:
		return name, method, errBadCredentials // a password alone (MQTT 5 allows it) names nobody
	default:
		var err error
		if u, err = b.Authenticate(name, string(pk.Connect.Password), addr); err != nil {
			return name, method, fmt.Errorf("%w: %w", errBadCredentials, err)
		}
	}
	// A will the user may not publish refuses the connection, rather
	// than being dropped unseen when the client goes (OnWill checks it
	// again then, as the rules may have changed).
	if w := cl.Properties.Will; w.Flag != 0 && !u.AllowMQTT(cl.ID, w.TopicName, false) {
		return name, method, fmt.Errorf("%w: the user may not publish to the will's topic %q", errNotAuthorized, w.TopicName)
	}
	return name, method, nil
}

// refuseConnect sends the CONNACK for a refused login and returns the
// error that makes mochi close the connection without another one.
func (h *hook) refuseConnect(cl *mqtt.Client, err error) error {
	code, v3 := packets.ErrNotAuthorized, packets.Err3NotAuthorized
	switch {
	case errors.Is(err, errBadCredentials):
		code, v3 = packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword // 0x86, 0x04
	case errors.Is(err, errAuthMethod):
		code = packets.ErrBadAuthenticationMethod // MQTT 5 only: 3.1.1 has no method
	}
	if cl.Properties.ProtocolVersion >= 5 {
		_ = h.s.mochi.SendConnack(cl, code, false, nil)
		return code
	}
	// mochi's SendConnack maps MQTT 5 codes to 3.1.1 ones, and 0x86 to
	// 0x05: the 3.1.1 code is written as is.
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3.Code})
	return code
}

// peerCertificate returns the client certificate of a TLS connection,
// if the TLS configuration verified it (a certificate sent but not
// verified, or no TLS, gives nil).
func peerCertificate(c net.Conn) *x509.Certificate {
	for {
		switch x := c.(type) {
		case *connectConn:
			c = x.Conn
		case *wsConn:
			c = x.Conn
		case *tls.Conn:
			st := x.ConnectionState()
			if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
				return nil
			}
			return st.PeerCertificates[0]
		default:
			return nil
		}
	}
}

func isLoopback(a net.Addr) bool {
	if a == nil {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		host = a.String()
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// user returns the connection's user as the records have it now (ok
// false: deleted since the login, allowed nothing). checked is false when
// nothing is checked: auth is off, or an inline client of our own.
func (h *hook) user(cl *mqtt.Client) (u auth.User, checked, ok bool) {
	if cl.Net.Inline || !h.s.b.AuthEnabled() {
		return auth.User{}, false, true
	}
	u, ok = h.s.b.LookupUser(string(cl.Properties.Username))
	return u, true, ok
}

// mayPublish reports whether the client's user may publish to topic now.
func (h *hook) mayPublish(cl *mqtt.Client, topic string) bool {
	u, checked, ok := h.user(cl)
	return !checked || ok && u.AllowMQTT(cl.ID, topic, false)
}

// aclFilter is the filter a subscription is checked on: a shared
// subscription's ($share/<group>/<filter>) without its prefix, since the
// group is a name, not topic levels.
func aclFilter(f string) string {
	if mqtt.IsSharedFilter(f) {
		if _, rest, ok := strings.Cut(f, "/"); ok {
			if _, filter, ok := strings.Cut(rest, "/"); ok {
				return filter
			}
		}
	}
	return f
}

// deniedFilters lists the filters of a SUBSCRIBE the client's user may
// not subscribe to now (nil if none).
func (h *hook) deniedFilters(cl *mqtt.Client, pk packets.Packet) map[string]bool {
	u, checked, ok := h.user(cl)
	if !checked {
		return nil
	}
	var denied map[string]bool
	for _, f := range pk.Filters {
		if ok && u.AllowMQTT(cl.ID, aclFilter(f.Filter), true) {
			continue
		}
		if denied == nil {
			denied = map[string]bool{}
		}
		denied[f.Filter] = true
	}
	return denied
}

// subscriptionDenied answers mochi's OnACLCheck for one filter of a
// SUBSCRIBE being processed (OnSubscribe to OnPacketProcessed). Checks
// while no SUBSCRIBE was refused anything cost one atomic load.
func (h *hook) subscriptionDenied(cl *mqtt.Client, filter string) bool {
	if h.denying.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.denied[cl][filter]
}

func (h *hook) setDenied(cl *mqtt.Client, denied map[string]bool) {
	if len(denied) == 0 {
		return
	}
	h.mu.Lock()
	if _, had := h.denied[cl]; !had {
		h.denying.Add(1)
	}
	h.denied[cl] = denied
	h.mu.Unlock()
}

func (h *hook) clearDenied(cl *mqtt.Client) {
	if h.denying.Load() == 0 {
		return
	}
	h.mu.Lock()
	if _, had := h.denied[cl]; had {
		delete(h.denied, cl)
		h.denying.Add(-1)
	}
	h.mu.Unlock()
}

// allowedSubs keeps the subscriptions of a saved session that the
// connecting client's user may have now. A session resumed under
// another user, or after its user lost a permission, must not go on
// receiving what the user could not subscribe to afresh.
func (h *hook) allowedSubs(cl *mqtt.Client, subs []subRecord) []subRecord {
	u, checked, ok := h.user(cl)
	if !checked {
		return subs
	}
	kept := subs[:0:0]
	for _, r := range subs {
		if ok && u.AllowMQTT(cl.ID, aclFilter(r.Filter), true) {
			kept = append(kept, r)
			continue
		}
		h.s.log.Info("saved subscription dropped: the user may not subscribe to it", "client", cl.ID,
			"user", string(cl.Properties.Username), "filter", r.Filter)
	}
	return kept
}

// pruneTakenOver drops from a connection being taken over on this node
// the subscriptions the new connection's user may not have, before mochi
// moves the rest to the new connection.
func (h *hook) pruneTakenOver(cl, old *mqtt.Client) {
	u, checked, ok := h.user(cl)
	if !checked {
		return
	}
	if ou, _, oldOK := h.user(old); !ok || !oldOK || ou.Name != u.Name {
		// Another user takes the client id: the messages in flight to the
		// old connection were checked against the old user's rules, so
		// they are not handed on (the new user gets only what its own
		// subscriptions bring).
		old.ClearInflights()
	}
	for _, sub := range old.State.Subscriptions.GetAll() {
		if ok && u.AllowMQTT(cl.ID, aclFilter(sub.Filter), true) {
			continue
		}
		h.s.log.Info("subscription not taken over: the user may not subscribe to it", "client", cl.ID,
			"user", string(cl.Properties.Username), "filter", sub.Filter)
		if h.s.mochi.Topics.Unsubscribe(sub.Filter, old.ID) {
			atomic.AddInt64(&h.s.mochi.Info.Subscriptions, -1)
		}
		old.State.Subscriptions.Delete(sub.Filter)
		if mqtt.IsSharedFilter(sub.Filter) && h.leaveShare(sub.Filter, old.ID) {
			h.s.releaseShare(sub.Filter)
		}
	}
}

// publishDenied is a publish the user may not make. QoS 0 is dropped
// (false: nothing to queue). An MQTT 5 QoS 1/2 one gets 0x87 in its
// PUBACK/PUBREC, a 3.1.1 one closes the connection, through the pipe so
// that the acks of the publishes before it go first and in order (mochi's
// own refusal writes the ack at once, ahead of them).
func publishDenied(pk *packets.Packet) (pending, bool) {
	if pk.FixedHeader.Qos == 0 {
		return pending{}, false
	}
	return pending{qos: pk.FixedHeader.Qos, pid: pk.PacketID, refused: packets.ErrNotAuthorized.Code,
		reason: packets.ErrNotAuthorized.Reason}, true
}
