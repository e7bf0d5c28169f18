package amqp

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
)

// Config of the AMQP front door. Zero values take the defaults.
type Config struct {
	Broker *broker.Broker
	Logger *slog.Logger
	NodeID uint64
	// AdvertiseAddr is this door's address as the other nodes reach it
	// (host:port). With it, followers hand new connections to the
	// leader's door (cluster.go); empty: every node serves its own.
	AdvertiseAddr string

	// FrameMaxBytes is offered in connection.tune (RabbitMQ: 131072).
	FrameMaxBytes uint32
	// ChannelMax is offered in connection.tune (RabbitMQ: 2047).
	ChannelMax uint16
	// HeartbeatSeconds is offered in connection.tune (RabbitMQ: 60).
	HeartbeatSeconds uint16
	// HandshakeTimeout bounds the time from accept to connection.open.
	HandshakeTimeout time.Duration // 10s
	// CommitTimeout bounds one publish batch's or one metadata change's
	// wait for its Raft commit.
	CommitTimeout time.Duration // 10s
	// ConsumerTimeout is how long a delivery may stay unacknowledged before
	// the broker hands it to another consumer (RabbitMQ: 30 min).
	ConsumerTimeout time.Duration // 30m
	// MaxUnconfirmedMessages bounds the publishes one channel has waiting
	// for their commit; a full pipe stops reading the socket.
	MaxUnconfirmedMessages int // 4096
	// MaxUnconfirmedBytes bounds the bodies and properties one connection
	// has waiting for their commit, over all its channels.
	MaxUnconfirmedBytes int64 // 64 MiB
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.FrameMaxBytes == 0 {
		c.FrameMaxBytes = 131072
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = 2047
	}
	if c.HeartbeatSeconds == 0 {
		c.HeartbeatSeconds = 60
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 10 * time.Second
	}
	if c.ConsumerTimeout == 0 {
		c.ConsumerTimeout = 30 * time.Minute
	}
	if c.MaxUnconfirmedMessages == 0 {
		c.MaxUnconfirmedMessages = 4096
	}
	if c.MaxUnconfirmedBytes == 0 {
		c.MaxUnconfirmedBytes = 64 << 20
	}
	return c
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Broker == nil {
		errs = append(errs, errors.New("amqp: Broker is nil"))
	}
	if c.FrameMaxBytes < 4096 {
		errs = append(errs, fmt.Errorf("amqp: FrameMaxBytes %d is below AMQP's floor of 4096", c.FrameMaxBytes))
	}
	if c.HandshakeTimeout < 0 || c.CommitTimeout < 0 || c.ConsumerTimeout < 0 {
		errs = append(errs, errors.New("amqp: negative timeout"))
	}
	if c.MaxUnconfirmedMessages < 0 {
		errs = append(errs, errors.New("amqp: negative MaxUnconfirmedMessages"))
	}
	if c.MaxUnconfirmedBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("amqp: MaxUnconfirmedBytes %d is below 1 MiB (one message must fit)", c.MaxUnconfirmedBytes))
	}
	return errors.Join(errs...)
}
