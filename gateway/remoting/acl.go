package remoting

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // RocketMQ's ACL signs with HMAC-SHA1; the clients fix the algorithm
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// RocketMQ's ACL (RocketMQ 4.x "plain ACL") over Conflux's users
// (core/auth), checked on every request while b.AuthEnabled().
//
// Authentication. A client with credentials (the Go client's
// WithCredentials, Java's AclClientRPCHook) adds two ext fields to every
// request: AccessKey, the user name, and Signature =
// base64(HMAC-SHA1(SecretKey, the values of AccessKey and every other ext
// field, in the byte order of their keys, then the body)). The server
// holds the SecretKey (auth.User.RocketSecret) and signs again. A request
// without AccessKey acts as user guest, from a loopback address only and
// only while that user exists (RabbitMQ's rule, as the other doors have
// it). Unknown user, user without a RocketMQ secret, missing or wrong
// signature: all answer NO_PERMISSION (16) with one remark, so the answer
// does not tell which names exist.
//
// Authorization, per request, against the user as stored now (re-read at
// each request, so a change applies at once): PUB or SUB on topics and
// consumer groups as plain_acl.yml grants them; a topic %RETRY%<group> is
// the group's (SUB). Requests that change or list the cluster's topics are
// for administrators only, and so is any request code this file does not
// name, so a processor added later is closed until someone decides.
//
// Routes (GET_ROUTEINFO_BY_TOPIC) are answered without an identity, as
// RocketMQ answers them (its name server checks nothing): a route names a
// topic the caller already knows and the broker's address, and answering
// it lets a client with a wrong secret reach the broker, whose refusal
// "CODE: 16 ... check signature failed" the Go client then reports,
// instead of a bare "route info not found". What a route query would
// create (a consumer's retry topic) needs SUB on the group.
//
// Replay: the signature covers every field and the body, so it cannot be
// moved to another request; but RocketMQ's scheme has no nonce or
// timestamp, and a request copied whole off the network can be sent again
// and is accepted. TLS keeps it off the network.

// Ext fields of the ACL.
const (
	extAccessKey     = "AccessKey"
	extSignature     = "Signature"
	extSecurityToken = "SecurityToken"
	// extUniqueKeyQuery is added by Java clients outside their signed
	// header; Java's broker leaves it out of the content too.
	extUniqueKeyQuery = "_UNIQUE_KEY_QUERY"
)

// guestUser is whom a request without AccessKey acts for.
const guestUser = "guest"

// Remarks of NO_PERMISSION answers. They name the access key or user but
// never a signature or secret.
const (
	remarkPrefix       = "[ACL] "
	remarkBadSignature = remarkPrefix + "check signature failed for accessKey="
	remarkGuestRemote  = remarkPrefix + "user guest (a request without AccessKey, or signed as guest) is allowed from localhost only"
	remarkTooMany      = remarkPrefix + "too many failed requests from this address; try again later"
	remarkNoGuest      = remarkPrefix + "no AccessKey, and there is no user guest for requests without credentials"
	remarkNoIdentity   = remarkPrefix + "request without a verified identity"
)

type acl struct {
	b      *broker.Broker
	log    *slog.Logger
	server string
}

func newACL(b *broker.Broker, log *slog.Logger, server string) *acl {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &acl{b: b, log: log, server: server}
}

// refuseAll is the TLS configuration of a TLSOnly door without TLS: every
// handshake fails.
var refuseAll = &tls.Config{
	MinVersion: tls.VersionTLS12,
	GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return nil, errors.New("remoting: TLSOnly without a TLS configuration")
	},
}

// need is one permission a request needs.
type need struct {
	group bool   // a consumer group, else a topic
	name  string // the topic or group
	perm  string // auth.PermPub or auth.PermSub
}

// onTopic: perm on topic; a retry topic is its group's, which consumers
// hold SUB on (plain ACL's rule, for sends to it as for pulls).
func onTopic(topic, perm string) need {
	if g, ok := strings.CutPrefix(topic, retryPrefix); ok {
		return onGroup(g)
	}
	return need{name: topic, perm: perm}
}

// onGroup: SUB on a consumer group.
func onGroup(group string) need { return need{group: true, name: group, perm: auth.PermSub} }

func (n need) allowed(u auth.User) bool {
	if n.group {
		return u.AllowRocketGroup(n.name, n.perm)
	}
	if internalTopic(n.name) {
		return u.IsAdmin()
	}
	return u.AllowRocketTopic(n.name, n.perm)
}

// internalTopic: core topics another door owns, whose own permissions
// guard them (an AMQP queue is core topic AMQP%<name>%<hash>, read and
// written through AMQP under its vhost's permissions). Through RocketMQ
// only administrators reach them, whatever a user's default topic
// permission says.
func internalTopic(topic string) bool { return strings.HasPrefix(topic, "AMQP%") }

func (n need) refusal(user string) string {
	what := "topic"
	if n.group {
		what = "group"
	}
	return fmt.Sprintf("%suser %s has no %s permission on %s %s", remarkPrefix, user, n.perm, what, n.name)
}

// needs is what a request asks of its caller.
type needs struct {
	admin bool
	perms []need
}

// requestNeeds maps a request onto the permissions it needs (plain ACL's
// table, RocketMQ 4.x PlainAccessResource.parse, plus the requests Java
// leaves unchecked that read a topic). Requests that read a message by
// its offset (send-back, view, end of a transaction) learn its topic only
// once they read it: their processors check it (permit).
func requestNeeds(req *command.RemotingCommand) (needs, error) {
	ext := req.ExtFields
	switch command.RequestCode(req.Code) {
	case command.GetRouteInfoByTopic, command.GetBrokerClusterInfo, command.EndTransaction, command.ViewMessageByID:
		return needs{}, nil
	case command.HeartBeat:
		var hb heartbeatData
		if err := json.Unmarshal(req.Body, &hb); err != nil {
			return needs{}, fmt.Errorf("bad heartbeat body: %w", err)
		}
		var n needs
		for _, cd := range hb.ConsumerDataSet {
			n.perms = append(n.perms, onGroup(cd.GroupName))
			for _, sd := range cd.SubscriptionDataSet {
				n.perms = append(n.perms, onTopic(sd.Topic, auth.PermSub))
			}
		}
		return n, nil
	case command.UnregisterClient:
		if g := ext["consumerGroup"]; g != "" {
			return needs{perms: []need{onGroup(g)}}, nil
		}
		return needs{}, nil
	case command.GetConsumerListByGroup:
		return needs{perms: []need{onGroup(ext["consumerGroup"])}}, nil
	case command.SendMessage, command.SendMessageV2, command.SendBatchMessage,
		command.SendReplyMessage, command.SendReplyMessageV2:
		return needs{perms: []need{onTopic(parseSendHeader(req).topic, auth.PermPub)}}, nil
	case command.PullMessage, command.QueryConsumerOffset, command.UpdateConsumerOffset:
		return needs{perms: []need{onTopic(ext["topic"], auth.PermSub), onGroup(ext["consumerGroup"])}}, nil
	case command.GetMaxOffset, command.GetMinOffset, command.SearchOffsetByTimestamp, command.QueryMessage:
		return needs{perms: []need{onTopic(ext["topic"], auth.PermSub)}}, nil
	case command.ConsumerSendMsgBack:
		return needs{perms: []need{onGroup(ext["group"])}}, nil
	case command.LockBatchMQ, command.UnlockBatchMQ:
		var lb lockBody
		if err := json.Unmarshal(req.Body, &lb); err != nil {
			return needs{}, fmt.Errorf("bad lock body: %w", err)
		}
		n := needs{perms: []need{onGroup(lb.ConsumerGroup)}}
		for _, mq := range lb.MQSet {
			if t := onTopic(mq.Topic, auth.PermSub); !slices.Contains(n.perms, t) {
				n.perms = append(n.perms, t)
			}
		}
		return n, nil
	}
	// UPDATE_AND_CREATE_TOPIC, DELETE_TOPIC_IN_BROKER,
	// DELETE_TOPIC_IN_NAMESRV, GET_ALL_TOPIC_LIST_FROM_NAMESERVER, and
	// whatever is added later.
	return needs{admin: true}, nil
}

// guard is the Server's Guard: identity, then permissions.
func (a *acl) guard(ctx context.Context, c *Conn, req *command.RemotingCommand) (context.Context, *command.RemotingCommand) {
	if !a.b.AuthEnabled() {
		return ctx, nil
	}
	u, remark := a.identify(ctx, c, req)
	if remark != "" {
		if req.Code == int32(command.GetRouteInfoByTopic) {
			return ctx, nil // answered to anyone, with no identity in ctx
		}
		a.noteFailure(c, req, remark)
		if remark != remarkTooMany {
			// Guessing a secret key costs one HMAC here, not a password
			// hash: the broker's per-address limit holds for it too.
			a.b.NoteLoginFailure(c.RemoteAddr())
		}
		return ctx, reply(req, command.NoPermission, remark)
	}
	ctx = context.WithValue(ctx, callerKey{}, u)
	n, err := requestNeeds(req)
	if err != nil {
		return ctx, reply(req, command.SystemError, err.Error())
	}
	if n.admin && !u.IsAdmin() {
		remark := fmt.Sprintf("%suser %s may not send %s: administrators only", remarkPrefix, u.Name, req.CodeName())
		a.log.Debug("RocketMQ request refused", "server", a.server, "user", u.Name, "code", req.CodeName(), "remote", c.RemoteAddr().String())
		return ctx, reply(req, command.NoPermission, remark)
	}
	for _, p := range n.perms {
		if !p.allowed(u) {
			a.log.Debug("RocketMQ request refused", "server", a.server, "user", u.Name, "code", req.CodeName(),
				"resource", p.name, "group", p.group, "perm", p.perm, "remote", c.RemoteAddr().String())
			return ctx, reply(req, command.NoPermission, p.refusal(u.Name))
		}
	}
	return ctx, nil
}

// noteFailure logs a failed authentication: once per connection at info
// level (a client with a wrong secret fails on every request, every
// retry and every heartbeat), then at debug level.
func (a *acl) noteFailure(c *Conn, req *command.RemotingCommand, remark string) {
	lvl := slog.LevelDebug
	if c.aclLogged.CompareAndSwap(false, true) {
		lvl = slog.LevelInfo
	}
	a.log.Log(context.Background(), lvl, "RocketMQ request not authenticated", "server", a.server,
		"access_key", req.ExtFields[extAccessKey], "code", req.CodeName(), "remote", c.RemoteAddr().String(), "reason", remark)
}

// identify returns the user the request acts for, or the remark of its
// refusal.
func (a *acl) identify(ctx context.Context, c *Conn, req *command.RemotingCommand) (auth.User, string) {
	ak, signed := req.ExtFields[extAccessKey]
	if !signed {
		return a.guest(ctx, c)
	}
	if a.b.LoginBlocked(c.RemoteAddr()) {
		return auth.User{}, remarkTooMany
	}
	if a.b.CheckOrigin(ak, c.RemoteAddr()) != nil {
		// guest signs from localhost only, as it logs in on every door.
		return auth.User{}, remarkGuestRemote
	}
	u, ok := a.b.LookupUser(ak)
	secret := u.RocketSecret
	if !ok || secret == "" {
		// Sign anyway, so that an unknown name costs what a known one
		// does and timing does not tell them apart.
		secret = "\x00no secret"
		ok = false
	}
	if !verifySignature(req, secret) || !ok {
		return auth.User{}, remarkBadSignature + ak
	}
	return u, ""
}

// guest is the user of a request without credentials.
func (a *acl) guest(ctx context.Context, c *Conn) (auth.User, string) {
	if !isLoopback(c.RemoteAddr()) {
		return auth.User{}, remarkGuestRemote
	}
	// LookupUser knows the configured default user even before a new
	// cluster has stored it.
	if u, ok := a.b.LookupUser(guestUser); ok {
		return u, ""
	}
	return auth.User{}, remarkNoGuest
}

func isLoopback(addr net.Addr) bool {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	if addr == nil {
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// verifySignature reports whether req's Signature is its content signed
// with secret, comparing in constant time. A SecurityToken is signed by
// Java clients and not by the Go client (it adds the token after
// signing): either content is accepted. Conflux gives the token no
// meaning, so leaving it out of the signature lets nothing else change.
func verifySignature(req *command.RemotingCommand, secret string) bool {
	got := []byte(req.ExtFields[extSignature])
	ok := hmac.Equal([]byte(signRequest(req, secret, false)), got)
	if _, has := req.ExtFields[extSecurityToken]; has && !ok {
		ok = hmac.Equal([]byte(signRequest(req, secret, true)), got)
	}
	return ok && len(got) > 0
}

// signRequest computes what a client with secret puts in Signature: the
// HMAC-SHA1 of the ext field values (AccessKey included, Signature not)
// in the byte order of their keys, followed by the body, in base64.
func signRequest(req *command.RemotingCommand, secret string, withToken bool) string {
	keys := make([]string, 0, len(req.ExtFields))
	for k := range req.ExtFields {
		switch {
		case k == extSignature, k == extUniqueKeyQuery:
			continue
		case k == extSecurityToken && !withToken:
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	mac := hmac.New(sha1.New, []byte(secret))
	for _, k := range keys {
		_, _ = io.WriteString(mac, req.ExtFields[k])
	}
	mac.Write(req.Body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// callerKey keys the verified user in a request's context.
type callerKey struct{}

// callerName is the name of ctx's verified user, "" for none.
func callerName(ctx context.Context) string {
	u, _ := ctx.Value(callerKey{}).(auth.User)
	return u.Name
}

// permit checks permissions a processor found the request needs (the
// topic of a message it read by offset): nil when ctx's caller has them
// all or authentication is off, else the NO_PERMISSION reply.
func permit(ctx context.Context, b *broker.Broker, req *command.RemotingCommand, ns ...need) *command.RemotingCommand {
	if !b.AuthEnabled() {
		return nil
	}
	u, ok := ctx.Value(callerKey{}).(auth.User)
	if !ok {
		return reply(req, command.NoPermission, remarkNoIdentity)
	}
	for _, n := range ns {
		if !n.allowed(u) {
			return reply(req, command.NoPermission, n.refusal(u.Name))
		}
	}
	return nil
}
