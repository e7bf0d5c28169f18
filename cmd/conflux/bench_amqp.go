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

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"
)

type benchAMQPConfig struct {
	urls       string
	pubs, cons int
	size       int
	window     int // unconfirmed publishes per publisher
	prefetch   int
	duration   time.Duration
	queue      string
	grace      time.Duration
	login      benchLogin // only the certificate checks, for amqps:// URLs
}

// newBenchAMQPCmd is "conflux bench amqp".
func newBenchAMQPCmd(stdout io.Writer) *cobra.Command {
	var cfg benchAMQPConfig
	cmd := &cobra.Command{
		Use:   "amqp",
		Short: "Drive any AMQP 0-9-1 broker with amqp091-go publishers (confirms) and consumers (acks)",
		Long: `Drive any AMQP 0-9-1 broker (Conflux, RabbitMQ...) with --publishers
amqp091-go clients publishing persistent messages to a durable --queue in
confirm mode (up to --window unconfirmed each) for --duration, and
--consumers clients consuming it with manual acks and --prefetch. The queue
is declared and purged first. --url takes several brokers separated by
',': clients are spread over them. Prints a progress line each second and a
summary: confirmed/s, confirm latency, delivered/s, end-to-end latency, and
the confirmed messages never delivered (lost) or delivered twice.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.pubs < 1 || cfg.cons < 0:
				return usageError{errors.New("--publishers must be at least 1, --consumers at least 0")}
			case cfg.size < 24:
				return usageError{errors.New("--size must be at least 24 (publisher, sequence, send time)")}
			case cfg.window < 1 || cfg.prefetch < 0 || cfg.prefetch > 65535:
				return usageError{errors.New("--window must be at least 1, --prefetch in [0, 65535]")}
			case cfg.duration <= 0:
				return usageError{errors.New("--duration must be positive")}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBenchAMQP(ctx, cfg, stdout)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.urls, "url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL(s), separated by ','")
	f.IntVar(&cfg.pubs, "publishers", 4, "publishing connections")
	f.IntVar(&cfg.cons, "consumers", 1, "consuming connections (they share the queue)")
	f.IntVar(&cfg.size, "size", 256, "body bytes (at least 24)")
	f.IntVar(&cfg.window, "window", 64, "unconfirmed publishes per publisher")
	f.IntVar(&cfg.prefetch, "prefetch", 200, "basic.qos prefetch count of each consumer (0: unlimited)")
	f.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to publish")
	f.StringVar(&cfg.queue, "queue", "bench", "durable queue to use (purged first)")
	f.DurationVar(&cfg.grace, "grace", 5*time.Second, "after publishing, how long to wait for consumers")
	cfg.login.bindCA(f)
	return cmd
}

// benchAMQPSeen is what consumers record: (publisher, sequence) seen.
type benchAMQPSeen struct {
	mu   sync.Mutex
	seen []map[uint64]bool
	dups int64
	lat  []time.Duration
}

func runBenchAMQP(ctx context.Context, cfg benchAMQPConfig, out io.Writer) error {
	urls := strings.Split(cfg.urls, ",")
	dial := func(i int) (*amqp091.Connection, *amqp091.Channel, error) {
		login := cfg.login
		login.tls = strings.HasPrefix(urls[i%len(urls)], "amqps://")
		tc, err := login.tlsConfig()
		if err != nil {
			return nil, nil, err
		}
		c, err := amqp091.DialConfig(urls[i%len(urls)], amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second), TLSClientConfig: tc})
		if err != nil {
			return nil, nil, err
		}
		ch, err := c.Channel()
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		return c, ch, nil
	}
	c, ch, err := dial(0)
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(cfg.queue, true, false, false, false, nil); err != nil {
		_ = c.Close()
		return fmt.Errorf("declare %s: %w", cfg.queue, err)
	}
	if _, err := ch.QueuePurge(cfg.queue, false); err != nil {
		_ = c.Close()
		return fmt.Errorf("purge %s: %w", cfg.queue, err)
	}
	_ = c.Close()

	seen := &benchAMQPSeen{seen: make([]map[uint64]bool, cfg.pubs)}
	for p := range seen.seen {
		seen.seen[p] = map[uint64]bool{}
	}
	var delivered atomic.Int64
	for i := range cfg.cons {
		c, ch, err := dial(i + 1)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := ch.Qos(cfg.prefetch, 0, false); err != nil {
			return err
		}
		in, err := ch.Consume(cfg.queue, "", false, false, false, false, nil)
		if err != nil {
			return err
		}
		go func() {
			for d := range in {
				b := d.Body
				if len(b) >= 24 {
					// Body: publisher (4 bytes), sequence (8), pad (4), send time (8).
					pub, seq := binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint64(b[4:12])
					seen.mu.Lock()
					if int(pub) < len(seen.seen) {
						if seen.seen[pub][seq] {
							seen.dups++
						} else {
							seen.seen[pub][seq] = true
						}
					}
					seen.lat = append(seen.lat, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(b[16:24])))))
					seen.mu.Unlock()
				}
				_ = d.Ack(false)
				delivered.Add(1)
			}
		}()
	}

	var confirmed, nacked atomic.Int64
	confirmedSeqs := make([][]uint64, cfg.pubs)
	confLat := make([][]time.Duration, cfg.pubs)
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	start := time.Now()
	var pubErr error
	var pubErrOnce sync.Once
	fail := func(err error) { pubErrOnce.Do(func() { pubErr = err }) }
	for p := range cfg.pubs {
		c, ch, err := dial(p)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := ch.Confirm(false); err != nil {
			return err
		}
		wg.Go(func() {
			type inflight struct {
				seq  uint64
				sent time.Time
				dc   *amqp091.DeferredConfirmation
			}
			var window []inflight
			settle := func(x inflight) {
				wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				ok, err := x.dc.WaitContext(wctx)
				switch {
				case err != nil:
					fail(fmt.Errorf("confirm: %w", err))
					nacked.Add(1)
				case !ok:
					nacked.Add(1)
				default:
					confirmedSeqs[p] = append(confirmedSeqs[p], x.seq)
					confLat[p] = append(confLat[p], time.Since(x.sent))
					confirmed.Add(1)
				}
			}
			for seq := uint64(0); pctx.Err() == nil; seq++ {
				b := make([]byte, cfg.size)
				binary.BigEndian.PutUint32(b[0:4], uint32(p))
				binary.BigEndian.PutUint64(b[4:12], seq)
				now := time.Now()
				binary.BigEndian.PutUint64(b[16:24], uint64(now.UnixNano()))
				dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", cfg.queue, false, false,
					amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: b})
				if err != nil {
					fail(fmt.Errorf("publish: %w", err))
					break
				}
				window = append(window, inflight{seq, now, dc})
				if len(window) >= cfg.window {
					settle(window[0])
					window = window[1:]
				}
			}
			for _, x := range window {
				settle(x)
			}
		})
	}
	done, progressDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastC, lastD int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
				cn, d := confirmed.Load(), delivered.Load()
				fmt.Fprintf(out, "%5.0fs  confirmed %8d (%7d/s)  delivered %9d (%7d/s)  nacked %d\n",
					time.Since(start).Seconds(), cn, cn-lastC, d, d-lastD, nacked.Load())
				lastC, lastD = cn, d
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	if cfg.cons > 0 {
		deadline := time.Now().Add(cfg.grace)
		for delivered.Load() < confirmed.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	close(done)
	<-progressDone
	var lost int64
	var clat []time.Duration
	seen.mu.Lock()
	for p, seqs := range confirmedSeqs {
		for _, q := range seqs {
			if !seen.seen[p][q] {
				lost++
			}
		}
		clat = append(clat, confLat[p]...)
	}
	elat, dups := seen.lat, seen.dups
	seen.mu.Unlock()
	c50, c99, cmax := percentiles(clat)
	e50, e99, emax := percentiles(elat)
	sec := elapsed.Seconds()
	fmt.Fprintf(out, "--- conflux bench amqp: %s, %d publishers (window %d), %d consumers (prefetch %d), %d B body, %.1fs\n",
		cfg.urls, cfg.pubs, cfg.window, cfg.cons, cfg.prefetch, cfg.size, sec)
	fmt.Fprintf(out, "confirmed     %d (%.1f msg/s), nacked %d\n", confirmed.Load(), float64(confirmed.Load())/sec, nacked.Load())
	fmt.Fprintf(out, "confirm lat   p50 %s  p99 %s  max %s\n", rnd(c50), rnd(c99), rnd(cmax))
	if cfg.cons > 0 {
		fmt.Fprintf(out, "delivered     %d (%.1f msg/s over the publishing time)\n", delivered.Load(), float64(delivered.Load())/sec)
		fmt.Fprintf(out, "e2e latency   p50 %s  p99 %s  max %s\n", rnd(e50), rnd(e99), rnd(emax))
		fmt.Fprintf(out, "lost          %d (grace %s)\n", lost, cfg.grace)
		fmt.Fprintf(out, "duplicated    %d\n", dups)
	}
	return pubErr
}
