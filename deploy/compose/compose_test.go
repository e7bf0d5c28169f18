package compose

// The docker compose cluster, tested for real: the image is built from the
// static binary (FROM scratch, nothing pulled), three containers start on a
// private network, a rocketmq-client-go producer sends through their name
// servers, the leader's container is killed (SIGKILL) and later started
// again, and every acknowledged message must be consumed at the queue and
// offset its send reported. An amqp091-go publisher also sends confirmed
// messages through a follower before the kill; a consumer on the leader
// of the end must find them all, in order.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

type quietLog struct{}

func (quietLog) Debug(string, map[string]interface{})   {}
func (quietLog) Info(string, map[string]interface{})    {}
func (quietLog) Warning(string, map[string]interface{}) {}
func (quietLog) Error(string, map[string]interface{})   {}
func (quietLog) Fatal(string, map[string]interface{})   {}
func (quietLog) Level(string)                           {}
func (quietLog) OutputPath(string) error                { return nil }

// needTools skips without docker and docker-compose, except under CI=true,
// where their absence is a failure.
func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
			missing = append(missing, "a running Docker daemon ("+strings.TrimSpace(string(out))+")")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "the compose cluster test needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// metrics reads a node's Prometheus text; nil if it does not answer.
func metrics(host string) map[string]float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + host + ":8080/metrics")
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func poll(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type acked struct {
	body, msgID, broker string
	queue               int
	offset              int64
}

func TestComposeClusterKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a docker compose cluster")
	}
	needTools(t)
	subnet := os.Getenv("CONFLUX_TEST_SUBNET")
	if subnet == "" {
		subnet = "172.29.72" // not the default of `make compose-up`
	}
	project := fmt.Sprintf("conflux-test-%d", os.Getpid())
	image := project + ":image"
	// The cluster's own administrator: clients here are not on the nodes'
	// loopback, where guest would be allowed.
	const user, password, rocketSecret = "compose-admin", "compose-secret", "compose-rocketmq-secret"
	env := []string{"CONFLUX_IMAGE=" + image, "CONFLUX_SUBNET=" + subnet, "CONFLUX_USER=" + user, "CONFLUX_PASSWORD=" + password,
		"CONFLUX_ROCKETMQ_SECRET_KEY=" + rocketSecret}
	creds := primitive.Credentials{AccessKey: user, SecretKey: rocketSecret}
	hosts := []string{subnet + ".11", subnet + ".12", subnet + ".13"}

	// The image: the static binary and the Dockerfile, nothing else.
	ctxDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "conflux"), "../../cmd/conflux")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "docker", "build", "-q", "-t", image, ctxDir)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })

	compose := func(args ...string) string {
		return run(t, env, "docker-compose", append([]string{"-p", project, "-f", "docker-compose.yml"}, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			cmd := exec.Command("docker-compose", "-p", project, "-f", "docker-compose.yml", "logs", "--tail", "40")
			cmd.Env = append(os.Environ(), env...)
			out, _ := cmd.CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		cmd := exec.Command("docker-compose", "-p", project, "-f", "docker-compose.yml", "down", "-v", "-t", "2")
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	compose("up", "-d")

	leaderOf := func(idx []int) (int, string) {
		var state []string
		leader := -1
		for _, i := range idx {
			m := metrics(hosts[i])
			state = append(state, fmt.Sprintf("node%d leader=%v", i+1, m["conflux_raft_is_leader"]))
			if m["conflux_raft_is_leader"] == 1 {
				leader = i
			}
		}
		return leader, strings.Join(state, ", ")
	}
	var leader int
	poll(t, "a leader", 60*time.Second, func() (bool, string) {
		l, why := leaderOf([]int{0, 1, 2})
		leader = l
		return l >= 0, why
	})
	t.Logf("leader: node%d", leader+1)

	rlog.SetLogger(quietLog{})
	var ns []string
	for _, h := range hosts {
		ns = append(ns, h+":9876")
	}
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver(ns)),
		producer.WithGroupName("compose_pg"), producer.WithSendMsgTimeout(3*time.Second), producer.WithRetry(3),
		producer.WithCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })

	const topic = "ComposeTopic"
	var sent []acked
	failures := 0
	send := func(i int, within time.Duration) {
		t.Helper()
		body := fmt.Sprintf("compose-%d", i)
		deadline := time.Now().Add(within)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte(body)))
			cancel()
			if err == nil && res.Status == primitive.SendOK {
				sent = append(sent, acked{body: body, msgID: res.MsgID, broker: res.MessageQueue.BrokerName,
					queue: res.MessageQueue.QueueId, offset: res.QueueOffset})
				return
			}
			failures++
			if time.Now().After(deadline) {
				t.Fatalf("send %s not acknowledged within %s: %v", body, within, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i := range 100 {
		send(i, 30*time.Second)
	}
	// AMQP too: confirmed publishes through a follower before the kill,
	// consumed from whichever node leads at the end.
	amqpURL := func(i int) string { return "amqp://" + user + ":" + password + "@" + hosts[i] + ":5672/" }
	const amqpQueue, amqpCount = "compose-q", 50
	func() {
		conn, err := amqp091.DialConfig(amqpURL((leader+1)%3), amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(amqpQueue, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		for i := range amqpCount {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", amqpQueue, false, false,
				amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(fmt.Sprint("amqp-", i))})
			if err == nil {
				var ok bool
				if ok, err = dc.WaitContext(ctx); err == nil && !ok {
					err = fmt.Errorf("nacked")
				}
			}
			cancel()
			if err != nil {
				t.Fatalf("AMQP publish %d: %v", i, err)
			}
		}
	}()

	service := fmt.Sprintf("node%d", leader+1)
	compose("kill", "-s", "SIGKILL", service)
	killedAt := time.Now()
	before := failures
	for i := 100; i < 200; i++ {
		send(i, 20*time.Second)
	}
	t.Logf("100 sends after killing %s: acknowledged in %s, %d failed attempts", service,
		time.Since(killedAt).Round(time.Millisecond), failures-before)

	// The killed node comes back with its volume and catches up.
	compose("start", service)
	var survivors []int
	for i := range hosts {
		if i != leader {
			survivors = append(survivors, i)
		}
	}
	poll(t, service+" to catch up after its restart", 60*time.Second, func() (bool, string) {
		back := metrics(hosts[leader])
		if back == nil {
			return false, "no metrics yet"
		}
		other := metrics(hosts[survivors[0]])
		a, b := back["conflux_raft_applied_index"], other["conflux_raft_applied_index"]
		return a > 0 && a >= b, fmt.Sprintf("applied %v vs %v", a, b)
	})

	// Everything acknowledged is consumed where its send said.
	want := map[string]acked{}
	for _, a := range sent {
		want[a.body] = a
	}
	var mu sync.Mutex
	at := map[string][]string{}
	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver(ns)),
		consumer.WithGroupName("compose_cg"), consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		consumer.WithCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			at[string(m.Body)] = append(at[string(m.Body)], fmt.Sprintf("%s/%d@%d %s", m.Queue.BrokerName, m.Queue.QueueId, m.QueueOffset, m.MsgId))
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	poll(t, "every acknowledged message consumed", 60*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for body := range want {
			if len(at[body]) == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d not consumed yet", missing, len(want))
	})
	// The AMQP messages, from the leader of now (it serves deliveries).
	var now int
	poll(t, "a leader after the restart", 60*time.Second, func() (bool, string) {
		l, why := leaderOf([]int{0, 1, 2})
		now = l
		return l >= 0, why
	})
	conn, err := amqp091.DialConfig(amqpURL(now), amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	poll(t, "every confirmed AMQP message", 30*time.Second, func() (bool, string) {
		for {
			d, ok, err := ch.Get(amqpQueue, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, string(d.Body))
		}
		return len(got) >= amqpCount, fmt.Sprintf("%d of %d", len(got), amqpCount)
	})
	for i, b := range got {
		if b != fmt.Sprint("amqp-", i) {
			t.Fatalf("AMQP message %d is %q", i, b)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	for body, a := range want {
		where := fmt.Sprintf("%s/%d@%d %s", a.broker, a.queue, a.offset, a.msgID)
		found := false
		for _, w := range at[body] {
			found = found || w == where
		}
		if !found {
			t.Errorf("%s acknowledged at %s, consumed at %v", body, where, at[body])
		}
	}
}
