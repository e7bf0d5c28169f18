// Package config is the configuration of `conflux serve`: one struct, its
// command-line flags, and the layering of flags over CONFLUX_* environment
// variables over a YAML file over defaults.
//
// Every setting has exactly one name, the flag's. The environment variable
// is CONFLUX_ followed by the name in upper case with '-' as '_'
// (--node-id: CONFLUX_NODE_ID), and the YAML key is the name itself
// (node-id: 2). An empty address disables that listener, whichever layer it
// comes from (--mqtt-addr=, CONFLUX_MQTT_ADDR=, mqtt-addr: "").
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/internal/tlsconf"
)

// Defaults, as docs/architecture.md and serve's help list them.
const (
	DefaultNodeID           = 1
	DefaultDataDir          = "./data"
	DefaultRaftAddr         = "127.0.0.1:40911"
	DefaultNamesrvAddr      = ":9876"
	DefaultBrokerAddr       = ":10911"
	DefaultMQTTAddr         = ":1883"
	DefaultMQTTWSAddr       = ":8083"
	DefaultAMQPAddr         = ":5672"
	DefaultHTTPAddr         = ":8080"
	DefaultSegmentSizeBytes = clog.DefaultSegmentSizeBytes // 1 GiB
	DefaultMQTTTLSAddr      = ":8883"
	DefaultMQTTWSSAddr      = ":8084"
	DefaultAMQPTLSAddr      = ":5671"

	// EnvPrefix starts every setting's environment variable.
	EnvPrefix = "CONFLUX_"
)

// The commit log's bounds on a segment (core/log keeps them unexported and
// checks them again; repeated here to name the flag in the message).
const (
	minSegmentSizeBytes = 4096
	maxSegmentSizeBytes = 1<<32 - 1 // positions are stored as uint32
)

// Config is everything `conflux serve` can be told. Build it with Default
// and then Bind+Resolve (or Parse); check it with Validate.
type Config struct {
	// ConfigFile is the YAML file the settings were read from ("" if none).
	ConfigFile string

	NodeID   uint64
	DataDir  string
	RaftAddr string
	// Peers are the voters of a new cluster, id → host:port, including this
	// node; empty means a single node.
	Peers map[uint64]string
	// AdvertiseHost is the host written into routes and message ids. Resolve
	// fills it in when no layer sets it.
	AdvertiseHost string

	// Front doors; "" disables one.
	NamesrvAddr string
	BrokerAddr  string
	MQTTAddr    string
	MQTTWSAddr  string
	AMQPAddr    string
	HTTPAddr    string

	LogLevel         slog.Level // debug, info, warn or error
	SegmentSizeBytes int64

	// DiskFreeLimitBytes: below this much free space the node refuses
	// producers (the disk alarm). 0: the larger of 1 GiB and two
	// segments; -1: no alarm.
	DiskFreeLimitBytes int64
	// RetentionBytes and RetentionAge bound the commit log: the oldest
	// segments go when it is larger or their data older.
	RetentionBytes int64
	RetentionAge   time.Duration

	// Auth checks credentials on every door; false only for development.
	Auth bool
	// DefaultUser and DefaultPassword: the administrator a new cluster
	// starts with. DefaultPassword is never logged.
	DefaultUser, DefaultPassword string
	// DefaultRocketMQSecretKey: the default user's RocketMQ ACL secret key
	// (empty: none; RocketMQ clients then use guest from localhost).
	DefaultRocketMQSecretKey string
	// AuthFailuresPerMinute: failed logins per source address per minute
	// before further attempts from it are refused unchecked.
	AuthFailuresPerMinute int

	// TLS: one certificate for every TLS listener and the API.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	TLSClientAuth                      string // none, request or require
	// TLS listeners, on when a certificate is set; "" disables one.
	MQTTTLSAddr, MQTTWSSAddr, AMQPTLSAddr string
	// PeerTLS: mutual TLS between Raft peers (the same certificate),
	// peers' certificates checked against PeerTLSCAFile (default
	// TLSCAFile).
	PeerTLS       bool
	PeerTLSCAFile string
	// MQTTCertLogin: an MQTT client with a verified certificate logs in
	// as the certificate's common name, without a password.
	MQTTCertLogin bool
	// MQTTObscureNotAuthorized: an MQTT 5 SUBACK refuses with 0x80, not
	// 0x87 (what Eclipse Paho's v5 interoperability suite expects).
	MQTTObscureNotAuthorized bool
	// RocketMQTLSOnly refuses plain connections on the RocketMQ ports
	// (with a certificate they take both, RocketMQ's permissive mode).
	RocketMQTLSOnly bool
	// PasswordHashMemoryKiB is argon2id's memory cost for new password
	// hashes: the price of a guess against the price of a login storm.
	PasswordHashMemoryKiB uint32
	// MetricsAuth puts /metrics behind the admin API's credentials.
	MetricsAuth bool
}

// secretSettings are never shown by LogValue.
var secretSettings = map[string]bool{"default-password": true, "default-rocketmq-secret-key": true}

// Default returns the configuration of `conflux serve` with no flags,
// except AdvertiseHost, which Resolve detects.
func Default() Config {
	return Config{
		NodeID:           DefaultNodeID,
		DataDir:          DefaultDataDir,
		RaftAddr:         DefaultRaftAddr,
		NamesrvAddr:      DefaultNamesrvAddr,
		BrokerAddr:       DefaultBrokerAddr,
		MQTTAddr:         DefaultMQTTAddr,
		MQTTWSAddr:       DefaultMQTTWSAddr,
		AMQPAddr:         DefaultAMQPAddr,
		HTTPAddr:         DefaultHTTPAddr,
		LogLevel:         slog.LevelInfo,
		SegmentSizeBytes: DefaultSegmentSizeBytes,
		RetentionBytes:   clog.DefaultRetentionBytes,
		RetentionAge:     clog.DefaultRetentionAge,
		Auth:             true,
		DefaultUser:      "guest",
		DefaultPassword:  "guest",

		AuthFailuresPerMinute: 30,
		PasswordHashMemoryKiB: auth.DefaultHashParams.MemoryKiB,
		TLSClientAuth:         "none",
		MQTTTLSAddr:           DefaultMQTTTLSAddr,
		MQTTWSSAddr:           DefaultMQTTWSSAddr,
		AMQPTLSAddr:           DefaultAMQPTLSAddr,
	}
}

// Names lists every setting's name (flag, YAML key) in the order of the
// documentation. "config" is first and is not a YAML key.
func Names() []string {
	return []string{
		"config", "node-id", "data-dir", "raft-addr", "peers", "advertise-host",
		"namesrv-addr", "broker-addr", "mqtt-addr", "mqtt-ws-addr", "amqp-addr", "http-addr",
		"log-level", "segment-size-bytes", "disk-free-limit-bytes", "retention-bytes", "retention-age",
		"auth", "default-user", "default-password", "default-rocketmq-secret-key", "auth-failures-per-minute",
		"tls-cert-file", "tls-key-file", "tls-ca-file", "tls-client-auth",
		"mqtt-tls-addr", "mqtt-wss-addr", "amqp-tls-addr", "peer-tls", "peer-tls-ca-file", "mqtt-cert-login", "mqtt-obscure-not-authorized", "rocketmq-tls-only", "metrics-auth", "password-hash-memory-kib",
	}
}

// EnvName is the environment variable of the setting name: node-id →
// CONFLUX_NODE_ID.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Bind defines a flag for every setting on fs, with c's values as the
// defaults shown in --help, writing into c when parsed.
func (c *Config) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file with any of these settings, keyed by flag name (node-id: 2)")
	fs.Uint64Var(&c.NodeID, "node-id", c.NodeID, "this node's Raft id")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "commit log, consume queues, index, meta.db")
	fs.StringVar(&c.RaftAddr, "raft-addr", c.RaftAddr, "peer transport listen address")
	fs.Var(&peersValue{&c.Peers}, "peers", "voters of a new cluster: 1=host:40911,2=host:40912,3=host:40913 (empty: single node)")
	fs.StringVar(&c.AdvertiseHost, "advertise-host", c.AdvertiseHost, "host written into routes and message ids (default: first non-loopback address, else 127.0.0.1)")
	fs.StringVar(&c.NamesrvAddr, "namesrv-addr", c.NamesrvAddr, "RocketMQ name server (empty: disabled)")
	fs.StringVar(&c.BrokerAddr, "broker-addr", c.BrokerAddr, "RocketMQ broker (empty: disabled)")
	fs.StringVar(&c.MQTTAddr, "mqtt-addr", c.MQTTAddr, "MQTT over TCP (empty: disabled)")
	fs.StringVar(&c.MQTTWSAddr, "mqtt-ws-addr", c.MQTTWSAddr, "MQTT over WebSocket (empty: disabled)")
	fs.StringVar(&c.AMQPAddr, "amqp-addr", c.AMQPAddr, "AMQP 0-9-1 (empty: disabled)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "/metrics, /healthz, /readyz and the admin API (empty: disabled)")
	fs.Var(&levelValue{&c.LogLevel}, "log-level", "debug, info, warn or error")
	fs.Int64Var(&c.SegmentSizeBytes, "segment-size-bytes", c.SegmentSizeBytes, "size of each commit-log segment file, fixed when the segment is created")
	fs.Int64Var(&c.DiskFreeLimitBytes, "disk-free-limit-bytes", c.DiskFreeLimitBytes, "refuse producers while the data dir's file system has less free space (0: the larger of 1 GiB and two segments; -1: never)")
	fs.Int64Var(&c.RetentionBytes, "retention-bytes", c.RetentionBytes, "delete the oldest commit-log segments while the log is larger than this")
	fs.DurationVar(&c.RetentionAge, "retention-age", c.RetentionAge, "delete commit-log segments whose newest message is older than this")
	fs.BoolVar(&c.Auth, "auth", c.Auth, "check credentials on every door (false: anyone may do anything; development only)")
	fs.StringVar(&c.DefaultUser, "default-user", c.DefaultUser, "administrator a new cluster starts with (guest may connect from localhost only)")
	fs.StringVar(&c.DefaultPassword, "default-password", c.DefaultPassword, "the default user's password (never logged)")
	fs.StringVar(&c.DefaultRocketMQSecretKey, "default-rocketmq-secret-key", c.DefaultRocketMQSecretKey, "the default user's RocketMQ ACL secret key (empty: none; never logged)")
	fs.IntVar(&c.AuthFailuresPerMinute, "auth-failures-per-minute", c.AuthFailuresPerMinute, "failed logins a source address may make per minute before it is refused unchecked")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "PEM certificate for every TLS listener and the HTTPS API (reloaded on change or SIGHUP)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "PEM private key of --tls-cert-file")
	fs.StringVar(&c.TLSCAFile, "tls-ca-file", c.TLSCAFile, "PEM CA certificates that client and peer certificates must chain to")
	fs.StringVar(&c.TLSClientAuth, "tls-client-auth", c.TLSClientAuth, "client certificates: none, request (verified if sent) or require")
	fs.StringVar(&c.MQTTTLSAddr, "mqtt-tls-addr", c.MQTTTLSAddr, "MQTT over TLS, when a certificate is set (empty: disabled)")
	fs.StringVar(&c.MQTTWSSAddr, "mqtt-wss-addr", c.MQTTWSSAddr, "MQTT over secure WebSocket, when a certificate is set (empty: disabled)")
	fs.StringVar(&c.AMQPTLSAddr, "amqp-tls-addr", c.AMQPTLSAddr, "AMQPS, when a certificate is set (empty: disabled)")
	fs.BoolVar(&c.PeerTLS, "peer-tls", c.PeerTLS, "mutual TLS between Raft peers with --tls-cert-file, --tls-key-file and --tls-ca-file")
	fs.StringVar(&c.PeerTLSCAFile, "peer-tls-ca-file", c.PeerTLSCAFile, "PEM CA certificates that peers' certificates must chain to (default: --tls-ca-file; a CA of its own is safer)")
	fs.BoolVar(&c.MQTTCertLogin, "mqtt-cert-login", c.MQTTCertLogin, "an MQTT client with a verified client certificate logs in as its common name, without a password")
	fs.BoolVar(&c.MQTTObscureNotAuthorized, "mqtt-obscure-not-authorized", c.MQTTObscureNotAuthorized, "answer a refused MQTT 5 subscription with SUBACK 0x80 instead of 0x87 (not authorized)")
	fs.BoolVar(&c.RocketMQTLSOnly, "rocketmq-tls-only", c.RocketMQTLSOnly, "refuse plain connections on the RocketMQ ports (with a certificate they take TLS and plain)")
	fs.Uint32Var(&c.PasswordHashMemoryKiB, "password-hash-memory-kib", c.PasswordHashMemoryKiB, "argon2id memory cost of new password hashes (higher: slower guessing, slower login storms)")
	fs.BoolVar(&c.MetricsAuth, "metrics-auth", c.MetricsAuth, "require an administrator's credentials for /metrics too")
}

// TLS is the TLS configuration of the listeners.
func (c Config) TLS() tlsconf.Config {
	return tlsconf.Config{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, CAFile: c.TLSCAFile, ClientAuth: c.TLSClientAuth,
		PeerCAFile: c.PeerTLSCAFile}
}

// Source says which layer a setting came from.
type Source string

// The layers, highest precedence first.
const (
	FromFlag    Source = "flag"
	FromEnv     Source = "env"
	FromFile    Source = "file"
	FromDefault Source = "default"
)

// Resolve completes a configuration whose flags fs (from Bind) have been
// parsed from the command line: every setting not given as a flag is taken
// from its environment variable (lookupEnv, normally os.LookupEnv), else
// from the YAML file named by --config or CONFLUX_CONFIG, else keeps its
// default. Then it fills in AdvertiseHost if still empty. It returns where
// each setting came from.
func (c *Config) Resolve(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) (map[string]Source, error) {
	src := make(map[string]Source, len(Names()))
	for _, name := range Names() {
		if fs.Lookup(name) == nil {
			return nil, fmt.Errorf("config: flag --%s is not defined (call Bind)", name)
		}
		src[name] = FromDefault
	}
	// The file's name itself comes only from the flag or the environment.
	if fs.Changed("config") {
		src["config"] = FromFlag
	} else if v, ok := lookupEnv(EnvName("config")); ok {
		c.ConfigFile, src["config"] = v, FromEnv
	}
	var file map[string]fileValue
	if c.ConfigFile != "" {
		var err error
		if file, err = readFile(c.ConfigFile); err != nil {
			return nil, err
		}
	}
	for _, name := range Names()[1:] {
		if fs.Changed(name) {
			src[name] = FromFlag
			continue
		}
		if v, ok := lookupEnv(EnvName(name)); ok {
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("config: %s=%q: %w", EnvName(name), v, err)
			}
			src[name] = FromEnv
			continue
		}
		if v, ok := file[name]; ok {
			if err := fs.Set(name, v.value); err != nil {
				return nil, fmt.Errorf("config: %s:%d: %s: %w", c.ConfigFile, v.line, name, err)
			}
			src[name] = FromFile
		}
	}
	if c.AdvertiseHost == "" {
		c.AdvertiseHost = detectAdvertiseHost()
	}
	return src, nil
}

// Parse is Bind, parsing args and Resolve in one call, for callers with no
// command framework of their own (and tests).
func Parse(args []string, lookupEnv func(string) (string, bool)) (Config, map[string]Source, error) {
	c := Default()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	c.Bind(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, nil, err
	}
	if fs.NArg() > 0 {
		return Config{}, nil, fmt.Errorf("config: unexpected arguments %q", fs.Args())
	}
	src, err := c.Resolve(fs, lookupEnv)
	if err != nil {
		return Config{}, nil, err
	}
	return c, src, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Validate reports every setting that cannot work, one per line.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeID == 0 {
		bad("--node-id must be at least 1")
	}
	if c.DataDir == "" {
		bad("--data-dir must not be empty")
	}
	if c.SegmentSizeBytes < minSegmentSizeBytes || c.SegmentSizeBytes > maxSegmentSizeBytes {
		bad("--segment-size-bytes %d outside [%d, %d]", c.SegmentSizeBytes, minSegmentSizeBytes, int64(maxSegmentSizeBytes))
	}
	if c.DiskFreeLimitBytes < -1 {
		bad("--disk-free-limit-bytes %d: use -1 to turn the disk alarm off", c.DiskFreeLimitBytes)
	}
	if c.RetentionBytes < 2*c.SegmentSizeBytes {
		bad("--retention-bytes %d is less than two segments (--segment-size-bytes %d): the log could never roll", c.RetentionBytes, c.SegmentSizeBytes)
	}
	if c.DefaultUser == "" || c.DefaultPassword == "" {
		bad("--default-user and --default-password must not be empty")
	}
	if err := c.TLS().Validate(); err != nil {
		bad("%v", err)
	}
	if c.PasswordHashMemoryKiB < 64 || c.PasswordHashMemoryKiB > 1<<20 {
		bad("--password-hash-memory-kib %d outside [64, %d]", c.PasswordHashMemoryKiB, 1<<20)
	}
	if c.RocketMQTLSOnly && !c.TLS().Enabled() {
		bad("--rocketmq-tls-only needs --tls-cert-file and --tls-key-file")
	}
	if c.PeerTLS && (c.TLSCertFile == "" || c.TLSCAFile == "" && c.PeerTLSCAFile == "") {
		bad("--peer-tls needs --tls-cert-file, --tls-key-file and --tls-ca-file or --peer-tls-ca-file")
	}
	if c.PeerTLSCAFile != "" && !c.PeerTLS {
		bad("--peer-tls-ca-file is used only with --peer-tls")
	}
	if c.MQTTCertLogin && c.TLSCAFile == "" {
		bad("--mqtt-cert-login needs --tls-ca-file (client certificates must be verified)")
	}
	if c.AuthFailuresPerMinute < 1 {
		bad("--auth-failures-per-minute %d must be at least 1", c.AuthFailuresPerMinute)
	}
	if c.RetentionAge <= 0 {
		bad("--retention-age %s must be positive", c.RetentionAge)
	}
	switch c.LogLevel {
	case slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError:
	default:
		bad("--log-level %s is not one of debug, info, warn, error", c.LogLevel)
	}
	if h := c.AdvertiseHost; h != "" && strings.Contains(h, ":") && net.ParseIP(h) == nil {
		bad("--advertise-host %q must be a host name or IP address without a port", h)
	}
	listeners := c.listeners()
	for _, l := range listeners {
		if err := checkHostPort(l.addr); err != nil {
			bad("--%s %q: %v", l.name, l.addr, err)
		}
	}
	for i, a := range listeners {
		for _, b := range listeners[i+1:] {
			if sameListenAddr(a.addr, b.addr) {
				bad("--%s %q and --%s %q listen on the same port", a.name, a.addr, b.name, b.addr)
			}
		}
	}
	if len(c.Peers) > 0 {
		if _, ok := c.Peers[c.NodeID]; !ok {
			bad("--peers %s does not list this node (--node-id %d)", formatPeers(c.Peers), c.NodeID)
		}
		if len(c.Peers) > 1 && c.RaftAddr == "" {
			bad("a cluster of %d nodes needs --raft-addr (empty disables the peer listener)", len(c.Peers))
		}
		for id, addr := range c.Peers {
			if err := checkPeerAddr(addr); err != nil {
				bad("--peers: node %d at %q: %v", id, addr, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Warnings are settings that can work but probably are mistakes.
func (c Config) Warnings() []string {
	var out []string
	if !c.Auth {
		out = append(out, "--auth=false: credentials are not checked on any door; anyone who reaches a port may do anything (development only)")
	}
	if self, ok := c.Peers[c.NodeID]; ok && c.RaftAddr != "" {
		_, want, err1 := net.SplitHostPort(self)
		_, got, err2 := net.SplitHostPort(c.RaftAddr)
		if err1 == nil && err2 == nil && want != got {
			out = append(out, fmt.Sprintf("--peers says node %d is reached at %s but --raft-addr %s listens on port %s: peers will not reach this node unless something forwards the port",
				c.NodeID, self, c.RaftAddr, got))
		}
	}
	return out
}

type listener struct{ name, addr string }

// listeners are the enabled listen addresses, flag name and value.
func (c Config) listeners() []listener {
	var out []listener
	for _, l := range []listener{
		{"raft-addr", c.RaftAddr}, {"namesrv-addr", c.NamesrvAddr}, {"broker-addr", c.BrokerAddr},
		{"mqtt-addr", c.MQTTAddr}, {"mqtt-ws-addr", c.MQTTWSAddr}, {"amqp-addr", c.AMQPAddr}, {"http-addr", c.HTTPAddr},
	} {
		if l.addr != "" {
			out = append(out, l)
		}
	}
	if c.TLS().Enabled() {
		for _, l := range []listener{{"mqtt-tls-addr", c.MQTTTLSAddr}, {"mqtt-wss-addr", c.MQTTWSSAddr}, {"amqp-tls-addr", c.AMQPTLSAddr}} {
			if l.addr != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port or :port: %w", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number in [0, 65535]", port)
	}
	return nil
}

// sameListenAddr reports whether two listen addresses would collide: the
// same non-zero port on the same host, or on any host when either is a
// wildcard.
func sameListenAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// BrokerConfig is the core broker's configuration for this node.
func (c Config) BrokerConfig(logger *slog.Logger, reg prometheus.Registerer) broker.Config {
	return broker.Config{
		NodeID:   c.NodeID,
		DataDir:  c.DataDir,
		RaftAddr: c.RaftAddr,
		Peers:    c.Peers,
		Log: clog.Config{SegmentSizeBytes: c.SegmentSizeBytes,
			RetentionBytes: c.RetentionBytes, RetentionAge: c.RetentionAge},
		Disk: broker.DiskConfig{FreeLimitBytes: c.DiskFreeLimitBytes},
		Auth: broker.AuthConfig{Disabled: !c.Auth, DefaultUser: c.DefaultUser, DefaultPassword: c.DefaultPassword,
			DefaultRocketSecret: c.DefaultRocketMQSecretKey,
			FailuresPerMinute:   c.AuthFailuresPerMinute,
			Hash:                auth.HashParams{MemoryKiB: c.PasswordHashMemoryKiB, Time: auth.DefaultHashParams.Time, Threads: auth.DefaultHashParams.Threads}},
		Logger:     logger,
		Registerer: reg,
	}
}

// Values returns each setting as its flag would print it, in Names order:
// the form that Parse reads back.
func (c Config) Values() [][2]string {
	fs := pflag.NewFlagSet("values", pflag.ContinueOnError)
	c.Bind(fs)
	out := make([][2]string, 0, len(Names()))
	for _, name := range Names() {
		out = append(out, [2]string{name, fs.Lookup(name).Value.String()})
	}
	return out
}

// LogValue logs the effective configuration under the flag names.
func (c Config) LogValue() slog.Value {
	vals := c.Values()
	attrs := make([]slog.Attr, 0, len(vals))
	for _, kv := range vals {
		if secretSettings[kv[0]] {
			kv[1] = "(hidden)"
		}
		attrs = append(attrs, slog.String(kv[0], kv[1]))
	}
	return slog.GroupValue(attrs...)
}

// detectAdvertiseHost: the first non-loopback address of an interface that
// is up, IPv4 preferred, else 127.0.0.1.
func detectAdvertiseHost() string {
	var addrs []net.Addr
	ifaces, err := net.Interfaces()
	if err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			if a, err := ifc.Addrs(); err == nil {
				addrs = append(addrs, a...)
			}
		}
	}
	return pickAdvertiseHost(addrs)
}

func pickAdvertiseHost(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if ip == nil || ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		if ip.To4() != nil {
			return ip.String()
		}
		if v6 == "" {
			v6 = ip.String()
		}
	}
	if v6 != "" {
		return v6
	}
	return "127.0.0.1"
}

// ParsePeers reads --peers: comma-separated id=host:port, ids positive and
// distinct, addresses distinct and with a host (other nodes dial them). An
// empty string is no peers (a single node).
func ParsePeers(s string) (map[uint64]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	out := map[uint64]string{}
	byAddr := map[string]uint64{}
	for i, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("entry %d is empty (want id=host:port,id=host:port)", i+1)
		}
		idStr, addr, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q: want id=host:port", e)
		}
		idStr, addr = strings.TrimSpace(idStr), strings.TrimSpace(addr)
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("entry %q: id %q is not a positive integer", e, idStr)
		}
		if err := checkPeerAddr(addr); err != nil {
			return nil, fmt.Errorf("entry %q: %w", e, err)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("node %d is listed twice", id)
		}
		if other, dup := byAddr[addr]; dup {
			return nil, fmt.Errorf("nodes %d and %d have the same address %s", other, id, addr)
		}
		out[id], byAddr[addr] = addr, id
	}
	return out, nil
}

func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host (other nodes dial it)", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("address %q: port %q is not a number in [1, 65535]", addr, port)
	}
	return nil
}

// formatPeers is the canonical --peers form, by id.
func formatPeers(m map[uint64]string) string {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10) + "=" + m[id]
	}
	return strings.Join(parts, ",")
}

// peersValue is --peers as a pflag.Value; each Set replaces the whole map.
type peersValue struct{ m *map[uint64]string }

func (v *peersValue) String() string { return formatPeers(*v.m) }
func (v *peersValue) Type() string   { return "peers" }
func (v *peersValue) Set(s string) error {
	m, err := ParsePeers(s)
	if err != nil {
		return err
	}
	*v.m = m
	return nil
}

// levelValue is --log-level: exactly debug, info, warn or error.
type levelValue struct{ l *slog.Level }

func (v *levelValue) String() string { return strings.ToLower(v.l.String()) }
func (v *levelValue) Type() string   { return "level" }
func (v *levelValue) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		*v.l = slog.LevelDebug
	case "info":
		*v.l = slog.LevelInfo
	case "warn", "warning":
		*v.l = slog.LevelWarn
	case "error":
		*v.l = slog.LevelError
	default:
		return fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return nil
}
