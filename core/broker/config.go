package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft"
)

// Config configures a Broker. Zero fields take defaults.
type Config struct {
	NodeID  uint64
	DataDir string
	// RaftAddr is where peers reach this node; empty disables the peer
	// listener (a single node needs none).
	RaftAddr string
	// Peers are the voters of a new cluster, id → peer address, including
	// this node. Empty: a single-node cluster.
	Peers map[uint64]string
	// ClusterID guards the peer transport against crossed wires.
	ClusterID uint64
	// PeerServerTLS and PeerClientTLS make the peer transport mutual TLS
	// (nil: plain TCP).
	PeerServerTLS, PeerClientTLS *tls.Config

	Log      clog.Config
	Dispatch clog.DispatchConfig
	// Raft tunes the consensus loop; ID, Dir, Peers, Log and the wiring are
	// filled in by the broker.
	Raft raft.Config

	// AutoCreateTopics creates a topic with DefaultQueues queues the
	// first time a message is produced to it.
	AutoCreateTopics *bool
	DefaultQueues    int // 8

	MaxBatchBytes      int           // 1 MiB: one Raft entry
	MaxBatchMessages   int           // 4096 messages per entry
	MaxInflightBatches int           // 64 entries proposed by this node at once
	ProposeTimeout     time.Duration // 5s per attempt
	// ResultTTL bounds how long the outcome of this node's proposals is
	// kept for their producers (an answer nobody waits for any more).
	ResultTTL time.Duration // 1 minute
	// RetryBackoff is the first wait before a nacked delivery comes back;
	// it doubles with every failure, up to a minute.
	RetryBackoff time.Duration // 1s
	// Schedule configures delays, timers and transactions (sched.go).
	Schedule ScheduleConfig
	// NodeDownAfter is how long the leader must not hear from a voter
	// before the cluster view (DownNodes) calls it down; routes then send
	// its clients to live nodes.
	NodeDownAfter time.Duration // 3s
	// Disk is the free-space alarm (disk.go).
	Disk DiskConfig
	// Auth: users and how logins are checked (users.go).
	Auth AuthConfig

	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.NodeID == 0 {
		c.NodeID = 1
	}
	if c.NodeDownAfter == 0 {
		c.NodeDownAfter = 3 * time.Second
	}
	if c.ClusterID == 0 {
		c.ClusterID = 1
	}
	if c.AutoCreateTopics == nil {
		t := true
		c.AutoCreateTopics = &t
	}
	if c.DefaultQueues == 0 {
		c.DefaultQueues = 8
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.MaxBatchMessages == 0 {
		c.MaxBatchMessages = 4096
	}
	if c.MaxInflightBatches == 0 {
		c.MaxInflightBatches = 64
	}
	if c.ProposeTimeout == 0 {
		c.ProposeTimeout = 5 * time.Second
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = time.Minute
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Schedule = c.Schedule.withDefaults()
	c.Disk = c.Disk.withDefaults(c.Log.WithDefaults().SegmentSizeBytes)
	c.Auth = c.Auth.withDefaults()
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("broker: DataDir is empty")
	case len(c.Peers) > 1 && c.RaftAddr == "":
		return errors.New("broker: a cluster needs RaftAddr")
	case len(c.Peers) > 0 && c.Peers[c.NodeID] == "":
		return fmt.Errorf("broker: Peers does not include this node (%d)", c.NodeID)
	case c.DefaultQueues < 1 || c.DefaultQueues > MaxQueues:
		return fmt.Errorf("broker: DefaultQueues %d outside [1, %d]", c.DefaultQueues, MaxQueues)
	case c.MaxBatchBytes < 4096 || c.MaxBatchMessages < 1 || c.MaxInflightBatches < 1:
		return errors.New("broker: batch limits too small")
	case c.NodeDownAfter < 0:
		return errors.New("broker: NodeDownAfter is negative")
	}
	if err := c.Disk.validate(); err != nil {
		return err
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	return c.Schedule.validate()
}

// MaxQueues bounds the queues of one topic.
const MaxQueues = 1024
