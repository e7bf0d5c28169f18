package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestMQTTClusterLeaderKill: three `conflux serve` processes. A paho
// 3.1.1 publisher on one follower sends QoS 1 messages one after another
// (resending on a new connection when an ack does not come), a persistent
// QoS 1 subscriber (clean session off) listens on the other follower. The
// leader is killed with SIGKILL mid-way; later the subscriber moves to the
// publisher's node. Every acknowledged message must reach the subscriber
// (duplicates are allowed at QoS 1).
func TestMQTTClusterLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cs := startCluster3(t, "mqtt-addr")
	nodes := cs.nodes
	leader := waitLeader(t, nodes)
	pubNode, subNode := (leader+1)%3, (leader+2)%3
	t.Logf("leader %s; publisher on %s, subscriber on %s", nodes[leader].name, nodes[pubNode].name, nodes[subNode].name)

	connect := func(addr, id string, clean bool, h paho.MessageHandler) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
			SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
		if h != nil {
			o.SetDefaultPublishHandler(h)
		}
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s to %s: %v", id, addr, tok.Error())
		}
		return c, nil
	}

	var mu sync.Mutex
	received := map[string]int{}
	handler := func(_ paho.Client, m paho.Message) {
		mu.Lock()
		received[string(m.Payload())]++
		mu.Unlock()
	}
	sub, err := connect(cs.addr(subNode, "mqtt-addr"), "kill-sub", false, handler)
	if err != nil {
		t.Fatal(err)
	}
	if tok := sub.Subscribe("plant/#", 1, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	defer func() { sub.Disconnect(0) }()

	// The publisher: one QoS 1 message at a time; no ack within 15 s (the
	// leader died under it) means a new connection and the same message again.
	var acked []string
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var pub paho.Client
		defer func() {
			if pub != nil {
				pub.Disconnect(0)
			}
		}()
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			if pub == nil || !pub.IsConnectionOpen() {
				if pub != nil {
					pub.Disconnect(0)
				}
				var err error
				if pub, err = connect(cs.addr(pubNode, "mqtt-addr"), "kill-pub", true, nil); err != nil {
					pub = nil
					time.Sleep(200 * time.Millisecond)
					continue
				}
			}
			body := fmt.Sprintf("m-%d", i)
			tok := pub.Publish(fmt.Sprintf("plant/line%d/temp", i%4), 1, false, body)
			if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
				mu.Lock()
				acked = append(acked, body)
				mu.Unlock()
				i++
				continue
			}
			pub.Disconnect(0)
			pub = nil
		}
	}()
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	}()

	waitFor(t, "acknowledged publishes before the kill", 30*time.Second, nodes, func() (bool, string) {
		return ackedCount() >= 100, fmt.Sprintf("%d acknowledged", ackedCount())
	})
	if err := nodes[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-nodes[leader].done
	before := ackedCount()
	t.Logf("killed %s after %d acknowledged publishes", nodes[leader].name, before)
	survivors := []*node{nodes[pubNode], nodes[subNode]}
	waitFor(t, "acknowledged publishes after the kill", 60*time.Second, survivors, func() (bool, string) {
		return ackedCount() >= before+100, fmt.Sprintf("%d acknowledged", ackedCount())
	})
	// The persistent session moves to the publisher's node and carries on.
	sub.Disconnect(100)
	sub, err = connect(cs.addr(pubNode, "mqtt-addr"), "kill-sub", false, handler)
	if err != nil {
		t.Fatal(err)
	}
	moved := ackedCount()
	waitFor(t, "acknowledged publishes after the move", 60*time.Second, survivors, func() (bool, string) {
		return ackedCount() >= moved+100, fmt.Sprintf("%d acknowledged", ackedCount())
	})
	close(stop)
	<-stopped

	mu.Lock()
	all := append([]string(nil), acked...)
	mu.Unlock()
	waitFor(t, "every acknowledged message at the subscriber", 30*time.Second, survivors, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, b := range all {
			if received[b] == 0 {
				missing = append(missing, b)
			}
		}
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		return len(missing) == 0, fmt.Sprintf("%d acknowledged, missing %v", len(all), missing)
	})
	mu.Lock()
	dups := 0
	for _, n := range received {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("%d acknowledged messages all delivered (%d duplicates)", len(all), dups)
}
