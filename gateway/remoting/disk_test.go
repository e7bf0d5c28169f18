package remoting

// The disk alarm (core/broker/disk.go) through the RocketMQ door: sends of
// every kind are answered SERVICE_NOT_AVAILABLE (14) with the reason,
// everything else goes on, and routes take the write permission from a
// node short of space.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// fakeDisk is a free-space probe a test turns (as in core/broker).
type fakeDisk struct{ free atomic.Uint64 }

func newFakeDisk() *fakeDisk {
	d := &fakeDisk{}
	d.free.Store(1e9)
	return d
}

func (d *fakeDisk) FreeBytes(string) (uint64, error) { return d.free.Load(), nil }

// full and room put the probe under and over the 100 MB limit of withDisk.
func (d *fakeDisk) full() { d.free.Store(50e6) }
func (d *fakeDisk) room() { d.free.Store(1e9) }

// withDisk makes cfg check d against a 100 MB limit every 10ms.
func withDisk(d *fakeDisk) func(*broker.Config) {
	return func(cfg *broker.Config) {
		cfg.Disk = broker.DiskConfig{FreeLimitBytes: 100e6, CheckInterval: 10 * time.Millisecond, FreeBytes: d.FreeBytes}
	}
}

func waitBlocked(t *testing.T, b *broker.Broker, want bool) {
	t.Helper()
	if !waitUntil(10*time.Second, func() bool { return b.DiskStatus().Blocked == want }) {
		t.Fatalf("disk alarm: Blocked is not %v after 10 s: %+v", want, b.DiskStatus())
	}
}

// encodeBatch builds a SEND_BATCH_MESSAGE body (remoting.md §4.2).
func encodeBatch(props string, bodies ...string) []byte {
	be := binary.BigEndian
	var out []byte
	for _, body := range bodies {
		out = be.AppendUint32(out, uint32(20+len(body)+2+len(props)))
		out = be.AppendUint32(out, 0) // magic: not checked
		out = be.AppendUint32(out, crc32.ChecksumIEEE([]byte(body)))
		out = be.AppendUint32(out, 0) // flag
		out = be.AppendUint32(out, uint32(len(body)))
		out = append(out, body...)
		out = be.AppendUint16(out, uint16(len(props)))
		out = append(out, props...)
	}
	return out
}

// wantDiskFull checks a reply refused by this node's disk alarm.
func wantDiskFull(t *testing.T, what string, resp *command.RemotingCommand) {
	t.Helper()
	if resp.Code != int32(command.ServiceNotAvailable) || !strings.HasPrefix(resp.Remark, "[DISK_FULL] service not available now: ") ||
		!strings.Contains(resp.Remark, "node 1 ") || !strings.Contains(resp.Remark, "--disk-free-limit-bytes") {
		t.Fatalf("%s under the disk alarm: code %d remark %q, want 14 with the reason", what, resp.Code, resp.Remark)
	}
}

// TestDiskAlarmWire: under the alarm SEND_MESSAGE (v1 and v2), batch and
// half sends, a retry past its limit and CONSUMER_SEND_MSG_BACK are
// answered 14 with the reason and store nothing; pulls, offsets,
// heartbeats, routes and END_TRANSACTION go on; with space back, sends
// work again.
func TestDiskAlarmWire(t *testing.T) {
	disk := newFakeDisk()
	e := startTuned(t, withDisk(disk))
	const topic = "DiskWire"
	createTopic(t, e.b, topic, 1)
	c, r := dial(t, e.brokerAddr)
	opaque := int32(0)
	call := func(code command.RequestCode, body []byte, kv ...string) *command.RemotingCommand {
		t.Helper()
		ext := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			ext[kv[i]] = kv[i+1]
		}
		opaque++
		return roundTrip(t, c, r, &command.RemotingCommand{Code: int32(code), Language: command.LanguageGo, Opaque: opaque, ExtFields: ext, Body: body})
	}
	send := func(body, props string, sysFlag string) *command.RemotingCommand {
		t.Helper()
		return call(command.SendMessage, []byte(body), "producerGroup", "pg", "topic", topic, "queueId", "0",
			"sysFlag", sysFlag, "bornTimestamp", "1", "flag", "0", "properties", props, "reconsumeTimes", "0")
	}
	sendV2 := func(body string) *command.RemotingCommand {
		t.Helper()
		return call(command.SendMessageV2, []byte(body), "a", "pg", "b", topic, "e", "0", "f", "0", "g", "1", "h", "0", "i", "", "j", "0")
	}
	sendBatch := func(bodies ...string) *command.RemotingCommand {
		t.Helper()
		return call(command.SendBatchMessage, encodeBatch("", bodies...), "a", "pg", "b", topic, "e", "0", "f", "0", "g", "1", "h", "0", "i", "", "j", "0", "m", "true")
	}

	// Before the alarm: a message to consume, and an open half message
	// to commit under it.
	if resp := send("before", "", "0"); resp.Code != 0 {
		t.Fatalf("send before the alarm: %v", resp)
	}
	half := send("half", "TRAN_MSG\x01true\x02PGROUP\x01pg\x02UNIQ_KEY\x010123456789ABCDEF0123456789ABCDEF\x02", "4")
	if half.Code != 0 {
		t.Fatalf("half send before the alarm: %v", half)
	}
	halfPhys, ok := parsePhysOffset(half.ExtFields["msgId"])
	if !ok {
		t.Fatalf("half send answered msgId %q", half.ExtFields["msgId"])
	}

	disk.full()
	waitBlocked(t, e.b, true)
	wantDiskFull(t, "SEND_MESSAGE", send("refused-v1", "", "0"))
	wantDiskFull(t, "SEND_MESSAGE_V2", sendV2("refused-v2"))
	wantDiskFull(t, "SEND_BATCH_MESSAGE", sendBatch("refused-b1", "refused-b2"))
	wantDiskFull(t, "half SEND_MESSAGE", send("refused-half", "TRAN_MSG\x01true\x02PGROUP\x01pg\x02", "4"))
	wantDiskFull(t, "SEND_MESSAGE past the retry limit (to the DLQ)", call(command.SendMessage, []byte("refused-dlq"),
		"producerGroup", "CLIENT_INNER_PRODUCER", "topic", "%RETRY%g", "queueId", "0", "sysFlag", "0", "bornTimestamp", "1",
		"flag", "0", "properties", "RETRY_TOPIC\x01"+topic+"\x02", "reconsumeTimes", "3", "maxReconsumeTimes", "2"))

	// Reads and the other commands go on.
	pull := call(command.PullMessage, nil, "consumerGroup", "g", "topic", topic, "queueId", "0", "queueOffset", "0",
		"maxMsgNums", "32", "sysFlag", "0")
	msgs := primitive.DecodeMessage(pull.Body)
	if pull.Code != 0 || len(msgs) != 1 || string(msgs[0].Body) != "before" {
		t.Fatalf("pull under the disk alarm: %v %v", pull, msgs)
	}
	wantDiskFull(t, "CONSUMER_SEND_MSG_BACK", call(command.ConsumerSendMsgBack, nil, "group", "g",
		"offset", u(uint64(msgs[0].CommitLogOffset)), "delayLevel", "0", "maxReconsumeTimes", "16", "originMsgId", msgs[0].MsgId))
	if resp := call(command.UpdateConsumerOffset, nil, "consumerGroup", "g", "topic", topic, "queueId", "0", "commitOffset", "1"); resp.Code != 0 {
		t.Fatalf("offset commit under the disk alarm: %v", resp)
	}
	if off, ok := e.b.Offset("g", topic, 0); !ok || off != 1 {
		t.Fatalf("offset committed under the disk alarm: %d %v", off, ok)
	}
	if resp := call(command.QueryConsumerOffset, nil, "consumerGroup", "g", "topic", topic, "queueId", "0"); resp.Code != 0 || resp.ExtFields["offset"] != "1" {
		t.Fatalf("offset query under the disk alarm: %v", resp)
	}
	hb := `{"clientID":"disk-client","producerDataSet":[{"groupName":"pg"}],"consumerDataSet":[]}`
	if resp := call(command.HeartBeat, []byte(hb)); resp.Code != 0 {
		t.Fatalf("heartbeat under the disk alarm: %v", resp)
	}
	// A single node is the only broker name: it stays writable, so the
	// producer is told why (above) instead of finding no route.
	if perms := routePerms(t, e.nsAddr, topic); perms["conflux"] != 6 {
		t.Fatalf("single-node route under the disk alarm: perms %v, want 6", perms)
	}
	if got := storedBodies(t, e.b, topic); len(got) != 1 || got["before"] != 1 {
		t.Fatalf("%s holds %v under the disk alarm, want only the message sent before", topic, got)
	}
	// The system topics cannot be read: count instead. The half message
	// sent before the alarm is the only one stored in them.
	for sys, want := range map[string]uint64{"%RETRY%g": 0, "%DLQ%g": 0, broker.HalfTopic: 1, broker.TimerTopic: 0} {
		if _, hi := e.b.QueueRange(sys, 0); hi != want {
			t.Fatalf("%s holds %d messages after the sends under the disk alarm, want %d", sys, hi, want)
		}
	}

	// END_TRANSACTION is a decision, not a new message: accepted, and the
	// leader's scheduler delivers the committed copy of the half message
	// stored before the alarm, as it delivers due timers.
	if resp := call(command.EndTransaction, nil, "producerGroup", "pg", "tranStateTableOffset", half.ExtFields["queueOffset"],
		"commitLogOffset", u(halfPhys), "commitOrRollback", txnCommit, "fromTransactionCheck", "false"); resp.Code != 0 {
		t.Fatalf("END_TRANSACTION commit under the disk alarm: %v", resp)
	}
	if !waitUntil(10*time.Second, func() bool { return storedBodies(t, e.b, topic)["half"] == 1 }) {
		t.Fatalf("the committed half message was not delivered under the disk alarm: %v", storedBodies(t, e.b, topic))
	}
	if !e.b.DiskStatus().Blocked {
		t.Fatal("the disk alarm cleared by itself")
	}

	disk.room()
	waitBlocked(t, e.b, false)
	if resp := send("after-v1", "", "0"); resp.Code != 0 {
		t.Fatalf("SEND_MESSAGE after the alarm: %v", resp)
	}
	if resp := sendV2("after-v2"); resp.Code != 0 {
		t.Fatalf("SEND_MESSAGE_V2 after the alarm: %v", resp)
	}
	if resp := sendBatch("after-b1", "after-b2"); resp.Code != 0 {
		t.Fatalf("SEND_BATCH_MESSAGE after the alarm: %v", resp)
	}
	want := map[string]int{"before": 1, "half": 1, "after-v1": 1, "after-v2": 1, "after-b1": 1, "after-b2": 1}
	if got := storedBodies(t, e.b, topic); !maps.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v", topic, got, want)
	}
}

// routePerms asks the name server at addr for topic's route: broker name
// -> perm.
func routePerms(t *testing.T, addr, topic string) map[string]int {
	t.Helper()
	c, r := dial(t, addr)
	resp := roundTrip(t, c, r, &command.RemotingCommand{Code: int32(command.GetRouteInfoByTopic), Language: command.LanguageGo,
		Opaque: 1, ExtFields: map[string]string{"topic": topic}})
	_ = c.Close()
	if resp.Code != 0 {
		t.Fatalf("route of %s: %v", topic, resp)
	}
	var rd topicRouteData
	if err := json.Unmarshal(resp.Body, &rd); err != nil {
		t.Fatalf("route of %s: %v in %s", topic, err, resp.Body)
	}
	perms := map[string]int{}
	for _, qd := range rd.QueueDatas {
		perms[qd.BrokerName] = qd.Perm
	}
	return perms
}

// openDiskCluster opens three brokers with fake disks and both front
// doors for each; it returns the brokers and the doors' addresses. Each
// broker door listens on a port of its own, so the routes' addresses of
// other nodes are wrong: the tests talk to each door directly.
func openDiskCluster(t *testing.T, disks []*fakeDisk) (bs []*broker.Broker, nsAddrs, brAddrs []string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		peers := map[uint64]string{}
		for id := uint64(1); id <= 3; id++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			peers[id] = l.Addr().String()
			_ = l.Close()
		}
		base := t.TempDir()
		bs = nil
		var err error
		for id := uint64(1); id <= 3 && err == nil; id++ {
			cfg := broker.Config{NodeID: id, Peers: peers, RaftAddr: peers[id], DataDir: fmt.Sprintf("%s/n%d", base, id),
				Log: clog.Config{SegmentSizeBytes: 1 << 20}, Raft: raft.Config{TickInterval: 20 * time.Millisecond}}
			withDisk(disks[id-1])(&cfg)
			var b *broker.Broker
			if b, err = broker.Open(cfg); err == nil {
				bs = append(bs, b)
			}
		}
		if err != nil {
			for _, b := range bs {
				_ = b.Close()
			}
			// A port picked free may be taken before the broker binds it.
			if !strings.Contains(err.Error(), "address already in use") || attempt == 3 {
				t.Fatal(err)
			}
			continue
		}
		own := bs
		t.Cleanup(func() {
			for _, b := range own {
				_ = b.Close()
			}
		})
		for k, b := range bs {
			nsLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			brLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rc := Config{Broker: b, BrokerAddr: brLn.Addr().String(), NodeID: uint64(k + 1), Peers: peers}
			ns, br := NewNameServer(rc), NewBroker(rc)
			go func() { _ = ns.Serve(nsLn) }()
			go func() { _ = br.Serve(brLn) }()
			t.Cleanup(func() {
				_ = ns.Close()
				_ = br.Close()
			})
			nsAddrs = append(nsAddrs, nsLn.Addr().String())
			brAddrs = append(brAddrs, brLn.Addr().String())
		}
		return bs, nsAddrs, brAddrs
	}
}

// TestDiskAlarmRouteWire: on a cluster, every node's name server takes
// PERM_WRITE from the broker name of a node whose disk alarm is on, and
// gives it back when the alarm clears; a topic whose only broker name is
// that node's keeps it (see queueDatas). With a quorum short of space, a
// node with room refuses sends too and says why.
func TestDiskAlarmRouteWire(t *testing.T) {
	disks := []*fakeDisk{newFakeDisk(), newFakeDisk(), newFakeDisk()}
	bs, nsAddrs, brAddrs := openDiskCluster(t, disks)
	if !waitUntil(15*time.Second, func() bool {
		return slices.ContainsFunc(bs, func(b *broker.Broker) bool { return b.Status().LeaderReady })
	}) {
		t.Fatal("no leader ready for writes in 15 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tp := range []broker.Topic{{Name: "Wide", Queues: 6}, {Name: "Narrow", Queues: 1}} {
		if err := bs[0].CreateTopic(ctx, tp); err != nil {
			t.Fatal(err)
		}
	}
	routesAre := func(wide, narrow map[string]int) bool {
		for _, addr := range nsAddrs {
			if !maps.Equal(routePerms(t, addr, "Wide"), wide) || !maps.Equal(routePerms(t, addr, "Narrow"), narrow) {
				return false
			}
		}
		return true
	}
	all := map[string]int{"conflux-1": 6, "conflux-2": 6, "conflux-3": 6}
	narrow := map[string]int{"conflux-1": 6} // core queue 0: broker name 1's
	if !waitUntil(10*time.Second, func() bool { return routesAre(all, narrow) }) {
		t.Fatalf("routes before the alarm: %v", routePerms(t, nsAddrs[0], "Wide"))
	}

	// Node 1 (broker name conflux-1) runs short of space: read-only for
	// producers in every node's routes, once its alarm record is applied.
	disks[0].full()
	without1 := map[string]int{"conflux-1": 4, "conflux-2": 6, "conflux-3": 6}
	if !waitUntil(10*time.Second, func() bool { return routesAre(without1, narrow) }) {
		for _, addr := range nsAddrs {
			t.Logf("%s: Wide %v Narrow %v", addr, routePerms(t, addr, "Wide"), routePerms(t, addr, "Narrow"))
		}
		t.Fatalf("routes under node 1's alarm, want Wide %v and Narrow %v", without1, narrow)
	}
	// The others still take messages, node 1 refuses them.
	if _, err := bs[1].Produce(ctx, []broker.Message{{Message: batchMessage("Wide", "x"), Queue: 1}}); err != nil {
		t.Fatalf("produce on node 2 while only node 1 is short of space: %v", err)
	}
	if _, err := bs[0].Produce(ctx, []broker.Message{{Message: batchMessage("Wide", "x"), Queue: 0}}); !errors.Is(err, broker.ErrDiskFull) {
		t.Fatalf("produce on node 1 under its alarm: %v, want ErrDiskFull", err)
	}

	// Node 2 too: a quorum is short of space, so node 3 refuses as well,
	// over the wire with the reason; its broker name stays writable (it
	// has room, and the others would refuse all the same).
	disks[1].full()
	only3 := map[string]int{"conflux-1": 4, "conflux-2": 4, "conflux-3": 6}
	if !waitUntil(10*time.Second, func() bool { return routesAre(only3, narrow) && bs[2].DiskStatus().Blocked }) {
		t.Fatalf("routes under the alarms of nodes 1 and 2: %v, want %v; node 3: %+v",
			routePerms(t, nsAddrs[2], "Wide"), only3, bs[2].DiskStatus())
	}
	c, r := dial(t, brAddrs[2])
	resp := roundTrip(t, c, r, &command.RemotingCommand{Code: int32(command.SendMessage), Language: command.LanguageGo, Opaque: 1,
		ExtFields: map[string]string{"producerGroup": "pg", "topic": "Wide", "queueId": "0", "bname": "conflux-3",
			"sysFlag": "0", "bornTimestamp": "1", "flag": "0", "properties": "", "reconsumeTimes": "0"}, Body: []byte("refused")})
	if resp.Code != int32(command.ServiceNotAvailable) || !strings.HasPrefix(resp.Remark, "[DISK_FULL] service not available now: ") ||
		!strings.Contains(resp.Remark, "quorum") || !strings.Contains(resp.Remark, "--disk-free-limit-bytes") {
		t.Fatalf("send to node 3 with a quorum short of space: code %d remark %q, want 14 with the reason", resp.Code, resp.Remark)
	}

	disks[0].room()
	disks[1].room()
	if !waitUntil(10*time.Second, func() bool { return routesAre(all, narrow) && !bs[2].DiskStatus().Blocked }) {
		t.Fatalf("routes after the alarms cleared: %v", routePerms(t, nsAddrs[0], "Wide"))
	}
	resp = roundTrip(t, c, r, &command.RemotingCommand{Code: int32(command.SendMessage), Language: command.LanguageGo, Opaque: 2,
		ExtFields: map[string]string{"producerGroup": "pg", "topic": "Wide", "queueId": "0", "bname": "conflux-3",
			"sysFlag": "0", "bornTimestamp": "1", "flag": "0", "properties": "", "reconsumeTimes": "0"}, Body: []byte("after")})
	if resp.Code != 0 {
		t.Fatalf("send to node 3 after the alarms cleared: %v", resp)
	}
}

// TestRealClientDiskAlarm: with rocketmq-client-go on a single node, a
// sync send under the disk alarm fails after its retries with code 14 and
// the reason, and stores nothing; a push consumer meanwhile consumes the
// messages sent before and commits its offsets; once space is back the
// same producer sends again, and the consumer gets exactly the
// acknowledged messages, once each.
func TestRealClientDiskAlarm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	disk := newFakeDisk()
	e := startTuned(t, withDisk(disk))
	topic, group := uniq("DiskTopic"), uniq("cg_disk")
	createTopic(t, e.b, topic, 4)
	p := newProducer(t, e.nsAddr, uniq("pg_disk"))
	acked := sendN(t, p, topic, "before", 0, 8, 10*time.Second)

	disk.full()
	waitBlocked(t, e.b, true)
	refused := func(what string, msgs ...*primitive.Message) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		res, err := p.SendSync(ctx, msgs...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "CODE: 14") || !strings.Contains(err.Error(), "[DISK_FULL]") ||
			!strings.Contains(err.Error(), "--disk-free-limit-bytes") {
			t.Fatalf("%s under the disk alarm: %v %v, want an error with code 14 and the reason", what, res, err)
		}
	}
	refused("sync send", primitive.NewMessage(topic, []byte("refused")))
	refused("batch send", primitive.NewMessage(topic, []byte("refused-b1")), primitive.NewMessage(topic, []byte("refused-b2")))

	// Pulls, heartbeats and offset commits go on under the alarm.
	col := newCollector()
	startPush(t, e.nsAddr, group, "disk-consumer", topic, consumer.Clustering, col.handler("m"))
	count := func() int {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.all)
	}
	consumed := func(n int) func() bool { return func() bool { return count() >= n } }
	if !waitUntil(60*time.Second, consumed(len(acked))) {
		t.Fatalf("consumed %d of the %d messages sent before the alarm", count(), len(acked))
	}
	// The client commits offsets every 5 s.
	committed := func() bool {
		for q := range uint32(4) {
			_, hi := e.b.QueueRange(topic, q)
			if off, ok := e.b.Offset(group, topic, q); hi > 0 && (!ok || off < hi) {
				return false
			}
		}
		return true
	}
	if !waitUntil(30*time.Second, committed) {
		t.Fatal("offsets not committed under the disk alarm within 30 s")
	}
	if !e.b.DiskStatus().Blocked {
		t.Fatal("the disk alarm cleared by itself")
	}
	for body := range storedBodies(t, e.b, topic) {
		if strings.HasPrefix(body, "refused") {
			t.Fatalf("%q was stored under the disk alarm", body)
		}
	}

	disk.room()
	waitBlocked(t, e.b, false)
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		res, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte(fmt.Sprintf("after-%d", i))))
		cancel()
		if err != nil || res.Status != primitive.SendOK {
			t.Fatalf("send %d after the alarm cleared: %v %v", i, res, err)
		}
		acked[res.MsgID] = fmt.Sprintf("after-%d", i)
	}
	if !waitUntil(60*time.Second, consumed(len(acked))) {
		t.Fatalf("consumed %d of the %d acknowledged messages", count(), len(acked))
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	for id, n := range col.all {
		if _, ok := acked[id]; !ok || n != 1 {
			t.Errorf("consumed %s (%q) %d times; acknowledged: %v", id, col.bodies[id], n, ok)
		}
	}
	if len(col.all) != len(acked) {
		t.Errorf("consumed %d messages, acknowledged %d", len(col.all), len(acked))
	}
}
