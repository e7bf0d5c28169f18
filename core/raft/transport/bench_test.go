package transport

import (
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// countingHandler counts messages and wakes the benchmark every
// benchWakeEvery of them, so the sender can keep a bounded window in flight
// without polling.
type countingHandler struct {
	n    atomic.Int64
	wake chan struct{}
}

const benchWakeEvery = 64

func (h *countingHandler) Process(raftpb.Message) {
	if h.n.Add(1)%benchWakeEvery == 0 {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}
func (h *countingHandler) ReportUnreachable(uint64)    {}
func (h *countingHandler) ReportSnapshot(uint64, bool) {}

// BenchmarkSend measures messages per second from one node to another over
// loopback TCP: MsgApps of 16 entries of 1 KiB, sent in Send calls of 8 (a
// Ready's worth), with at most half a queue in flight so nothing is dropped.
// Marshalling, the queue, the writer, the kernel, the reader and decoding
// are all inside the loop.
func BenchmarkSend(b *testing.B) {
	const entries, entryBytes, batch = 16, 1024, 8
	recv := &countingHandler{wake: make(chan struct{}, 1)}
	rcfg := testConfig(2)
	rcfg.Logger = nil
	rx, err := New(rcfg, recv)
	if err != nil {
		b.Fatal(err)
	}
	if err := rx.Start(); err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	scfg := testConfig(1)
	scfg.Logger = nil
	scfg.Peers = map[uint64]string{2: rx.Addr().String()}
	tx, err := New(scfg, &countingHandler{wake: make(chan struct{}, 1)})
	if err != nil {
		b.Fatal(err)
	}
	if err := tx.Start(); err != nil {
		b.Fatal(err)
	}
	defer tx.Close()

	msgs := make([]raftpb.Message, batch)
	for i := range msgs {
		m := raftpb.Message{Type: raftpb.MsgApp, From: 1, To: 2, Term: 1, LogTerm: 1, Index: uint64(i), Commit: 1}
		for j := range entries {
			m.Entries = append(m.Entries, raftpb.Entry{Term: 1, Index: uint64(i*entries + j), Data: make([]byte, entryBytes)})
		}
		msgs[i] = m
	}
	window := int64(tx.cfg.PeerQueueMessages / 2)
	b.SetBytes(int64(msgs[0].Size()))
	b.ResetTimer()
	start := time.Now()
	sent := int64(0)
	for sent < int64(b.N) {
		n := min(int64(batch), int64(b.N)-sent)
		for sent+n-recv.n.Load() > window {
			<-recv.wake
		}
		tx.Send(msgs[:n])
		sent += n
	}
	for recv.n.Load() < sent {
		select {
		case <-recv.wake:
		case <-time.After(time.Millisecond): // the last few are below benchWakeEvery
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "msgs/s")
	if d := tx.Stats()[2].DroppedFrames; d != 0 {
		b.Fatalf("dropped %d frames", d)
	}
}
