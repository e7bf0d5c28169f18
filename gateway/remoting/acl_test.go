package remoting

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the ACL's algorithm
	"encoding/base64"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/txn"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// startACL starts a broker with cheap password hashing (users with
// passwords are hashed when the test makes them) and front doors tuned by
// doors (nil: as start).
func startACL(t *testing.T, doors func(*Config)) *env {
	t.Helper()
	return startACLTuned(t, nil, doors)
}

// startACLTuned is startACL with the broker tuned too.
func startACLTuned(t *testing.T, tune func(*broker.Config), doors func(*Config)) *env {
	t.Helper()
	e := startDoors(t, 0, func(c *broker.Config) {
		c.Auth.Hash = auth.HashParams{MemoryKiB: 64, Time: 1, Threads: 1}
		if tune != nil {
			tune(c)
		}
	}, doors)
	// startDoors waited for the default user: storing another user before
	// it exists would stop its creation (core/broker bootstraps once).
	return e
}

// putUser stores u and waits until this node has applied it.
func putUser(t *testing.T, b *broker.Broker, u auth.User) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.PutUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(10*time.Second, func() bool {
		got, ok := b.LookupUser(u.Name)
		return ok && got.RocketSecret == u.RocketSecret && len(got.Rocket.Topics) == len(u.Rocket.Topics)
	}) {
		t.Fatalf("user %s not applied", u.Name)
	}
}

// The test users: alice publishes to AclTopic, bob consumes it in group
// cg_acl, carol may only subscribe, dave has no RocketMQ secret.
const (
	aclTopic    = "AclTopic"
	aclGroup    = "cg_acl"
	aliceSecret = "alice-secret-0123456789"
	bobSecret   = "bob-secret-0123456789"
	carolSecret = "carol-secret-0123456789"
)

func aclUsers(t *testing.T, b *broker.Broker) {
	t.Helper()
	putUser(t, b, auth.User{Name: "alice", RocketSecret: aliceSecret,
		Rocket: auth.RocketPerms{Topics: map[string]string{aclTopic: auth.PermPub}}})
	putUser(t, b, auth.User{Name: "bob", RocketSecret: bobSecret,
		Rocket: auth.RocketPerms{Topics: map[string]string{aclTopic: auth.PermSub}, Groups: map[string]string{aclGroup: auth.PermSub}}})
	putUser(t, b, auth.User{Name: "carol", RocketSecret: carolSecret,
		Rocket: auth.RocketPerms{Topics: map[string]string{aclTopic: auth.PermSub}}})
	putUser(t, b, auth.User{Name: "dave",
		Rocket: auth.RocketPerms{DefaultTopic: auth.PermPubSub, DefaultGroup: auth.PermPubSub}})
}

// clientSign signs req as rocketmq-client-go's ACLInterceptor does
// (internal/remote/interceptor.go), written out again here so that the
// test checks the server against the client's algorithm, not against
// itself: the values of AccessKey and of every ext field, by key, then
// the body; AccessKey and Signature are set after signing.
func clientSign(req *command.RemotingCommand, ak, sk string) {
	m := map[string]string{"AccessKey": ak}
	order := []string{"AccessKey"}
	for k, v := range req.ExtFields {
		m[k] = v
		order = append(order, k)
	}
	sort.Strings(order)
	content := ""
	for _, k := range order {
		content += m[k]
	}
	mac := hmac.New(sha1.New, []byte(sk))
	mac.Write([]byte(content))
	mac.Write(req.Body)
	req.ExtFields["Signature"] = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	req.ExtFields["AccessKey"] = ak
}

// wire is a raw client connection.
type wire struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	opaque int32
}

func dialWire(t *testing.T, addr string) *wire {
	c, r := dial(t, addr)
	return &wire{t: t, c: c, r: r}
}

// request builds a request from key/value pairs.
func request(code command.RequestCode, body []byte, kv ...string) *command.RemotingCommand {
	ext := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		ext[kv[i]] = kv[i+1]
	}
	return &command.RemotingCommand{Code: int32(code), Language: command.LanguageGo, ExtFields: ext, Body: body}
}

func (w *wire) call(req *command.RemotingCommand) *command.RemotingCommand {
	w.t.Helper()
	w.opaque++
	req.Opaque = w.opaque
	return roundTrip(w.t, w.c, w.r, req)
}

// signed signs req as ak with sk and sends it.
func (w *wire) signed(ak, sk string, req *command.RemotingCommand) *command.RemotingCommand {
	w.t.Helper()
	clientSign(req, ak, sk)
	return w.call(req)
}

func sendReq(topic, body string) *command.RemotingCommand {
	return request(command.SendMessage, []byte(body), "producerGroup", "pg_acl", "topic", topic, "queueId", "0",
		"sysFlag", "0", "bornTimestamp", "1", "flag", "0", "properties", "", "reconsumeTimes", "0")
}

func wantRefused(t *testing.T, what string, resp *command.RemotingCommand, remark ...string) {
	t.Helper()
	if resp.Code != int32(command.NoPermission) {
		t.Fatalf("%s: %v, want NO_PERMISSION (16)", what, resp)
	}
	for _, r := range remark {
		if !strings.Contains(resp.Remark, r) {
			t.Fatalf("%s: remark %q, want it to say %q", what, resp.Remark, r)
		}
	}
	if strings.Contains(resp.Remark, aliceSecret) || strings.Contains(resp.Remark, "Signature") {
		t.Fatalf("%s: the remark shows a secret or signature: %q", what, resp.Remark)
	}
}

func wantOK(t *testing.T, what string, resp *command.RemotingCommand) {
	t.Helper()
	if resp.Code != 0 {
		t.Fatalf("%s: %v, want SUCCESS", what, resp)
	}
}

// TestACLSignatureWire: what a signature covers, on the wire.
func TestACLSignatureWire(t *testing.T) {
	e := startACL(t, nil)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 1)
	createTopic(t, e.b, "OtherTopic", 1)
	w := dialWire(t, e.brokerAddr)

	wantOK(t, "a correctly signed send", w.signed("alice", aliceSecret, sendReq(aclTopic, "one")))

	forged := sendReq(aclTopic, "forged")
	forged.ExtFields["AccessKey"] = "alice"
	forged.ExtFields["Signature"] = base64.StdEncoding.EncodeToString(make([]byte, 20))
	wantRefused(t, "a forged signature", w.call(forged), "[ACL] check signature failed for accessKey=alice")

	noSig := sendReq(aclTopic, "unsigned")
	noSig.ExtFields["AccessKey"] = "alice"
	wantRefused(t, "AccessKey without a signature", w.call(noSig), "check signature failed")

	wantRefused(t, "a wrong secret", w.signed("alice", "guess", sendReq(aclTopic, "wrong")), "check signature failed for accessKey=alice")

	// Unknown user and user without a secret: the same answer as a bad
	// signature, so the reply does not tell which names exist.
	unknown := w.signed("mallory", aliceSecret, sendReq(aclTopic, "who"))
	wantRefused(t, "an unknown AccessKey", unknown, "check signature failed for accessKey=mallory")
	wantRefused(t, "a user without a RocketMQ secret", w.signed("dave", "", sendReq(aclTopic, "dave")),
		"check signature failed for accessKey=dave")

	// A signature copied onto another request (other fields) fails.
	a, b := sendReq(aclTopic, "same body"), sendReq(aclTopic, "same body")
	b.ExtFields["bornTimestamp"] = "2"
	clientSign(a, "alice", aliceSecret)
	b.ExtFields["AccessKey"], b.ExtFields["Signature"] = "alice", a.ExtFields["Signature"]
	wantRefused(t, "a signature copied from another request", w.call(b), "check signature failed")

	// Signed, then one field changed: the topic, or the body.
	moved := sendReq(aclTopic, "moved")
	clientSign(moved, "alice", aliceSecret)
	moved.ExtFields["queueId"] = "1"
	wantRefused(t, "a signed request with a changed ext field", w.call(moved), "check signature failed")
	other := sendReq(aclTopic, "body")
	clientSign(other, "alice", aliceSecret)
	other.Body = []byte("BODY")
	wantRefused(t, "a signed request with a changed body", w.call(other), "check signature failed")

	// A user name in AccessKey while signing as another.
	swapped := sendReq(aclTopic, "swap")
	clientSign(swapped, "bob", bobSecret)
	swapped.ExtFields["AccessKey"] = "alice"
	wantRefused(t, "a request signed by bob claiming to be alice", w.call(swapped), "check signature failed")

	// An exact replay cannot be told apart in RocketMQ's scheme: accepted.
	replayed := sendReq(aclTopic, "replayed")
	clientSign(replayed, "alice", aliceSecret)
	wantOK(t, "a signed request", w.call(replayed))
	wantOK(t, "the same request again", w.call(replayed))

	// A SecurityToken: the Go client adds it unsigned, Java signs it.
	goTok := sendReq(aclTopic, "go token")
	clientSign(goTok, "alice", aliceSecret)
	goTok.ExtFields["SecurityToken"] = "tok"
	wantOK(t, "a Go client's unsigned SecurityToken", w.call(goTok))
	javaTok := sendReq(aclTopic, "java token")
	javaTok.ExtFields["SecurityToken"] = "tok"
	clientSign(javaTok, "alice", aliceSecret)
	wantOK(t, "a Java client's signed SecurityToken", w.call(javaTok))

	if got := storedBodies(t, e.b, aclTopic); len(got) != 4 || got["one"] != 1 || got["replayed"] != 2 {
		t.Fatalf("%s holds %v, want one, replayed twice, go token and java token", aclTopic, got)
	}

	// The name server: routes are answered to anyone, even with a forged
	// signature (the broker refuses what matters, and tells why); the rest
	// needs an identity.
	n := dialWire(t, e.nsAddr)
	route := request(command.GetRouteInfoByTopic, nil, "topic", aclTopic, "AccessKey", "alice", "Signature", "bm9wZQ==")
	wantOK(t, "a route query with a forged signature", n.call(route))
	cluster := request(command.GetBrokerClusterInfo, nil, "AccessKey", "alice", "Signature", "bm9wZQ==")
	wantRefused(t, "cluster info with a forged signature", n.call(cluster), "check signature failed")
	wantOK(t, "signed cluster info", n.signed("alice", aliceSecret, request(command.GetBrokerClusterInfo, nil)))
}

// TestACLPermissionsWire: what each request needs, and that a change to
// a user applies to its next request.
func TestACLPermissionsWire(t *testing.T) {
	e := startACL(t, nil)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 1)
	createTopic(t, e.b, "OtherTopic", 1)
	w := dialWire(t, e.brokerAddr)

	wantRefused(t, "carol sends without PUB", w.signed("carol", carolSecret, sendReq(aclTopic, "x")),
		"user carol has no PUB permission on topic AclTopic")
	wantRefused(t, "alice sends to a topic she has no permission on", w.signed("alice", aliceSecret, sendReq("OtherTopic", "x")),
		"user alice has no PUB permission on topic OtherTopic")
	v2 := request(command.SendMessageV2, []byte("v2"), "a", "pg", "b", "OtherTopic", "e", "0", "f", "0", "g", "1", "h", "0", "i", "", "j", "0")
	wantRefused(t, "SEND_MESSAGE_V2 (short keys)", w.signed("alice", aliceSecret, v2), "topic OtherTopic")
	batch := request(command.SendBatchMessage, encodeBatch("", "b1"), "a", "pg", "b", "OtherTopic", "e", "0", "f", "0", "g", "1", "h", "0", "i", "", "j", "0", "m", "true")
	wantRefused(t, "SEND_BATCH_MESSAGE", w.signed("alice", aliceSecret, batch), "topic OtherTopic")
	wantOK(t, "alice sends with PUB", w.signed("alice", aliceSecret, sendReq(aclTopic, "first")))

	// A send to a retry topic is the group's: SUB on it.
	retry := sendReq(retryPrefix+aclGroup, "retry")
	retry.ExtFields["properties"] = "RETRY_TOPIC\x01" + aclTopic + "\x02"
	wantRefused(t, "alice sends to cg_acl's retry topic", w.signed("alice", aliceSecret, retry), "no SUB permission on group cg_acl")
	retry = sendReq(retryPrefix+aclGroup, "retry")
	wantOK(t, "bob sends to cg_acl's retry topic", w.signed("bob", bobSecret, retry))

	pull := func(group string) *command.RemotingCommand {
		return request(command.PullMessage, nil, "consumerGroup", group, "topic", aclTopic, "queueId", "0", "queueOffset", "0",
			"maxMsgNums", "32", "sysFlag", "0")
	}
	wantRefused(t, "alice pulls without SUB", w.signed("alice", aliceSecret, pull(aclGroup)), "user alice has no SUB permission on topic AclTopic")
	wantRefused(t, "carol pulls in a group she may not use", w.signed("carol", carolSecret, pull(aclGroup)), "user carol has no SUB permission on group cg_acl")
	got := w.signed("bob", bobSecret, pull(aclGroup))
	msgs := primitive.DecodeMessage(got.Body)
	if got.Code != 0 || len(msgs) != 1 || string(msgs[0].Body) != "first" {
		t.Fatalf("bob pulls: %v %v", got, msgs)
	}
	offsetReq := func(code command.RequestCode) *command.RemotingCommand {
		return request(code, nil, "consumerGroup", aclGroup, "topic", aclTopic, "queueId", "0", "commitOffset", "1")
	}
	wantRefused(t, "carol commits an offset", w.signed("carol", carolSecret, offsetReq(command.UpdateConsumerOffset)), "group cg_acl")
	wantRefused(t, "carol queries an offset", w.signed("carol", carolSecret, offsetReq(command.QueryConsumerOffset)), "group cg_acl")
	wantOK(t, "bob commits an offset", w.signed("bob", bobSecret, offsetReq(command.UpdateConsumerOffset)))
	wantRefused(t, "alice reads the max offset", w.signed("alice", aliceSecret, request(command.GetMaxOffset, nil, "topic", aclTopic, "queueId", "0")), "SUB")
	wantOK(t, "carol reads the max offset", w.signed("carol", carolSecret, request(command.GetMaxOffset, nil, "topic", aclTopic, "queueId", "0")))
	wantRefused(t, "carol lists cg_acl", w.signed("carol", carolSecret, request(command.GetConsumerListByGroup, nil, "consumerGroup", aclGroup)), "group cg_acl")

	// Heartbeats: an identity, and SUB on the groups and topics of their
	// consumer data; producer data needs nothing more (as in RocketMQ).
	hb := func(group string) *command.RemotingCommand {
		body := `{"clientID":"c1","producerDataSet":[{"groupName":"pg"}],"consumerDataSet":[{"groupName":"` + group +
			`","subscriptionDataSet":[{"topic":"` + aclTopic + `","subString":"*"},{"topic":"%RETRY%` + group + `","subString":"*"}]}]}`
		return request(command.HeartBeat, []byte(body))
	}
	wantRefused(t, "carol's consumer heartbeat", w.signed("carol", carolSecret, hb(aclGroup)), "group cg_acl")
	wantOK(t, "bob's consumer heartbeat", w.signed("bob", bobSecret, hb(aclGroup)))
	wantOK(t, "alice's producer heartbeat", w.signed("alice", aliceSecret,
		request(command.HeartBeat, []byte(`{"clientID":"p1","producerDataSet":[{"groupName":"pg"}],"consumerDataSet":[]}`))))

	// Locks: SUB on the group and every topic.
	lock := func(topic string) *command.RemotingCommand {
		return request(command.LockBatchMQ, []byte(`{"consumerGroup":"`+aclGroup+`","clientId":"c1","mqSet":[{"topic":"`+topic+`","brokerName":"conflux","queueId":0}]}`))
	}
	wantRefused(t, "bob locks a queue of a topic he may not read", w.signed("bob", bobSecret, lock("OtherTopic")), "topic OtherTopic")
	wantOK(t, "bob locks a queue of AclTopic", w.signed("bob", bobSecret, lock(aclTopic)))

	// Send-back and view read a message by offset: SUB on its topic.
	otherRes := w.call(sendReq("OtherTopic", "secret")) // as guest, from localhost
	wantOK(t, "guest sends to OtherTopic", otherRes)
	otherPhys, ok := parsePhysOffset(otherRes.ExtFields["msgId"])
	if !ok {
		t.Fatalf("msgId %q", otherRes.ExtFields["msgId"])
	}
	back := func(phys uint64) *command.RemotingCommand {
		return request(command.ConsumerSendMsgBack, nil, "group", aclGroup, "offset", u(phys), "delayLevel", "0", "maxReconsumeTimes", "16")
	}
	wantRefused(t, "bob sends back a message of OtherTopic into his retry topic", w.signed("bob", bobSecret, back(otherPhys)), "topic OtherTopic")
	wantOK(t, "bob sends back his own message", w.signed("bob", bobSecret, back(uint64(msgs[0].CommitLogOffset))))
	wantRefused(t, "bob views a message of OtherTopic", w.signed("bob", bobSecret, request(command.ViewMessageByID, nil, "offset", u(otherPhys))), "topic OtherTopic")
	wantOK(t, "bob views his own message", w.signed("bob", bobSecret, request(command.ViewMessageByID, nil, "offset", u(uint64(msgs[0].CommitLogOffset)))))

	// Ending a transaction publishes: PUB on the half message's topic.
	half := sendReq(aclTopic, "half")
	half.ExtFields["sysFlag"] = "4"
	half.ExtFields["properties"] = "TRAN_MSG\x01true\x02PGROUP\x01pg_acl\x02"
	halfRes := w.signed("alice", aliceSecret, half)
	wantOK(t, "alice sends a half message", halfRes)
	halfPhys, _ := parsePhysOffset(halfRes.ExtFields["msgId"])
	end := func() *command.RemotingCommand {
		return request(command.EndTransaction, nil, "producerGroup", "pg_acl", "tranStateTableOffset", halfRes.ExtFields["queueOffset"],
			"commitLogOffset", u(halfPhys), "commitOrRollback", txnCommit, "fromTransactionCheck", "false")
	}
	wantRefused(t, "carol commits alice's transaction", w.signed("carol", carolSecret, end()), "no PUB permission on topic AclTopic")
	wantOK(t, "alice commits her transaction", w.signed("alice", aliceSecret, end()))

	// Administrators only: topic changes, and the topic list.
	create := request(command.UpdateAndCreateTopic, nil, "topic", "NewTopic", "readQueueNums", "1", "writeQueueNums", "1", "perm", "6")
	wantRefused(t, "alice creates a topic", w.signed("alice", aliceSecret, create), "administrators only")
	n := dialWire(t, e.nsAddr)
	wantRefused(t, "alice lists the topics", n.signed("alice", aliceSecret, request(command.GetAllTopicListFromNameServer, nil)), "administrators only")
	putUser(t, e.b, auth.User{Name: "root", RocketSecret: "root-secret", Tags: []string{auth.TagAdministrator}})
	wantOK(t, "an administrator creates a topic", w.signed("root", "root-secret",
		request(command.UpdateAndCreateTopic, nil, "topic", "NewTopic", "readQueueNums", "1", "writeQueueNums", "1", "perm", "6")))
	if _, ok := e.b.Topic("NewTopic"); !ok {
		t.Fatal("the administrator's topic was not created")
	}

	// A change to a user applies to the next request.
	putUser(t, e.b, auth.User{Name: "carol", RocketSecret: carolSecret,
		Rocket: auth.RocketPerms{Topics: map[string]string{aclTopic: auth.PermPubSub}}})
	wantOK(t, "carol sends once given PUB", w.signed("carol", carolSecret, sendReq(aclTopic, "carol")))
	putUser(t, e.b, auth.User{Name: "carol", RocketSecret: "carol-new-secret",
		Rocket: auth.RocketPerms{Topics: map[string]string{aclTopic: auth.PermPubSub}}})
	wantRefused(t, "carol's old secret after a change", w.signed("carol", carolSecret, sendReq(aclTopic, "old")), "check signature failed")
	wantOK(t, "carol's new secret", w.signed("carol", "carol-new-secret", sendReq(aclTopic, "new")))
}

// TestACLTransactionCheck: a check-back carries the half message whole,
// so it goes only to a producer of the group whose user may publish to
// the topic; anyone may join a producer group.
func TestACLTransactionCheck(t *testing.T) {
	e := startACLTuned(t, func(c *broker.Config) {
		c.Schedule.Txn = txn.Config{FirstCheckDelay: 200 * time.Millisecond, CheckInterval: 200 * time.Millisecond}
	}, nil)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 1)
	beat := func(w *wire, ak, sk string) {
		t.Helper()
		wantOK(t, ak+"'s producer heartbeat", w.signed(ak, sk,
			request(command.HeartBeat, []byte(`{"clientID":"`+ak+`","producerDataSet":[{"groupName":"pg_acl"}],"consumerDataSet":[]}`))))
	}
	carol, alice := dialWire(t, e.brokerAddr), dialWire(t, e.brokerAddr)
	beat(carol, "carol", carolSecret)
	beat(alice, "alice", aliceSecret)
	half := sendReq(aclTopic, "half body")
	half.ExtFields["sysFlag"] = "4"
	half.ExtFields["properties"] = "TRAN_MSG\x01true\x02PGROUP\x01pg_acl\x02"
	wantOK(t, "alice's half message", alice.signed("alice", aliceSecret, half))

	// Checks come every 200 ms; with either connection picked at random,
	// carol would have had one of four with a probability of 15/16.
	for i := range 4 {
		_ = alice.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		check, err := command.ReadFrame(alice.r, 0)
		if err != nil {
			t.Fatalf("check %d to alice: %v", i, err)
		}
		if check.Code != int32(command.CheckTransactionState) || check.IsResponse() {
			t.Fatalf("alice got %v, want CHECK_TRANSACTION_STATE", check)
		}
	}
	_ = carol.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if got, err := command.ReadFrame(carol.r, 0); err == nil {
		t.Fatalf("carol, without PUB on %s, got %v", aclTopic, got)
	}
}

// addrConn reports a chosen remote address.
type addrConn struct {
	net.Conn
	addr net.Addr
}

func (a addrConn) RemoteAddr() net.Addr { return a.addr }

// TestACLGuest: a request without AccessKey is guest's, from loopback
// only and only while the user exists.
func TestACLGuest(t *testing.T) {
	e := startACL(t, nil)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 1)
	a := newACL(e.b, nil, "test")
	remote := &Conn{nc: addrConn{addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}}}
	local := &Conn{nc: addrConn{addr: &net.TCPAddr{IP: net.ParseIP("::1"), Port: 4000}}}
	anon := request(command.GetMaxOffset, nil, "topic", aclTopic, "queueId", "0")
	if _, remark := a.identify(context.Background(), remote, anon); remark != remarkGuestRemote {
		t.Fatalf("guest from a remote address: %q", remark)
	}
	if u, remark := a.identify(context.Background(), local, anon); remark != "" || u.Name != guestUser {
		t.Fatalf("guest from ::1: %v %q", u, remark)
	}
	// Signing as guest does not get round the rule, even with guest's
	// secret key right.
	putUser(t, e.b, auth.User{Name: guestUser, RocketSecret: "guest-secret", Tags: []string{auth.TagAdministrator}})
	signedGuest := request(command.GetMaxOffset, nil, "topic", aclTopic, "queueId", "0")
	clientSign(signedGuest, guestUser, "guest-secret")
	if _, remark := a.identify(context.Background(), remote, signedGuest); remark != remarkGuestRemote {
		t.Fatalf("guest signing from a remote address: %q", remark)
	}

	// Without the guest user: refused at once (other users exist), on
	// the wire too, except routes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.b.DeleteUser(ctx, guestUser); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(10*time.Second, func() bool { _, ok := e.b.LookupUser(guestUser); return !ok }) {
		t.Fatal("guest not deleted")
	}
	began := time.Now()
	if _, remark := a.identify(context.Background(), local, anon); remark != remarkNoGuest || time.Since(began) > time.Second {
		t.Fatalf("no guest user: %q after %v", remark, time.Since(began))
	}
	w := dialWire(t, e.brokerAddr)
	wantRefused(t, "a request without credentials and no guest user", w.call(anon), "no user guest")
	n := dialWire(t, e.nsAddr)
	wantOK(t, "a route query without credentials", n.call(request(command.GetRouteInfoByTopic, nil, "topic", aclTopic)))
	// ... but what a route query would create needs the group.
	if resp := n.call(request(command.GetRouteInfoByTopic, nil, "topic", retryPrefix+"cg_anon")); resp.Code != int32(command.TopicNotExist) {
		t.Fatalf("an anonymous route query for a new retry topic: %v", resp)
	}
	if _, ok := e.b.Topic(retryPrefix + "cg_anon"); ok {
		t.Fatal("an anonymous route query created a retry topic")
	}
	wantOK(t, "bob's route query for his retry topic", n.signed("bob", bobSecret, request(command.GetRouteInfoByTopic, nil, "topic", retryPrefix+aclGroup)))
}

// TestACLDisabled: with authentication off, nothing is checked.
func TestACLDisabled(t *testing.T) {
	e := startDoors(t, 0, func(c *broker.Config) { c.Auth.Disabled = true }, nil)
	w := dialWire(t, e.brokerAddr)
	wantOK(t, "a forged signature with auth off", w.call(request(command.GetMaxOffset, nil, "topic", "T", "queueId", "0",
		"AccessKey", "nobody", "Signature", "bm9wZQ==")))
}

// TestRealClientACL: rocketmq-client-go with credentials.
func TestRealClientACL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	e := startACL(t, nil)
	aclUsers(t, e.b)
	createTopic(t, e.b, aclTopic, 2)
	ns := primitive.NewPassthroughResolver([]string{e.nsAddr})

	newProducer := func(name, ak, sk string) rocketmq.Producer {
		t.Helper()
		p, err := rocketmq.NewProducer(producer.WithNsResolver(ns), producer.WithGroupName("pg_"+name),
			producer.WithInstanceName("acl-"+name), producer.WithRetry(1),
			producer.WithCredentials(primitive.Credentials{AccessKey: ak, SecretKey: sk}))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Shutdown() })
		return p
	}
	send := func(p rocketmq.Producer, body string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := p.SendSync(ctx, primitive.NewMessage(aclTopic, []byte(body)))
		return err
	}

	if err := send(newProducer("alice", "alice", aliceSecret), "signed"); err != nil {
		t.Fatalf("alice's send: %v", err)
	}
	err := send(newProducer("alice-wrong", "alice", "not-her-secret"), "forged")
	if err == nil || !strings.Contains(err.Error(), "CODE: 16") || !strings.Contains(err.Error(), "check signature failed for accessKey=alice") {
		t.Fatalf("a send with a wrong secret: %v", err)
	}
	err = send(newProducer("carol", "carol", carolSecret), "no PUB")
	if err == nil || !strings.Contains(err.Error(), "CODE: 16") || !strings.Contains(err.Error(), "user carol has no PUB permission on topic AclTopic") {
		t.Fatalf("a send without PUB: %v", err)
	}

	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(ns), consumer.WithGroupName(aclGroup),
		consumer.WithInstance("acl-bob"), consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		consumer.WithCredentials(primitive.Credentials{AccessKey: "bob", SecretKey: bobSecret}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	err = c.Subscribe(aclTopic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			got = append(got, string(m.Body))
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Shutdown() }()
	if !waitUntil(60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 }) {
		t.Fatal("bob consumed nothing in 60 s")
	}
	// The consumer's offsets are committed under its identity too.
	if !waitUntil(30*time.Second, func() bool {
		for q := range uint32(2) {
			if off, ok := e.b.Offset(aclGroup, aclTopic, q); ok && off > 0 {
				return true
			}
		}
		return false
	}) {
		t.Fatal("bob's offset was not committed in 30 s")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "signed" {
		t.Fatalf("bob consumed %q, want only alice's signed message", got)
	}
}

// TestACLInternalTopics: an AMQP queue's core topic is guarded by AMQP's
// vhost permissions; through RocketMQ only administrators reach it, even
// for a user whose default topic permission is PUB|SUB.
func TestACLInternalTopics(t *testing.T) {
	e := startACL(t, nil)
	aclUsers(t, e.b)
	const queueTopic, erinSecret = "AMQP%orders%6c40bc44a494a7f3", "erin-secret"
	putUser(t, e.b, auth.User{Name: "erin", RocketSecret: erinSecret,
		Rocket: auth.RocketPerms{DefaultTopic: auth.PermPubSub, DefaultGroup: auth.PermPubSub}})
	createTopic(t, e.b, queueTopic, 1)
	w := dialWire(t, e.brokerAddr)
	pull := func() *command.RemotingCommand {
		return request(command.GetMaxOffset, nil, "topic", queueTopic, "queueId", "0")
	}
	wantOK(t, "erin (default PUB|SUB) on an ordinary topic", w.signed("erin", erinSecret,
		request(command.GetMaxOffset, nil, "topic", aclTopic, "queueId", "0")))
	wantRefused(t, "erin (default PUB|SUB) on an AMQP queue's topic", w.signed("erin", erinSecret, pull()))
	wantRefused(t, "erin sending to an AMQP queue's topic", w.signed("erin", erinSecret, sendReq(queueTopic, "x")))
	wantOK(t, "guest (an administrator, from localhost)", w.call(pull()))
}
