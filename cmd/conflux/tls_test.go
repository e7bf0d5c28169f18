package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// TestServeTLSEverywhere: with a certificate every listener has its TLS
// side, wired from serve's flags: the API is HTTPS only (and `conflux
// admin --tls-ca-file` talks to it), MQTT over TLS and AMQPS take logins,
// and a wrong password is refused over TLS as over plain TCP.
func TestServeTLSEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ca := tlstest.NewCA(t, "conflux-test")
	srv := ca.Server("node")
	bin := buildBinary(t)
	ports := freePorts(t, 6)
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	httpAddr, mqttTLS, amqpTLS, namesrv := addr(0), addr(2), addr(3), addr(4)
	n := startNode(t, bin, "node", httpAddr, append(disabled, "--data-dir", t.TempDir(), "--raft-addr", addr(1),
		"--segment-size-bytes", "4194304", "--tls-cert-file", srv.CertFile, "--tls-key-file", srv.KeyFile, "--tls-ca-file", ca.File,
		"--mqtt-tls-addr", mqttTLS, "--mqtt-wss-addr=", "--amqp-tls-addr", amqpTLS,
		"--namesrv-addr", namesrv, "--broker-addr", addr(5), "--rocketmq-tls-only")...)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.ClientConfig(nil)}}
	waitFor(t, "HTTPS /readyz", readyDeadline, []*node{n}, func() (bool, string) {
		res, err := client.Get("https://" + httpAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, res.Status
	})
	// Plain HTTP on the HTTPS port is not served.
	if res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + httpAddr + "/readyz"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the HTTPS port")
		}
	}
	// The leader creates the default user just after it is elected.
	waitFor(t, "admin over HTTPS lists guest", readyDeadline, []*node{n}, func() (bool, string) {
		out := runAdmin(t, bin, "--http-addr", httpAddr, "--tls-ca-file", ca.File, "users", "list")
		return strings.Contains(out, `"guest"`), out
	})
	runAdmin(t, bin, "--http-addr", httpAddr, "--tls-ca-file", ca.File, "users", "add", "dev", "--password", "dev-pw", "--tags", "administrator")

	// MQTT over TLS: the right password in, a wrong one refused.
	mqttConnect := func(password string) error {
		o := paho.NewClientOptions().AddBroker("ssl://" + mqttTLS).SetClientID("tls-" + password).
			SetTLSConfig(ca.ClientConfig(nil)).SetUsername("dev").SetPassword(password).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return errors.New("connect timed out")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	if err := mqttConnect("dev-pw"); err != nil {
		t.Fatalf("MQTT over TLS with the right password: %v", err)
	}
	if err := mqttConnect("wrong"); err == nil {
		t.Fatal("MQTT over TLS with a wrong password was let in")
	}

	// AMQPS: publish and get back.
	c, err := amqp091.DialTLS("amqps://dev:dev-pw@"+amqpTLS+"/", ca.ClientConfig(nil))
	if err != nil {
		t.Fatalf("AMQPS: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("tls-q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "tls-q", false, false, amqp091.Publishing{Body: []byte("over TLS")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message over AMQPS", 10*time.Second, []*node{n}, func() (bool, string) {
		d, ok, err := ch.Get("tls-q", true)
		return err == nil && ok && string(d.Body) == "over TLS", fmt.Sprint(ok, err)
	})
	if _, err := amqp091.DialTLS("amqps://dev:wrong@"+amqpTLS+"/", ca.ClientConfig(nil)); err == nil {
		t.Fatal("AMQPS with a wrong password was let in")
	}

	// RocketMQ name server over TLS (a route query); plain is refused
	// with --rocketmq-tls-only.
	route := func(c net.Conn) (*command.RemotingCommand, error) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		req := &command.RemotingCommand{Code: int32(command.GetRouteInfoByTopic), Language: command.LanguageGo,
			Version: command.VersionV4_5_2, Opaque: 1, ExtFields: map[string]string{"topic": "TBW102"}}
		frame, err := command.AppendFrame(nil, req)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(frame); err != nil {
			return nil, err
		}
		return command.ReadFrame(bufio.NewReader(c), 0)
	}
	tc, err := tls.Dial("tcp", namesrv, ca.ClientConfig(nil))
	if err != nil {
		t.Fatalf("RocketMQ name server over TLS: %v", err)
	}
	if res, err := route(tc); err != nil || res.Code != int32(command.Success) {
		t.Fatalf("route query over TLS: %+v, %v", res, err)
	}
	pc, err := net.Dial("tcp", namesrv)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := route(pc); err == nil {
		t.Fatalf("a plain route query was answered on a TLS-only port: %+v", res)
	}
}

// TestPeerTLS: three nodes with --peer-tls. Two hold certificates of the
// cluster's CA and form a quorum; the third's certificate comes from
// another CA, so its peers refuse it and it never learns the log.
func TestPeerTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ca := tlstest.NewCA(t, "cluster")
	other := tlstest.NewCA(t, "other")
	good1, good2, bad := ca.Server("n1"), ca.Server("n2"), other.Server("n3")
	creds := [][]string{
		{"--tls-cert-file", good1.CertFile, "--tls-key-file", good1.KeyFile, "--tls-ca-file", ca.File},
		{"--tls-cert-file", good2.CertFile, "--tls-key-file", good2.KeyFile, "--tls-ca-file", ca.File},
		{"--tls-cert-file", bad.CertFile, "--tls-key-file", bad.KeyFile, "--tls-ca-file", other.File},
	}
	bin := buildBinary(t)
	ports := freePorts(t, 6)
	raft := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", raft(0), raft(1), raft(2))
	clients := make([]*http.Client, 3)
	var nodes []*node
	for i := range 3 {
		httpAddr := "127.0.0.1:" + strconv.Itoa(ports[3+i])
		args := append([]string{"--node-id", strconv.Itoa(i + 1), "--data-dir", t.TempDir(), "--raft-addr", raft(i), "--peers", peers,
			"--segment-size-bytes", "4194304", "--peer-tls", "--mqtt-tls-addr=", "--mqtt-wss-addr=", "--amqp-tls-addr="}, creds[i]...)
		nodes = append(nodes, startNode(t, bin, fmt.Sprintf("node %d", i+1), httpAddr, append(args, disabled...)...))
		c := ca.ClientConfig(nil)
		if i == 2 {
			c = other.ClientConfig(nil)
		}
		clients[i] = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
	}
	applied := func(i int) float64 {
		res, err := clients[i].Get(strings.Replace(nodes[i].http, "http://", "https://", 1) + "/metrics")
		if err != nil {
			return -1
		}
		defer res.Body.Close()
		return parseMetric(res, "conflux_raft_applied_index")
	}
	// Every node applies the three membership entries it bootstraps with
	// on its own; what comes after needs the others.
	const bootstrapEntries = 3
	waitFor(t, "nodes 1 and 2 apply entries", readyDeadline, nodes, func() (bool, string) {
		a, b := applied(0), applied(1)
		return a > bootstrapEntries+1 && b > bootstrapEntries+1, fmt.Sprintf("applied %v and %v", a, b)
	})
	// Node 3 hears nothing for a while: its peers refuse its certificate
	// and it refuses theirs.
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if a := applied(2); a > bootstrapEntries {
			t.Fatalf("node 3, with another CA's certificate, applied %v entries", a)
		}
		time.Sleep(pollInterval) // sampling a condition that must stay false
	}
}

// parseMetric reads one unlabelled sample from a /metrics answer (-1 if
// it is not there).
func parseMetric(res *http.Response, name string) float64 {
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}
