package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// benchLogin is how a bench client logs in: credentials and TLS, shared by
// the MQTT, AMQP and connect benches.
type benchLogin struct {
	user, password string
	tls            bool
	caFile         string
	insecure       bool
}

func (l *benchLogin) bind(f *pflag.FlagSet) {
	f.StringVar(&l.user, "user", "", "user name (MQTT username, AMQP PLAIN user; empty: MQTT sends none, AMQP uses guest)")
	f.StringVar(&l.password, "password", "", "password")
	f.BoolVar(&l.tls, "tls", false, "connect with TLS")
	l.bindCA(f)
}

// bindCA binds only the certificate checks (the AMQP bench takes its
// credentials and TLS from amqps:// URLs).
func (l *benchLogin) bindCA(f *pflag.FlagSet) {
	f.StringVar(&l.caFile, "cafile", "", "PEM CA certificates to verify the broker with (default: the system's)")
	f.BoolVar(&l.insecure, "insecure", false, "do not verify the broker's certificate")
}

// tlsConfig is nil without --tls.
func (l *benchLogin) tlsConfig() (*tls.Config, error) {
	if !l.tls {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: l.insecure} //nolint:gosec // asked for with --insecure
	if l.caFile != "" {
		pem, err := os.ReadFile(l.caFile)
		if err != nil {
			return nil, fmt.Errorf("--cafile: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile %s holds no PEM certificate", l.caFile)
		}
	}
	return c, nil
}

// mqttOptions sets the login on paho options for addr (host:port).
func (l *benchLogin) mqttOptions(o *paho.ClientOptions, addr string) error {
	tc, err := l.tlsConfig()
	if err != nil {
		return err
	}
	if tc != nil {
		o.AddBroker("ssl://" + addr).SetTLSConfig(tc)
	} else {
		o.AddBroker("tcp://" + addr)
	}
	if l.user != "" {
		o.SetUsername(l.user).SetPassword(l.password)
	}
	return nil
}

// amqpURL is the URL of addr with the login.
func (l *benchLogin) amqpURL(addr string) string {
	user, pw := l.user, l.password
	if user == "" {
		user, pw = "guest", "guest"
	}
	scheme := "amqp"
	if l.tls {
		scheme = "amqps"
	}
	return fmt.Sprintf("%s://%s:%s@%s/", scheme, urlEscape(user), urlEscape(pw), addr)
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", ":", "%3A", "@", "%40", "/", "%2F").Replace(s)
}

type benchConnectConfig struct {
	protocol    string
	addrs       string
	clients     int
	concurrency int
	hold        bool
	// users > 0: client i logs in as <user><i mod users> with password
	// <password><i mod users>, a fleet whose devices each have their own.
	users int
	login benchLogin
}

// newBenchConnectCmd is "conflux bench connect".
func newBenchConnectCmd(stdout io.Writer) *cobra.Command {
	var cfg benchConnectConfig
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Measure how fast a broker accepts MQTT or AMQP connections (with their logins)",
		Long: `Open --clients MQTT (paho, 3.1.1) or AMQP (amqp091-go) connections,
--concurrency at a time, each logging in with --user/--password (over TLS with
--tls), and print connections per second, the time to connect p50/p99 and how
many were refused. With --hold every connection stays open until all are in
(a reconnect storm); otherwise each closes right after its handshake.
Refusals are expected when testing bad credentials: they are counted, not
fatal.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.protocol != "mqtt" && cfg.protocol != "amqp":
				return usageError{errors.New("--protocol must be mqtt or amqp")}
			case cfg.clients < 1 || cfg.concurrency < 1:
				return usageError{errors.New("--clients and --concurrency must be at least 1")}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := runBenchConnect(ctx, cfg)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "--- conflux bench connect: %s %s, %d clients, %d at a time, tls %v, hold %v\n"+
				"connected     %d in %.2fs (%.0f/s)\nrefused       %d\nconnect time  p50 %s  p99 %s  max %s\n",
				cfg.protocol, cfg.addrs, cfg.clients, cfg.concurrency, cfg.login.tls, cfg.hold,
				s.ok, s.elapsed.Seconds(), float64(s.ok)/s.elapsed.Seconds(), s.failed,
				s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond), s.max.Round(time.Microsecond))
			if s.firstErr != nil {
				_, _ = fmt.Fprintf(stdout, "first refusal: %v\n", s.firstErr)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.protocol, "protocol", "mqtt", "mqtt or amqp")
	f.StringVar(&cfg.addrs, "addr", "127.0.0.1:1883", "broker address(es), host:port, separated by ','")
	f.IntVar(&cfg.clients, "clients", 1000, "connections to open")
	f.IntVar(&cfg.concurrency, "concurrency", 64, "connections being opened at once")
	f.BoolVar(&cfg.hold, "hold", false, "keep every connection open until all are in")
	f.IntVar(&cfg.users, "users", 0, "log client i in as <user><i mod N> with password <password><i mod N> (0: all as --user)")
	cfg.login.bind(f)
	return cmd
}

type connectSummary struct {
	ok, failed    int64
	elapsed       time.Duration
	p50, p99, max time.Duration
	firstErr      error
}

func runBenchConnect(ctx context.Context, cfg benchConnectConfig) (connectSummary, error) {
	addrs := strings.Split(cfg.addrs, ",")
	if _, err := cfg.login.tlsConfig(); err != nil {
		return connectSummary{}, err
	}
	runID := time.Now().UnixNano()
	var (
		next, ok, failed atomic.Int64
		mu               sync.Mutex
		lat              []time.Duration
		firstErr         error
		closers          []func()
	)
	dial := func(i int) (func(), error) {
		addr := addrs[i%len(addrs)]
		login := cfg.login
		if cfg.users > 0 {
			k := strconv.Itoa(i % cfg.users)
			login.user, login.password = login.user+k, login.password+k
		}
		if cfg.protocol == "amqp" {
			tc, _ := cfg.login.tlsConfig()
			c, err := amqp091.DialConfig(login.amqpURL(addr), amqp091.Config{TLSClientConfig: tc,
				Dial: amqp091.DefaultDial(10 * time.Second)})
			if err != nil {
				return nil, err
			}
			return func() { _ = c.Close() }, nil
		}
		o := paho.NewClientOptions().SetClientID(fmt.Sprintf("bench-conn-%d-%d", runID, i)).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second)
		if err := login.mqttOptions(o, addr); err != nil {
			return nil, err
		}
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(15 * time.Second) {
			return nil, errors.New("connect timed out")
		}
		if tok.Error() != nil {
			return nil, tok.Error()
		}
		return func() { c.Disconnect(0) }, nil
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= cfg.clients {
					return
				}
				t0 := time.Now()
				closer, err := dial(i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					ok.Add(1)
					lat = append(lat, d)
					if cfg.hold {
						closers = append(closers, closer)
					}
				}
				mu.Unlock()
				if err == nil && !cfg.hold {
					closer()
				}
			}
		})
	}
	wg.Wait()
	s := connectSummary{ok: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), firstErr: firstErr}
	for _, c := range closers {
		c()
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		s.p50, s.p99, s.max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return s, ctx.Err()
}
