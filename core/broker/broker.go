package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/core/log/cq"
	"github.com/conflux-mq/conflux/core/raft"
	"github.com/conflux-mq/conflux/core/raft/transport"
)

// Errors callers branch on.
var (
	ErrClosed        = errors.New("broker: closed")
	ErrNoTopic       = errors.New("broker: no such topic")
	ErrBadQueue      = errors.New("broker: no such queue")
	ErrNotWritable   = errors.New("broker: topic is not writable")
	ErrInvalidTopic  = errors.New("broker: invalid topic name")
	ErrTooLarge      = errors.New("broker: message too large")
	ErrNotReadable   = errors.New("broker: topic is not readable")
	ErrOffsetTooHigh = errors.New("broker: offset beyond the queue's end")
	ErrBadQueueCount = errors.New("broker: queue count out of range")
)

// Broker is the produce/consume API that every protocol gateway calls.
// It owns a Raft node whose log is the commit log and whose state machine
// builds the consume queues and keeps topics and consumer offsets.
type Broker struct {
	cfg  Config
	node *raft.Node
	tr   *transport.Transport
	sm   *stateMachine
	prod *producer
	m    *metrics

	// routers add destinations at produce (AddRouter): copy on write.
	routers   atomic.Pointer[map[uint64]Router]
	routersMu sync.Mutex
	routerSeq uint64

	// Leader-side offset counters, owned by the raft loop (prepare).
	counterTerm uint64
	counters    map[cq.QueueID]uint64

	dl    deliveries
	sched scheduler // sched_run.go

	disk *diskAlarm // disk.go
	auth *authState // users.go
	// stopBG ends the background loops (disk monitor, user bootstrap);
	// Close waits for them with bg.
	stopBG chan struct{}
	bg     sync.WaitGroup

	closeOnce sync.Once
	closed    atomic.Bool
}

// Open starts the broker: storage recovery, the Raft loop, the peer
// transport and the producer's batcher.
func Open(cfg Config) (*Broker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sm, err := newStateMachine(cfg)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, sm: sm, counters: map[cq.QueueID]uint64{},
		disk: newDiskAlarm(), auth: newAuthState(cfg.Auth.Hash), stopBG: make(chan struct{})}
	b.routers.Store(&map[uint64]Router{})
	ref := &raft.NodeHandler{}
	var tr raft.Transport = noTransport{}
	if cfg.RaftAddr != "" {
		if b.tr, err = transport.New(transport.Config{
			ID: cfg.NodeID, ClusterID: cfg.ClusterID, ListenAddr: cfg.RaftAddr,
			Logger: cfg.Logger, ServerTLS: cfg.PeerServerTLS, ClientTLS: cfg.PeerClientTLS,
		}, ref); err == nil {
			err = b.tr.Start()
		}
		if err != nil {
			_ = sm.close()
			return nil, fmt.Errorf("broker: peer transport: %w", err)
		}
		tr = b.tr
	}
	rc := cfg.Raft
	rc.ID, rc.Dir, rc.Peers, rc.Log = cfg.NodeID, cfg.DataDir, cfg.Peers, cfg.Log
	rc.StateMachine, rc.Transport = sm, tr
	rc.ProposalID, rc.Prepare = command.ProposalID, b.prepare
	rc.Logger = cfg.Logger
	if b.node, err = raft.Open(rc); err != nil {
		b.closeTransport()
		_ = sm.close()
		return nil, err
	}
	ref.Set(b.node)
	b.m = newMetrics(cfg.Registerer, b)
	go b.node.Run()
	b.prod = newProducer(b)
	// Know the disk before the first producer does.
	b.sampleDisk()
	b.updateBlocked()
	b.bg.Add(2)
	go func() {
		defer b.bg.Done()
		b.monitorDisk()
	}()
	go func() {
		defer b.bg.Done()
		b.bootstrapUsers()
	}()
	b.startScheduler()
	if len(cfg.Peers) > 1 {
		go b.watchNodes()
	}
	return b, nil
}

func (b *Broker) closeTransport() {
	if b.tr != nil {
		_ = b.tr.Close()
	}
}

// Close stops accepting produce calls, lets the in-flight ones finish,
// stops Raft (persisting its state), checkpoints the queues and closes.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		close(b.stopBG)
		b.bg.Wait()
		b.stopScheduler()
		b.prod.close()
		err = errors.Join(b.node.Stop(), b.sm.close())
		b.closeTransport()
		b.m.unregister()
	})
	return err
}

// Status is the Raft node's view.
func (b *Broker) Status() raft.Status { return b.node.Status() }

// Ready reports whether this node knows a leader and has applied everything
// committed that it knows of: it can serve reads that are up to date.
func (b *Broker) Ready() bool {
	st := b.node.Status()
	return st.Leader != 0 && st.Applied >= st.Commit
}

// Done is closed if the Raft loop stops on its own (a storage failure).
func (b *Broker) Done() <-chan struct{} { return b.node.Done() }

// Err says why the broker failed, if it did.
func (b *Broker) Err() error { return b.node.Err() }

// prepare stamps queue offsets into a batch on the leader, in the raft
// loop, just before it is proposed. Counters start from the consume queues
// (the leader has applied its whole log when it proposes) and restart at a
// new term, because entries of an earlier term may have been cut.
func (b *Broker) prepare(term uint64, data []byte) (func(), error) {
	if command.IsCommand(data) {
		return nil, nil
	}
	if term != b.counterTerm {
		b.counterTerm, b.counters = term, map[cq.QueueID]uint64{}
	}
	type old struct {
		q   cq.QueueID
		v   uint64
		had bool
	}
	var undo []old
	var it batch.Iterator
	if err := it.Init(data); err != nil {
		return nil, fmt.Errorf("broker: bad batch: %w", err)
	}
	for it.Next() {
		v := it.View()
		for i, d := range v.Destinations {
			q := cq.QueueID{Topic: string(d.Topic), Queue: d.QueueID}
			next, had := b.counters[q]
			if !had {
				_, next = b.sm.queueRange(q.Topic, q.Queue)
			}
			if err := batch.SetQueueOffset(data, v.Pos(), i, next); err != nil {
				return nil, err
			}
			undo = append(undo, old{q, next, had})
			b.counters[q] = next + 1
		}
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	return func() {
		for k := len(undo) - 1; k >= 0; k-- {
			if undo[k].had {
				b.counters[undo[k].q] = undo[k].v
			} else {
				delete(b.counters, undo[k].q)
			}
		}
	}, nil
}

// propose proposes data (with its proposal id inside) and waits for it to
// apply, retrying attempts that time out or find no leader. Entries carry
// their own id, so a retry after an unknown outcome can commit twice; the
// producer's message ids let consumers tell (at-least-once).
func (b *Broker) propose(ctx context.Context, data []byte) (uint64, error) {
	return b.proposeWhile(ctx, data, nil)
}

// errGuard: proposeWhile's guard refused a further attempt.
var errGuard = errors.New("broker: proposal abandoned (guard)")

// proposeWhile is propose that makes an attempt only while keep (if not
// nil) says so.
func (b *Broker) proposeWhile(ctx context.Context, data []byte, keep func() bool) (uint64, error) {
	for {
		if b.closed.Load() {
			return 0, ErrClosed
		}
		if keep != nil && !keep() {
			return 0, errGuard
		}
		actx, cancel := context.WithTimeout(ctx, b.cfg.ProposeTimeout)
		idx, err := b.node.Propose(actx, data)
		cancel()
		if err == nil {
			return idx, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if errors.Is(err, raft.ErrStopped) {
			return 0, err
		}
		// Dropped (no leader yet) or timed out: wait a moment (or for
		// the next apply), then try again.
		t := time.NewTimer(retryBackoff)
		select {
		case <-t.C:
		case <-b.sm.changed():
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-b.node.Done():
			t.Stop()
			return 0, raft.ErrStopped
		}
	}
}

// retryBackoff spaces the attempts of a proposal that found no leader.
const retryBackoff = 50 * time.Millisecond

// noTransport serves a single node with no peer listener.
type noTransport struct{}

func (noTransport) Send([]raftpb.Message)  {}
func (noTransport) AddPeer(uint64, string) {}
func (noTransport) RemovePeer(uint64)      {}
