// Package amqp is the AMQP 0-9-1 front door (RabbitMQ dialect): clients
// such as amqp091-go, pika or the RabbitMQ Java client connect to it and
// publish and consume through core/broker, so their messages live in the
// same Raft-replicated log as RocketMQ's and MQTT's. The wire codec is the
// leaf package gateway/amqp/frame.
//
// # Mapping onto the core
//
//   - Exchanges, queues and bindings are replicated records in namespace
//     "amqp" (keys "x/<vhost>\x00<name>", "q/<vhost>\x00<name>",
//     "b/<vhost>\x00<source>\x00<dest kind><dest>\x00<routing key>\x00<args>"), JSON
//     values, plus "gen", rewritten by every change so each node knows when
//     to rebuild its routing index. A node routes against its own applied
//     copy; a declare answers after its records are applied here, so a
//     client sees its own changes.
//   - Each AMQP queue is a core topic with one queue (named by queueTopic)
//     and one core subscription of the same name: the broker's delivery
//     state machine (ready, in flight under a lease, settled) gives the
//     per-message ack, requeue and redelivered flag AMQP needs. The lease
//     (ConsumerTimeout) stands in for RabbitMQ's consumer timeout.
//   - A publish is routed at the door against the current bindings and
//     stored once: the first target queue is the message's topic, the
//     others are extra destinations of the same log record (one body, one
//     index entry per queue). The content header's property bytes are kept
//     as they came (property AMQP_PROPS), with the exchange and routing key
//     (AMQP_EXCHANGE, AMQP_ROUTING_KEY), so every header type round-trips.
//   - Publisher confirms are sent after the Raft commit (majority fsync):
//     each channel has one pipe that produces its publishes in order and
//     acknowledges them with basic.ack multiple=true, a basic.return
//     before the ack of an unroutable mandatory message.
//   - Other doors' messages reach AMQP queues through amq.topic of vhost
//     "/" (foreign.go): the door is a core Router, asked for more
//     destinations as any message is stored, so an MQTT publish to
//     site1/dev42/temp is indexed in the queues bound with keys matching
//     "site1.dev42.temp" (a RocketMQ message: "<topic>.<tag>"); '/' and
//     '.' are swapped, as RabbitMQ's MQTT plugin does, so site1/a.b is
//     "site1.a/b".
//   - A publish with x-delay to an x-delayed-message exchange waits in the
//     core's timers (delayed.go) and is routed when due.
//   - Logins (PLAIN, AMQPLAIN) are the broker's users; every method checks
//     RabbitMQ's configure, write and read permissions of the vhost, and
//     amq.topic of vhost "/" also the user's MQTT rules, since it is the
//     MQTT address space (auth.go; docs/security.md). TLS listeners are
//     served as plain ones (Serve takes any net.Listener).
//   - The core's disk alarm is RabbitMQ's (alarm.go): clients that
//     announce the capability get connection.blocked and unblocked; a
//     publish the broker refuses (broker.ErrDiskFull) is nacked in confirm
//     mode and closes its channel with 506 otherwise; a tx.commit fails
//     with 506 and stores nothing. Everything else goes on.
//   - basic.ack settles offsets in the subscription; reject, nack and
//     recover with requeue release them for redelivery (redelivered=true);
//     without requeue the message is dead-lettered through the queue's
//     x-dead-letter-exchange with an x-death header, or dropped. Closing a
//     channel or connection releases what it had unacknowledged.
//
// # Limits and what is not there yet
//
// Deliveries come from the Raft leader (the core's subscriptions are
// served there); followers hand new connections to the leader's door and
// send consuming clients there (cluster.go). A client served by a follower
// that cannot reach the leader can publish but its consumers wait. There
// is no EXTERNAL (client certificate) login, no x-expires, max-length or
// priorities; docs/amqp.md lists what is there and what is not.
package amqp
