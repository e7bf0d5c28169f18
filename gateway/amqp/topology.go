package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/broker/command"
	"github.com/conflux-mq/conflux/gateway/amqp/frame"
)

// recordNS is the broker record namespace of the AMQP topology.
const recordNS = "amqp"

// Exchange types.
const (
	kindDirect  = "direct"
	kindFanout  = "fanout"
	kindTopic   = "topic"
	kindHeaders = "headers"
	// kindDelayed is RabbitMQ's delayed-message plugin exchange: messages
	// with an x-delay header wait in the core's timers, then route by the
	// exchange's x-delayed-type against the bindings of that moment.
	kindDelayed = "x-delayed-message"
)

// exchangeDef is an exchange record.
type exchangeDef struct {
	VHost      string      `json:"vhost"`
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Durable    bool        `json:"durable"`
	AutoDelete bool        `json:"autoDelete,omitempty"`
	Internal   bool        `json:"internal,omitempty"`
	Args       frame.Table `json:"-"`
	ArgsJSON   string      `json:"args,omitempty"` // canonical form, for equivalence
}

// queueDef is a queue record.
type queueDef struct {
	VHost      string `json:"vhost"`
	Name       string `json:"name"`
	Durable    bool   `json:"durable"`
	AutoDelete bool   `json:"autoDelete,omitempty"`
	// Owner is the connection of an exclusive queue.
	Owner    string `json:"owner,omitempty"`
	ArgsJSON string `json:"args,omitempty"`
	// DLX and DLRoutingKey come from x-dead-letter-exchange and
	// x-dead-letter-routing-key.
	DLX          string `json:"dlx,omitempty"`
	HasDLX       bool   `json:"hasDlx,omitempty"` // "" (the default exchange) is a valid DLX
	DLRoutingKey string `json:"dlrk,omitempty"`
	HasDLRK      bool   `json:"hasDlrk,omitempty"`
	// TTLms is x-message-ttl, when HasTTL.
	TTLms  int64 `json:"ttlMs,omitempty"`
	HasTTL bool  `json:"hasTtl,omitempty"`
}

// topic is the core topic (and subscription) that holds the queue.
func (q *queueDef) topic() string { return queueTopic(q.VHost, q.Name) }

// bindingDef is a binding record: from exchange Source to queue or
// exchange Dest.
type bindingDef struct {
	VHost      string      `json:"vhost"`
	Source     string      `json:"source"`
	Dest       string      `json:"dest"`
	DestIsExch bool        `json:"destIsExchange,omitempty"`
	Key        string      `json:"key"`
	ArgsJSON   string      `json:"args,omitempty"`
	Args       frame.Table `json:"-"`
}

func exchangeKey(vhost, name string) string { return "x/" + vhost + "\x00" + name }
func queueKey(vhost, name string) string    { return "q/" + vhost + "\x00" + name }
func (b *bindingDef) key() string {
	kind := "q"
	if b.DestIsExch {
		kind = "x"
	}
	return "b/" + b.VHost + "\x00" + b.Source + "\x00" + kind + b.Dest + "\x00" + b.Key + "\x00" + b.ArgsJSON
}

// queueTopic names the core topic of an AMQP queue: core topic names are
// RocketMQ's (letters, digits, %-_|, at most 127 bytes), AMQP queue names
// are any 255 bytes, so the name is a readable prefix plus a hash of the
// exact name.
func queueTopic(vhost, name string) string {
	var sb strings.Builder
	sb.WriteString("AMQP%")
	for i := 0; i < len(name) && sb.Len() < 96; i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('_')
		}
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(vhost))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(name))
	fmt.Fprintf(&sb, "%%%016x", h.Sum64())
	return sb.String()
}

// canonical encodes arguments for storage and equivalence checks: JSON
// with sorted keys, every value tagged with its Go type so 1 (int32) and
// 1 (int64) stay different as RabbitMQ sees them... loosely: integers of
// any width compare equal, like RabbitMQ's equivalence check.
func canonical(t frame.Table) string {
	if len(t) == 0 {
		return ""
	}
	b, err := json.Marshal(normalize(t))
	if err != nil {
		return fmt.Sprint(t)
	}
	return string(b)
}

func normalize(v any) any {
	switch x := v.(type) {
	case frame.Table:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case []byte:
		return string(x)
	}
	if n, ok := asInt(v); ok {
		return n
	}
	return v
}

// asInt reads an integer of any field-table width.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	}
	return 0, false
}

// topology is one node's routing index, rebuilt from the records when
// their generation changes.
type topology struct {
	gen       string
	exchanges map[string]*exchangeDef // vhost NUL name
	queues    map[string]*queueDef
	bindings  map[string][]*bindingDef // by vhost NUL source
	// headersBound: some headers exchange has bindings, so a publish's
	// headers must be decoded for routing.
	headersBound bool
}

func vkey(vhost, name string) string { return vhost + "\x00" + name }

// predeclared exchanges exist in every vhost without records.
var predeclared = map[string]string{
	"":            kindDirect,
	"amq.direct":  kindDirect,
	"amq.fanout":  kindFanout,
	"amq.topic":   kindTopic,
	"amq.headers": kindHeaders,
	"amq.match":   kindHeaders,
}

func loadTopology(recs map[string][]byte, gen string) *topology {
	t := &topology{gen: gen, exchanges: map[string]*exchangeDef{}, queues: map[string]*queueDef{}, bindings: map[string][]*bindingDef{}}
	for k, v := range recs {
		switch {
		case strings.HasPrefix(k, "x/"):
			var e exchangeDef
			if json.Unmarshal(v, &e) == nil {
				e.Args = tableFromJSON(e.ArgsJSON)
				t.exchanges[vkey(e.VHost, e.Name)] = &e
			}
		case strings.HasPrefix(k, "q/"):
			var q queueDef
			if json.Unmarshal(v, &q) == nil {
				t.queues[vkey(q.VHost, q.Name)] = &q
			}
		case strings.HasPrefix(k, "b/"):
			var b bindingDef
			if json.Unmarshal(v, &b) == nil {
				b.Args = tableFromJSON(b.ArgsJSON)
				t.bindings[vkey(b.VHost, b.Source)] = append(t.bindings[vkey(b.VHost, b.Source)], &b)
			}
		}
	}
	for _, bs := range t.bindings { // a stable order: routing results do not depend on map order
		sort.Slice(bs, func(i, j int) bool { return bs[i].key() < bs[j].key() })
		if e, ok := t.exchange(bs[0].VHost, bs[0].Source); ok && e.routeKind() == kindHeaders {
			t.headersBound = true
		}
	}
	return t
}

// tableFromJSON reads back the canonical arguments (numbers as float64,
// which the headers match compares by value).
func tableFromJSON(s string) frame.Table {
	if s == "" {
		return nil
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return frame.Table(m)
}

// routeKind is how the exchange matches bindings: its type, or for a
// delayed-message exchange its x-delayed-type.
func (e *exchangeDef) routeKind() string {
	if e.Type == kindDelayed {
		if k, ok := e.Args["x-delayed-type"].(string); ok {
			return k
		}
	}
	return e.Type
}

// exchange returns an exchange, predeclared ones included.
func (t *topology) exchange(vhost, name string) (*exchangeDef, bool) {
	if e, ok := t.exchanges[vkey(vhost, name)]; ok {
		return e, true
	}
	if kind, ok := predeclared[name]; ok {
		return &exchangeDef{VHost: vhost, Name: name, Type: kind, Durable: true}, true
	}
	return nil, false
}

func (t *topology) queue(vhost, name string) (*queueDef, bool) {
	q, ok := t.queues[vkey(vhost, name)]
	return q, ok
}

// route returns the queues a message published to exchange with key and
// headers goes to, each once, following exchange-to-exchange bindings
// (a visited set stops cycles).
func (t *topology) route(vhost, exchange, key string, headers frame.Table) []*queueDef {
	var out []*queueDef
	seenQ := map[string]bool{}
	seenX := map[string]bool{}
	var walk func(name string)
	walk = func(name string) {
		if seenX[name] {
			return
		}
		seenX[name] = true
		e, ok := t.exchange(vhost, name)
		if !ok {
			return
		}
		if name == "" { // the default exchange: every queue by its name
			if q, ok := t.queue(vhost, key); ok && !seenQ[q.Name] {
				seenQ[q.Name] = true
				out = append(out, q)
			}
			return
		}
		for _, b := range t.bindings[vkey(vhost, name)] {
			if !matches(e.routeKind(), b, key, headers) {
				continue
			}
			if b.DestIsExch {
				walk(b.Dest)
				continue
			}
			if q, ok := t.queue(vhost, b.Dest); ok && !seenQ[q.Name] {
				seenQ[q.Name] = true
				out = append(out, q)
			}
		}
	}
	walk(exchange)
	return out
}

// bindingsTo lists the bindings whose destination is the queue or
// exchange named.
func (t *topology) bindingsTo(vhost, dest string, destIsExch bool) []*bindingDef {
	var out []*bindingDef
	for _, bs := range t.bindings {
		for _, b := range bs {
			if b.VHost == vhost && b.Dest == dest && b.DestIsExch == destIsExch {
				out = append(out, b)
			}
		}
	}
	return out
}

func matches(kind string, b *bindingDef, key string, headers frame.Table) bool {
	switch kind {
	case kindFanout:
		return true
	case kindDirect:
		return b.Key == key
	case kindTopic:
		return topicMatch(strings.Split(b.Key, "."), strings.Split(key, "."))
	case kindHeaders:
		return headersMatch(b.Args, headers)
	}
	return false
}

// topicMatch matches routing-key words against binding words: "*" is
// exactly one word, "#" zero or more. An empty key has zero words. It is
// a table over (pattern position, word position), O(P·W): a backtracking
// matcher is exponential in the number of "#", and bindings come from
// clients.
func topicMatch(pattern, words []string) bool {
	if len(words) == 1 && words[0] == "" {
		words = nil
	}
	if len(pattern) == 1 && pattern[0] == "" {
		pattern = nil
	}
	// ok[w]: pattern[:p] matches words[:w], for the current p.
	ok := make([]bool, len(words)+1)
	ok[0] = true
	for _, pw := range pattern {
		next := make([]bool, len(words)+1)
		for w := 0; w <= len(words); w++ {
			switch {
			case pw == "#":
				next[w] = ok[w] || w > 0 && next[w-1]
			case w == 0:
			case pw == "*" || pw == words[w-1]:
				next[w] = ok[w-1]
			}
		}
		ok = next
	}
	return ok[len(words)]
}

// headersMatch: x-match all (default) or any over the binding's non-x-
// arguments; a void binding value means "present".
func headersMatch(args, headers frame.Table) bool {
	mode := "all"
	if s, ok := args["x-match"].(string); ok {
		mode = s
	}
	any, all, n := false, true, 0
	for k, want := range args {
		if strings.HasPrefix(k, "x-") {
			continue
		}
		n++
		got, ok := headers[k]
		eq := ok && (want == nil || sameValue(want, got))
		any = any || eq
		all = all && eq
	}
	if strings.HasPrefix(mode, "any") {
		return n > 0 && any
	}
	return all
}

func sameValue(a, b any) bool {
	na, oka := number(a)
	nb, okb := number(b)
	if oka && okb {
		return na == nb
	}
	if ba, ok := b.([]byte); ok {
		b = string(ba)
	}
	if aa, ok := a.([]byte); ok {
		a = string(aa)
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func number(v any) (float64, bool) {
	if n, ok := asInt(v); ok {
		return float64(n), true
	}
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	}
	return 0, false
}

// topo keeps a node's current topology.
type topo struct {
	b   *broker.Broker
	mu  sync.Mutex
	cur *topology
}

// get returns the topology as applied on this node, rebuilt if a change
// was applied since the last call.
func (t *topo) get() *topology {
	gen, _ := t.b.Record(recordNS, "gen")
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil || t.cur.gen != string(gen) {
		t.cur = loadTopology(t.b.Records(recordNS), string(gen))
	}
	return t.cur
}

// change applies record changes atomically with a new generation, and
// returns once they are applied here.
func (t *topo) change(ctx context.Context, rs ...command.Record) error {
	var g [8]byte
	_, _ = rand.Read(g[:])
	rs = append(rs, command.Record{Op: command.RecordPut, Namespace: recordNS, Key: "gen", Value: []byte(hex.EncodeToString(g[:]))})
	return t.b.ChangeRecords(ctx, rs...)
}

func putRec(key string, v any) command.Record {
	b, _ := json.Marshal(v)
	return command.Record{Op: command.RecordPut, Namespace: recordNS, Key: key, Value: b}
}

func delRec(key string) command.Record {
	return command.Record{Op: command.RecordDelete, Namespace: recordNS, Key: key}
}
