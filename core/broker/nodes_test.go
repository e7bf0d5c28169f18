package broker

import (
	"testing"
	"time"
)

// TestDownNodesView: a follower that stops is called down on every live
// node within NodeDownAfter plus a sample or two, and up again once it is
// back; a new leader does the same for the leader it replaced.
func TestDownNodesView(t *testing.T) {
	bs, cfgs := openCluster(t, func(c *Config) { c.NodeDownAfter = time.Second })
	waitFor(t, 15*time.Second, "a leader", func() bool { return leaderIndex(bs) >= 0 })
	lead := leaderIndex(bs)
	f := (lead + 1) % 3
	fid := cfgs[f].NodeID
	if err := bs[f].Close(); err != nil {
		t.Fatal(err)
	}
	bs[f] = nil
	for _, b := range bs {
		if b != nil {
			waitFor(t, 10*time.Second, "the stopped follower called down", func() bool { return b.DownNodes()[fid] && len(b.DownNodes()) == 1 })
		}
	}
	bs[f] = openBroker(t, cfgs[f])
	for _, b := range bs {
		waitFor(t, 10*time.Second, "the follower called up again", func() bool { return len(b.DownNodes()) == 0 })
	}

	// The leader goes: its successor calls it down.
	lid := cfgs[lead].NodeID
	if err := bs[lead].Close(); err != nil {
		t.Fatal(err)
	}
	bs[lead] = nil
	for _, b := range bs {
		if b != nil {
			waitFor(t, 15*time.Second, "the old leader called down", func() bool { return b.DownNodes()[lid] })
		}
	}
}

// TestDownNodesViewSurvivesLeaderChange: a stopped follower is called
// down; leadership then moves between the two live nodes (a transfer, a
// rolling restart). The new leader must keep calling the dead node down:
// calling it up would route clients back to it for NodeDownAfter, and a
// client refreshing its routes then keeps them for 30 s. (Found in review.)
func TestDownNodesViewSurvivesLeaderChange(t *testing.T) {
	bs, cfgs := openCluster(t, func(c *Config) { c.NodeDownAfter = 2 * time.Second })
	waitFor(t, 15*time.Second, "a leader", func() bool { return leaderIndex(bs) >= 0 })
	lead := leaderIndex(bs)
	f, other := (lead+1)%3, (lead+2)%3
	fid := cfgs[f].NodeID
	if err := bs[f].Close(); err != nil {
		t.Fatal(err)
	}
	bs[f] = nil
	waitFor(t, 10*time.Second, "the stopped follower called down", func() bool { return bs[other].DownNodes()[fid] })
	bs[lead].node.TransferLeader(cfgs[other].NodeID)
	waitFor(t, 10*time.Second, "the transfer", func() bool { return bs[other].Status().LeaderReady })
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if !bs[other].DownNodes()[fid] {
			t.Fatalf("after the leader change node %d (stopped) is called up: DownNodes=%v", fid, bs[other].DownNodes())
		}
		time.Sleep(20 * time.Millisecond) // the sampling interval of this check
	}
}
