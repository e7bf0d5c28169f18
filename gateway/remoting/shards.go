package remoting

import (
	"math"
	"net"
	"slices"
	"strconv"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// A cluster shows RocketMQ clients one broker name per node ("conflux-1",
// "conflux-2", ...), and spreads every topic's queues over them: core
// queue q is local queue q/K of broker name q%K, for K names. Every node
// holds every queue (one replicated log), so any node can serve any broker
// name; the split only gives clients several masters. A producer whose
// send to one node fails retries on another broker name at once (the Go
// client avoids the broker that just failed), instead of waiting up to
// 30 s for its next route refresh as it would with one broker name whose
// master died. When the cluster view calls a node down, routes move its
// broker name to a live node, so its queues keep being consumed.
//
// A single node keeps one broker name (Config.BrokerName) and the identity
// mapping.
type shards struct {
	names []string // slot -> broker name
	ids   []uint64 // slot -> node id
	self  int      // this node's slot
}

func newShards(cfg *Config) shards {
	if len(cfg.Peers) <= 1 {
		return shards{names: []string{cfg.BrokerName}, ids: []uint64{max(cfg.NodeID, 1)}}
	}
	var s shards
	ids := make([]uint64, 0, len(cfg.Peers))
	for id := range cfg.Peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for k, id := range ids {
		s.names = append(s.names, cfg.BrokerName+"-"+strconv.FormatUint(id, 10))
		s.ids = append(s.ids, id)
		if id == cfg.NodeID {
			s.self = k
		}
	}
	return s
}

func (s shards) k() uint32 { return uint32(len(s.names)) }

// slotOf finds a request's broker name: the Go client names it in every
// request ("bname", or "n" in SEND_MESSAGE_V2); other clients may not,
// and then they mean this node's own.
func (s shards) slotOf(req *command.RemotingCommand) int {
	name := req.ExtFields["bname"]
	if name == "" {
		name = req.ExtFields["n"]
	}
	if k := slices.Index(s.names, name); k >= 0 {
		return k
	}
	return s.self
}

// noQueue is a queue id no topic has: what an out-of-range request id maps
// to (a topic has at most broker.MaxQueues queues).
const noQueue = math.MaxUint32

// core maps a broker name's local queue id to the topic's queue; an id no
// topic can have maps to noQueue rather than wrapping onto a real queue.
func (s shards) core(slot int, local uint32) uint32 {
	if local >= broker.MaxQueues {
		return noQueue
	}
	return local*s.k() + uint32(slot)
}

// local maps a topic's queue to its broker name's queue id.
func (s shards) local(core uint32) (slot int, local uint32) {
	return int(core % s.k()), core / s.k()
}

// count is how many of a topic's queues the slot's broker name shows.
func (s shards) count(slot int, queues uint32) uint32 {
	if queues <= uint32(slot) {
		return 0
	}
	return (queues - uint32(slot) + s.k() - 1) / s.k()
}

// serving returns, for each slot, the node that serves its broker name:
// its own node unless the cluster view calls that down, then the next live
// node after it (so every live node agrees).
func (s shards) serving(down map[uint64]bool) []uint64 {
	out := make([]uint64, len(s.ids))
	for k := range s.ids {
		out[k] = s.ids[k]
		for j := range len(s.ids) {
			if id := s.ids[(k+j)%len(s.ids)]; !down[id] {
				out[k] = id
				break
			}
		}
	}
	return out
}

// brokerAddr is node id's broker front door: its peer host with this
// node's broker port (every node serves the broker door on one port).
func brokerAddr(cfg *Config, id uint64) string {
	if id == cfg.NodeID || len(cfg.Peers) <= 1 {
		return cfg.BrokerAddr
	}
	peer, ok := cfg.Peers[id]
	if !ok {
		return ""
	}
	host, _, err1 := net.SplitHostPort(peer)
	_, port, err2 := net.SplitHostPort(cfg.BrokerAddr)
	if err1 != nil || err2 != nil {
		return ""
	}
	return net.JoinHostPort(host, port)
}
