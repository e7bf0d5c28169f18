package remoting

import (
	"context"
	"strconv"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
	clog "github.com/conflux-mq/conflux/core/log"
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
	if refused := d.permitHalf(ctx, req, phys); refused != nil {
		return refused
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
	var conns []*Conn // map order spreads the checks over the live ones
	users := map[*Conn]string{}
	for c := range d.producers[h.Group] {
		conns = append(conns, c)
		users[c] = d.users[c]
	}
	d.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	m, err := d.b.ReadMessage(h.Phys)
	if err != nil {
		d.cfg.Logger.Warn("cannot read a half message to check", "phys", h.Phys, "err", err)
		return
	}
	defer m.Release()
	conn := d.checker(conns, users, messageProperty(m, broker.PropRealTopic))
	if conn == nil {
		return
	}
	queue := uint32(0)
	if q, err := strconv.ParseUint(messageProperty(m, broker.PropRealQueue), 10, 32); err == nil {
		_, queue = d.shards.local(uint32(q))
	}
	f := broker.Fetched{Message: m, QueueOffset: h.QueueOffset}
	uniq := messageProperty(m, propUniq)
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

// permitHalf checks PUB on the topic the half message at phys is for: the
// request names only the producer group, and deciding a transaction
// publishes (or drops) a message of that topic.
func (d *brokerDoor) permitHalf(ctx context.Context, req *command.RemotingCommand, phys uint64) *command.RemotingCommand {
	if !d.b.AuthEnabled() {
		return nil
	}
	m, err := d.b.ReadMessage(phys)
	if err != nil {
		return reply(req, command.SystemError, "cannot read the half message at "+u(phys))
	}
	defer m.Release()
	return permit(ctx, d.b, req, onTopic(messageProperty(m, broker.PropRealTopic), auth.PermPub))
}

// checker picks the connection a check-back goes to: with authentication
// on, only one whose user (of its last heartbeat) may publish to topic,
// since the check carries the half message whole and producer groups are
// not themselves protected (as in RocketMQ, anyone may join one).
func (d *brokerDoor) checker(conns []*Conn, users map[*Conn]string, topic string) *Conn {
	if !d.b.AuthEnabled() {
		return conns[0]
	}
	for _, c := range conns {
		if u, ok := d.b.LookupUser(users[c]); ok && onTopic(topic, auth.PermPub).allowed(u) {
			return c
		}
	}
	return nil
}

// messageProperty returns a stored message's property, "" when absent.
func messageProperty(m clog.Message, key string) string {
	for k, v := range m.Properties {
		if string(k) == key {
			return string(v)
		}
	}
	return ""
}
