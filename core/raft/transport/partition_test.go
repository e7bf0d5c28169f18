package transport

import (
	"testing"
	"time"

	"go.etcd.io/etcd/raft/v3/raftpb"

	"github.com/conflux-mq/conflux/internal/tcpproxy"
)

// TestPartitionHeal: a live connection cut by a proxy in the middle is
// reported, nothing gets through while the link is down, and delivery
// resumes on its own once it heals.
func TestPartitionHeal(t *testing.T) {
	b := startNode(t, testConfig(2))
	proxy, err := tcpproxy.New("127.0.0.1:0", b.addr(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	cfg := testConfig(1)
	cfg.Peers = map[uint64]string{2: proxy.Addr()}
	a := startNode(t, cfg)

	seq := uint64(0)
	send := func() {
		seq++
		a.Send([]raftpb.Message{heartbeat(1, 2, seq)})
	}
	waitFor(t, 5*time.Second, func() bool { send(); return b.rec.count() > 0 })

	proxy.Cut()
	waitFor(t, 5*time.Second, func() bool { send(); return a.rec.unreachableCount(2) > 0 })
	// Messages sent before the report may still be draining out of B's
	// socket; none sent after it may arrive.
	cutSeq := seq
	dropped := a.Stats()[2].DroppedFrames
	waitFor(t, 5*time.Second, func() bool { send(); return a.Stats()[2].DroppedFrames >= dropped+20 })
	if m := lastFrom(b, 1); m.Commit > cutSeq {
		t.Fatalf("message %d crossed the cut link (cut at %d)", m.Commit, cutSeq)
	}

	proxy.Heal()
	waitFor(t, 5*time.Second, func() bool { send(); return lastFrom(b, 1).Commit > cutSeq })
}

func lastFrom(n node, id uint64) raftpb.Message {
	ms := n.rec.from(id)
	if len(ms) == 0 {
		return raftpb.Message{}
	}
	return ms[len(ms)-1]
}
