package main

import (
	"log/slog"
	"net"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp"
	"github.com/conflux-mq/conflux/internal/config"
)

// startAMQP serves the AMQP 0-9-1 front door on ln (nil: disabled).
func startAMQP(log *slog.Logger, cfg config.Config, b *broker.Broker, ln net.Listener) (*amqp.Server, error) {
	if ln == nil {
		return nil, nil
	}
	s, err := amqp.New(amqp.Config{Broker: b, NodeID: cfg.NodeID, Logger: log.With("component", "amqp"),
		AdvertiseAddr: advertisedAddr(ln.Addr(), cfg.AMQPAddr, cfg.AdvertiseHost)})
	if err != nil {
		return nil, err
	}
	if err := s.Serve(ln); err != nil {
		return nil, err
	}
	log.Info("AMQP front door listening", "addr", ln.Addr().String(), "advertised", advertisedAddr(ln.Addr(), cfg.AMQPAddr, cfg.AdvertiseHost))
	return s, nil
}
