package broker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/conflux-mq/conflux/core/auth"
	"github.com/conflux-mq/conflux/core/broker/command"
)

// Users live in the replicated records (namespace "auth", key
// "user/<name>", the JSON of auth.User), so a user created on one node can
// log in on every node as soon as the change is applied there. Every door
// calls Authenticate; what a user may do is asked of auth.User.
//
// Bootstrap: a new cluster has no users. Its first leader creates the
// default user (AuthConfig.DefaultUser, guest unless set) together with
// the record "bootstrap", in one entry; the record keeps a later leader from
// creating it again after an administrator deleted it. A user change made
// before that carries the same two records (bootstrapRecords), so the
// default user exists whatever comes first. Until that entry is
// applied here, the configured default user and password are accepted, so
// a node is usable the moment it starts.
//
// guest may log in from loopback addresses only (RabbitMQ's rule), so the
// well-known default password is no risk on a network.

const (
	authNamespace   = "auth"
	userKeyPrefix   = "user/"
	bootstrapKey    = "bootstrap"
	loopbackOnlyUse = "guest"
)

// Errors of Authenticate. Doors answer every one of them with their
// protocol's "not authorized", never saying which it was.
var (
	ErrAuthFailed      = errors.New("broker: bad user name or password")
	ErrLoopbackOnly    = errors.New("broker: user guest may connect only from localhost")
	ErrTooManyFailures = errors.New("broker: too many failed logins from this address; try again later")
	ErrNoUser          = errors.New("broker: no such user")
)

// AuthConfig configures authentication.
type AuthConfig struct {
	// Disabled turns checking off on every door (development only).
	Disabled bool
	// DefaultUser and DefaultPassword: the administrator a new cluster
	// starts with (guest/guest). DefaultRocketSecret is its RocketMQ
	// secret key (none if empty).
	DefaultUser, DefaultPassword string
	DefaultRocketSecret          string
	// Hash is the cost of new password hashes (auth.DefaultHashParams).
	Hash auth.HashParams
	// FailuresPerMinute: failed logins allowed per source address in a
	// minute before further attempts are refused without checking (30).
	FailuresPerMinute int
	// CacheEntries bounds the verified-credentials cache (100000).
	CacheEntries int
}

func (c AuthConfig) withDefaults() AuthConfig {
	if c.DefaultUser == "" {
		c.DefaultUser, c.DefaultPassword = "guest", "guest"
	}
	if c.Hash == (auth.HashParams{}) {
		c.Hash = auth.DefaultHashParams
	}
	if c.FailuresPerMinute == 0 {
		c.FailuresPerMinute = 30
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = 100000
	}
	return c
}

func (c AuthConfig) validate() error {
	if err := auth.ValidName(c.DefaultUser); err != nil {
		return fmt.Errorf("broker: default user: %w", err)
	}
	if c.DefaultPassword == "" {
		return errors.New("broker: the default user needs a password")
	}
	if c.FailuresPerMinute < 1 || c.CacheEntries < 1 {
		return errors.New("broker: auth limits must be positive")
	}
	return nil
}

// authState is the node-local side of authentication: the cache of
// verified credentials, the failure counts and the hashing slots.
type authState struct {
	key [32]byte // keys the cache, so it holds no password-derived value anyone else can compute

	mu       sync.Mutex
	verified map[[32]byte]string // HMAC(key, name, password) → the hash it was checked against

	// fmu guards the failure counts, apart from mu, which every check
	// of a door takes.
	fmu      sync.Mutex
	failures map[string]*failWindow
	pruned   time.Time

	// dummyHash is checked for unknown user names.
	dummyHash string

	// slots bounds concurrent password hashing to the cores: a storm of
	// logins queues here instead of holding memory for every hash at once.
	// Bad logins are limited per source address before they get a slot
	// (FailuresPerMinute), so a flood from a few addresses costs little.
	slots chan struct{}

	// decoded keeps each user's decoded form with its record bytes
	// (LookupUser); guarded by mu.
	decoded map[string]decodedUser
}

type failWindow struct {
	start time.Time
	n     int
}

func newAuthState(hash auth.HashParams) *authState {
	s := &authState{verified: map[[32]byte]string{}, failures: map[string]*failWindow{}, decoded: map[string]decodedUser{},
		slots: make(chan struct{}, runtime.GOMAXPROCS(0))}
	if _, err := rand.Read(s.key[:]); err != nil {
		panic(fmt.Sprintf("broker: no randomness for the credentials cache: %v", err))
	}
	var err error
	if s.dummyHash, err = auth.HashPassword(string(s.key[:8]), hash); err != nil {
		panic(fmt.Sprintf("broker: %v", err))
	}
	return s
}

// AuthEnabled reports whether doors must check credentials.
func (b *Broker) AuthEnabled() bool { return !b.cfg.Auth.Disabled }

// Authenticate checks a user name and password presented from addr (nil
// when unknown) and returns the user.
func (b *Broker) Authenticate(name, password string, addr net.Addr) (auth.User, error) {
	ip := hostOf(addr)
	if b.tooManyFailures(ip) {
		return auth.User{}, ErrTooManyFailures
	}
	u, err := b.checkPassword(name, password)
	if err == nil && name == loopbackOnlyUse && !isLoopback(addr) {
		err = ErrLoopbackOnly
	}
	if err != nil {
		b.noteFailure(ip)
		return auth.User{}, err
	}
	return u, nil
}

// CheckOrigin refuses a user that may not connect from addr (guest from
// anywhere but loopback), for doors that identify users without a
// password (RocketMQ signatures, client certificates).
func (b *Broker) CheckOrigin(name string, addr net.Addr) error {
	if name == loopbackOnlyUse && !isLoopback(addr) {
		return ErrLoopbackOnly
	}
	return nil
}

// LoginBlocked reports whether addr made too many failed logins lately
// (AuthConfig.FailuresPerMinute); doors that check credentials without
// Authenticate ask it first and report failures with NoteLoginFailure.
func (b *Broker) LoginBlocked(addr net.Addr) bool { return b.tooManyFailures(hostOf(addr)) }

// NoteLoginFailure counts a failed login from addr.
func (b *Broker) NoteLoginFailure(addr net.Addr) { b.noteFailure(hostOf(addr)) }

func (b *Broker) checkPassword(name, password string) (auth.User, error) {
	u, ok := b.LookupUser(name)
	if !ok {
		// Pay one hash as for a known user, so timing does not tell
		// which user names exist.
		s := b.auth
		s.slots <- struct{}{}
		_, _ = auth.VerifyPassword(s.dummyHash, password)
		<-s.slots
		return auth.User{}, ErrAuthFailed
	}
	if u.PasswordHash == "" && name == b.cfg.Auth.DefaultUser && !b.usersBooted() {
		if hmac.Equal([]byte(password), []byte(b.cfg.Auth.DefaultPassword)) {
			return u, nil
		}
		return auth.User{}, ErrAuthFailed
	}
	if u.PasswordHash == "" {
		return auth.User{}, ErrAuthFailed
	}
	s := b.auth
	mac := hmac.New(sha256.New, s.key[:])
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var k [32]byte
	copy(k[:], mac.Sum(nil))
	s.mu.Lock()
	cached, hit := s.verified[k]
	s.mu.Unlock()
	if hit && cached == u.PasswordHash {
		return u, nil
	}
	s.slots <- struct{}{}
	ok, err := auth.VerifyPassword(u.PasswordHash, password)
	<-s.slots
	if err != nil {
		b.cfg.Logger.Warn("unreadable password hash", "user", name, "err", err)
		return auth.User{}, ErrAuthFailed
	}
	if !ok {
		return auth.User{}, ErrAuthFailed
	}
	s.mu.Lock()
	if len(s.verified) >= b.cfg.Auth.CacheEntries {
		clear(s.verified) // rare; the next logins pay one hash each again
	}
	s.verified[k] = u.PasswordHash
	s.mu.Unlock()
	return u, nil
}

func defaultUser(name string) auth.User {
	return auth.User{Name: name, Tags: []string{auth.TagAdministrator}}
}

func (b *Broker) tooManyFailures(ip string) bool {
	s := b.auth
	s.fmu.Lock()
	defer s.fmu.Unlock()
	w := s.failures[ip]
	return w != nil && time.Since(w.start) < time.Minute && w.n >= b.cfg.Auth.FailuresPerMinute
}

// maxFailureAddrs bounds the addresses whose failures are counted: a
// stranger with many addresses must not make the broker hold without
// limit. Past it (after dropping expired windows, at most once a second)
// a new address goes uncounted; its guesses still queue for a hashing
// slot.
const maxFailureAddrs = 100000

func (b *Broker) noteFailure(ip string) {
	s := b.auth
	s.fmu.Lock()
	defer s.fmu.Unlock()
	now := time.Now()
	w := s.failures[ip]
	if w == nil || now.Sub(w.start) >= time.Minute {
		if len(s.failures) >= maxFailureAddrs {
			if now.Sub(s.pruned) < time.Second {
				return
			}
			s.pruned = now
			for k, v := range s.failures {
				if now.Sub(v.start) >= time.Minute {
					delete(s.failures, k)
				}
			}
			if len(s.failures) >= maxFailureAddrs {
				return
			}
		}
		w = &failWindow{start: now}
		s.failures[ip] = w
	}
	w.n++
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

func isLoopback(a net.Addr) bool {
	ip := net.ParseIP(hostOf(a))
	return ip != nil && ip.IsLoopback()
}

// LookupUser returns a user as applied on this node. Doors call it on
// every check, so a user's decoded form is kept next to the record bytes
// it came from and reused while they are the same. Before the cluster has
// stored its users, the configured default user is there already (as
// Authenticate accepts it).
func (b *Broker) LookupUser(name string) (auth.User, bool) {
	raw, ok := b.Record(authNamespace, userKeyPrefix+name)
	if !ok {
		if name == b.cfg.Auth.DefaultUser && !b.usersBooted() {
			return defaultUser(name), true
		}
		return auth.User{}, false
	}
	s := b.auth
	s.mu.Lock()
	c, hit := s.decoded[name]
	s.mu.Unlock()
	if hit && bytes.Equal(c.raw, raw) {
		return c.clone(), true
	}
	u, err := auth.DecodeUser(raw)
	if err != nil {
		b.cfg.Logger.Warn("unreadable user record", "user", name, "err", err)
		return auth.User{}, false
	}
	s.mu.Lock()
	if len(s.decoded) >= b.cfg.Auth.CacheEntries {
		clear(s.decoded) // rare: decoding again is cheap
	}
	s.decoded[name] = decodedUser{raw: raw, User: u}
	s.mu.Unlock()
	return decodedUser{User: u}.clone(), true
}

func (b *Broker) usersBooted() bool {
	_, ok := b.Record(authNamespace, bootstrapKey)
	return ok
}

// Users returns every user, by name.
func (b *Broker) Users() []auth.User {
	var out []auth.User
	for k, v := range b.Records(authNamespace) {
		if !strings.HasPrefix(k, userKeyPrefix) {
			continue
		}
		if u, err := auth.DecodeUser(v); err == nil {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// decodedUser is a user decoded from raw; clone hands callers their own
// slices and maps, which the admin API edits in place.
type decodedUser struct {
	raw []byte
	auth.User
}

func (u decodedUser) clone() auth.User {
	c := u.User
	c.Tags = append([]string(nil), u.Tags...)
	c.MQTT = append([]auth.TopicRule(nil), u.MQTT...)
	if u.VHosts != nil {
		c.VHosts = maps.Clone(u.VHosts)
	}
	if u.Rocket.Topics != nil {
		c.Rocket.Topics = maps.Clone(u.Rocket.Topics)
	}
	if u.Rocket.Groups != nil {
		c.Rocket.Groups = maps.Clone(u.Rocket.Groups)
	}
	return c
}

// PutUser creates or replaces a user (validated first).
func (b *Broker) PutUser(ctx context.Context, u auth.User) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	v, err := u.Encode()
	if err != nil {
		return err
	}
	rs, err := b.bootstrapRecords()
	if err != nil {
		return err
	}
	return b.ChangeRecords(ctx, append(rs,
		command.Record{Op: command.RecordPut, Namespace: authNamespace, Key: userKeyPrefix + u.Name, Value: v})...)
}

// bootstrapRecords are the changes that set up a new cluster's users: the
// default user (if absent) and the bootstrap mark, in the same entry as
// whatever change comes first. So the first user change can never leave
// a cluster without its default administrator, whichever node makes it
// and however soon after the first election.
func (b *Broker) bootstrapRecords() ([]command.Record, error) {
	if _, booted := b.Record(authNamespace, bootstrapKey); booted {
		return nil, nil
	}
	c := b.cfg.Auth
	h, err := b.HashPassword(c.DefaultPassword)
	if err != nil {
		return nil, err
	}
	u := defaultUser(c.DefaultUser)
	u.PasswordHash = h
	// RocketMQ clients sign with a secret key, not a password, and the
	// server needs it in clear: the default user gets one only when it is
	// configured (DefaultRocketSecret); its password is never reused.
	u.RocketSecret = c.DefaultRocketSecret
	u.VHosts = map[string]auth.VHostPerm{"/": {Configure: ".*", Write: ".*", Read: ".*"}}
	v, err := u.Encode()
	if err != nil {
		return nil, err
	}
	// The user goes first: PutIfAbsent of the mark only decides that this
	// entry bootstraps; a later entry that finds the mark set adds nothing.
	return []command.Record{
		{Op: command.RecordPutIfAbsent, Namespace: authNamespace, Key: userKeyPrefix + u.Name, Value: v},
		{Op: command.RecordPutIfAbsent, Namespace: authNamespace, Key: bootstrapKey, Value: []byte("1")},
	}, nil
}

// HashPassword hashes a password with this broker's cost.
func (b *Broker) HashPassword(password string) (string, error) {
	return auth.HashPassword(password, b.cfg.Auth.Hash)
}

// DeleteUser removes a user.
func (b *Broker) DeleteUser(ctx context.Context, name string) error {
	if _, ok := b.LookupUser(name); !ok {
		return fmt.Errorf("%w: %s", ErrNoUser, name)
	}
	rs, err := b.bootstrapRecords()
	if err != nil {
		return err
	}
	return b.ChangeRecords(ctx, append(rs,
		command.Record{Op: command.RecordDelete, Namespace: authNamespace, Key: userKeyPrefix + name})...)
}

// bootstrapUsers runs on every node until the cluster has its users: the
// leader creates the default user once.
func (b *Broker) bootstrapUsers() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if _, ok := b.Record(authNamespace, bootstrapKey); ok {
			return
		}
		if b.node.Status().LeaderReady {
			if err := b.createDefaultUser(); err != nil {
				b.cfg.Logger.Warn("cannot create the default user yet", "err", err)
			}
		}
		select {
		case <-b.node.Done():
			return
		case <-b.stopBG:
			return
		case <-t.C:
		}
	}
}

func (b *Broker) createDefaultUser() error {
	rs, err := b.bootstrapRecords()
	if err != nil || rs == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProposeTimeout)
	defer cancel()
	err = b.ChangeRecords(ctx, rs...)
	if err == nil {
		b.cfg.Logger.Info("created the default user", "user", b.cfg.Auth.DefaultUser, "loopback_only", b.cfg.Auth.DefaultUser == loopbackOnlyUse)
	}
	return err
}
