// Package auth is Conflux's one identity model: users, their passwords and
// what each may do on every front door. It holds no state of its own and
// does no I/O: the broker keeps users in its replicated records
// (core/broker/users.go) and every door asks the same questions here.
//
// # Users
//
// A User has a name, a password hash, tags ("administrator" may use the
// admin API), an optional RocketMQ secret key, and permissions. The same
// name and password work on MQTT (username/password), AMQP (PLAIN and
// AMQPLAIN), the HTTP admin API (basic auth) and RocketMQ (AccessKey =
// name, SecretKey = the RocketMQ secret; RocketMQ's ACL signs requests with
// HMAC, so the server needs the secret itself, not a hash of it).
//
// # Passwords
//
// Stored as argon2id PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$hash);
// the parameters travel in each hash, so raising the cost later only
// affects new or changed passwords. The default cost (HashParams) is chosen
// for a broker's workload, where thousands of devices log in at once after
// a restart: see docs/security.md for the budget. Verify compares in
// constant time.
//
// # Permissions
//
// One model, three vocabularies, each the one its protocol's users know:
//
//   - AMQP: per vhost, RabbitMQ's configure / write / read regular
//     expressions over exchange and queue names, with RabbitMQ's matching
//     (searched, not anchored; "" matches nothing). A user with no entry
//     for a vhost may not open it.
//   - MQTT: ordered rules (allow or deny; publish, subscribe or both; an
//     MQTT topic filter with %u for the username and %c for the client id),
//     as Mosquitto and EMQX ACL files have them. The first rule whose filter
//     covers the topic decides; no rule matching means deny.
//   - RocketMQ: topic and consumer-group permissions PUB, SUB, PUB|SUB or
//     DENY, with defaults for unnamed topics and groups, as plain_acl.yml
//     has them.
//
// Administrators may do everything on every door, except where they have
// MQTT rules or RocketMQ permissions of their own: then those are checked
// for them too (so the default administrator can be given, say, a topic it
// may not subscribe to).
package auth
