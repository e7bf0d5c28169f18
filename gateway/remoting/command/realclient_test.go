package command

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/admin"
	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// TestRealGoClient runs the real rocketmq-client-go v2 (admin API and
// producer) against a fake name server / broker on 127.0.0.1 built from
// this package: it decodes what the client sends, checks every field, and
// answers with frames encoded here, JSON and binary, success and error.
// The client's own logger is captured, so a frame of ours that the client
// failed to decode ("decode RemotingCommand error") fails the test.
func TestRealGoClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real client")
	}
	logs := &clientLog{}
	rlog.SetLogger(logs)

	srv := startFakeServer(t)
	addr := srv.ln.Addr().String()

	adm, err := admin.NewAdmin(admin.WithResolver(primitive.NewPassthroughResolver([]string{addr})))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()

	// The request the spec (§1.2) and our first fixture describe.
	t.Run("route query gets TOPIC_NOT_EXIST", func(t *testing.T) {
		err := within(t, 15*time.Second, func() error {
			_, err := adm.FetchPublishMessageQueues(context.Background(), "TopicTest")
			return err
		})
		if !errors.Is(err, rmqerrors.ErrTopicNotExist) {
			t.Errorf("FetchPublishMessageQueues = %v, want the client's ErrTopicNotExist", err)
		}
		got := srv.last(t, GetRouteInfoByTopic, "TopicTest")
		want := fixture(t, "json/request/GET_ROUTEINFO_BY_TOPIC")
		want.Command.Opaque = got.cmd.Opaque
		if got.cmd.Opaque <= 0 {
			t.Errorf("opaque %d, want the client's positive counter", got.cmd.Opaque)
		}
		if !reflect.DeepEqual(got.cmd, &want.Command) {
			t.Errorf("the client sent\n %v\nwant\n %v", got.cmd, &want.Command)
		}
		// Byte for byte: the client's JSON is AppendFrame's canonical form.
		if enc, _ := AppendFrame(nil, &want.Command); !bytes.Equal(got.raw, enc) {
			t.Errorf("the client's frame\n %q\nis not the fixture's bytes with its opaque\n %q", got.raw, enc)
		}
		t.Logf("client sent %q", got.raw)
	})

	t.Run("error code and remark, JSON reply", func(t *testing.T) {
		err := within(t, 15*time.Second, func() error {
			_, err := adm.FetchPublishMessageQueues(context.Background(), "TopicBusy")
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "CODE: 2 ") || !strings.Contains(err.Error(), "conflux: busy (JSON)") {
			t.Errorf("FetchPublishMessageQueues = %v, want code 2 and the remark", err)
		}
	})

	t.Run("error code and remark, binary reply", func(t *testing.T) {
		err := within(t, 15*time.Second, func() error {
			_, err := adm.FetchPublishMessageQueues(context.Background(), "TopicBusyBinary")
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "CODE: 2 ") || !strings.Contains(err.Error(), "conflux: busy (ROCKETMQ)") {
			t.Errorf("FetchPublishMessageQueues = %v, want code 2 and the remark", err)
		}
	})

	t.Run("success with a JSON body", func(t *testing.T) {
		var list *admin.TopicList
		err := within(t, 15*time.Second, func() error {
			var err error
			list, err = adm.FetchAllTopicList(context.Background())
			return err
		})
		if err != nil {
			t.Fatalf("FetchAllTopicList: %v", err)
		}
		if !slices.Equal(list.TopicList, []string{"TopicA", "TopicB"}) {
			t.Errorf("topic list %v", list.TopicList)
		}
		got := srv.last(t, GetAllTopicListFromNameServer, "")
		if got.cmd.Language != LanguageGo || got.cmd.Version != VersionV4_5_2 || got.cmd.Flag != 0 ||
			len(got.cmd.ExtFields) != 0 || got.cmd.Body != nil || !bytes.Contains(got.raw, []byte(`"extFields":{}`)) {
			t.Errorf("the client sent %v (%q)", got.cmd, got.raw)
		}
	})

	t.Run("create topic, binary reply", func(t *testing.T) {
		err := within(t, 15*time.Second, func() error {
			// The client waits up to 5 s for a reply it can decode; fail sooner.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			return adm.CreateTopic(ctx, admin.WithTopicCreate("CreatedTopic"), admin.WithBrokerAddrCreate(addr),
				admin.WithReadQueueNums(4), admin.WithWriteQueueNums(4))
		})
		if err != nil {
			t.Errorf("CreateTopic with a binary success reply: %v", err)
		}
		got := srv.last(t, UpdateAndCreateTopic, "CreatedTopic")
		wantExt := map[string]string{
			"topic": "CreatedTopic", "defaultTopic": "defaultTopic", "readQueueNums": "4", "writeQueueNums": "4",
			"perm": "6", "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0", "order": "false",
		}
		if !reflect.DeepEqual(got.cmd.ExtFields, wantExt) || got.cmd.SerializeType != JSON || got.cmd.Flag != 0 {
			t.Errorf("the client sent %v, want ext %v", got.cmd, wantExt)
		}
	})

	t.Run("producer send to an unknown topic", func(t *testing.T) {
		p, err := rocketmq.NewProducer(
			producer.WithNsResolver(primitive.NewPassthroughResolver([]string{addr})),
			producer.WithGroupName("codec_test_pg"),
			producer.WithInstanceName("codec-test-producer"),
			producer.WithRetry(0),
			producer.WithSendMsgTimeout(3*time.Second),
		)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = p.Shutdown() }()
		err = within(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := p.SendSync(ctx, primitive.NewMessage("ProducerTopic", []byte("hello")))
			return err
		})
		if err == nil {
			t.Fatal("SendSync to a topic without a route succeeded")
		}
		t.Logf("SendSync: %v", err)
		// After TOPIC_NOT_EXIST for the topic the producer asks for the
		// auto-create template TBW102 (remoting.md §3.1): proof that it
		// decoded our reply rather than timing out (a timeout stops it).
		srv.last(t, GetRouteInfoByTopic, "ProducerTopic")
		srv.last(t, GetRouteInfoByTopic, "TBW102")
	})

	srv.close()
	for _, e := range logs.errors() {
		if strings.Contains(e, "decode") {
			t.Errorf("the client logged %s", e)
		}
	}
	if errs := srv.readErrors(); len(errs) > 0 {
		t.Errorf("the fake server could not read the client's frames: %v", errs)
	}
	for _, o := range srv.observed() {
		t.Logf("observed %v", o.cmd)
	}
}

// within runs f and fails the test if it does not return in d.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("the client call did not return within %v", d)
		return nil
	}
}

type observedFrame struct {
	raw []byte
	cmd *RemotingCommand
}

// fakeServer plays name server and broker on one listener.
type fakeServer struct {
	ln net.Listener
	wg sync.WaitGroup
	mu struct {
		sync.Mutex
		frames  []observedFrame
		errs    []error
		conns   []net.Conn
		closing bool
	}
}

func startFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.mu.conns = append(s.mu.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(conn)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		var raw bytes.Buffer
		// ReadFrame reads exactly one frame, so raw holds exactly its bytes.
		cmd, err := ReadFrame(io.TeeReader(br, &raw), DefaultMaxFrameBytes)
		if err != nil {
			s.mu.Lock()
			if err != io.EOF && !s.mu.closing {
				s.mu.errs = append(s.mu.errs, err)
			}
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		s.mu.frames = append(s.mu.frames, observedFrame{raw: raw.Bytes(), cmd: cmd})
		s.mu.Unlock()
		reply, err := AppendFrame(nil, answer(cmd))
		if err != nil {
			s.mu.Lock()
			s.mu.errs = append(s.mu.errs, err)
			s.mu.Unlock()
			return
		}
		if _, err := conn.Write(reply); err != nil {
			return
		}
	}
}

// answer is the fake's whole behaviour, by request code and topic.
func answer(req *RemotingCommand) *RemotingCommand {
	var resp *RemotingCommand
	topic := req.ExtFields["topic"]
	switch RequestCode(req.Code) {
	case GetRouteInfoByTopic:
		switch topic {
		case "TopicBusy":
			resp = NewResponse(req, SystemBusy, "conflux: busy (JSON)")
		case "TopicBusyBinary":
			// The Go client only sends JSON, but reads binary too.
			resp = NewResponse(req, SystemBusy, "conflux: busy (ROCKETMQ)")
			resp.SerializeType = RocketMQ
			resp.ExtFields["reason"] = "test"
		default:
			resp = NewResponse(req, TopicNotExist, "No topic route info in name server for the topic: "+topic)
		}
	case GetAllTopicListFromNameServer:
		resp = NewResponse(req, Success, "")
		resp.Body = []byte(`{"topicList":["TopicA","TopicB"],"brokerAddr":""}`)
	case UpdateAndCreateTopic:
		resp = NewResponse(req, Success, "")
		resp.SerializeType = RocketMQ
	default:
		resp = NewResponse(req, RequestCodeNotSupported, fmt.Sprintf("%s not supported by the fake", req.CodeName()))
	}
	resp.Version = VersionV5_3_3
	return resp
}

// last returns the most recent frame with the code (and topic, if not
// empty), failing the test if the client sent none.
func (s *fakeServer) last(t *testing.T, code RequestCode, topic string) observedFrame {
	t.Helper()
	frames := s.observed()
	for i := len(frames) - 1; i >= 0; i-- {
		f := frames[i]
		if f.cmd.Code == int32(code) && (topic == "" || f.cmd.ExtFields["topic"] == topic) {
			return f
		}
	}
	t.Fatalf("the client sent no %v for topic %q", code, topic)
	return observedFrame{}
}

func (s *fakeServer) observed() []observedFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mu.frames)
}

func (s *fakeServer) readErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mu.errs)
}

func (s *fakeServer) close() {
	s.mu.Lock()
	s.mu.closing = true
	conns := s.mu.conns
	s.mu.conns = nil
	s.mu.Unlock()
	_ = s.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	s.wg.Wait()
}

// clientLog is an rlog.Logger that keeps the client's errors and drops the
// rest of its chatter.
type clientLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *clientLog) Debug(string, map[string]interface{})   {}
func (l *clientLog) Info(string, map[string]interface{})    {}
func (l *clientLog) Warning(string, map[string]interface{}) {}
func (l *clientLog) Error(msg string, fields map[string]interface{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf("%s %v", msg, fields))
}
func (l *clientLog) Fatal(msg string, fields map[string]interface{}) { l.Error("FATAL "+msg, fields) }
func (l *clientLog) Level(string)                                    {}
func (l *clientLog) OutputPath(string) error                         { return nil }

func (l *clientLog) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}
