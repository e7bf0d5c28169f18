package remoting

import (
	"context"
	"strconv"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Transactions (remoting.md §4.9, §4.10, §8). A half message is stored by
// send() with broker.Message.Half; the core keeps it out of every
// consumer's sight, replicates decisions (first wins), and decides when to
// check back. This file maps END_TRANSACTION onto those decisions and
// sends CHECK_TRANSACTION_STATE to a producer of the group connected here.

// The commitOrRollback values of END_TRANSACTION.
const (
	txnUnknown  = "0"
	txnCommit   = "8"
	txnRollback = "12"
)

// endTransaction commits or rolls back the half message at the request's
// commitLogOffset (its physical offset: the same on every node). The Go
// client sends it without waiting for the reply.
func (d *brokerDoor) endTransaction(ctx context.Context, _ *Conn, req *command.RemotingCommand) *command.RemotingCommand {
	how := req.ExtFields["commitOrRollback"]
	switch how {
	case txnUnknown:
		return nil // stays open; checked later, and Java sends no reply
	case txnCommit, txnRollback:
	default:
		return reply(req, command.SystemError, "bad commitOrRollback "+strconv.Quote(how))
	}
	phys, err := strconv.ParseUint(req.ExtFields["commitLogOffset"], 10, 64)
	if err != nil {
		return reply(req, command.SystemError, "bad commitLogOffset "+strconv.Quote(req.ExtFields["commitLogOffset"]))
	}
	h, ok := d.b.HalfMessage(phys)
	if !ok {
		// Decided already (a duplicate END, or one racing with a
		// check-back answer), discarded, or never a half message.
		return reply(req, command.SystemError, "no open half message at "+u(phys))
	}
	if g := req.ExtFields["producerGroup"]; g != h.Group {
		return reply(req, command.SystemError, "the half message belongs to producer group "+strconv.Quote(h.Group))
	}
	ectx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if err := d.b.EndTransaction(ectx, phys, how == txnCommit); err != nil {
		return d.produceFailed(req, err)
	}
	return reply(req, command.Success, "")
}

// checkTxn sends CHECK_TRANSACTION_STATE for a half message to one live
// producer of its group connected to this node; a node with none does
// nothing (the core counts the check either way, as Java does).
func (d *brokerDoor) checkTxn(h broker.TxnCheck) {
	d.mu.Lock()
	var conn *Conn
	for c := range d.producers[h.Group] {
		conn = c // any live one: map order spreads the checks
		break
	}
	d.mu.Unlock()
	if conn == nil {
		return
	}
	m, err := d.b.ReadMessage(h.Phys)
	if err != nil {
		d.cfg.Logger.Warn("cannot read a half message to check", "phys", h.Phys, "err", err)
		return
	}
	defer m.Release()
	queue := uint32(0)
	for k, v := range m.Properties {
		if string(k) == broker.PropRealQueue {
			if q, err := strconv.ParseUint(string(v), 10, 32); err == nil {
				_, queue = d.shards.local(uint32(q))
			}
		}
	}
	f := broker.Fetched{Message: m, QueueOffset: h.QueueOffset}
	uniq := ""
	for k, v := range m.Properties {
		if string(k) == propUniq {
			uniq = string(v)
		}
	}
	cmd := &command.RemotingCommand{Code: int32(command.CheckTransactionState), Language: command.LanguageJava,
		Version: brokerVersion, Opaque: d.opaque.Add(1), Flag: command.FlagOneway,
		ExtFields: map[string]string{
			"tranStateTableOffset": u(h.QueueOffset),
			"commitLogOffset":      u(h.Phys),
			"msgId":                uniq,
			"transactionId":        uniq,
			"offsetMsgId":          offsetMsgID(d.cfg.BrokerAddr, h.Phys),
		},
		Body: appendStored(nil, &f, queue, d.cfg.BrokerAddr)}
	conn.Send(cmd)
}
