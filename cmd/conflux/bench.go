package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	rmqadmin "github.com/apache/rocketmq-client-go/v2/admin"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
	"github.com/spf13/cobra"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// benchConfig is what `conflux bench remoting` is asked to do.
type benchConfig struct {
	namesrv   string
	topic     string
	producers int
	size      int
	duration  time.Duration
	group     string // "" runs no consumer
	queues    int    // > 0: create or update the topic with this many queues first
	grace     time.Duration
	progress  bool // print a line every second
	// creds sign every request (RocketMQ ACL); empty: guest, loopback only.
	creds primitive.Credentials
}

// benchSummary is the outcome of one run.
type benchSummary struct {
	Elapsed          time.Duration // the send phase
	Sent             int64         // acknowledged (SEND_OK) sends
	Errors           int64         // failed sends and non-OK send statuses
	SentPerSec       float64
	MBPerSec         float64
	SendP50, SendP99 time.Duration
	SendMax          time.Duration
	ConsumerRan      bool
	Consumed         int64 // distinct messages of this run consumed
	ConsumedPerSec   float64
	E2EP50, E2EP99   time.Duration
	Lost             int64 // acknowledged, never consumed within the grace period
	Duplicated       int64 // deliveries beyond the first of a MsgId
}

const (
	benchRunProp   = "CONFLUX_BENCH_RUN"
	benchProbeProp = "CONFLUX_BENCH_PROBE"
	benchMaxGrace  = 10 * time.Second
	benchSetupWait = 30 * time.Second
)

func newBenchCmd(stdout io.Writer) *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a front door",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cfg := benchConfig{progress: true}
	rm := &cobra.Command{
		Use:   "remoting",
		Short: "Drive a RocketMQ-compatible name server with rocketmq-client-go producers (and a consumer)",
		Long: `Drive any RocketMQ-compatible name server (Conflux or Apache RocketMQ) with
--producers rocketmq-client-go producers, each calling SendSync in a loop for
--duration, and with --consumer-group one push consumer on the topic. Prints a
progress line every second and a summary at the end: throughput, send and
end-to-end latency, errors, and (with a consumer) lost and duplicated messages.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.producers < 1:
				return usageError{errors.New("--producers must be at least 1")}
			case cfg.size < 8:
				return usageError{errors.New("--size must be at least 8 (the send time)")}
			case cfg.duration <= 0:
				return usageError{errors.New("--duration must be positive")}
			case cfg.queues < 0:
				return usageError{errors.New("--queues must not be negative")}
			case cfg.grace < 0 || cfg.grace > benchMaxGrace:
				return usageError{fmt.Errorf("--grace must be in [0, %s]", benchMaxGrace)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := runBench(ctx, cfg, stdout)
			if err != nil {
				return err
			}
			printSummary(stdout, cfg, s)
			return nil
		},
	}
	f := rm.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.namesrv, "namesrv", "127.0.0.1:9876", "name server address (host:port; several separated by ';')")
	f.StringVar(&cfg.topic, "topic", "bench", "topic to send to")
	f.IntVar(&cfg.producers, "producers", 4, "producers, each a goroutine calling SendSync in a loop")
	f.IntVar(&cfg.size, "size", 1024, "message body bytes (at least 8: the send time)")
	f.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to send")
	f.StringVar(&cfg.group, "consumer-group", "", "run one push consumer in this group on the topic (empty: no consumer)")
	f.IntVar(&cfg.queues, "queues", 0, "create or update the topic with this many queues first (0: leave it, or auto-create)")
	f.DurationVar(&cfg.grace, "grace", 5*time.Second, "after sending, how long to wait for the consumer to catch up (at most 10s)")
	f.StringVar(&cfg.creds.AccessKey, "access-key", "", "RocketMQ ACL AccessKey (the user name on Conflux; empty: none)")
	f.StringVar(&cfg.creds.SecretKey, "secret-key", "", "RocketMQ ACL SecretKey")
	bench.AddCommand(rm)
	bench.AddCommand(newBenchMQTTCmd(stdout))
	bench.AddCommand(newBenchAMQPCmd(stdout))
	bench.AddCommand(newBenchConnectCmd(stdout))
	return bench
}

// quietRlog silences rocketmq-client-go.
type quietRlog struct{}

func (quietRlog) Debug(string, map[string]interface{})   {}
func (quietRlog) Info(string, map[string]interface{})    {}
func (quietRlog) Warning(string, map[string]interface{}) {}
func (quietRlog) Error(string, map[string]interface{})   {}
func (quietRlog) Fatal(string, map[string]interface{})   {}
func (quietRlog) Level(string)                           {}
func (quietRlog) OutputPath(string) error                { return nil }

var quietRlogOnce sync.Once

// benchConsumerState is what the consumer callback records.
type benchConsumerState struct {
	mu          sync.Mutex
	seen        map[string]int // MsgId -> deliveries
	e2e         []time.Duration
	probeQueues map[string]bool // broker name/queue id
	consumed    atomic.Int64
	dups        atomic.Int64
	lastAt      atomic.Int64 // UnixNano of the last first delivery
}

// runBench runs one benchmark, printing progress to out when
// cfg.progress. Setup failures are returned as errors; everything after
// setup is counted, not returned.
func runBench(ctx context.Context, cfg benchConfig, out io.Writer) (benchSummary, error) {
	var s benchSummary
	quietRlogOnce.Do(func() { rlog.SetLogger(quietRlog{}) })
	if cfg.grace > benchMaxGrace {
		cfg.grace = benchMaxGrace
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	ns, err := primitive.NewNamesrvAddr(splitAddrs(cfg.namesrv)...)
	if err != nil {
		return s, fmt.Errorf("--namesrv: %w", err)
	}
	resolver := primitive.NewPassthroughResolver(ns)

	if cfg.queues > 0 {
		if err := benchCreateTopic(ctx, resolver, cfg.creds, ns, cfg.topic, cfg.queues); err != nil {
			return s, err
		}
	}

	newProducer := func(name string) (rocketmq.Producer, error) {
		p, err := rocketmq.NewProducer(producer.WithNsResolver(resolver),
			producer.WithGroupName("bench_producer_"+runID),
			producer.WithInstanceName("bench-"+runID+"-"+name),
			producer.WithSendMsgTimeout(5*time.Second), producer.WithCredentials(cfg.creds))
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		if err := p.Start(); err != nil {
			return nil, fmt.Errorf("start producer: %w", err)
		}
		return p, nil
	}
	probe := func(ctx context.Context, p rocketmq.Producer) (*primitive.SendResult, error) {
		m := primitive.NewMessage(cfg.topic, []byte("probe"))
		m.WithProperty(benchRunProp, runID)
		m.WithProperty(benchProbeProp, "1")
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return p.SendSync(sctx, m)
	}
	// One send first, from a producer of its own: it auto-creates the
	// topic if need be, which the consumer's Start requires. (A producer
	// that sent to a new topic keeps the default topic's queue count for
	// it until its next route refresh, 30 s later, so the benchmark's
	// producers start after this one.)
	setup, err := newProducer("setup")
	if err != nil {
		return s, err
	}
	res, err := probe(ctx, setup)
	_ = setup.Shutdown()
	if err != nil {
		return s, fmt.Errorf("first send to %s: %w", cfg.topic, err)
	} else if res.Status != primitive.SendOK {
		return s, fmt.Errorf("first send to %s: status %d", cfg.topic, res.Status)
	}

	// Producers.
	prods := make([]rocketmq.Producer, 0, cfg.producers)
	defer func() {
		for _, p := range prods {
			_ = p.Shutdown()
		}
	}()
	for i := range cfg.producers {
		p, err := newProducer(strconv.Itoa(i))
		if err != nil {
			return s, err
		}
		prods = append(prods, p)
	}

	// Consumer.
	var cs *benchConsumerState
	if cfg.group != "" {
		cs = &benchConsumerState{seen: map[string]int{}, probeQueues: map[string]bool{}}
		c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(resolver), consumer.WithGroupName(cfg.group),
			consumer.WithInstance("bench-"+runID), consumer.WithConsumeFromWhere(consumer.ConsumeFromLastOffset),
			consumer.WithCredentials(cfg.creds))
		if err != nil {
			return s, fmt.Errorf("consumer: %w", err)
		}
		err = c.Subscribe(cfg.topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			now := time.Now()
			cs.mu.Lock()
			defer cs.mu.Unlock()
			for _, m := range msgs {
				if m.GetProperty(benchRunProp) != runID {
					continue // another run's message
				}
				if m.GetProperty(benchProbeProp) != "" {
					if m.Queue != nil {
						cs.probeQueues[m.Queue.BrokerName+"/"+strconv.Itoa(m.Queue.QueueId)] = true
					}
					continue
				}
				id := m.MsgId
				if u := m.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex); u != "" {
					id = u
				}
				cs.seen[id]++
				if cs.seen[id] > 1 {
					cs.dups.Add(1)
					continue
				}
				cs.consumed.Add(1)
				cs.lastAt.Store(now.UnixNano())
				if len(m.Body) >= 8 {
					sentAt := int64(binary.BigEndian.Uint64(m.Body))
					cs.e2e = append(cs.e2e, now.Sub(time.Unix(0, sentAt)))
				}
			}
			return consumer.ConsumeSuccess, nil
		})
		if err != nil {
			return s, fmt.Errorf("subscribe: %w", err)
		}
		if err := c.Start(); err != nil {
			return s, fmt.Errorf("start consumer: %w", err)
		}
		s.ConsumerRan = true
		defer func() { _ = c.Shutdown() }()
		if err := benchWaitConsumer(ctx, resolver, cfg.creds, cfg.topic, cs, func(ctx context.Context) (*primitive.SendResult, error) { return probe(ctx, prods[0]) }); err != nil {
			return s, err
		}
	}

	// Send phase.
	type prodResult struct {
		ids  []string
		lats []time.Duration
	}
	results := make([]prodResult, len(prods))
	var sent, errs atomic.Int64
	start := time.Now()
	end := start.Add(cfg.duration)
	var wg sync.WaitGroup
	for i, p := range prods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			body := make([]byte, cfg.size)
			for j := 8; j < len(body); j++ {
				body[j] = byte('a' + j%26)
			}
			for ctx.Err() == nil && time.Now().Before(end) {
				b := slices.Clone(body)
				t0 := time.Now()
				binary.BigEndian.PutUint64(b, uint64(t0.UnixNano()))
				m := primitive.NewMessage(cfg.topic, b)
				m.WithProperty(benchRunProp, runID)
				// Not ctx: a send under way when the run ends is finished,
				// bounded by the send timeout.
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := p.SendSync(sctx, m)
				cancel()
				lat := time.Since(t0)
				if err != nil || res.Status != primitive.SendOK {
					errs.Add(1)
					continue
				}
				sent.Add(1)
				r.ids = append(r.ids, res.MsgID)
				r.lats = append(r.lats, lat)
			}
		}()
	}
	sendDone := make(chan struct{})
	go func() { wg.Wait(); close(sendDone) }()

	consumed := func() int64 {
		if cs == nil {
			return 0
		}
		return cs.consumed.Load()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSent, lastCons int64
	progress := func(phase string) {
		if !cfg.progress {
			return
		}
		ns, nc := sent.Load(), consumed()
		fmt.Fprintf(out, "%6.1fs %-5s sent/s %8d  consumed/s %8d  errors %d\n",
			time.Since(start).Seconds(), phase, ns-lastSent, nc-lastCons, errs.Load())
		lastSent, lastCons = ns, nc
	}
sending:
	for {
		select {
		case <-sendDone:
			break sending
		case <-tick.C:
			progress("send")
		}
	}
	s.Elapsed = time.Since(start)
	if e := end.Sub(start); s.Elapsed < e && ctx.Err() == nil {
		s.Elapsed = e
	}

	s.Sent, s.Errors = sent.Load(), errs.Load()
	var lats []time.Duration
	acked := make(map[string]struct{}, s.Sent)
	for _, r := range results {
		lats = append(lats, r.lats...)
		for _, id := range r.ids {
			acked[id] = struct{}{}
		}
	}
	secs := s.Elapsed.Seconds()
	s.SentPerSec = float64(s.Sent) / secs
	s.MBPerSec = float64(s.Sent) * float64(cfg.size) / secs / 1e6
	s.SendP50, s.SendP99, s.SendMax = percentiles(lats)

	if cs != nil {
		// Grace: until every acknowledged message is consumed.
		graceEnd := time.Now().Add(cfg.grace)
		allIn := func() bool {
			cs.mu.Lock()
			defer cs.mu.Unlock()
			for id := range acked {
				if cs.seen[id] == 0 {
					return false
				}
			}
			return true
		}
		poll := time.NewTicker(50 * time.Millisecond)
	grace:
		for !allIn() && time.Now().Before(graceEnd) {
			select {
			case <-ctx.Done():
				break grace
			case <-tick.C:
				progress("drain")
			case <-poll.C:
			}
		}
		poll.Stop()
		cs.mu.Lock()
		for id := range acked {
			if cs.seen[id] == 0 {
				s.Lost++
			}
		}
		e2e := slices.Clone(cs.e2e)
		cs.mu.Unlock()
		s.Consumed = cs.consumed.Load()
		s.Duplicated = cs.dups.Load()
		if last := cs.lastAt.Load(); last > 0 {
			span := max(time.Unix(0, last).Sub(start), s.Elapsed)
			s.ConsumedPerSec = float64(s.Consumed) / span.Seconds()
		}
		s.E2EP50, s.E2EP99, _ = percentiles(e2e)
	}
	return s, nil
}

// benchWaitConsumer sends probes until the consumer has received one from
// every queue of the topic, so that it has its offsets before the timed
// sends start (a new group starts from the last offset).
func benchWaitConsumer(ctx context.Context, resolver primitive.NsResolver, creds primitive.Credentials, topic string, cs *benchConsumerState,
	probe func(context.Context) (*primitive.SendResult, error)) error {
	adm, err := rmqadmin.NewAdmin(rmqadmin.WithResolver(resolver), rmqadmin.WithCredentials(creds))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer func() { _ = adm.Close() }()
	deadline := time.Now().Add(benchSetupWait)
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	mqs, err := adm.FetchPublishMessageQueues(actx, topic)
	if err != nil || len(mqs) == 0 {
		return fmt.Errorf("queues of %s: %v (%d queues)", topic, err, len(mqs))
	}
	for {
		cs.mu.Lock()
		n := len(cs.probeQueues)
		cs.mu.Unlock()
		if n >= len(mqs) {
			return nil
		}
		if actx.Err() != nil {
			return fmt.Errorf("consumer not receiving from all %d queues of %s after %s (%d so far)", len(mqs), topic, benchSetupWait, n)
		}
		_, _ = probe(actx)
		select {
		case <-actx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// benchCreateTopic creates or updates topic with the given queue count on
// the master broker(s) of the default topic's route.
func benchCreateTopic(ctx context.Context, resolver primitive.NsResolver, creds primitive.Credentials, ns []string, topic string, queues int) error {
	var addrs []string
	var lastErr error
	for _, a := range ns {
		addrs, lastErr = masterBrokers(ctx, a)
		if lastErr == nil && len(addrs) > 0 {
			break
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("--queues: no master broker found through %v: %v", ns, lastErr)
	}
	adm, err := rmqadmin.NewAdmin(rmqadmin.WithResolver(resolver), rmqadmin.WithCredentials(creds))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer func() { _ = adm.Close() }()
	for _, b := range addrs {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := adm.CreateTopic(cctx, rmqadmin.WithTopicCreate(topic), rmqadmin.WithBrokerAddrCreate(b),
			rmqadmin.WithReadQueueNums(queues), rmqadmin.WithWriteQueueNums(queues))
		cancel()
		if err != nil {
			return fmt.Errorf("create topic %s on %s: %w", topic, b, err)
		}
	}
	return nil
}

var (
	brokerAddrsRE = regexp.MustCompile(`"brokerAddrs"\s*:\s*\{([^}]*)\}`)
	masterAddrRE  = regexp.MustCompile(`(?:^|,)\s*"?0"?\s*:\s*"([^"]+)"`)
)

// masterBrokers asks the name server at addr for the cluster's brokers
// and returns the masters' (broker id 0) addresses. It parses loosely:
// Apache RocketMQ writes the broker ids as unquoted JSON keys.
func masterBrokers(ctx context.Context, addr string) ([]string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := &command.RemotingCommand{Code: int32(command.GetBrokerClusterInfo), Language: command.LanguageGo,
		Version: command.VersionV4_5_2, Opaque: 1, ExtFields: map[string]string{}}
	frame, err := command.AppendFrame(nil, req)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(frame); err != nil {
		return nil, err
	}
	resp, err := command.ReadFrame(bufio.NewReader(conn), 0)
	if err != nil {
		return nil, err
	}
	if resp.Code != 0 {
		return nil, fmt.Errorf("cluster info: code %d %s", resp.Code, resp.Remark)
	}
	var out []string
	for _, m := range brokerAddrsRE.FindAllStringSubmatch(string(resp.Body), -1) {
		if a := masterAddrRE.FindStringSubmatch(m[1]); a != nil && !slices.Contains(out, a[1]) {
			out = append(out, a[1])
		}
	}
	return out, nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range regexp.MustCompile(`[;,]`).Split(s, -1) {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// percentiles returns p50, p99 and max of d (sorting it).
func percentiles(d []time.Duration) (p50, p99, mx time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return at(0.50), at(0.99), d[len(d)-1]
}

func printSummary(w io.Writer, cfg benchConfig, s benchSummary) {
	fmt.Fprintf(w, "--- conflux bench remoting: namesrv %s, topic %s, %d producers, %d B messages, %.1fs\n",
		cfg.namesrv, cfg.topic, cfg.producers, cfg.size, s.Elapsed.Seconds())
	fmt.Fprintf(w, "sent          %d (%.1f msg/s, %.2f MB/s)\n", s.Sent, s.SentPerSec, s.MBPerSec)
	fmt.Fprintf(w, "send latency  p50 %s  p99 %s  max %s\n", rnd(s.SendP50), rnd(s.SendP99), rnd(s.SendMax))
	fmt.Fprintf(w, "errors        %d\n", s.Errors)
	if s.ConsumerRan {
		fmt.Fprintf(w, "consumed      %d (%.1f msg/s), group %s\n", s.Consumed, s.ConsumedPerSec, cfg.group)
		fmt.Fprintf(w, "e2e latency   p50 %s  p99 %s\n", rnd(s.E2EP50), rnd(s.E2EP99))
		fmt.Fprintf(w, "lost          %d (grace %s)\n", s.Lost, cfg.grace)
		fmt.Fprintf(w, "duplicated    %d\n", s.Duplicated)
	}
}

func rnd(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
