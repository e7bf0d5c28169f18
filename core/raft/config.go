package raft

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
)

// Transport carries Raft messages to peers. Send must not block; the
// transport reports failures back through the node's ReportUnreachable
// and ReportSnapshot.
type Transport interface {
	Send(msgs []raftpb.Message)
	AddPeer(id uint64, addr string)
	RemovePeer(id uint64)
}

// Config configures a Node. Zero fields take defaults.
type Config struct {
	// ID is this node's Raft id (never 0, never reused).
	ID uint64
	// Dir holds the commit log and meta.db.
	Dir string
	// Peers are the voters of a new cluster, id → peer address, including
	// this node. Used only when the data dir is empty and Join is false.
	Peers map[uint64]string
	// Join starts a node with an empty log that waits to be added by a
	// ConfChange from the existing cluster instead of bootstrapping one.
	Join bool
	// Log configures the commit log; its Dir is set to Dir.
	Log clog.Config

	TickInterval   time.Duration // 100ms
	ElectionTicks  int           // 10: a randomized 1–2 s election timeout
	HeartbeatTicks int           // 1

	MaxSizePerMsgBytes         uint64 // 1 MiB of entries per MsgApp
	MaxInflightMsgs            int    // 64 MsgApps in flight per follower
	MaxUncommittedEntriesBytes uint64 // 64 MiB; beyond it proposals are dropped (back-pressure)
	MaxCommittedPerReadyBytes  uint64 // 16 MiB applied per Ready
	MaxPendingProposals        int    // 4096 proposals queued for the loop
	// RetentionInterval is how often the log's retention runs (rounded to
	// ticks: the node counts time only in ticks, so a simulation drives it).
	RetentionInterval time.Duration // 1 minute

	// ProposalID extracts the id the proposer put in an entry's data, so
	// the node that proposed it can wake its caller when it applies.
	ProposalID func(data []byte) (uint64, bool)
	// Prepare runs on the leader, in the loop, right before an entry is
	// proposed (also for entries forwarded by followers), with the current
	// term: the broker stamps queue offsets here, and starts its counters
	// afresh from the applied state when the term changes. undo is called
	// if raft drops the proposal.
	Prepare func(term uint64, data []byte) (undo func(), err error)

	StateMachine StateMachine
	Transport    Transport
	Logger       *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	set := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setU := func(v *uint64, d uint64) {
		if *v == 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setD(&c.TickInterval, 100*time.Millisecond)
	set(&c.ElectionTicks, 10)
	set(&c.HeartbeatTicks, 1)
	setU(&c.MaxSizePerMsgBytes, 1<<20)
	set(&c.MaxInflightMsgs, 64)
	setU(&c.MaxUncommittedEntriesBytes, 64<<20)
	setU(&c.MaxCommittedPerReadyBytes, 16<<20)
	set(&c.MaxPendingProposals, 4096)
	setD(&c.RetentionInterval, time.Minute)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Log.Dir = c.Dir
	if c.Log.Logger == nil {
		c.Log.Logger = c.Logger
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.ID == 0:
		return errors.New("raft: ID must not be 0")
	case c.Dir == "":
		return errors.New("raft: Dir is empty")
	case c.StateMachine == nil:
		return errors.New("raft: StateMachine is nil")
	case c.Transport == nil:
		return errors.New("raft: Transport is nil")
	case c.HeartbeatTicks <= 0 || c.ElectionTicks <= c.HeartbeatTicks:
		return fmt.Errorf("raft: ElectionTicks %d must exceed HeartbeatTicks %d", c.ElectionTicks, c.HeartbeatTicks)
	case !c.Join && len(c.Peers) > 0 && c.Peers[c.ID] == "":
		return fmt.Errorf("raft: Peers does not include this node %d", c.ID)
	}
	return nil
}
