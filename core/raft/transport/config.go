package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Config configures a Transport. Zero fields take the defaults below
// (WithDefaults); ID, ClusterID and ListenAddr have none.
type Config struct {
	// ID is this node's Raft id; never 0 (raft.None).
	ID uint64
	// ClusterID must match on both ends of every connection, so that nodes
	// of two clusters that share hosts and ports never exchange messages.
	ClusterID uint64
	// ListenAddr is where peers dial this node, e.g. "127.0.0.1:40911";
	// ":0" picks a free port (Addr reports it).
	ListenAddr string
	// Peers maps a node id to the address it listens on. An entry for ID
	// itself is ignored, so every node can be given the same map.
	Peers map[uint64]string
	// MaxFrameBytes bounds one message's encoding, in both directions. Raft's
	// MaxSizePerMsg must stay well below it, or appends are dropped.
	MaxFrameBytes int
	// PeerQueueMessages bounds the messages waiting for one peer's writer;
	// beyond it Send drops. A queue holds whole marshalled messages: the
	// bound in bytes is PeerQueueMessages × MaxFrameBytes, but in practice
	// Raft's MaxInflightMsgs × MaxSizePerMsg caps the appends among them.
	PeerQueueMessages int
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// WriteTimeout bounds one write of at most 1 MiB to a peer; a peer that
	// stops reading for longer is disconnected.
	WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait before redialling a peer.
	// The wait doubles after every failure, with jitter, and resets once a
	// connection has stayed up for BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Logger receives connection events. Nothing is logged per message,
	// except a message too large to send (a configuration error).
	Logger *slog.Logger
	// ServerTLS and ClientTLS, when set, make every peer connection mutual
	// TLS: the listener serves ServerTLS, dialled connections use
	// ClientTLS (both should require the other side's certificate).
	ServerTLS, ClientTLS *tls.Config
}

// Defaults.
const (
	DefaultMaxFrameBytes     = 64 << 20
	DefaultPeerQueueMessages = 4096
	DefaultDialTimeout       = time.Second
	DefaultWriteTimeout      = 5 * time.Second
	DefaultBackoffMin        = 50 * time.Millisecond
	DefaultBackoffMax        = 2 * time.Second
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	setDefault(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	setDefault(&c.PeerQueueMessages, DefaultPeerQueueMessages)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.BackoffMin, DefaultBackoffMin)
	setDefault(&c.BackoffMax, DefaultBackoffMax)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate reports the first setting that cannot work. Call it on the
// result of WithDefaults: it rejects zero limits.
func (c Config) Validate() error {
	switch {
	case c.ID == 0:
		return errors.New("transport: ID is 0, which is raft.None")
	case c.ClusterID == 0:
		// A zero here is almost always a forgotten setting, and two clusters
		// that both forgot it would accept each other's connections.
		return errors.New("transport: ClusterID is 0")
	case c.ListenAddr == "":
		return errors.New("transport: ListenAddr is empty")
	case c.MaxFrameBytes <= 0 || uint64(c.MaxFrameBytes) > math.MaxUint32:
		return fmt.Errorf("transport: MaxFrameBytes %d outside [1, %d]", c.MaxFrameBytes, uint64(math.MaxUint32))
	case c.PeerQueueMessages <= 0:
		return fmt.Errorf("transport: PeerQueueMessages %d must be positive", c.PeerQueueMessages)
	case c.DialTimeout <= 0 || c.WriteTimeout <= 0:
		return fmt.Errorf("transport: DialTimeout %v and WriteTimeout %v must be positive", c.DialTimeout, c.WriteTimeout)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("transport: need 0 < BackoffMin (%v) <= BackoffMax (%v)", c.BackoffMin, c.BackoffMax)
	case c.Logger == nil:
		return errors.New("transport: Logger is nil")
	}
	for id, addr := range c.Peers {
		if id == 0 || addr == "" {
			return fmt.Errorf("transport: bad peer %d at %q", id, addr)
		}
	}
	return nil
}
