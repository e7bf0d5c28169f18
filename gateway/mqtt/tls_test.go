package mqtt

import (
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/internal/tlsconf"
	"github.com/conflux-mq/conflux/internal/tlsconf/tlstest"
)

// startTLSNode: a node with the TLS listeners, its server certificate
// from ca, client certificates verified if sent, and CertLogin on.
func startTLSNode(t *testing.T, ca *tlstest.CA) *node {
	t.Helper()
	pair := ca.Server("mqtt-server")
	set, err := tlsconf.Load(tlsconf.Config{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.File,
		ClientAuth: "request", WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return startNode(t, func(c *Config) { c.TLS, c.CertLogin = set.Server(), true })
}

func dialTLS(t *testing.T, addr string, conf *tls.Config) (net.Conn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestTLS: MQTT over TLS and over secure WebSocket, with a verified
// server certificate: paho.golang logs in with a password over TLS, paho
// 3.1.1 over wss://, and messages cross between them. With CertLogin a
// client certificate's common name is the user; an unknown one is not
// authorised and an expired one fails the handshake. Plain MQTT on the
// TLS port and TLS on the plain port fail without disturbing a client
// connected meanwhile.
func TestTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "conflux-test")
	n := startTLSNode(t, ca)
	putUser(t, n, "dev", "pw", allow(auth.ActAll, "users/%u/#"), allow(auth.ActAll, "tls/#"))
	putUser(t, n, "dev1", "", allow(auth.ActAll, "users/%u/#"))

	conn, err := dialTLS(t, n.tlsAddr, ca.ClientConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	sub, ca5, err := tryV5(t, conn, &paho5.Connect{ClientID: "tls5", CleanStart: true, Username: "dev", UsernameFlag: true,
		Password: []byte("pw"), PasswordFlag: true})
	if err != nil || ca5.ReasonCode != 0 {
		t.Fatalf("MQTT 5 over TLS: %+v %v", ca5, err)
	}
	if _, err := sub.c.Subscribe(tctx(t), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "tls/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	t.Run("secure websocket", func(t *testing.T) {
		var in inbox
		ws := v3(t, "wss://"+n.wssAddr+"/mqtt", "wss3", true, func(o *paho.ClientOptions) {
			o.SetTLSConfig(ca.ClientConfig(nil)).SetUsername("dev").SetPassword("pw")
		})
		wait(t, ws.Subscribe("users/dev/#", 1, in.handler), "subscribe over wss")
		wait(t, ws.Publish("tls/from-wss", 1, false, "over wss"), "publish over wss")
		waitFor(t, 10*time.Second, "the wss publish over TLS", func() bool { return len(sub.received()) >= 1 })
		if _, err := sub.c.Publish(tctx(t), &paho5.Publish{Topic: "users/dev/x", QoS: 1, Payload: []byte("over tls")}); err != nil {
			t.Fatal(err)
		}
		in.waitN(t, 1, "the TLS publish over wss")
		if got := in.payloads()[0]; got != "over tls" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("certificate login", func(t *testing.T) {
		pair := ca.Client("dev1")
		conn, err := dialTLS(t, n.tlsAddr, ca.ClientConfig(&pair))
		if err != nil {
			t.Fatal(err)
		}
		c, ack, err := tryV5(t, conn, &paho5.Connect{ClientID: "cert5", CleanStart: true})
		if err != nil || ack.ReasonCode != 0 {
			t.Fatalf("login with a certificate: %+v %v", ack, err)
		}
		// It is dev1: its %u rule holds, nothing else.
		if _, err := c.c.Publish(tctx(t), &paho5.Publish{Topic: "users/dev1/x", QoS: 1, Payload: []byte("x")}); err != nil {
			t.Fatalf("publish as dev1: %v", err)
		}
		if res, _ := c.c.Publish(tctx(t), &paho5.Publish{Topic: "users/dev/x", QoS: 1, Payload: []byte("x")}); res == nil || res.ReasonCode != 0x87 {
			t.Fatalf("publish to dev's topic as dev1: %+v, want 0x87", res)
		}
		// The same certificate over secure WebSocket, 3.1.1.
		v3(t, "wss://"+n.wssAddr+"/mqtt", "certwss", true, func(o *paho.ClientOptions) { o.SetTLSConfig(ca.ClientConfig(&pair)) })
		if cl, ok := n.srv.Mochi().Clients.Get("certwss"); !ok || string(cl.Properties.Username) != "dev1" {
			t.Fatal("the wss client with dev1's certificate is not dev1")
		}
	})

	t.Run("certificate of no user", func(t *testing.T) {
		pair := ca.Client("ghost")
		conn, err := dialTLS(t, n.tlsAddr, ca.ClientConfig(&pair))
		if err != nil {
			t.Fatal(err)
		}
		if _, ack, err := tryV5(t, conn, &paho5.Connect{ClientID: "ghost5", CleanStart: true}); err == nil || ack == nil || ack.ReasonCode != 0x87 {
			t.Fatalf("login with a certificate of no user: %+v %v, want 0x87", ack, err)
		}
	})

	t.Run("expired certificate", func(t *testing.T) {
		pair := ca.Expired("dev1")
		conn, err := dialTLS(t, n.tlsAddr, ca.ClientConfig(&pair))
		if err != nil {
			return // TLS 1.2 fails the handshake at once
		}
		// TLS 1.3: the client's handshake ends before the server checks
		// its certificate; the server's alert comes with the first read.
		if _, ack, err := tryV5(t, conn, &paho5.Connect{ClientID: "expired5", CleanStart: true}); err == nil {
			t.Fatalf("login with an expired certificate succeeded: %+v", ack)
		}
	})

	t.Run("wrong protocol on each port", func(t *testing.T) {
		// Plain MQTT on the TLS port: the handshake fails, the
		// connection closes.
		r := dialRaw(t, n.tlsAddr)
		r.write(connectPacket("plain-on-tls", true))
		if !r.closed() {
			t.Fatal("plain MQTT on the TLS port: connection not closed")
		}
		// TLS on the plain port.
		conf := ca.ClientConfig(nil)
		if c, err := dialTLS(t, n.addr, conf); err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("TLS on the plain port: got bytes back")
			}
		}
		// Plain WebSocket on the secure WebSocket port.
		if _, err := tryV3(t, "ws://"+n.wssAddr+"/mqtt", "ws-on-wss", "", ""); err == nil {
			t.Fatal("plain WebSocket on the secure WebSocket port connected")
		}
		// The client connected all along still works.
		if _, err := sub.c.Publish(tctx(t), &paho5.Publish{Topic: "tls/after", QoS: 1, Payload: []byte("after")}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "a publish after the bad connections", func() bool {
			for _, p := range sub.received() {
				if p.Topic == "tls/after" {
					return true
				}
			}
			return false
		})
	})
}
