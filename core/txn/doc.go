// Package txn is the replicated state of transactional half messages
// (RocketMQ's "prepared" messages) and the rules of their check-back.
//
// A half message is stored once in the commit log, in a system topic that
// no consumer reads (core/broker's HalfTopic). Every replica adds it to its
// Table when it applies the batch that stored it, so the table is derived
// from the log and identical everywhere. Decisions and check-backs are
// replicated commands that the Table applies in log order:
//
//	open ──commit──▶ committed ──delivered──▶ removed
//	  │                 (the leader copies the message to its real topic,
//	  │                  and the copy's entry removes it: one entry does both)
//	  ├──rollback────▶ removed
//	  └──checked(at)─▶ open, Checks+1 (after MaxChecks: rollback, discarded)
//
// The first decision wins: a duplicate END_TRANSACTION, or one racing with
// the answer to a check-back, changes nothing. The Table never reads the
// clock: times come in with the commands (the leader's clock, written into
// the log) and as the now argument of Scan, which only the leader calls to
// plan its next proposals. Nothing here is visible to consumers.
package txn
