package remoting

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// TestSilentClientExpires: a consumer connection that stops sending
// heartbeats (but stays open, like a hung process) is closed after
// ClientExpiry and leaves its group, while a beating member stays.
func TestSilentClientExpires(t *testing.T) {
	e := start(t, 0)
	cfg := Config{Broker: e.b, BrokerAddr: "127.0.0.1:1", ClientExpiry: time.Second}
	br := NewBroker(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = br.Serve(ln) }()
	t.Cleanup(func() { _ = br.Close() })

	silent, sr := dial(t, ln.Addr().String())
	live, lr := dial(t, ln.Addr().String())
	hb := func(c net.Conn, r *bufio.Reader, client string) {
		body := `{"clientID":"` + client + `","producerDataSet":[],"consumerDataSet":[{"groupName":"g","subscriptionDataSet":[]}]}`
		resp := roundTrip(t, c, r, &command.RemotingCommand{Code: int32(command.HeartBeat), Language: command.LanguageGo,
			Opaque: 1, ExtFields: map[string]string{}, Body: []byte(body)})
		for !resp.IsResponse() { // a group-change notice first
			if resp, err = command.ReadFrame(r, 0); err != nil {
				t.Fatal(err)
			}
		}
		if resp.Code != 0 {
			t.Fatalf("heartbeat: %+v", resp)
		}
	}
	hb(silent, sr, "silent-client")
	members := func() string {
		resp := roundTrip(t, live, lr, &command.RemotingCommand{Code: int32(command.GetConsumerListByGroup), Language: command.LanguageGo,
			Opaque: 2, ExtFields: map[string]string{"consumerGroup": "g"}})
		// The broker may have told the live member that the group changed
		// (a one-way request) before answering.
		for !resp.IsResponse() {
			if resp.Code != int32(command.NotifyConsumerIDsChanged) {
				t.Fatalf("unexpected request from the broker: %+v", resp)
			}
			if resp, err = command.ReadFrame(lr, 0); err != nil {
				t.Fatal(err)
			}
		}
		return string(resp.Body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The live member beats (more often than the expiry) and looks.
		hb(live, lr, "live-client")
		got := members()
		if !strings.Contains(got, "silent-client") {
			if !strings.Contains(got, "live-client") {
				t.Fatalf("the beating member left the group too: %s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the silent member is still in the group after 15 s: %s", got)
		}
		time.Sleep(200 * time.Millisecond) // the live client's heartbeat period
	}
	expectClosed(t, silent)
}
