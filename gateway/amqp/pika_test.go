package amqp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
)

// debianPython is Debian's interpreter: python3-pika installs there, not
// into whatever python3 is first on PATH.
const debianPython = "/usr/bin/python3"

// needPika skips without python3-pika, except under CI=true, where a
// missing tool is a failure.
func needPika(t *testing.T) {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import pika").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-pika is required under CI=true: %v", err)
		}
		t.Skip("python3-pika not installed (apt-get install python3-pika, or run scripts/install-test-deps.sh as root)")
	}
}

// pikaScript publishes with confirms through a topic exchange, then
// consumes with manual acks and prints what it saw as JSON.
const pikaScript = `
import json, sys, pika
params = pika.URLParameters(sys.argv[1])
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.exchange_declare(exchange="pika.x", exchange_type="topic")
ch.queue_declare(queue="pika.q", durable=True)
ch.queue_bind(queue="pika.q", exchange="pika.x", routing_key="sensor.#")
ch.confirm_delivery()
for i in range(50):
    ch.basic_publish(exchange="pika.x", routing_key="sensor.%d.temp" % (i % 3), body=("p-%d" % i).encode(),
        properties=pika.BasicProperties(content_type="text/plain", delivery_mode=2, headers={"n": i, "src": "pika"}),
        mandatory=True)
try:
    ch.basic_publish(exchange="pika.x", routing_key="nobody", body=b"x", mandatory=True)
    unroutable = "published"
except pika.exceptions.UnroutableError:
    unroutable = "returned"
got = []
def on_msg(c, m, props, body):
    got.append({"body": body.decode(), "key": m.routing_key, "n": props.headers["n"], "ct": props.content_type})
    c.basic_ack(m.delivery_tag)
    if len(got) == 40:
        c.stop_consuming()
ch.basic_qos(prefetch_count=10)
ch.basic_consume(queue="pika.q", on_message_callback=on_msg)
ch.start_consuming()
print(json.dumps({"got": got, "unroutable": unroutable}))
conn.close()
`

// TestPika: Debian's python3-pika, a second real client library, does
// confirms, mandatory returns, a topic exchange and acked consumption;
// amqp091-go then takes the ten it left.
func TestPika(t *testing.T) {
	needPika(t)
	n := startNode(t, nil)
	cmd := exec.Command(debianPython, "-c", pikaScript, n.url+"%2F")
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.Output()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("pika script did not finish")
	}
	if err != nil {
		t.Fatalf("pika: %v\n%s", err, out)
	}
	var res struct {
		Got []struct {
			Body, Key, Ct string
			N             int
		}
		Unroutable string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("pika output %q: %v", out, err)
	}
	if res.Unroutable != "returned" || len(res.Got) != 40 {
		t.Fatalf("pika: unroutable %q, %d messages", res.Unroutable, len(res.Got))
	}
	for i, g := range res.Got {
		if g.Body != fmt.Sprint("p-", i) || g.N != i || g.Ct != "text/plain" || g.Key != fmt.Sprintf("sensor.%d.temp", i%3) {
			t.Fatalf("pika message %d: %+v", i, g)
		}
	}
	ch := openCh(t, dial(t, n.url))
	for i := 40; i < 50; i++ {
		d, ok, err := ch.Get("pika.q", false)
		if err != nil || !ok || string(d.Body) != fmt.Sprint("p-", i) || d.Headers["src"] != "pika" {
			t.Fatalf("amqp091-go after pika, message %d: ok %v err %v body %q", i, ok, err, d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}

// pikaAlarmScript publishes with confirms through the disk alarm. It
// prints "ready" once connected, "refused <how>" after publishing under
// the alarm, then the JSON of what it saw; the test turns the disk.
const pikaAlarmScript = `
import json, sys, time, pika
params = pika.URLParameters(sys.argv[1])
params.blocked_connection_timeout = 60
conn = pika.BlockingConnection(params)
events = []
conn.add_on_connection_blocked_callback(lambda c, m: events.append(["blocked", m.method.reason]))
conn.add_on_connection_unblocked_callback(lambda c, m: events.append(["unblocked", ""]))
ch = conn.channel()
ch.queue_declare(queue="pika.alarm", durable=True)
ch.confirm_delivery()
ch.basic_publish(exchange="", routing_key="pika.alarm", body=b"before")
print("ready", flush=True)
def wait_for(kind):
    deadline = time.monotonic() + 20
    while not any(e[0] == kind for e in events):
        if time.monotonic() > deadline:
            sys.exit("no connection.%s" % kind)
        conn.process_data_events(time_limit=0.05)
wait_for("blocked")
try:
    ch.basic_publish(exchange="", routing_key="pika.alarm", body=b"refused")
    refused = "acked"
except pika.exceptions.NackError:
    refused = "nacked"
print("refused " + refused, flush=True)
wait_for("unblocked")
ch.basic_publish(exchange="", routing_key="pika.alarm", body=b"after")
print(json.dumps({"events": events, "refused": refused}), flush=True)
conn.close()
`

// TestPikaDiskAlarm: pika's BlockingConnection hears connection.blocked
// and unblocked, a confirmed publish under the alarm raises NackError,
// and publishing works again once space is back.
func TestPikaDiskAlarm(t *testing.T) {
	needPika(t)
	n, disk := startDiskNode(t)
	cmd := exec.Command(debianPython, "-c", pikaAlarmScript, n.url+"%2F")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("pika ended before %s", what)
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("pika: no %s", what)
		}
		return ""
	}
	if l := next("ready"); l != "ready" {
		t.Fatalf("pika: %q, want ready", l)
	}
	disk.free.Store(diskLow)
	if l := next("the publish under the alarm"); l != "refused nacked" {
		t.Fatalf("pika under the alarm: %q, want a NackError", l)
	}
	disk.free.Store(diskRoom)
	var res struct {
		Events  [][]string
		Refused string
	}
	if l := next("the result"); json.Unmarshal([]byte(l), &res) != nil {
		t.Fatalf("pika output %q", l)
	}
	if len(res.Events) != 2 || res.Events[0][0] != "blocked" || !strings.Contains(res.Events[0][1], "low on disk space") ||
		res.Events[1][0] != "unblocked" {
		t.Fatalf("pika saw %v, want blocked with the reason, then unblocked", res.Events)
	}
	ch := openCh(t, dial(t, n.url))
	for _, want := range []string{"before", "after"} {
		d, ok, err := ch.Get("pika.alarm", false)
		if err != nil || !ok || string(d.Body) != want {
			t.Fatalf("after pika: ok %v err %v body %q, want %q", ok, err, d.Body, want)
		}
	}
	if _, ok, err := ch.Get("pika.alarm", false); ok || err != nil {
		t.Fatalf("after pika: more than was confirmed (ok %v, err %v)", ok, err)
	}
}

// pikaAuthScript tries a wrong login, a vhost the user may not open, then
// the right credentials, and prints what each did as JSON. pika announces
// authentication_failure_close, so its wrong login meets connection.close
// 403.
const pikaAuthScript = `
import json, sys, pika
def attempt(url):
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception as e:
        return {"error": [c.__name__ for c in type(e).__mro__], "text": str(e)}
    return {"conn": conn}
out = {}
for name, url in (("bad", sys.argv[1]), ("vhost", sys.argv[2])):
    r = attempt(url)
    out[name] = r if "conn" not in r else {"error": [], "text": "connected"}
r = attempt(sys.argv[3])
if "conn" in r:
    ch = r["conn"].channel()
    ch.queue_declare(queue="pika.auth")
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key="pika.auth", body=b"hello")
    m, props, body = ch.basic_get(queue="pika.auth", auto_ack=True)
    out["good"] = body.decode()
    r["conn"].close()
else:
    out["good"] = r
print(json.dumps(out))
`

// TestPikaAuth: pika's wrong login (mallory/wrongpassword) fails with
// its authentication error, carrying our 403 ACCESS_REFUSED; a vhost
// the user has no permissions on fails with its access-denied error
// (530); the right credentials publish and get.
func TestPikaAuth(t *testing.T) {
	needPika(t)
	n := startAuthNode(t)
	putUser(t, n, auth.User{Name: "pia", VHosts: map[string]auth.VHostPerm{"/": allOf}}, "pia-pw")
	cmd := exec.Command(debianPython, "-c", pikaAuthScript, userURL(n, "mallory", "wrongpassword", "/"),
		userURL(n, "pia", "pia-pw", "elsewhere"), userURL(n, "pia", "pia-pw", "/"))
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.Output()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("pika script did not finish")
	}
	if err != nil {
		t.Fatalf("pika: %v\n%s", err, out)
	}
	type failure struct {
		Error []string
		Text  string
	}
	var res struct {
		Bad, VHost failure
		Good       any
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("pika output %q: %v", out, err)
	}
	isA := func(f failure, names ...string) bool {
		for _, n := range names {
			if slices.Contains(f.Error, n) {
				return true
			}
		}
		return false
	}
	if !isA(res.Bad, "ProbableAuthenticationError", "AuthenticationError") || !strings.Contains(res.Bad.Text, "ACCESS_REFUSED") {
		t.Fatalf("pika's wrong login: %+v", res.Bad)
	}
	if !isA(res.VHost, "ProbableAccessDeniedError") || !strings.Contains(res.VHost.Text, "NOT_ALLOWED - access to vhost 'elsewhere'") {
		t.Fatalf("pika's refused vhost: %+v", res.VHost)
	}
	t.Logf("pika: wrong login %v %q; vhost %v %q", res.Bad.Error[0], res.Bad.Text, res.VHost.Error[0], res.VHost.Text)
	if res.Good != "hello" {
		t.Fatalf("pika with the right credentials: %v", res.Good)
	}
}
