package remoting

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

func TestParsePhysOffset(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"1000", 1000, true},
		{"7F00000100002A9F00000000000003E8", 1000, true},
		{offsetMsgID("[::1]:10911", 77), 77, true},
		{"", 0, false},
		{"-1", 0, false},
		{"12ab", 0, false},
		{"ZZ00000100002A9F00000000000003E8", 0, false},
		{"7F00000100002A9F80000000000003E8", 0, false}, // offset beyond int64
	} {
		got, ok := parsePhysOffset(c.in)
		if ok != c.ok || ok && got != c.want {
			t.Errorf("parsePhysOffset(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestViewAndQueryMessageWire: VIEW_MESSAGE_BY_ID and QUERY_MESSAGE, which
// the Go client never sends, as raw frames; the replies are decoded with
// the Go client's own decoder.
func TestViewAndQueryMessageWire(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real rocketmq-client-go")
	}
	quietClient()
	e := start(t, 0)
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver([]string{e.nsAddr})),
		producer.WithGroupName("pg_view"), producer.WithInstanceName("view-producer"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var sent []*primitive.SendResult
	for i, key := range []string{"order-1", "order-2", "order-1"} {
		res, err := p.SendSync(ctx, primitive.NewMessage("ViewTopic", []byte("v"+strconv.Itoa(i))).WithTag("TA").WithKeys([]string{key}))
		if err != nil || res.Status != primitive.SendOK {
			t.Fatalf("send %d: %v %v", i, res, err)
		}
		sent = append(sent, res)
	}

	c, r := dial(t, e.brokerAddr)
	opaque := int32(0)
	req := func(code command.RequestCode, ext map[string]string) *command.RemotingCommand {
		opaque++
		return roundTrip(t, c, r, &command.RemotingCommand{Code: int32(code), Language: command.LanguageJava, Opaque: opaque, ExtFields: ext})
	}

	// By offsetMsgId and by the decimal offset Java tools send.
	phys, ok := parsePhysOffset(sent[1].OffsetMsgID)
	if !ok {
		t.Fatalf("offsetMsgId %q", sent[1].OffsetMsgID)
	}
	for _, id := range []string{sent[1].OffsetMsgID, u(phys)} {
		resp := req(command.ViewMessageByID, map[string]string{"offset": id})
		if resp.Code != int32(command.Success) {
			t.Fatalf("view %s: %v", id, resp)
		}
		msgs := primitive.DecodeMessage(resp.Body)
		if len(msgs) != 1 {
			t.Fatalf("view %s: %d messages", id, len(msgs))
		}
		m := msgs[0]
		if string(m.Body) != "v1" || m.Topic != "ViewTopic" || m.MsgId != sent[1].MsgID || m.OffsetMsgId != sent[1].OffsetMsgID ||
			m.CommitLogOffset != int64(phys) || m.GetTags() != "TA" || m.GetKeys() != "order-2" ||
			m.Queue.QueueId != sent[1].MessageQueue.QueueId || m.QueueOffset != sent[1].QueueOffset {
			t.Fatalf("view %s: %v", id, m)
		}
	}
	for _, bad := range []string{u(phys + 1), u(phys + 1<<30), "garbage", "", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"} {
		if resp := req(command.ViewMessageByID, map[string]string{"offset": bad}); resp.Code != int32(command.SystemError) || len(resp.Body) != 0 {
			t.Fatalf("view %q: %v", bad, resp)
		}
	}

	query := func(key, maxNum string) *command.RemotingCommand {
		return req(command.QueryMessage, map[string]string{"topic": "ViewTopic", "key": key, "maxNum": maxNum,
			"beginTimestamp": "0", "endTimestamp": strconv.FormatInt(math.MaxInt64, 10)})
	}
	resp := query("order-1", "32")
	if resp.Code != int32(command.Success) || resp.ExtFields["indexLastUpdateTimestamp"] == "" || resp.ExtFields["indexLastUpdatePhyoffset"] == "" {
		t.Fatalf("query order-1: %v", resp)
	}
	got := map[string]bool{}
	for _, m := range primitive.DecodeMessage(resp.Body) {
		if m.Topic != "ViewTopic" || m.GetKeys() != "order-1" {
			t.Errorf("query order-1 returned %v", m)
		}
		got[m.MsgId] = true
	}
	if len(got) != 2 || !got[sent[0].MsgID] || !got[sent[2].MsgID] {
		t.Fatalf("query order-1: %v, want %s and %s", got, sent[0].MsgID, sent[2].MsgID)
	}
	if resp := query("order-1", "1"); resp.Code != 0 || len(primitive.DecodeMessage(resp.Body)) != 1 {
		t.Fatalf("query with maxNum 1: %v", resp)
	}
	resp = query(sent[1].MsgID, "32") // by UNIQ_KEY
	if ms := primitive.DecodeMessage(resp.Body); resp.Code != 0 || len(ms) != 1 || ms[0].MsgId != sent[1].MsgID {
		t.Fatalf("query by UNIQ_KEY: %v", resp)
	}
	if resp := query("nobody", "32"); resp.Code != int32(command.QueryNotFound) {
		t.Fatalf("query of a missing key: %v", resp)
	}
	if resp := req(command.QueryMessage, map[string]string{"topic": "Elsewhere", "key": "order-1"}); resp.Code != int32(command.QueryNotFound) {
		t.Fatalf("query of another topic: %v", resp)
	}
}

// TestSendBackWire: CONSUMER_SEND_MSG_BACK with an offset that is no
// message fails (the client then sends the retry itself).
func TestSendBackWire(t *testing.T) {
	e := start(t, 0)
	c, r := dial(t, e.brokerAddr)
	for i, ext := range []map[string]string{
		{"group": "g", "offset": "12345", "delayLevel": "0", "maxReconsumeTimes": "16"},
		{"group": "g", "offset": "nope"},
		{"offset": "0"},
	} {
		resp := roundTrip(t, c, r, &command.RemotingCommand{Code: int32(command.ConsumerSendMsgBack), Language: command.LanguageGo, Opaque: int32(i + 1), ExtFields: ext})
		if resp.Code == int32(command.Success) {
			t.Fatalf("send back %v: %v", ext, resp)
		}
	}
	if _, ok := e.b.Topic(retryPrefix + "g"); ok {
		if _, hi := e.b.QueueRange(retryPrefix+"g", 0); hi != 0 {
			t.Fatal("a failed send-back stored a message")
		}
	}
}
