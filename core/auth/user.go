package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// TagAdministrator lets a user use the admin API and do everything.
const TagAdministrator = "administrator"

// User is one account, as kept in the replicated records (JSON: users are
// few, small and changed by hand, so a readable encoding costs nothing).
type User struct {
	Name         string   `json:"name"`
	PasswordHash string   `json:"passwordHash"`
	Tags         []string `json:"tags,omitempty"`
	// RocketSecret is the SecretKey of the RocketMQ ACL (AccessKey =
	// Name). Empty: the user cannot sign RocketMQ requests.
	RocketSecret string `json:"rocketSecret,omitempty"`

	// AMQP permissions by vhost.
	VHosts map[string]VHostPerm `json:"vhosts,omitempty"`
	// MQTT rules, first match decides.
	MQTT []TopicRule `json:"mqtt,omitempty"`
	// RocketMQ permissions.
	Rocket RocketPerms `json:"rocketmq"`
}

// Limits on what a user record may hold.
const (
	MaxNameBytes  = 255
	MaxRules      = 256
	MaxRegexBytes = 1024
)

// Validate checks names and patterns; a user that passes can be stored.
func (u User) Validate() error {
	if err := ValidName(u.Name); err != nil {
		return err
	}
	if _, _, _, err := parseHash(u.PasswordHash); err != nil && u.PasswordHash != "" {
		return fmt.Errorf("auth: user %s: %w", u.Name, err)
	}
	if len(u.MQTT) > MaxRules || len(u.VHosts) > MaxRules || len(u.Rocket.Topics)+len(u.Rocket.Groups) > MaxRules {
		return fmt.Errorf("auth: user %s: more than %d rules", u.Name, MaxRules)
	}
	for vh, p := range u.VHosts {
		for _, re := range []string{p.Configure, p.Write, p.Read} {
			if err := validRegex(re); err != nil {
				return fmt.Errorf("auth: user %s, vhost %q: %w", u.Name, vh, err)
			}
		}
	}
	for _, r := range u.MQTT {
		if err := r.validate(); err != nil {
			return fmt.Errorf("auth: user %s: %w", u.Name, err)
		}
	}
	return u.Rocket.validate()
}

// ValidName: a user name is 1 to 255 bytes of UTF-8 without control
// characters (it travels in MQTT, AMQP and HTTP headers).
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameBytes || !utf8.ValidString(name) {
		return fmt.Errorf("auth: bad user name %q", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == ':' {
			return fmt.Errorf("auth: user name %q has a control character or ':'", name)
		}
	}
	return nil
}

// IsAdmin reports whether the user has the administrator tag.
func (u User) IsAdmin() bool { return slices.Contains(u.Tags, TagAdministrator) }

// Encode and Decode are the record form.
func (u User) Encode() ([]byte, error) { return json.Marshal(u) }

// DecodeUser reads a user record.
func DecodeUser(b []byte) (User, error) {
	var u User
	if err := json.Unmarshal(b, &u); err != nil {
		return User{}, fmt.Errorf("auth: user record: %w", err)
	}
	return u, nil
}

// Public is the user as the admin API shows it: no hash, no secret.
func (u User) Public() User {
	u.PasswordHash = ""
	if u.RocketSecret != "" {
		u.RocketSecret = "(set)"
	}
	return u
}

// ---- AMQP ----

// VHostPerm is RabbitMQ's permission triple: regular expressions over
// the names a user may configure (declare, delete), write (publish to,
// bind a queue to an exchange as destination…) and read (consume from, get,
// purge, bind from). As in RabbitMQ an expression is searched for in the
// name ("^orders$" for one name, ".*" for all), and "" matches no name.
type VHostPerm struct {
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// AMQPAction is the kind of access RabbitMQ checks.
type AMQPAction int

// The three AMQP permissions.
const (
	Configure AMQPAction = iota
	Write
	Read
)

func (a AMQPAction) String() string {
	return [...]string{"configure", "write", "read"}[a]
}

// ErrNoVHost: the user has no permissions on the vhost (AMQP 530).
var ErrNoVHost = errors.New("auth: no access to vhost")

// CanOpenVHost reports whether the user may open vhost.
func (u User) CanOpenVHost(vhost string) bool {
	if u.IsAdmin() {
		return true
	}
	_, ok := u.VHosts[vhost]
	return ok
}

// AllowAMQP reports whether the user may do a to the exchange or queue
// name in vhost.
func (u User) AllowAMQP(vhost string, a AMQPAction, name string) bool {
	if u.IsAdmin() {
		return true
	}
	p, ok := u.VHosts[vhost]
	if !ok {
		return false
	}
	if name == "" {
		name = "amq.default"
	}
	re := [...]string{p.Configure, p.Write, p.Read}[a]
	return matchSearch(re, name)
}

// ---- MQTT ----

// MQTT actions a rule can cover.
const (
	ActPublish   = "publish"
	ActSubscribe = "subscribe"
	ActAll       = "all"
)

// TopicRule allows or denies publish and/or subscribe on a topic filter.
// %u and %c in Filter stand for the username and the client id.
type TopicRule struct {
	Allow  bool   `json:"allow"`
	Action string `json:"action"` // publish, subscribe or all
	Filter string `json:"filter"`
}

func (r TopicRule) validate() error {
	switch r.Action {
	case ActPublish, ActSubscribe, ActAll:
	default:
		return fmt.Errorf("auth: MQTT rule action %q: want publish, subscribe or all", r.Action)
	}
	if r.Filter == "" || len(r.Filter) > 65535 {
		return fmt.Errorf("auth: MQTT rule filter %q", r.Filter)
	}
	return nil
}

// AllowMQTT reports whether the user, connected as clientID, may publish
// to topic (subscribe false) or subscribe to the filter topic (subscribe
// true). For a subscription the rule's filter must cover the whole
// requested filter.
func (u User) AllowMQTT(clientID, topic string, subscribe bool) bool {
	if u.IsAdmin() && len(u.MQTT) == 0 {
		return true
	}
	for _, r := range u.MQTT {
		if r.Action != ActAll && (r.Action == ActSubscribe) != subscribe {
			continue
		}
		f := r.Filter
		if strings.IndexByte(f, '%') >= 0 {
			// A client chooses its id (and an administrator a user name):
			// one with a wildcard or a level separator would widen the
			// rule. Such an allow rule does not apply (Mosquitto's rule);
			// such a deny rule refuses, so it cannot be slipped past.
			if strings.Contains(f, "%c") && strings.ContainsAny(clientID, "+#/") ||
				strings.Contains(f, "%u") && strings.ContainsAny(u.Name, "+#/") {
				if !r.Allow {
					return false
				}
				continue
			}
			f = strings.NewReplacer("%u", u.Name, "%c", clientID).Replace(f)
		}
		if FilterCovers(f, topic) {
			return r.Allow
		}
	}
	return false
}

// FilterCovers reports whether every topic matched by sub is matched by
// filter (for a plain topic, whether filter matches it). Both use MQTT's
// '/' levels, '+' and '#'.
func FilterCovers(filter, sub string) bool {
	fl, sl := strings.Split(filter, "/"), strings.Split(sub, "/")
	for i, f := range fl {
		if f == "#" {
			// '#' does not match a topic starting with '$' at level 0.
			return !(i == 0 && strings.HasPrefix(sub, "$"))
		}
		if i >= len(sl) {
			return false
		}
		switch {
		case f == "+":
			if sl[i] == "#" || (i == 0 && strings.HasPrefix(sl[i], "$")) {
				return false
			}
		case f != sl[i]:
			return false
		}
	}
	return len(fl) == len(sl)
}

// ---- RocketMQ ----

// RocketMQ permission words, as plain_acl.yml spells them.
const (
	PermDeny   = "DENY"
	PermPub    = "PUB"
	PermSub    = "SUB"
	PermPubSub = "PUB|SUB"
)

// RocketPerms: per topic and per consumer group, with defaults for the
// rest (plain_acl.yml's topicPerms, groupPerms, defaultTopicPerm,
// defaultGroupPerm).
type RocketPerms struct {
	DefaultTopic string            `json:"defaultTopicPerm,omitempty"` // DENY when empty
	DefaultGroup string            `json:"defaultGroupPerm,omitempty"` // DENY when empty
	Topics       map[string]string `json:"topicPerms,omitempty"`
	Groups       map[string]string `json:"groupPerms,omitempty"`
}

func (r RocketPerms) empty() bool {
	return r.DefaultTopic == "" && r.DefaultGroup == "" && len(r.Topics) == 0 && len(r.Groups) == 0
}

func validPerm(p string) bool {
	switch p {
	case "", PermDeny, PermPub, PermSub, PermPubSub:
		return true
	}
	return false
}

func (r RocketPerms) validate() error {
	for _, p := range []string{r.DefaultTopic, r.DefaultGroup} {
		if !validPerm(p) {
			return fmt.Errorf("auth: RocketMQ permission %q: want DENY, PUB, SUB or PUB|SUB", p)
		}
	}
	for _, m := range []map[string]string{r.Topics, r.Groups} {
		for name, p := range m {
			if !validPerm(p) || p == "" {
				return fmt.Errorf("auth: RocketMQ permission %q for %q: want DENY, PUB, SUB or PUB|SUB", p, name)
			}
		}
	}
	return nil
}

func permHas(p, want string) bool {
	return p == PermPubSub && want != PermDeny || p == want
}

// AllowRocketTopic reports whether the user may publish (want PUB) or
// subscribe (want SUB) to topic.
func (u User) AllowRocketTopic(topic, want string) bool {
	if u.IsAdmin() && u.Rocket.empty() {
		return true
	}
	p, ok := u.Rocket.Topics[topic]
	if !ok {
		p = u.Rocket.DefaultTopic
	}
	return permHas(p, want)
}

// AllowRocketGroup reports whether the user may use a consumer group (want
// SUB) or producer group (want PUB).
func (u User) AllowRocketGroup(group, want string) bool {
	if u.IsAdmin() && u.Rocket.empty() {
		return true
	}
	p, ok := u.Rocket.Groups[group]
	if !ok {
		p = u.Rocket.DefaultGroup
	}
	return permHas(p, want)
}

// ---- regular expressions ----

func validRegex(re string) error {
	if len(re) > MaxRegexBytes {
		return fmt.Errorf("regular expression longer than %d bytes", MaxRegexBytes)
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("regular expression %q: %w", re, err)
	}
	return nil
}

// matchSearch is RabbitMQ's rule: the expression is searched for in the
// name (anchor it with ^ and $ to match whole names), and the empty
// expression is a synonym of ^$. The default exchange is checked under
// the name amq.default, as RabbitMQ does.
func matchSearch(re, name string) bool {
	if re == "" {
		re = "^$"
	}
	c, err := compiled(re)
	return err == nil && c.MatchString(name)
}

// compiledCache keeps the compiled expressions of the users' permissions,
// which are few; past maxCompiled entries, expressions are compiled on
// each use rather than held without bound.
var compiledCache sync.Map

const maxCompiled = 10000

var compiledCount atomic.Int64

func compiled(re string) (*regexp.Regexp, error) {
	if c, ok := compiledCache.Load(re); ok {
		return c.(*regexp.Regexp), nil
	}
	c, err := regexp.Compile(re)
	if err != nil {
		return nil, err
	}
	if compiledCount.Load() < maxCompiled {
		if _, loaded := compiledCache.LoadOrStore(re, c); !loaded {
			compiledCount.Add(1)
		}
	}
	return c, nil
}
