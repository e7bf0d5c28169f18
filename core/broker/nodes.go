package broker

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The cluster view: which voters are down. Only the leader can tell (raft
// hears from every follower there), so the leader watches and records its
// verdict in the replicated records; every node then answers the same,
// e.g. when a name server builds routes that must avoid a dead node.

const (
	nodesNamespace = "cluster"
	downKey        = "down"
	// nodeSample spaces the leader's looks at raft's activity marks.
	nodeSample = 250 * time.Millisecond
)

// DownNodes returns the voters the cluster view calls down (nil when all
// are up, and on a single node).
func (b *Broker) DownNodes() map[uint64]bool {
	v, ok := b.Record(nodesNamespace, downKey)
	if !ok || len(v) == 0 {
		return nil
	}
	down := map[uint64]bool{}
	for f := range strings.SplitSeq(string(v), ",") {
		if id, err := strconv.ParseUint(f, 10, 64); err == nil {
			down[id] = true
		}
	}
	return down
}

func encodeDown(down map[uint64]bool) string {
	ids := slices.Sorted(maps.Keys(down))
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ",")
}

// watchNodes runs on every node of a cluster until it stops; it acts only
// while this node leads. A voter is down when raft has not marked it
// active for NodeDownAfter: the marks are cleared at every quorum check,
// so one look can miss a live node, many looks cannot.
func (b *Broker) watchNodes() {
	t := time.NewTicker(nodeSample)
	defer t.Stop()
	var term uint64
	lastSeen := map[uint64]time.Time{}
	for {
		select {
		case <-b.node.Done():
			return
		case <-t.C:
		}
		st := b.node.Status()
		if !st.LeaderReady {
			term = 0
			continue
		}
		now := time.Now()
		if st.Term != term {
			// A new leadership: nodes the recorded view calls down stay
			// down until seen, the rest get the benefit of the doubt
			// (calling a dead node up would route clients back to it).
			term = st.Term
			clear(lastSeen)
			down := b.DownNodes()
			for _, id := range st.Voters {
				if !down[id] {
					lastSeen[id] = now
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		active, ok := b.node.RecentlyActive(ctx)
		cancel()
		if !ok {
			continue
		}
		down := map[uint64]bool{}
		for _, id := range st.Voters {
			if active[id] {
				lastSeen[id] = now
			}
			if seen, ok := lastSeen[id]; !ok || now.Sub(seen) > b.cfg.NodeDownAfter {
				down[id] = true
			}
		}
		want := encodeDown(down)
		if cur, _ := b.Record(nodesNamespace, downKey); string(cur) == want {
			continue
		}
		ctx, cancel = context.WithTimeout(context.Background(), b.cfg.ProposeTimeout)
		err := b.PutRecord(ctx, nodesNamespace, downKey, []byte(want))
		cancel()
		if err != nil {
			b.cfg.Logger.Warn("cannot record the cluster view", "down", want, "err", err)
		} else {
			b.cfg.Logger.Info("cluster view changed", "down", want)
		}
	}
}
