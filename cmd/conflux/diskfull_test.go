package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sys/unix"

	"github.com/conflux-mq/conflux/core/log/vfs"
	"github.com/conflux-mq/conflux/internal/testdisk"
)

// Full-disk tests: `conflux serve` processes whose data dirs are small
// tmpfs mounts, filled by each protocol's real client until the disk
// alarm (--disk-free-limit-bytes), then given space back; and filled with
// the alarm off until the disk is really full, killed with SIGKILL there,
// and restarted. Every acknowledged message must be there, in order.

// smallDisk mounts a tmpfs of sizeMiB on a new directory and returns it.
func smallDisk(t *testing.T, sizeMiB int) string {
	t.Helper()
	dir := t.TempDir()
	testdisk.Mount(t, dir, fmt.Sprintf("%dm", sizeMiB))
	return dir
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	free, err := vfs.OS{}.FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	return free
}

// ballast takes the free space of dir's file system down to about leave
// bytes and returns the function that gives it back.
func ballast(t *testing.T, dir string, leave uint64) func() {
	t.Helper()
	free := freeBytes(t, dir)
	if free <= leave {
		t.Fatalf("only %d bytes free in %s, cannot leave %d", free, dir, leave)
	}
	name := filepath.Join(dir, "ballast")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(free-leave)); err != nil {
		t.Fatalf("fallocate ballast: %v", err)
	}
	return func() {
		if err := os.Remove(name); err != nil {
			t.Fatalf("remove ballast: %v", err)
		}
	}
}

// diskNode runs one node with every door on 127.0.0.1 ports and its data
// on dir; extra flags come last.
type diskNode struct {
	*node
	ports map[string]int
}

func (d *diskNode) addr(flag string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.ports[flag]))
}

var diskDoors = []string{"http-addr", "namesrv-addr", "broker-addr", "mqtt-addr", "amqp-addr"}

func startDiskNode(t *testing.T, bin, dir string, ports map[string]int, extra ...string) *diskNode {
	t.Helper()
	if ports == nil {
		ps := freePorts(t, len(diskDoors)+1)
		ports = map[string]int{"raft-addr": ps[len(diskDoors)]}
		for k, f := range diskDoors {
			ports[f] = ps[k]
		}
	}
	d := &diskNode{ports: ports}
	args := []string{"--data-dir", filepath.Join(dir, "data"), "--raft-addr", d.addr("raft-addr"),
		"--advertise-host", "127.0.0.1", "--segment-size-bytes", strconv.Itoa(4 << 20), "--mqtt-ws-addr="}
	for _, f := range diskDoors[1:] {
		args = append(args, "--"+f, d.addr(f))
	}
	d.node = startNode(t, bin, "node", d.addr("http-addr"), append(args, extra...)...)
	waitReady(t, d.node)
	return d
}

// fillTopic is where every door publishes: MQTT fill/<x>, RocketMQ topic
// fill with tag <x>, AMQP amq.topic key fill.<x>; all of them reach the
// AMQP queue fillq bound to amq.topic with fill.#.
const fillQueue = "fillq"

// acked collects, per publisher, the sequence numbers it saw acknowledged.
type acked struct {
	mu  sync.Mutex
	seq map[string][]int
}

func (a *acked) add(pub string, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seq == nil {
		a.seq = map[string][]int{}
	}
	a.seq[pub] = append(a.seq[pub], n)
}

func (a *acked) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, s := range a.seq {
		n += len(s)
	}
	return n
}

func payload(pub string, n, size int) []byte {
	b := []byte(fmt.Sprintf("%s %d ", pub, n))
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// guestChannel opens a channel as guest on its own connection, which the
// test's cleanup closes.
func guestChannel(t *testing.T, amqpAddr string) *amqp091.Channel {
	t.Helper()
	c, err := amqp091.Dial("amqp://guest:guest@" + amqpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// checkAllThere reads fillq without consuming it (nothing is acked, and
// closing the channel puts everything back) and requires every
// acknowledged message of every publisher, in publish order (copies are
// allowed: a message whose ack was lost may be stored twice).
func checkAllThere(t *testing.T, amqpAddr string, want *acked) {
	t.Helper()
	ch := guestChannel(t, amqpAddr)
	defer ch.Close() // requeues what was read
	got := map[string][]int{}
	for {
		d, ok, err := ch.Get(fillQueue, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var pub string
		var n int
		if _, err := fmt.Sscanf(string(d.Body), "%s %d ", &pub, &n); err != nil {
			t.Fatalf("unexpected body %.40q", d.Body)
		}
		got[pub] = append(got[pub], n)
	}
	want.mu.Lock()
	defer want.mu.Unlock()
	for pub, seqs := range want.seq {
		have := map[int]bool{}
		last := -1
		for _, n := range got[pub] {
			if n < last {
				t.Fatalf("%s: %d stored after %d", pub, n, last)
			}
			last = n
			have[n] = true
		}
		for _, n := range seqs {
			if !have[n] {
				t.Fatalf("%s: acknowledged message %d is missing (%d acknowledged, %d stored)", pub, n, len(seqs), len(got[pub]))
			}
		}
		t.Logf("%s: %d acknowledged, %d stored", pub, len(seqs), len(got[pub]))
	}
}

// setupFillQueue declares fillq and binds it to amq.topic with fill.#.
func setupFillQueue(t *testing.T, amqpAddr string) {
	t.Helper()
	ch := guestChannel(t, amqpAddr)
	defer ch.Close()
	if _, err := ch.QueueDeclare(fillQueue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(fillQueue, "fill.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
}

// mqttPublisher is an MQTT 5 client publishing QoS 1 to fill/mqtt.
type mqttPublisher struct {
	c    *paho.Client
	name string
	next int
}

func dialMQTT5(t *testing.T, addr, id string) *mqttPublisher {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("MQTT connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return &mqttPublisher{c: c, name: id}
}

// publish sends the next message and returns the PUBACK's reason code (0
// when acknowledged) or the error that stopped it.
func (p *mqttPublisher) publish(size int, a *acked) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := p.next
	res, err := p.c.Publish(ctx, &paho.Publish{Topic: "fill/mqtt", QoS: 1, Payload: payload(p.name, n, size)})
	if res != nil && res.ReasonCode >= 0x80 {
		return res.ReasonCode, nil
	}
	if err != nil {
		return 0, err
	}
	p.next++
	a.add(p.name, n)
	return 0, nil
}

func newRocketProducer(t *testing.T, nsAddr, name string) rocketmq.Producer {
	return newRocketProducerOn(t, []string{nsAddr}, name)
}

// newRocketProducerOn starts a producer with two retries: a send refused
// with a retryable code goes to another broker.
func newRocketProducerOn(t *testing.T, nsAddrs []string, name string) rocketmq.Producer {
	t.Helper()
	quietRlogOnce.Do(func() { rlog.SetLogger(quietRlog{}) })
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver(nsAddrs)),
		producer.WithGroupName("pg_"+name), producer.WithInstanceName(name),
		producer.WithSendMsgTimeout(3*time.Second), producer.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

func rocketSend(p rocketmq.Producer, pub string, n int, a *acked) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := primitive.NewMessage("fill", payload(pub, n, 2000)) // under the client's 4 KiB compression threshold
	m.WithTag("rmq")
	res, err := p.SendSync(ctx, m)
	if err != nil {
		return err
	}
	if res.Status != primitive.SendOK {
		return fmt.Errorf("send status %d", res.Status)
	}
	a.add(pub, n)
	return nil
}

// TestDiskFullAlarmSingleNode: one node on a small disk. MQTT 5, AMQP and
// RocketMQ clients publish until the disk alarm; each gets its protocol's
// refusal while reads go on; when space comes back every client publishes
// again on its own connection, without a restart, and everything
// acknowledged is stored in order.
func TestDiskFullAlarmSingleNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := smallDisk(t, 320)
	bin := buildBinary(t)
	const limit = 48 << 20
	n := startDiskNode(t, bin, dir, nil, "--disk-free-limit-bytes", strconv.Itoa(limit))
	setupFillQueue(t, n.addr("amqp-addr"))
	var a acked

	// Every door writes once with room to spare: topics, queue files.
	mq := dialMQTT5(t, n.addr("mqtt-addr"), "mqtt")
	if code, err := mq.publish(1000, &a); code != 0 || err != nil {
		t.Fatalf("first MQTT publish: code %#x, %v", code, err)
	}
	rp := newRocketProducer(t, n.addr("namesrv-addr"), "rmq")
	rseq := 0
	if err := rocketSend(rp, "rmq", rseq, &a); err != nil {
		t.Fatalf("first RocketMQ send: %v", err)
	}
	rseq++
	ac, err := amqp091.Dial("amqp://guest:guest@" + n.addr("amqp-addr") + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ac.Close() })
	blocked := ac.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ach, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ach.Confirm(false); err != nil {
		t.Fatal(err)
	}
	aseq := 0
	amqpPublish := func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dc, err := ach.PublishWithDeferredConfirmWithContext(ctx, "amq.topic", "fill.amqp", false, false,
			amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: payload("amqp", aseq, 4000)})
		if err != nil {
			return false, err
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return false, err
		}
		if ok {
			a.add("amqp", aseq)
			aseq++
		}
		return ok, nil
	}
	if ok, err := amqpPublish(); !ok || err != nil {
		t.Fatalf("first AMQP publish: %v %v", ok, err)
	}

	// Leave 16 MiB above the limit; MQTT fills the rest.
	release := ballast(t, dir, limit+16<<20)
	var refused byte
	for i := 0; refused == 0; i++ {
		if i > 2000 {
			t.Fatal("MQTT publisher was never refused")
		}
		code, err := mq.publish(64<<10, &a)
		if err != nil {
			t.Fatalf("MQTT publish %d: %v", i, err)
		}
		refused = code
	}
	if refused != 0x97 {
		t.Fatalf("MQTT 5 refusal reason %#x, want 0x97 (quota exceeded)", refused)
	}
	if m := n.metrics(); m["conflux_disk_alarm"] != 1 || m["conflux_produce_blocked"] != 1 {
		t.Fatalf("metrics under the alarm: disk_alarm %v produce_blocked %v", m["conflux_disk_alarm"], m["conflux_produce_blocked"])
	}
	select {
	case b := <-blocked:
		if !b.Active {
			t.Fatalf("AMQP: first notification is %+v, want blocked", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AMQP: no connection.blocked under the disk alarm")
	}
	if ok, err := amqpPublish(); ok || err != nil {
		t.Fatalf("AMQP publish under the alarm: acked %v, err %v; want a nack", ok, err)
	}
	// rocketmq-client-go reports a broker's refusal as "CODE: n, DESC: …".
	if err = rocketSend(rp, "rmq", rseq, &a); err == nil || !strings.Contains(err.Error(), "CODE: 14") {
		t.Fatalf("RocketMQ send under the alarm: %v, want broker code 14", err)
	}
	rseq++
	// Reads go on: the queue is there to read while the alarm is on.
	checkAllThere(t, n.addr("amqp-addr"), &a)

	release()
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("AMQP: notification after space came back is %+v, want unblocked", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AMQP: no connection.unblocked after space came back")
	}
	if code, err := mq.publish(64<<10, &a); code != 0 || err != nil {
		t.Fatalf("MQTT after space came back: code %#x, %v", code, err)
	}
	if ok, err := amqpPublish(); !ok || err != nil {
		t.Fatalf("AMQP after space came back: acked %v, err %v", ok, err)
	}
	waitFor(t, "a RocketMQ send after space came back", 30*time.Second, []*node{n.node}, func() (bool, string) {
		err := rocketSend(rp, "rmq", rseq, &a)
		rseq++
		return err == nil, fmt.Sprint(err)
	})
	checkAllThere(t, n.addr("amqp-addr"), &a)
}

// TestDiskFullKillAndRestart: with the alarm off, MQTT fills the disk
// until the node can store nothing more (the raft loop waits for space or
// the node stops); it is killed with SIGKILL there. With space back it
// must start again and hold every acknowledged message.
func TestDiskFullKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := smallDisk(t, 320)
	bin := buildBinary(t)
	n := startDiskNode(t, bin, dir, nil, "--disk-free-limit-bytes=-1")
	setupFillQueue(t, n.addr("amqp-addr"))
	var a acked
	mq := dialMQTT5(t, n.addr("mqtt-addr"), "mqtt")
	if code, err := mq.publish(1000, &a); code != 0 || err != nil {
		t.Fatalf("first MQTT publish: code %#x, %v", code, err)
	}
	release := ballast(t, dir, 12<<20)
	// Publish until a publish is not acknowledged: the disk is full.
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatal("the disk never filled")
		}
		if code, err := mq.publish(64<<10, &a); code != 0 || err != nil {
			t.Logf("publish %d not acknowledged (code %#x, %v) after %d acknowledged", i, code, err, a.total())
			break
		}
	}
	if !n.exited() {
		if m := n.metrics(); m["conflux_raft_storage_full"] != 1 {
			t.Logf("storage_full metric %v (the node may be refusing for another reason)", m["conflux_raft_storage_full"])
		}
		if err := n.cmd.Process.Signal(unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	<-n.done
	release()
	n = startDiskNode(t, bin, dir, n.ports)
	checkAllThere(t, n.addr("amqp-addr"), &a)
}

// TestDiskFullAlarmThreeNodes: three processes, each on its own small
// disk. One follower under its limit refuses its own MQTT publishers while
// the others go on and RocketMQ producers retry on other brokers; with a
// quorum under the limit every node refuses; with space back everything
// resumes without a restart. Then a node is killed with SIGKILL while its
// disk is short, restarted with space back, and the cluster holds every
// acknowledged message in order.
func TestDiskFullAlarmThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const limit = 48 << 20
	disks := []string{smallDisk(t, 320), smallDisk(t, 320), smallDisk(t, 320)}
	cs := startCluster3With(t, cluster3Options{
		doors:   []string{"mqtt-addr", "amqp-addr", "namesrv-addr", "broker-addr"},
		dataDir: func(i int) string { return filepath.Join(disks[i], "data") },
		extra:   []string{"--disk-free-limit-bytes", strconv.Itoa(limit)},
	})
	lead := waitLeader(t, cs.nodes)
	f1, f2 := (lead+1)%3, (lead+2)%3
	setupFillQueue(t, cs.addr(lead, "amqp-addr"))
	var a acked
	pubs := make([]*mqttPublisher, 3)
	for i := range pubs {
		pubs[i] = dialMQTT5(t, cs.addr(i, "mqtt-addr"), fmt.Sprintf("mqtt%d", i+1))
		if code, err := pubs[i].publish(1000, &a); code != 0 || err != nil {
			t.Fatalf("first publish on node %d: code %#x, %v", i+1, code, err)
		}
	}
	var nsAddrs []string
	for i := range cs.nodes {
		nsAddrs = append(nsAddrs, cs.addr(i, "namesrv-addr"))
	}
	rp := newRocketProducerOn(t, nsAddrs, "rmq3")
	rseq := 0
	rsend := func() error {
		err := rocketSend(rp, "rmq", rseq, &a)
		rseq++
		return err
	}
	if err := rsend(); err != nil {
		t.Fatalf("first RocketMQ send: %v", err)
	}

	// Fill follower 1's disk through its own MQTT door until it refuses.
	release1 := ballast(t, disks[f1], limit+8<<20)
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatal("the follower's MQTT door never refused")
		}
		code, err := pubs[f1].publish(64<<10, &a)
		if err != nil {
			t.Fatalf("publish on the filling follower: %v", err)
		}
		if code == 0x97 {
			break
		}
		if code != 0 {
			t.Fatalf("refusal reason %#x, want 0x97", code)
		}
	}
	for _, i := range []int{lead, f2} {
		if code, err := pubs[i].publish(64<<10, &a); code != 0 || err != nil {
			t.Fatalf("node %d refused (code %#x, %v) while only one follower is short of space", i+1, code, err)
		}
	}
	for range 5 {
		if err := rsend(); err != nil {
			t.Fatalf("RocketMQ send with one broker short of space (the client retries elsewhere): %v", err)
		}
	}

	// A quorum short of space: every node refuses.
	release2 := ballast(t, disks[f2], limit-(1<<20))
	waitFor(t, "the leader blocked by a quorum of alarms", 30*time.Second, cs.nodes, func() (bool, string) {
		m := cs.nodes[lead].metrics()
		return m["conflux_produce_blocked"] == 1, fmt.Sprintf("alarm nodes %v", m["conflux_disk_alarm_nodes"])
	})
	if code, _ := pubs[lead].publish(64<<10, &a); code != 0x97 {
		t.Fatalf("leader's MQTT door with a quorum short of space: code %#x, want 0x97", code)
	}
	if err := rsend(); err == nil || !strings.Contains(err.Error(), "CODE: 14") {
		t.Fatalf("RocketMQ send with a quorum short of space: %v, want broker code 14", err)
	}

	release1()
	release2()
	waitFor(t, "producers accepted again on every node", 30*time.Second, cs.nodes, func() (bool, string) {
		for i, n := range cs.nodes {
			if m := n.metrics(); m["conflux_produce_blocked"] != 0 {
				return false, fmt.Sprintf("node %d still blocked", i+1)
			}
		}
		return true, ""
	})
	for i := range pubs {
		if code, err := pubs[i].publish(64<<10, &a); code != 0 || err != nil {
			t.Fatalf("node %d after space came back: code %#x, %v", i+1, code, err)
		}
	}
	if err := rsend(); err != nil {
		t.Fatalf("RocketMQ after space came back: %v", err)
	}

	// SIGKILL a follower while its disk is short, restart it with room.
	release1 = ballast(t, disks[f1], limit-(1<<20))
	waitFor(t, "follower's alarm", 30*time.Second, cs.nodes, func() (bool, string) {
		return cs.nodes[f1].metrics()["conflux_disk_alarm"] == 1, ""
	})
	if err := cs.nodes[f1].cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-cs.nodes[f1].done
	for range 5 {
		if code, err := pubs[lead].publish(64<<10, &a); code != 0 || err != nil {
			t.Fatalf("leader with a follower down: code %#x, %v", code, err)
		}
	}
	release1()
	cs.restart(t, f1)
	waitReady(t, cs.nodes...)
	waitFor(t, "the restarted follower caught up", 60*time.Second, cs.nodes, func() (bool, string) {
		want := cs.nodes[lead].metrics()["conflux_raft_applied_index"]
		got := cs.nodes[f1].metrics()["conflux_raft_applied_index"]
		return got >= want, fmt.Sprintf("applied %v, leader %v", got, want)
	})
	checkAllThere(t, cs.addr(lead, "amqp-addr"), &a)
}
