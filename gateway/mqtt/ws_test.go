package mqtt

import (
	"testing"
)

// TestWebSocket: a paho 3.1.1 client over ws:// publishes, one over TCP
// receives, and the other way round.
func TestWebSocket(t *testing.T) {
	n := startNode(t, nil)
	var inTCP, inWS inbox
	wait(t, v3(t, n.addr, "tcpSub", true, nil).Subscribe("ws/#", 1, inTCP.handler), "subscribe tcp")
	ws := v3(t, "ws://"+n.wsAddr+"/mqtt", "wsClient", true, nil)
	wait(t, ws.Subscribe("tcp/#", 1, inWS.handler), "subscribe ws")
	wait(t, ws.Publish("ws/a", 1, false, "over websocket"), "publish ws")
	wait(t, v3(t, n.addr, "tcpPub", true, nil).Publish("tcp/a", 1, false, "over tcp"), "publish tcp")
	inTCP.waitN(t, 1, "from websocket")
	inWS.waitN(t, 1, "from tcp")
	if inTCP.payloads()[0] != "over websocket" || inWS.payloads()[0] != "over tcp" {
		t.Fatalf("got %q and %q", inTCP.payloads(), inWS.payloads())
	}
}
