package main

import (
	"crypto/tls"
	"log/slog"
	"net"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/mqtt"
	"github.com/conflux-mq/conflux/internal/config"
)

// listenMQTT binds the MQTT ports (TCP, WebSocket and, with a certificate,
// TLS and secure WebSocket) before the data dir is opened, like the other
// front doors; an empty address leaves a listener nil.
func listenMQTT(log *slog.Logger, cfg config.Config, withTLS bool) (mqtt.Listeners, bool) {
	var ls mqtt.Listeners
	tlsAddr, wssAddr := "", ""
	if withTLS {
		tlsAddr, wssAddr = cfg.MQTTTLSAddr, cfg.MQTTWSSAddr
	}
	for _, l := range []struct {
		name, addr string
		ln         *net.Listener
	}{{"mqtt", cfg.MQTTAddr, &ls.TCP}, {"mqtt-ws", cfg.MQTTWSAddr, &ls.WS}, {"mqtt-tls", tlsAddr, &ls.TLS}, {"mqtt-wss", wssAddr, &ls.WSS}} {
		if l.addr == "" {
			continue
		}
		var err error
		if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
			log.Error("cannot listen", "listener", l.name, "addr", l.addr, "err", err)
			closeMQTT(ls)
			return mqtt.Listeners{}, false
		}
	}
	return ls, true
}

// closeMQTT closes the listeners that are not nil.
func closeMQTT(ls mqtt.Listeners) {
	for _, l := range []net.Listener{ls.TCP, ls.WS, ls.TLS, ls.WSS} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// startMQTT serves the MQTT front door on the listeners that are not nil;
// serverTLS is the TLS configuration of ls.TLS and ls.WSS.
func startMQTT(log *slog.Logger, cfg config.Config, b *broker.Broker, ls mqtt.Listeners, serverTLS *tls.Config) (*mqtt.Server, error) {
	if ls.TCP == nil && ls.WS == nil && ls.TLS == nil && ls.WSS == nil {
		return nil, nil
	}
	s, err := mqtt.New(mqtt.Config{Broker: b, NodeID: cfg.NodeID, Logger: log.With("component", "mqtt"),
		TLS: serverTLS, CertLogin: cfg.MQTTCertLogin, ObscureNotAuthorized: cfg.MQTTObscureNotAuthorized})
	if err != nil {
		return nil, err
	}
	if err := s.StartListeners(ls); err != nil {
		return nil, err
	}
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"tcp", ls.TCP}, {"websocket", ls.WS}, {"tls", ls.TLS}, {"secure websocket", ls.WSS}} {
		if l.ln != nil {
			log.Info("MQTT front door listening", "transport", l.name, "addr", l.ln.Addr().String())
		}
	}
	return s, nil
}
