package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker"
)

// maxRecordKeyBytes keeps record keys (client ids, topics, filters) well
// below bbolt's 32 KiB key limit: a key beyond it fails the apply of the
// whole entry, on every replica.
const maxRecordKeyBytes = 16 << 10

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	Broker *broker.Broker
	NodeID uint64
	Logger *slog.Logger

	// MaxPacketSizeBytes bounds one MQTT packet in either direction; a
	// bigger one disconnects the client (0x95). It must fit one log entry.
	MaxPacketSizeBytes uint32 // 512 KiB
	// ReceiveMaximumMessages is how many QoS 1/2 publishes a client may
	// have unacknowledged towards us (MQTT 5 Receive Maximum); more is a
	// protocol error (0x93).
	ReceiveMaximumMessages uint16 // 1024
	// MaxInflightMessages bounds the QoS 1/2 messages sent to one session
	// and not yet acknowledged. A session at the bound is disconnected and
	// later resumes from its delivery positions: nothing is dropped.
	MaxInflightMessages uint16 // 4096
	// MaxQueuedMessages bounds the packets waiting for one client's writer
	// (mochi's MaximumClientWritesPending); the same rule applies at it.
	MaxQueuedMessages int32 // 4096
	// CommitTimeout bounds how long a publish may wait for its commit;
	// the connection is closed then (the client resends with DUP).
	CommitTimeout time.Duration // 10s
	// CheckpointInterval spaces the writes of connected persistent
	// sessions' delivery positions (the replay window after a node crash).
	CheckpointInterval time.Duration // 1s
	// FetchMessages is how many messages delivery reads from a queue at once.
	FetchMessages int // 256
	// FallbackTopic is the core topic for MQTT topics whose first level
	// is not a valid core topic name ("/a", "a.b", "", non-ASCII...).
	FallbackTopic string // "mqtt_default"
	// MaxClientIDBytes bounds a client id (it keys replicated records); a
	// longer one gets CONNACK 0x85 (3.1.1: 0x02).
	MaxClientIDBytes int // 256
	// MaxTopicBytes bounds topic names and filters (they key retained
	// messages and shared groups): a longer PUBLISH topic closes the
	// connection, a longer filter is refused in the SUBACK, a longer will
	// topic refuses the CONNECT.
	MaxTopicBytes int // 4096
	// MaxSessionExpiry caps MQTT 5 session expiry (v3 persistent sessions
	// get it too).
	MaxSessionExpiry time.Duration // 24h
	// MaxSubscriptions bounds the subscriptions of one session; a
	// SUBSCRIBE past it is refused filter by filter (MQTT 5: 0x97 quota
	// exceeded, 3.1.1: 0x80). With MaxTopicBytes it bounds a persistent
	// session's record, which must fit a broker record (4 MiB).
	MaxSubscriptions int // 100, fewer if MaxTopicBytes is over 5000

	// TLS serves the MQTT over TLS and secure WebSocket listeners
	// (Listeners.TLS, Listeners.WSS); internal/tlsconf's Set.Server()
	// picks up renewed certificates without dropping connections.
	TLS *tls.Config
	// CertLogin: a client on a TLS listener whose certificate the TLS
	// configuration verified logs in as the certificate's common name,
	// without a password (EMQX's peer_cert_as_username, AWS IoT). The
	// user must exist; a user name and password sent as well are ignored.
	CertLogin bool
	// AnonymousUser is who a client that sends neither a user name nor a
	// password is (RabbitMQ's mqtt.default_user). Such clients are admitted
	// from loopback addresses only, unless AnonymousAnyAddress.
	AnonymousUser string // "guest"
	// AnonymousAnyAddress admits anonymous clients from any address, as
	// AnonymousUser; never as guest, which is for loopback only on
	// every door.
	AnonymousAnyAddress bool
	// NoAnonymous refuses clients that send no user name (CONNACK 0x05,
	// MQTT 5: 0x87).
	NoAnonymous bool
	// ObscureNotAuthorized makes an MQTT 5 SUBACK refuse a filter the
	// user may not subscribe to with 0x80 (unspecified error) rather than
	// 0x87 (not authorized); 3.1.1 has only 0x80. Eclipse Paho's
	// client_test5.py test_subscribe_failure expects 0x80.
	ObscureNotAuthorized bool
}

// subsRecordBudget is the part of a session record its subscriptions may
// take (the rest is for positions and QoS 2 state): a filter is at most
// MaxTopicBytes, JSON-escaped at most 6 bytes a byte, plus its fields.
const subsRecordBudget = 3 << 20

func subRecordBound(maxTopicBytes int) int { return 6*maxTopicBytes + 64 }

// messageOverhead bounds what a PUBLISH grows by as a core message: the
// topic again as a property and as the tag, the client id, the fixed
// properties and the per-property length fields.
func (c Config) messageOverhead() int {
	return 2*c.MaxTopicBytes + c.MaxClientIDBytes + (maxUserProperties+16)*8 + 1024
}

// maxPacketBytes is the largest MaxPacketSizeBytes whose every PUBLISH
// the broker can store as one message.
func (c Config) maxPacketBytes() int {
	limit := 2 << 20
	if c.Broker != nil {
		limit = min(limit, c.Broker.MaxMessageBytes()-c.messageOverhead())
	}
	return limit
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.NodeID == 0 {
		c.NodeID = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxClientIDBytes == 0 {
		c.MaxClientIDBytes = 256
	}
	if c.MaxTopicBytes == 0 {
		c.MaxTopicBytes = 4096
	}
	if c.MaxPacketSizeBytes == 0 {
		c.MaxPacketSizeBytes = uint32(max(1024, min(512<<10, c.maxPacketBytes())))
	}
	if c.ReceiveMaximumMessages == 0 {
		c.ReceiveMaximumMessages = 1024
	}
	if c.MaxInflightMessages == 0 {
		c.MaxInflightMessages = 4096
	}
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = 4096
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 10 * time.Second
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.FetchMessages == 0 {
		c.FetchMessages = 256
	}
	if c.FallbackTopic == "" {
		c.FallbackTopic = "mqtt_default"
	}
	if c.MaxSessionExpiry == 0 {
		c.MaxSessionExpiry = 24 * time.Hour
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = max(1, min(100, subsRecordBudget/subRecordBound(c.MaxTopicBytes)))
	}
	if c.AnonymousUser == "" {
		c.AnonymousUser = guestUser
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Broker == nil:
		return errors.New("mqtt: Broker is nil")
	case c.MaxPacketSizeBytes < 1024 || int(c.MaxPacketSizeBytes) > c.maxPacketBytes():
		// At most 2 MiB: a retained payload, base64 in its record, stays
		// within the records' 4 MiB value limit (a retained publish whose
		// record still passes it, with JSON-escaped properties, is
		// refused: see hook.OnPublish). And every PUBLISH must fit one
		// broker message (its MaxBatchBytes), or it could never be
		// stored nor acknowledged.
		return fmt.Errorf("mqtt: MaxPacketSizeBytes %d outside [1 KiB, %d] (2 MiB, and the broker's message size less %d bytes of mapping)",
			c.MaxPacketSizeBytes, c.maxPacketBytes(), c.messageOverhead())
	case c.MaxQueuedMessages < 16:
		return fmt.Errorf("mqtt: MaxQueuedMessages %d below 16", c.MaxQueuedMessages)
	case c.MaxInflightMessages < 16:
		return fmt.Errorf("mqtt: MaxInflightMessages %d below 16", c.MaxInflightMessages)
	case c.CommitTimeout < 100*time.Millisecond || c.CheckpointInterval < 10*time.Millisecond:
		return errors.New("mqtt: CommitTimeout or CheckpointInterval too small")
	case c.FetchMessages < 1:
		return errors.New("mqtt: FetchMessages below 1")
	case !validCoreTopic(c.FallbackTopic):
		return fmt.Errorf("mqtt: FallbackTopic %q is not a valid core topic", c.FallbackTopic)
	case c.MaxClientIDBytes < 23 || c.MaxClientIDBytes > maxRecordKeyBytes:
		// 23: every server must accept ids this long (MQTT 3.1.1 §3.1.3.1).
		return fmt.Errorf("mqtt: MaxClientIDBytes %d outside [23, %d]", c.MaxClientIDBytes, maxRecordKeyBytes)
	case c.MaxTopicBytes < 64 || c.MaxTopicBytes > maxRecordKeyBytes:
		return fmt.Errorf("mqtt: MaxTopicBytes %d outside [64, %d]", c.MaxTopicBytes, maxRecordKeyBytes)
	case c.MaxSessionExpiry < time.Second:
		return errors.New("mqtt: MaxSessionExpiry below 1s")
	case c.MaxSubscriptions < 1 || c.MaxSubscriptions*subRecordBound(c.MaxTopicBytes) > subsRecordBudget:
		return fmt.Errorf("mqtt: MaxSubscriptions %d outside [1, %d] (with MaxTopicBytes %d a session record must stay within 4 MiB)",
			c.MaxSubscriptions, subsRecordBudget/subRecordBound(c.MaxTopicBytes), c.MaxTopicBytes)
	case c.CertLogin && c.TLS == nil:
		return errors.New("mqtt: CertLogin needs TLS (client certificates are read from TLS connections)")
	}
	if err := auth.ValidName(c.AnonymousUser); err != nil {
		return fmt.Errorf("mqtt: AnonymousUser: %w", err)
	}
	return nil
}
