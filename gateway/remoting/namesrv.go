package remoting

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Config is what both front doors need to know.
type Config struct {
	Broker *broker.Broker
	// BrokerAddr is the broker front door's advertised "ip:port", written
	// into routes (as broker id 0) and message ids.
	BrokerAddr string
	// BrokerName and ClusterName appear in routes; defaults "conflux" and
	// "DefaultCluster".
	BrokerName, ClusterName string
	// AutoCreateTopics answers the TBW102 default-topic route so producers
	// may send to new topics (core/broker creates them on first send).
	AutoCreateTopics bool
	// NodeID and Peers (Raft id -> host:port, as --peers) give a cluster
	// one broker name per node (see shards.go), served at the peer's host
	// with BrokerAddr's port (every node serves the broker front door on
	// the same port). Empty Peers: a single node and one broker name.
	NodeID        uint64
	Peers         map[uint64]string
	MaxFrameBytes int // <= 0: command.DefaultMaxFrameBytes
	// ClientExpiry closes a producer or consumer connection that sent no
	// heartbeat for this long, so a hung client leaves its group (Java's
	// channel expiry); default 120 s. Clients beat every 30 s.
	ClientExpiry time.Duration
	// TLS, when set, makes both ports take TLS and plain connections on
	// the same port (RocketMQ's permissive TLS mode); TLSOnly refuses the
	// plain ones. Nil: plain only. A TLSOnly without TLS refuses every
	// connection rather than serve plain ones someone wanted encrypted.
	TLS     *tls.Config
	TLSOnly bool
	// HandshakeTimeout bounds a new connection's wait on a TLS port: for
	// its first bytes, then for the handshake (default 10 s).
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
}

func (c *Config) defaults() {
	if c.BrokerName == "" {
		c.BrokerName = "conflux"
	}
	if c.ClusterName == "" {
		c.ClusterName = "DefaultCluster"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ClientExpiry <= 0 {
		c.ClientExpiry = 120 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
}

// secure gives s the configuration's TLS and the ACL guard (acl.go).
func (c *Config) secure(s *Server) {
	switch {
	case c.TLS != nil:
		s.SetTLS(c.TLS, c.TLSOnly, c.HandshakeTimeout)
	case c.TLSOnly:
		c.Logger.Error("RocketMQ TLSOnly is set without a TLS configuration: every connection is refused", "server", s.name)
		s.SetTLS(refuseAll, true, c.HandshakeTimeout)
	}
	s.SetGuard(newACL(c.Broker, c.Logger, s.name).guard)
}

// DefaultTopic is the template topic RocketMQ producers ask the route of
// when their topic does not exist yet.
const DefaultTopic = "TBW102"

// defaultTopicQueues is the queue count of a topic created over
// UPDATE_AND_CREATE_TOPIC without one.
const defaultTopicQueues = 8

type nameServer struct {
	cfg    Config
	shards shards
}

// NewNameServer returns a name-server front door for cfg's broker (a
// single node: this node is broker id 0 of every route).
func NewNameServer(cfg Config) *Server {
	cfg.defaults()
	ns := &nameServer{cfg: cfg, shards: newShards(&cfg)}
	s := NewServer("rocketmq-namesrv", cfg.Logger, cfg.MaxFrameBytes)
	cfg.secure(s)
	s.Handle(command.GetRouteInfoByTopic, ns.route)
	s.Handle(command.GetBrokerClusterInfo, ns.clusterInfo)
	s.Handle(command.GetAllTopicListFromNameServer, ns.topicList)
	// Topics live in core/broker, which the broker's DELETE_TOPIC_IN_BROKER
	// already changed: nothing more to remove here.
	s.Handle(command.DeleteTopicInNamesrv, func(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
		return command.NewResponse(req, command.Success, "")
	})
	return s
}

type queueData struct {
	BrokerName     string `json:"brokerName"`
	ReadQueueNums  int    `json:"readQueueNums"`
	WriteQueueNums int    `json:"writeQueueNums"`
	Perm           int    `json:"perm"`
	TopicSysFlag   int    `json:"topicSysFlag"`
}

type brokerData struct {
	Cluster     string            `json:"cluster"`
	BrokerName  string            `json:"brokerName"`
	BrokerAddrs map[string]string `json:"brokerAddrs"`
}

type topicRouteData struct {
	QueueDatas        []queueData       `json:"queueDatas"`
	BrokerDatas       []brokerData      `json:"brokerDatas"`
	FilterServerTable map[string]string `json:"filterServerTable"`
}

// brokerDatas lists every broker name of the cluster: as master (id 0)
// the node serving it, and the other live nodes (not in down) as slaves
// (ids 1, 2, ...), which hold the same data.
func (ns *nameServer) brokerDatas(down map[uint64]bool) []brokerData {
	serving := ns.shards.serving(down)
	out := make([]brokerData, len(ns.shards.names))
	for k, name := range ns.shards.names {
		addrs := map[string]string{"0": brokerAddr(&ns.cfg, serving[k])}
		slave := 1
		for _, id := range ns.shards.ids {
			if id != serving[k] && !down[id] {
				addrs[strconv.Itoa(slave)] = brokerAddr(&ns.cfg, id)
				slave++
			}
		}
		out[k] = brokerData{Cluster: ns.cfg.ClusterName, BrokerName: name, BrokerAddrs: addrs}
	}
	return out
}

// queueDatas spreads a topic of n queues over the broker names. The names
// marked in full lose PERM_WRITE: producers skip queues that are not
// writable (remoting.md §3.1), so they send to the other names rather than
// spend a retry on a node that refuses them, and consumers still read.
//
// If that would leave the topic no writable queue, every name keeps perm:
// a Go producer without one fails with "route info not found" and goes on
// failing until its next route refresh (up to 30 s) after space is back,
// while one that is answered SERVICE_NOT_AVAILABLE learns why and sends
// again as soon as the alarm clears.
func (ns *nameServer) queueDatas(n uint32, perm int, full []bool) []queueData {
	var out []queueData
	writable := false
	for k, name := range ns.shards.names {
		c := int(ns.shards.count(k, n))
		if c == 0 {
			continue
		}
		p := perm
		if full[k] {
			p &^= broker.PermWrite
		}
		writable = writable || p&broker.PermWrite != 0
		out = append(out, queueData{BrokerName: name, ReadQueueNums: c, WriteQueueNums: c, Perm: p})
	}
	if !writable {
		for i := range out {
			out[i].Perm = perm
		}
	}
	return out
}

// fullSlots marks the broker names whose serving node has its disk alarm
// on: this node by its own check, which is immediate (and a single node
// publishes no record), the others by their replicated alarm records, so
// every node's name server gives the same answer once they are applied.
func (ns *nameServer) fullSlots(serving []uint64) []bool {
	st := ns.cfg.Broker.DiskStatus()
	self := ns.shards.ids[ns.shards.self]
	full := make([]bool, len(serving))
	for k, id := range serving {
		full[k] = id == self && st.Local || slices.Contains(st.Nodes, id)
	}
	return full
}

func (ns *nameServer) route(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	name := req.ExtFields["topic"]
	if _, ok := ns.cfg.Broker.Topic(name); !ok && strings.HasPrefix(name, retryPrefix) && len(name) > len(retryPrefix) &&
		permit(ctx, ns.cfg.Broker, req, onTopic(name, auth.PermSub)) == nil {
		// A push consumer asks for its retry topic's route in Start(),
		// before the heartbeat that would create it; without a route it
		// would not consume retries until the next refresh (30 s). Routes
		// are answered to anyone (acl.go); creating one is for members of
		// the group.
		if err := ns.cfg.Broker.CreateTopic(ctx, broker.Topic{Name: name, Queues: 1, Perm: broker.PermRead | broker.PermWrite}); err != nil {
			ns.cfg.Logger.Warn("cannot create retry topic", "topic", name, "err", err)
		}
	}
	down := ns.cfg.Broker.DownNodes()
	full := ns.fullSlots(ns.shards.serving(down))
	var qds []queueData
	if t, ok := ns.cfg.Broker.Topic(name); ok {
		qds = ns.queueDatas(t.Queues, int(t.Perm), full)
	} else if name == DefaultTopic && ns.cfg.AutoCreateTopics {
		// perm 7: read, write, inherit (a template topic). The producer
		// sends to these queue ids; core/broker then creates the topic with
		// its default queue count, which must cover them.
		qds = ns.queueDatas(uint32(ns.cfg.Broker.DefaultQueues()), 7, full)
	} else {
		return command.NewResponse(req, command.TopicNotExist, "No topic route info in name server for the topic: "+name)
	}
	// encoding/json writes compact JSON: no whitespace in brokerAddrs,
	// which the Go client parses by hand (remoting.md §3.1).
	body, err := json.Marshal(topicRouteData{QueueDatas: qds, BrokerDatas: ns.brokerDatas(down),
		FilterServerTable: map[string]string{}})
	if err != nil {
		return command.NewResponse(req, command.SystemError, err.Error())
	}
	resp := command.NewResponse(req, command.Success, "")
	resp.Body = body
	return resp
}

func (ns *nameServer) clusterInfo(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	table := map[string]brokerData{}
	for _, bd := range ns.brokerDatas(ns.cfg.Broker.DownNodes()) {
		table[bd.BrokerName] = bd
	}
	body, err := json.Marshal(map[string]any{
		"brokerAddrTable":  table,
		"clusterAddrTable": map[string][]string{ns.cfg.ClusterName: ns.shards.names},
	})
	if err != nil {
		return command.NewResponse(req, command.SystemError, err.Error())
	}
	resp := command.NewResponse(req, command.Success, "")
	resp.Body = body
	return resp
}

func (ns *nameServer) topicList(_ context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	var names []string
	for _, t := range ns.cfg.Broker.Topics() {
		names = append(names, t.Name)
	}
	body, err := json.Marshal(map[string]any{"topicList": names, "brokerAddr": nil})
	if err != nil {
		return command.NewResponse(req, command.SystemError, err.Error())
	}
	resp := command.NewResponse(req, command.Success, "")
	resp.Body = body
	return resp
}

// extInt reads a decimal extField; missing or malformed is def.
func extInt(req *command.RemotingCommand, key string, def int64) int64 {
	v, err := strconv.ParseInt(strings.TrimSpace(req.ExtFields[key]), 10, 64)
	if err != nil {
		return def
	}
	return v
}
