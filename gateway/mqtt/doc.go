// Package mqtt serves MQTT 3.1.1 and 5 (over TCP and WebSocket) on top of
// core/broker. mochi-mqtt does the protocol; a hook bridges it to the
// replicated log:
//
//   - Ingress: every PUBLISH, QoS 0 included, is produced to the core topic
//     named by its first level. mochi is told to drop the packet
//     (ErrRejectPacket) and the connection's publish pipe writes the
//     PUBACK/PUBREC itself once the batch is committed, so one connection
//     keeps many publishes in flight.
//   - Delivery: one goroutine per node tails the committed consume queues
//     (every node applies every entry) and injects each message into mochi
//     through an inline client, so local subscribers get messages from any
//     node and any protocol, in commit order, once per subscription.
//   - Replicated state lives in broker records (namespaces "mqtt.*"):
//     retained messages, persistent sessions (subscriptions and per-queue
//     delivery positions), session ownership, delayed wills and the owner
//     node of each shared-subscription group.
//   - Identity: a CONNECT is logged in against the broker's users (user
//     name and password, a verified client certificate, or the anonymous
//     user from loopback), and every PUBLISH and SUBSCRIBE is checked
//     against the user's MQTT rules as they are at that moment (auth.go;
//     docs/security.md). Listeners serve TCP, WebSocket, TLS and secure
//     WebSocket.
//
// docs/mqtt.md describes the mapping and what is not supported yet.
package mqtt
