package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"
)

// benchMQTTWindow is how many QoS 1/2 publishes one publisher keeps
// unacknowledged (the broker acks them as their batch commits).
const benchMQTTWindow = 64

type benchMQTTConfig struct {
	addrs      string
	pubs, subs int
	qos        int
	size       int
	duration   time.Duration
	topic      string
	grace      time.Duration
	login      benchLogin
}

// newBenchMQTTCmd is "conflux bench mqtt".
func newBenchMQTTCmd(stdout io.Writer) *cobra.Command {
	var cfg benchMQTTConfig
	cmd := &cobra.Command{
		Use:   "mqtt",
		Short: "Drive any MQTT 3.1.1 broker with paho publishers and subscribers",
		Long: `Drive any MQTT 3.1.1 broker (Conflux, Mosquitto...) with --publishers paho
clients publishing at --qos for --duration (QoS 1/2: up to 64 unacknowledged
each) and --subscribers clients subscribed to "<topic>/#" (every subscriber
gets every message). --addr takes several brokers separated by ',': clients
are spread over them (publish on one node, receive on another). Prints a
progress line each second and a summary: published/s, delivered/s,
end-to-end latency p50/p99, and per subscriber the acknowledged messages it
never got (lost) or got twice (duplicated).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.pubs < 1 || cfg.subs < 0:
				return usageError{errors.New("--publishers must be at least 1, --subscribers at least 0")}
			case cfg.qos < 0 || cfg.qos > 2:
				return usageError{errors.New("--qos must be 0, 1 or 2")}
			case cfg.size < 24:
				return usageError{errors.New("--size must be at least 24 (publisher, sequence, send time)")}
			case cfg.duration <= 0:
				return usageError{errors.New("--duration must be positive")}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBenchMQTT(ctx, cfg, stdout)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.addrs, "addr", "127.0.0.1:1883", "broker address(es), host:port, separated by ','")
	f.IntVar(&cfg.pubs, "publishers", 4, "publishing clients, one topic each")
	f.IntVar(&cfg.subs, "subscribers", 1, "subscribing clients, each on <topic>/#")
	f.IntVar(&cfg.qos, "qos", 1, "QoS of publishes and subscriptions")
	f.IntVar(&cfg.size, "size", 256, "payload bytes (at least 24)")
	f.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to publish")
	f.StringVar(&cfg.topic, "topic", "bench", "topic prefix (the core topic on Conflux)")
	f.DurationVar(&cfg.grace, "grace", 5*time.Second, "after publishing, how long to wait for subscribers")
	cfg.login.bind(f)
	return cmd
}

type benchMQTTSub struct {
	mu        sync.Mutex
	seen      []map[uint64]bool // per publisher
	got, dups int64
	lat       []time.Duration
}

func runBenchMQTT(ctx context.Context, cfg benchMQTTConfig, out io.Writer) error {
	addrs := strings.Split(cfg.addrs, ",")
	runID := time.Now().UnixNano()
	connect := func(i int, id string) (paho.Client, error) {
		o := paho.NewClientOptions().SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).
			SetMaxResumePubInFlight(benchMQTTWindow).SetWriteTimeout(30 * time.Second)
		if err := cfg.login.mqttOptions(o, addrs[i%len(addrs)]); err != nil {
			return nil, err
		}
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s to %s: %v", id, addrs[i%len(addrs)], tok.Error())
		}
		return c, nil
	}
	subs := make([]*benchMQTTSub, cfg.subs)
	var delivered atomic.Int64
	for i := range cfg.subs {
		s := &benchMQTTSub{seen: make([]map[uint64]bool, cfg.pubs)}
		for p := range s.seen {
			s.seen[p] = map[uint64]bool{}
		}
		subs[i] = s
		c, err := connect(i+1, fmt.Sprintf("bench-sub-%d-%d", runID, i))
		if err != nil {
			return err
		}
		defer c.Disconnect(100)
		tok := c.Subscribe(cfg.topic+"/#", byte(cfg.qos), func(_ paho.Client, m paho.Message) {
			b := m.Payload()
			if len(b) < 24 {
				return
			}
			// Payload: publisher (4 bytes), sequence (8), pad (4), send time (8).
			pub, seq := binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint64(b[4:12])
			s.mu.Lock()
			if int(pub) < len(s.seen) {
				if s.seen[pub][seq] {
					s.dups++
				} else {
					s.seen[pub][seq] = true
					s.got++
				}
			}
			s.lat = append(s.lat, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(b[16:24])))))
			s.mu.Unlock()
			delivered.Add(1)
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("subscribe: %v", tok.Error())
		}
	}
	var published, errs atomic.Int64
	acked := make([][]uint64, cfg.pubs) // per publisher: acknowledged sequence numbers
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	start := time.Now()
	var pubErr error
	var pubErrOnce sync.Once
	for p := range cfg.pubs {
		c, err := connect(p, fmt.Sprintf("bench-pub-%d-%d", runID, p))
		if err != nil {
			return err
		}
		defer c.Disconnect(100)
		wg.Go(func() {
			topic := fmt.Sprintf("%s/p%d/data", cfg.topic, p)
			type inflight struct {
				seq uint64
				tok paho.Token
			}
			var window []inflight
			settle := func(x inflight) {
				if !x.tok.WaitTimeout(30*time.Second) || x.tok.Error() != nil {
					errs.Add(1)
					pubErrOnce.Do(func() { pubErr = fmt.Errorf("publish: %v", x.tok.Error()) })
					return
				}
				acked[p] = append(acked[p], x.seq)
				published.Add(1)
			}
			for seq := uint64(0); pctx.Err() == nil; seq++ {
				b := make([]byte, cfg.size)
				binary.BigEndian.PutUint32(b[0:4], uint32(p))
				binary.BigEndian.PutUint64(b[4:12], seq)
				binary.BigEndian.PutUint64(b[16:24], uint64(time.Now().UnixNano()))
				tok := c.Publish(topic, byte(cfg.qos), false, b)
				window = append(window, inflight{seq, tok})
				if len(window) >= benchMQTTWindow || cfg.qos == 0 {
					settle(window[0])
					window = window[1:]
				}
			}
			for _, x := range window {
				settle(x)
			}
		})
	}
	done := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastP, lastD int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p, d := published.Load(), delivered.Load()
				fmt.Fprintf(out, "%5.0fs  published %8d (%7d/s)  delivered %9d (%7d/s)  errors %d\n",
					time.Since(start).Seconds(), p, p-lastP, d, d-lastD, errs.Load())
				lastP, lastD = p, d
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	want := published.Load() * int64(cfg.subs)
	deadline := time.Now().Add(cfg.grace)
	for delivered.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	<-progressDone // it writes to out too
	var lost, dups, got int64
	var lat []time.Duration
	for _, s := range subs {
		s.mu.Lock()
		for p, seqs := range acked {
			for _, q := range seqs {
				if !s.seen[p][q] {
					lost++
				}
			}
		}
		dups += s.dups
		got += s.got
		lat = append(lat, s.lat...)
		s.mu.Unlock()
	}
	p50, p99, mx := percentiles(lat)
	sec := elapsed.Seconds()
	fmt.Fprintf(out, "--- conflux bench mqtt: %s, %d publishers, %d subscribers, QoS %d, %d B payload, %.1fs\n",
		cfg.addrs, cfg.pubs, cfg.subs, cfg.qos, cfg.size, sec)
	fmt.Fprintf(out, "published     %d acknowledged (%.1f msg/s), errors %d\n", published.Load(), float64(published.Load())/sec, errs.Load())
	fmt.Fprintf(out, "delivered     %d (%.1f msg/s over the publishing time)\n", got, float64(got)/sec)
	fmt.Fprintf(out, "e2e latency   p50 %s  p99 %s  max %s\n", rnd(p50), rnd(p99), rnd(mx))
	if cfg.qos == 0 {
		fmt.Fprintf(out, "missing       %d (QoS 0: at most once, not a loss)\n", lost)
	} else {
		fmt.Fprintf(out, "lost          %d (grace %s)\n", lost, cfg.grace)
	}
	fmt.Fprintf(out, "duplicated    %d\n", dups)
	return pubErr
}
