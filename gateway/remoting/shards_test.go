package remoting

import (
	"testing"

	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// TestShardsOutOfRangeQueueIDs: queueOf turns a negative or huge queueId into
// 1<<31 ("no such queue"), and pull accepts queueIds up to 1<<31, but
// shards.core computes local*K+slot in uint32: the product wraps, so such
// ids land on real queues.
func TestShardsOutOfRangeQueueIDs(t *testing.T) {
	for _, k := range []int{2, 3} {
		cfg := Config{BrokerName: "conflux", NodeID: 1, Peers: map[uint64]string{}}
		for id := 1; id <= k; id++ {
			cfg.Peers[uint64(id)] = "127.0.0.1:1"
		}
		d := &brokerDoor{shards: newShards(&cfg)}
		for _, qid := range []string{"-1", "2147483648", "1431655766"} {
			req := &command.RemotingCommand{ExtFields: map[string]string{"queueId": qid, "bname": d.shards.names[0]}}
			if q := d.queueOf(req); q != noQueue {
				t.Errorf("K=%d queueId %s of %s maps to core queue %d", k, qid, d.shards.names[0], q)
			}
		}
	}
}
