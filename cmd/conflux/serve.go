package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/remoting"
	"github.com/conflux-mq/conflux/internal/config"
	"github.com/conflux-mq/conflux/internal/httpapi"
	"github.com/conflux-mq/conflux/internal/tlsconf"
)

// shutdownTimeout bounds how long serve waits for HTTP requests in progress
// when told to stop; closing the broker is not bounded (it must sync).
const shutdownTimeout = 10 * time.Second

func newServeCmd(stderr io.Writer, lookupEnv func(string) (string, bool)) *cobra.Command {
	cfg := config.Default()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a broker node",
		Long: `Run a broker node. With no flags: a single-node cluster (still through Raft,
with fsync) with data under ./data and the HTTP API on :8080.

Every flag can also be set by the environment variable CONFLUX_<FLAG> (upper
case, '-' as '_': --node-id is CONFLUX_NODE_ID) and by a key named like the
flag in the YAML file given by --config (node-id: 2). A flag beats the
environment, which beats the file, which beats the default. An empty
address disables that listener (--mqtt-addr=).

The RocketMQ name server (--namesrv-addr) and broker (--broker-addr) front
doors serve rocketmq-client-go v2 clients. MQTT 3.1.1/5 is served on
--mqtt-addr (TCP) and --mqtt-ws-addr (WebSocket), AMQP 0-9-1 (RabbitMQ
clients) on --amqp-addr.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := cfg.Resolve(cmd.Flags(), lookupEnv)
			if err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{fmt.Errorf("invalid configuration:\n%w", err)}
			}
			if code := serve(cmd.Context(), cfg, src, stderr); code != exitOK {
				return exitError{code}
			}
			return nil
		},
	}
	cfg.Bind(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}

// serve runs a node until SIGTERM or SIGINT (exit 0 after a clean close),
// or until the broker or the HTTP server fails (exit 1).
func serve(ctx context.Context, cfg config.Config, src map[string]config.Source, stderr io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log = log.With("node", cfg.NodeID)
	v, c := versionInfo()
	log.Info("starting conflux", "version", v, "commit", c, "go", runtime.Version(), "pid", os.Getpid(),
		"config", cfg, "set_by", setBy(src))
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}

	// From here on SIGTERM/SIGINT mean "shut down cleanly"; after the first
	// one the default handling is back, so a second one kills.
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stopSignals()

	// TLS files are read before anything listens: a bad certificate fails
	// fast. They are read again on SIGHUP and whenever they change.
	var tlsSet *tlsconf.Set
	if cfg.TLS().Enabled() {
		var err error
		if tlsSet, err = tlsconf.Load(cfg.TLS(), log.With("component", "tls")); err != nil {
			log.Error("cannot load the TLS certificate", "err", err)
			return exitFailure
		}
		defer tlsSet.Close()
		go reloadOnHangup(ctx, log, tlsSet)
	}

	// Bind the HTTP port before opening the data dir: a port in use fails
	// fast without touching the data. With a certificate it serves HTTPS.
	var ln net.Listener
	if cfg.HTTPAddr != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			log.Error("cannot listen for HTTP", "addr", cfg.HTTPAddr, "err", err)
			return exitFailure
		}
		defer ln.Close() // also closed by Shutdown; a second Close is harmless
		if tlsSet != nil {
			ln = tls.NewListener(ln, tlsSet.Server())
		}
	} else {
		log.Warn("HTTP server disabled (--http-addr is empty): no /metrics, /readyz or admin API")
	}

	// The RocketMQ and AMQP ports too: bound now, served once the broker is open.
	var nsLn, brLn, amqpLn, amqpTLSLn net.Listener
	amqpsAddr := ""
	if tlsSet != nil {
		amqpsAddr = cfg.AMQPTLSAddr
	}
	for _, l := range []struct {
		name, addr string
		ln         *net.Listener
	}{{"rocketmq-namesrv", cfg.NamesrvAddr, &nsLn}, {"rocketmq-broker", cfg.BrokerAddr, &brLn}, {"amqp", cfg.AMQPAddr, &amqpLn},
		{"amqps", amqpsAddr, &amqpTLSLn}} {
		if l.addr == "" {
			continue
		}
		var err error
		if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
			log.Error("cannot listen", "listener", l.name, "addr", l.addr, "err", err)
			return exitFailure
		}
		defer (*l.ln).Close()
	}

	mqttLns, ok := listenMQTT(log, cfg, tlsSet != nil)
	if !ok {
		return exitFailure
	}
	defer closeMQTT(mqttLns)

	reg := httpapi.NewRegistry()
	started := time.Now()
	bcfg := cfg.BrokerConfig(log, reg)
	if cfg.PeerTLS {
		var err error
		if bcfg.PeerServerTLS, bcfg.PeerClientTLS, err = tlsSet.Peer(); err != nil {
			log.Error("cannot set up peer TLS", "err", err)
			return exitFailure
		}
	}
	b, err := broker.Open(bcfg)
	if err != nil {
		log.Error("cannot open the broker", "data_dir", cfg.DataDir, "err", err)
		return exitFailure
	}
	log.Info("broker open", "data_dir", cfg.DataDir, "raft_addr", cfg.RaftAddr, "peers", len(cfg.Peers),
		"took", time.Since(started).Round(time.Millisecond).String())

	serveErr := make(chan error, 3) // HTTP and the two RocketMQ listeners
	var srv *httpapi.Server
	if ln != nil {
		srv, err = httpapi.New(httpapi.Config{
			Broker: b, Gatherer: reg, Registerer: reg,
			NodeID: cfg.NodeID, RaftAddr: cfg.RaftAddr, Peers: cfg.Peers, MetricsAuth: cfg.MetricsAuth,
			HTTPAddr: advertisedAddr(ln.Addr(), cfg.HTTPAddr, cfg.AdvertiseHost),
			Logger:   log.With("component", "http"),
		})
		if err != nil {
			log.Error("cannot start the HTTP server", "err", err)
			return closeBroker(log, b, exitFailure)
		}
		go func() { serveErr <- srv.Serve(ln) }()
		log.Info("HTTP server listening", "addr", ln.Addr().String(), "paths", "/healthz /readyz /metrics /api/v1/cluster /api/v1/topics")
	}
	var serverTLS *tls.Config
	if tlsSet != nil {
		serverTLS = tlsSet.Server()
	}
	rmq := startRocketMQ(log, cfg, b, nsLn, brLn, serverTLS, serveErr)
	mq, err := startMQTT(log, cfg, b, mqttLns, serverTLS)
	if err != nil {
		log.Error("cannot start the MQTT front door", "err", err)
		return closeBroker(log, b, exitFailure)
	}
	aq, err := startAMQP(log, cfg, b, amqpLn, amqpTLSLn, serverTLS)
	if err != nil {
		log.Error("cannot start the AMQP front door", "err", err)
		return closeBroker(log, b, exitFailure)
	}
	go logReady(ctx, log, b)

	code := exitOK
	select {
	case <-ctx.Done():
		log.Info("signal received: shutting down (send it again to kill)")
		stopSignals()
	case <-b.Done():
		log.Error("broker stopped on its own", "err", b.Err())
		code = exitFailure
	case err := <-serveErr:
		log.Error("a listener failed", "err", err)
		code = exitFailure
	}

	// Stop accepting first, then let the broker finish what it accepted.
	for _, s := range rmq {
		_ = s.Close()
	}
	if mq != nil {
		_ = mq.Close() // persistent sessions save their positions
	}
	if aq != nil {
		_ = aq.Close() // unconfirmed publishes are stored or nacked first
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("HTTP requests still running at shutdown", "err", err)
		}
		cancel()
	}
	return closeBroker(log, b, code)
}

// startRocketMQ serves the RocketMQ name server and broker front doors on
// the listeners that are not nil; a listener failing is sent to errc.
func startRocketMQ(log *slog.Logger, cfg config.Config, b *broker.Broker, nsLn, brLn net.Listener, serverTLS *tls.Config, errc chan<- error) []*remoting.Server {
	brokerAddr := ""
	if brLn != nil {
		brokerAddr = advertisedAddr(brLn.Addr(), cfg.BrokerAddr, cfg.AdvertiseHost)
	}
	// With a certificate both ports serve TLS and plain connections
	// (RocketMQ's permissive mode), or TLS only with --rocketmq-tls-only.
	rcfg := remoting.Config{Broker: b, BrokerAddr: brokerAddr, AutoCreateTopics: true,
		NodeID: cfg.NodeID, Peers: cfg.Peers, Logger: log.With("component", "rocketmq"),
		TLS: serverTLS, TLSOnly: cfg.RocketMQTLSOnly}
	var out []*remoting.Server
	for _, l := range []struct {
		name string
		ln   net.Listener
		new  func(remoting.Config) *remoting.Server
	}{{"rocketmq-namesrv", nsLn, remoting.NewNameServer}, {"rocketmq-broker", brLn, remoting.NewBroker}} {
		if l.ln == nil {
			continue
		}
		if l.name == "rocketmq-namesrv" && brLn == nil {
			log.Warn("RocketMQ name server without a broker front door (--broker-addr is empty): routes point nowhere")
		}
		s := l.new(rcfg)
		go func() {
			if err := s.Serve(l.ln); err != nil {
				select {
				case errc <- fmt.Errorf("%s: %w", l.name, err):
				default:
				}
			}
		}()
		log.Info("RocketMQ front door listening", "listener", l.name, "addr", l.ln.Addr().String(), "broker_addr", brokerAddr)
		out = append(out, s)
	}
	return out
}

// closeBroker closes b (in-flight produces finish, state is synced) and
// returns code, or exitFailure if the close fails.
func closeBroker(log *slog.Logger, b *broker.Broker, code int) int {
	started := time.Now()
	if err := b.Close(); err != nil {
		log.Error("closing the broker failed", "err", err)
		return exitFailure
	}
	log.Info("broker closed", "took", time.Since(started).Round(time.Millisecond).String(), "exit_code", code)
	return code
}

// reloadOnHangup reads the TLS files again at every SIGHUP until ctx ends.
func reloadOnHangup(ctx context.Context, log *slog.Logger, s *tlsconf.Set) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if err := s.Reload(); err != nil {
			log.Warn("SIGHUP: cannot reload the TLS files; keeping the previous ones", "err", err)
		} else {
			log.Info("SIGHUP: TLS files reloaded")
		}
	}
}

// logReady logs once when the node first becomes ready.
func logReady(ctx context.Context, log *slog.Logger, b *broker.Broker) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.Done():
			return
		case <-tick.C:
		}
		if b.Ready() {
			st := b.Status()
			log.Info("node ready", "leader", st.Leader, "term", st.Term, "role", st.Role, "applied", st.Applied)
			return
		}
	}
}

// setBy groups the settings not left at their defaults by where they came
// from: {"flag": "data-dir,node-id", "env": "peers"}.
func setBy(src map[string]config.Source) slog.Value {
	by := map[config.Source][]string{}
	for _, name := range config.Names() {
		if s := src[name]; s != config.FromDefault && s != "" {
			by[s] = append(by[s], name)
		}
	}
	var attrs []slog.Attr
	for _, s := range []config.Source{config.FromFlag, config.FromEnv, config.FromFile} {
		if len(by[s]) > 0 {
			attrs = append(attrs, slog.String(string(s), strings.Join(by[s], ",")))
		}
	}
	return slog.GroupValue(attrs...)
}

// advertisedAddr is how others reach a listener: the configured host, or
// the advertise host when it listens on all addresses, and the port it got.
func advertisedAddr(bound net.Addr, configured, advertiseHost string) string {
	host, _, err := net.SplitHostPort(configured)
	if err != nil {
		return configured
	}
	port := ""
	if ta, ok := bound.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	} else if _, p, err := net.SplitHostPort(bound.String()); err == nil {
		port = p
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = advertiseHost
	}
	return net.JoinHostPort(host, port)
}
