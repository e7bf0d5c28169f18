package config

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// env is a fake environment for Resolve.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "conflux.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t *testing.T, args []string, lookup func(string) (string, bool)) (Config, map[string]Source) {
	t.Helper()
	c, src, err := Parse(args, lookup)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return c, src
}

func TestDefaults(t *testing.T) {
	c, src := mustParse(t, nil, env())
	want := Default()
	want.AdvertiseHost = c.AdvertiseHost // detected
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if c.NodeID != 1 || c.DataDir != "./data" || c.RaftAddr != "127.0.0.1:40911" || c.Peers != nil ||
		c.NamesrvAddr != ":9876" || c.BrokerAddr != ":10911" || c.MQTTAddr != ":1883" || c.MQTTWSAddr != ":8083" ||
		c.AMQPAddr != ":5672" || c.HTTPAddr != ":8080" || c.LogLevel != slog.LevelInfo || c.SegmentSizeBytes != 1<<30 {
		t.Fatalf("defaults differ from the documented ones: %+v", c)
	}
	if c.AdvertiseHost == "" || net.ParseIP(c.AdvertiseHost) == nil {
		t.Fatalf("advertise host %q is not an IP address", c.AdvertiseHost)
	}
	for name, s := range src {
		if s != FromDefault {
			t.Errorf("%s from %s, want default", name, s)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// TestPrecedence sets node-id in all three layers, data-dir in env and
// file, raft-addr only in the file, and checks flag > env > file > default.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
node-id: 3
data-dir: /from/file
raft-addr: 10.0.0.3:40913
log-level: debug
`)
	lookup := env(
		"CONFLUX_CONFIG", file,
		"CONFLUX_NODE_ID", "2",
		"CONFLUX_DATA_DIR", "/from/env",
	)
	c, src := mustParse(t, []string{"--node-id=1"}, lookup)
	if c.NodeID != 1 || src["node-id"] != FromFlag {
		t.Errorf("node-id = %d from %s, want 1 from the flag", c.NodeID, src["node-id"])
	}
	if c.DataDir != "/from/env" || src["data-dir"] != FromEnv {
		t.Errorf("data-dir = %q from %s, want /from/env from the environment", c.DataDir, src["data-dir"])
	}
	if c.RaftAddr != "10.0.0.3:40913" || src["raft-addr"] != FromFile {
		t.Errorf("raft-addr = %q from %s, want the file's", c.RaftAddr, src["raft-addr"])
	}
	if c.LogLevel != slog.LevelDebug {
		t.Errorf("log-level = %v, want debug from the file", c.LogLevel)
	}
	if c.HTTPAddr != DefaultHTTPAddr || src["http-addr"] != FromDefault {
		t.Errorf("http-addr = %q from %s, want the default", c.HTTPAddr, src["http-addr"])
	}
	if c.ConfigFile != file || src["config"] != FromEnv {
		t.Errorf("config = %q from %s, want %q from CONFLUX_CONFIG", c.ConfigFile, src["config"], file)
	}

	// --config beats CONFLUX_CONFIG.
	other := writeFile(t, "node-id: 9\n")
	c, _ = mustParse(t, []string{"--config", other}, env("CONFLUX_CONFIG", file))
	if c.NodeID != 9 || c.RaftAddr != DefaultRaftAddr {
		t.Errorf("--config did not win over CONFLUX_CONFIG: %+v", c)
	}
}

// TestEmptyDisables: an empty value in any layer overrides a non-empty
// default or lower layer.
func TestEmptyDisables(t *testing.T) {
	file := writeFile(t, "mqtt-addr: \"\"\namqp-addr:\nnamesrv-addr: :9999\nbroker-addr: :1\n")
	c, _ := mustParse(t, []string{"--config=" + file, "--namesrv-addr=", "--http-addr", ""},
		env("CONFLUX_BROKER_ADDR", "", "CONFLUX_MQTT_WS_ADDR", ""))
	for name, v := range map[string]string{
		"namesrv-addr (flag over file)": c.NamesrvAddr, "http-addr (flag)": c.HTTPAddr,
		"broker-addr (env over file)": c.BrokerAddr, "mqtt-ws-addr (env)": c.MQTTWSAddr,
		"mqtt-addr (file \"\")": c.MQTTAddr, "amqp-addr (file null)": c.AMQPAddr,
	} {
		if v != "" {
			t.Errorf("%s = %q, want empty", name, v)
		}
	}
	if c.RaftAddr != DefaultRaftAddr {
		t.Errorf("raft-addr = %q; the empty flags must not eat the next argument", c.RaftAddr)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("disabled listeners do not validate: %v", err)
	}
}

func TestEnvNames(t *testing.T) {
	for name, want := range map[string]string{
		"node-id": "CONFLUX_NODE_ID", "data-dir": "CONFLUX_DATA_DIR", "mqtt-ws-addr": "CONFLUX_MQTT_WS_ADDR",
		"segment-size-bytes": "CONFLUX_SEGMENT_SIZE_BYTES", "config": "CONFLUX_CONFIG",
	} {
		if got := EnvName(name); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", name, got, want)
		}
	}
	// Every setting is reachable through its variable.
	for _, kv := range Default().Values()[1:] {
		name := kv[0]
		val := map[string]string{"node-id": "7", "peers": "7=h:1", "log-level": "error", "segment-size-bytes": "8192",
			"disk-free-limit-bytes": "-1", "retention-bytes": "1048576", "retention-age": "1h0m0s",
			"auth": "false", "auth-failures-per-minute": "9", "tls-client-auth": "request",
			"peer-tls": "true", "mqtt-cert-login": "true", "metrics-auth": "true", "mqtt-obscure-not-authorized": "true",
			"rocketmq-tls-only": "true", "password-hash-memory-kib": "2048"}[name]
		if val == "" {
			val = "h:5"
		}
		c, src := mustParse(t, nil, env(EnvName(name), val))
		if src[name] != FromEnv {
			t.Errorf("%s: not taken from %s", name, EnvName(name))
		}
		if got := valueOf(c, name); got != val {
			t.Errorf("%s = %q from %s=%q", name, got, EnvName(name), val)
		}
	}
}

func valueOf(c Config, name string) string {
	for _, kv := range c.Values() {
		if kv[0] == name {
			return kv[1]
		}
	}
	return ""
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		file string
		want string
	}{
		{"bad flag", []string{"--node-id=x"}, nil, "", `invalid argument "x" for "--node-id"`},
		{"unknown flag", []string{"--nodeid=1"}, nil, "", "unknown flag: --nodeid"},
		{"extra arg", []string{"now"}, nil, "", `unexpected arguments ["now"]`},
		{"bad env", nil, []string{"CONFLUX_NODE_ID", "two"}, "", `CONFLUX_NODE_ID="two"`},
		{"bad env level", nil, []string{"CONFLUX_LOG_LEVEL", "loud"}, "", `"loud" is not one of debug, info, warn, error`},
		{"bad env peers", nil, []string{"CONFLUX_PEERS", "1=a"}, "", "CONFLUX_PEERS"},
		{"missing file", []string{"--config=/does/not/exist.yaml"}, nil, "", "/does/not/exist.yaml"},
		{"unknown key", nil, nil, "node-id: 1\nnodeid: 2\n", `:2: unknown setting "nodeid"`},
		{"repeated key", nil, nil, "node-id: 1\nnode-id: 2\n", ":2: node-id is already set on line 1"},
		{"nested", nil, nil, "peers:\n  1: a:1\n", "peers: want a single value"},
		{"list", nil, nil, "- node-id\n", "want a mapping"},
		{"config key", nil, nil, "config: other.yaml\n", "cannot name another"},
		{"bad file value", nil, nil, "\n\nsegment-size-bytes: 1e9\n", ":3: segment-size-bytes"},
		{"bad yaml", nil, nil, "node-id: [\n", "conflux.yaml"},
		{"two documents", nil, nil, "node-id: 1\n---\nnode-id: 2\n", "more than one YAML document"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, tc.file))
			}
			_, _, err := Parse(args, env(tc.env...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEmptyFile(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "---\n"} {
		c, _ := mustParse(t, []string{"--config", writeFile(t, text)}, env())
		if c.NodeID != DefaultNodeID {
			t.Errorf("%q: %+v", text, c)
		}
	}
}

func TestParsePeers(t *testing.T) {
	good := []struct {
		in   string
		want map[uint64]string
	}{
		{"", nil},
		{"  ", nil},
		{"1=127.0.0.1:40911", map[uint64]string{1: "127.0.0.1:40911"}},
		{"1=a:40911,2=b:40912,3=c:40913", map[uint64]string{1: "a:40911", 2: "b:40912", 3: "c:40913"}},
		{" 3 = c:1 , 1=[::1]:2 ", map[uint64]string{3: "c:1", 1: "[::1]:2"}},
	}
	for _, tc := range good {
		got, err := ParsePeers(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParsePeers(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	bad := []struct{ in, want string }{
		{"1=a:1,,2=b:2", "entry 2 is empty"},
		{"1=a:1,", "entry 2 is empty"},
		{"a:1", `entry "a:1": want id=host:port`},
		{"0=a:1", `id "0" is not a positive integer`},
		{"-1=a:1", `id "-1" is not a positive integer`},
		{"x=a:1", `id "x" is not a positive integer`},
		{"1=a", `address "a": want host:port`},
		{"1=:40911", "has no host"},
		{"1=a:port", `port "port" is not a number`},
		{"1=a:0", `port "0" is not a number in [1, 65535]`},
		{"1=a:70000", `port "70000"`},
		{"1=a:1,1=b:2", "node 1 is listed twice"},
		{"1=a:1,2=a:1", "nodes 1 and 2 have the same address a:1"},
	}
	for _, tc := range bad {
		if _, err := ParsePeers(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePeers(%q): %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	// The flag reports the same errors, naming itself.
	if _, _, err := Parse([]string{"--peers", "1=a:1,1=b:2"}, env()); err == nil ||
		!strings.Contains(err.Error(), `"--peers"`) || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("--peers error: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := Default()
	ok.AdvertiseHost = "10.0.0.1"
	cases := []struct {
		name string
		mod  func(*Config)
		want []string // all of these, in one error
	}{
		{"node id", func(c *Config) { c.NodeID = 0 }, []string{"--node-id must be at least 1"}},
		{"data dir", func(c *Config) { c.DataDir = "" }, []string{"--data-dir must not be empty"}},
		{"segment small", func(c *Config) { c.SegmentSizeBytes = 100 }, []string{"--segment-size-bytes 100 outside [4096, 4294967295]"}},
		{"segment large", func(c *Config) { c.SegmentSizeBytes = 1 << 32 }, []string{"--segment-size-bytes 4294967296 outside"}},
		{"level", func(c *Config) { c.LogLevel = slog.LevelInfo + 2 }, []string{"--log-level INFO+2 is not one of"}},
		{"advertise port", func(c *Config) { c.AdvertiseHost = "host:1" }, []string{"--advertise-host \"host:1\" must be a host name or IP address without a port"}},
		{"bad addr", func(c *Config) { c.MQTTAddr = "1883" }, []string{`--mqtt-addr "1883": want host:port or :port`}},
		{"bad port", func(c *Config) { c.HTTPAddr = ":http" }, []string{`--http-addr ":http": port "http" is not a number`}},
		{"clash", func(c *Config) { c.HTTPAddr = "127.0.0.1:1883" }, []string{`--mqtt-addr ":1883" and --http-addr "127.0.0.1:1883" listen on the same port`}},
		{"peers without self", func(c *Config) { c.Peers = map[uint64]string{2: "b:2", 3: "c:3"} },
			[]string{"--peers 2=b:2,3=c:3 does not list this node (--node-id 1)"}},
		{"cluster without raft", func(c *Config) { c.Peers = map[uint64]string{1: "a:1", 2: "b:2"}; c.RaftAddr = "" },
			[]string{"a cluster of 2 nodes needs --raft-addr"}},
		{"bad peer", func(c *Config) { c.Peers = map[uint64]string{1: ":1"} }, []string{"--peers: node 1 at \":1\": address \":1\" has no host"}},
		{"several", func(c *Config) { c.NodeID = 0; c.DataDir = "" }, []string{"--node-id", "--data-dir"}},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Port 0 (any free port) may repeat; different hosts may share a port.
	c := ok
	c.HTTPAddr, c.AMQPAddr, c.RaftAddr, c.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.2:1883", "127.0.0.1:1883"
	if err := c.Validate(); err != nil {
		t.Errorf("port 0 and distinct hosts: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	c := Default()
	c.NodeID, c.Peers = 2, map[uint64]string{1: "a:40911", 2: "b:40912"}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "--raft-addr 127.0.0.1:40911 listens on port 40911") {
		t.Errorf("warnings %q", w)
	}
	c.RaftAddr = ":40912"
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
}

// TestYAMLRoundTrip: the printed configuration reads back the same.
func TestYAMLRoundTrip(t *testing.T) {
	c, _ := mustParse(t, []string{"--node-id=2", "--peers=1=a:40911,2=b:40912", "--mqtt-addr=", "--log-level=warn",
		"--advertise-host=b.example", "--segment-size-bytes=65536", "--data-dir=/var/lib/conflux data"}, env())
	text := c.YAML()
	path := writeFile(t, string(text))
	back, _ := mustParse(t, []string{"--config", path}, env())
	back.ConfigFile = ""
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip through\n%s\n got %+v\nwant %+v", text, back, c)
	}
	if !strings.Contains(string(text), "node-id: \"2\"") || !strings.Contains(string(text), "mqtt-addr: \"\"") {
		t.Errorf("unexpected YAML:\n%s", text)
	}
}

func TestPickAdvertiseHost(t *testing.T) {
	ipnet := func(s string) net.Addr { return &net.IPNet{IP: net.ParseIP(s), Mask: net.CIDRMask(8, 32)} }
	cases := []struct {
		addrs []net.Addr
		want  string
	}{
		{nil, "127.0.0.1"},
		{[]net.Addr{ipnet("127.0.0.1"), ipnet("::1")}, "127.0.0.1"},
		{[]net.Addr{ipnet("fe80::1"), ipnet("2001:db8::1"), ipnet("10.1.2.3")}, "10.1.2.3"},
		{[]net.Addr{ipnet("fe80::1"), ipnet("2001:db8::1")}, "2001:db8::1"},
		{[]net.Addr{ipnet("192.168.1.5"), ipnet("10.1.2.3")}, "192.168.1.5"},
	}
	for _, tc := range cases {
		if got := pickAdvertiseHost(tc.addrs); got != tc.want {
			t.Errorf("pickAdvertiseHost(%v) = %q, want %q", tc.addrs, got, tc.want)
		}
	}
}

func TestBrokerConfig(t *testing.T) {
	c, _ := mustParse(t, []string{"--node-id=2", "--peers=1=a:1,2=b:2", "--raft-addr=:2", "--data-dir=/d", "--segment-size-bytes=8192"}, env())
	b := c.BrokerConfig(nil, nil)
	if b.NodeID != 2 || b.DataDir != "/d" || b.RaftAddr != ":2" || len(b.Peers) != 2 || b.Peers[2] != "b:2" ||
		b.Log.SegmentSizeBytes != 8192 {
		t.Fatalf("broker config %+v", b)
	}
	if err := b.WithDefaults().Validate(); err != nil {
		t.Fatalf("broker rejects it: %v", err)
	}
}

func TestSecretsAreNotLogged(t *testing.T) {
	c, _ := mustParse(t, []string{"--default-password", "hunter2-secret"}, env())
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("start", "config", c)
	if strings.Contains(buf.String(), "hunter2-secret") {
		t.Fatalf("the default password is in the log line: %s", buf.String())
	}
	c2, _ := mustParse(t, []string{"--default-rocketmq-secret-key", "rocket-secret-xyz"}, env())
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("start", "config", c2)
	if strings.Contains(buf.String(), "rocket-secret-xyz") {
		t.Fatalf("the RocketMQ secret key is in the log line: %s", buf.String())
	}
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("start", "config", c)
	if !strings.Contains(buf.String(), `"default-password":"(hidden)"`) {
		t.Fatalf("the log line does not say the password is hidden: %s", buf.String())
	}
}

func TestAuthOffWarns(t *testing.T) {
	c, _ := mustParse(t, []string{"--auth=false"}, env())
	if len(c.Warnings()) == 0 || !strings.Contains(strings.Join(c.Warnings(), "\n"), "--auth=false") {
		t.Fatalf("no warning for --auth=false: %q", c.Warnings())
	}
}
