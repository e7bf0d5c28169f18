package main

import (
	"log/slog"
	"net"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/mqtt"
	"github.com/conflux-mq/conflux/internal/config"
)

// listenMQTT binds the MQTT ports (TCP and WebSocket) before the data dir
// is opened, like the other front doors; an empty address gives nil.
func listenMQTT(log *slog.Logger, cfg config.Config) (tcp, ws net.Listener, ok bool) {
	for _, l := range []struct {
		name, addr string
		ln         *net.Listener
	}{{"mqtt", cfg.MQTTAddr, &tcp}, {"mqtt-ws", cfg.MQTTWSAddr, &ws}} {
		if l.addr == "" {
			continue
		}
		var err error
		if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
			log.Error("cannot listen", "listener", l.name, "addr", l.addr, "err", err)
			if tcp != nil {
				_ = tcp.Close()
			}
			return nil, nil, false
		}
	}
	return tcp, ws, true
}

// startMQTT serves the MQTT front door on the listeners that are not nil.
func startMQTT(log *slog.Logger, cfg config.Config, b *broker.Broker, tcp, ws net.Listener) (*mqtt.Server, error) {
	if tcp == nil && ws == nil {
		return nil, nil
	}
	s, err := mqtt.New(mqtt.Config{Broker: b, NodeID: cfg.NodeID, Logger: log.With("component", "mqtt")})
	if err != nil {
		return nil, err
	}
	if err := s.Start(tcp, ws); err != nil {
		return nil, err
	}
	for _, ln := range []net.Listener{tcp, ws} {
		if ln != nil {
			log.Info("MQTT front door listening", "addr", ln.Addr().String())
		}
	}
	return s, nil
}
