package raft

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/raft/transport"
)

type tcpNode struct {
	n  *Node
	tr *transport.Transport
}

// startTCPCluster starts size nodes on the real disk, talking over the real
// TCP transport on 127.0.0.1.
func startTCPCluster(b testing.TB, size int) []*tcpNode {
	refs := make([]*NodeHandler, size)
	trs := make([]*transport.Transport, size)
	peers := map[uint64]string{}
	for k := range size {
		refs[k] = &NodeHandler{}
		tr, err := transport.New(transport.Config{ID: uint64(k + 1), ClusterID: 7, ListenAddr: "127.0.0.1:0"}, refs[k])
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Start(); err != nil {
			b.Fatal(err)
		}
		trs[k] = tr
		peers[uint64(k+1)] = tr.Addr().String()
	}
	base := b.TempDir()
	out := make([]*tcpNode, size)
	for k := range size {
		n, err := Open(Config{
			ID: uint64(k + 1), Dir: filepath.Join(base, fmt.Sprint("n", k+1)), Peers: peers,
			Log:          clog.Config{SegmentSizeBytes: 256 << 20},
			StateMachine: &countSM{}, Transport: trs[k], ProposalID: testProposalID,
		})
		if err != nil {
			b.Fatal(err)
		}
		refs[k].Set(n)
		go n.Run()
		out[k] = &tcpNode{n: n, tr: trs[k]}
	}
	b.Cleanup(func() {
		for _, tn := range out {
			_ = tn.n.Stop()
			_ = tn.tr.Close()
		}
	})
	return out
}

// countSM applies without keeping anything: the benchmark measures the log.
type countSM struct{ n atomic.Int64 }

func (s *countSM) Apply(ents []raftpb.Entry) error { s.n.Add(int64(len(ents))); return nil }
func (s *countSM) AppliedIndex() uint64            { return 0 }
func (s *countSM) Snapshot() ([]byte, error)       { return nil, nil }
func (s *countSM) Restore([]byte, uint64) error    { return nil }

func tcpLeader(b testing.TB, nodes []*tcpNode) *tcpNode {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, tn := range nodes {
			if st := tn.n.Status(); st.LeaderReady {
				return tn
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("no leader")
	return nil
}

// BenchmarkCluster3 proposes entries of perEntry 1 KiB messages to the
// leader of a three-node cluster in one process (fsync on, real disk, TCP
// on loopback) from 32 concurrent proposers. Each op is one entry. It
// reports messages/s, commit latency percentiles (propose → applied on the
// leader), and the ratio to core/log appending the same entries alone,
// 16 per fdatasync, in the same run.
func BenchmarkCluster3(b *testing.B) {
	for _, per := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("msgs_per_entry=%d", per), func(b *testing.B) {
			logRate := logAppendRate(b, per)
			nodes := startTCPCluster(b, 3)
			leader := tcpLeader(b, nodes)
			const proposers = 32
			var next atomic.Int64
			var mu sync.Mutex
			lats := make([]time.Duration, 0, b.N)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range proposers {
				wg.Go(func() {
					data := make([]byte, per*1024)
					for next.Add(1) <= int64(b.N) {
						id := idSeq.Add(1)
						binary.LittleEndian.PutUint64(data, id)
						t0 := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := leader.n.Propose(ctx, data)
						cancel()
						if err != nil {
							b.Error(err)
							return
						}
						d := time.Since(t0)
						mu.Lock()
						lats = append(lats, d)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lats)
			msgs := float64(b.N*per) / elapsed.Seconds()
			b.ReportMetric(msgs, "msgs/s")
			b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(msgs/logRate, "ratio-to-log")
		})
	}
}

// logAppendRate measures core/log alone: entries of per 1 KiB messages, 16
// entries per Append+Sync, for about half a second; it returns messages/s.
func logAppendRate(b *testing.B, per int) float64 {
	l, err := clog.Open(clog.Config{Dir: b.TempDir(), SegmentSizeBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	ents := make([]raftpb.Entry, 16)
	data := make([]byte, per*1024)
	next := uint64(1)
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		for k := range ents {
			ents[k] = raftpb.Entry{Index: next, Term: 1, Data: data}
			next++
		}
		if err := l.Append(ents); err != nil {
			b.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return float64((next-1)*uint64(per)) / time.Since(start).Seconds()
}

// BenchmarkFailover measures, per op, the time from stopping the leader of
// a three-node cluster (its loop and its transport, as a crash would) to
// the first entry committed by the two others. Election timeout is 10 ticks
// of 100 ms (randomized to 1–2 s by etcd raft).
func BenchmarkFailover(b *testing.B) {
	var total time.Duration
	for range b.N {
		b.StopTimer()
		nodes := startTCPCluster(b, 3)
		leader := tcpLeader(b, nodes)
		var other *tcpNode
		for _, tn := range nodes {
			if tn != leader {
				other = tn
			}
		}
		b.StartTimer()
		start := time.Now()
		_ = leader.tr.Close()
		_ = leader.n.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := other.n.Propose(ctx, testPayload(idSeq.Add(1), 64))
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > 20*time.Second {
				b.Fatal("no commit after losing the leader")
			}
			time.Sleep(5 * time.Millisecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-first-commit")
}
