package main

import (
	"crypto/tls"
	"log/slog"
	"net"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/amqp"
	"github.com/conflux-mq/conflux/internal/config"
)

// startAMQP serves the AMQP 0-9-1 front door on ln and AMQPS on tlsLn
// (each nil: disabled). tlsLn is a plain listener; the handshake is done
// with tlsCfg.
func startAMQP(log *slog.Logger, cfg config.Config, b *broker.Broker, ln, tlsLn net.Listener, tlsCfg *tls.Config) (*amqp.Server, error) {
	if ln == nil && tlsLn == nil {
		return nil, nil
	}
	advertised := ""
	if ln != nil {
		advertised = advertisedAddr(ln.Addr(), cfg.AMQPAddr, cfg.AdvertiseHost)
	}
	s, err := amqp.New(amqp.Config{Broker: b, NodeID: cfg.NodeID, Logger: log.With("component", "amqp"),
		AdvertiseAddr: advertised})
	if err != nil {
		return nil, err
	}
	if ln != nil {
		if err := s.Serve(ln); err != nil {
			return nil, err
		}
		log.Info("AMQP front door listening", "addr", ln.Addr().String(), "advertised", advertised)
	}
	if tlsLn != nil {
		if err := s.Serve(tls.NewListener(tlsLn, tlsCfg)); err != nil {
			return nil, err
		}
		log.Info("AMQPS front door listening", "addr", tlsLn.Addr().String())
	}
	return s, nil
}
