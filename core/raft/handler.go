package raft

import (
	"sync/atomic"

	"go.etcd.io/etcd/raft/v3/raftpb"
)

// NodeHandler is the transport's handler for a Node that does not exist
// yet: a transport must listen before the node opens (the node needs the
// transport), so the handler is created first and Set once the node is
// open. Messages that arrive before are dropped, as a network would.
type NodeHandler struct{ n atomic.Pointer[Node] }

// Set points the handler at its node.
func (h *NodeHandler) Set(n *Node) { h.n.Store(n) }

// Process implements the transport's handler.
func (h *NodeHandler) Process(m raftpb.Message) {
	if n := h.n.Load(); n != nil {
		n.Process(m)
	}
}

// ReportUnreachable implements the transport's handler.
func (h *NodeHandler) ReportUnreachable(id uint64) {
	if n := h.n.Load(); n != nil {
		n.ReportUnreachable(id)
	}
}

// ReportSnapshot implements the transport's handler.
func (h *NodeHandler) ReportSnapshot(id uint64, failed bool) {
	if n := h.n.Load(); n != nil {
		n.ReportSnapshot(id, failed)
	}
}
