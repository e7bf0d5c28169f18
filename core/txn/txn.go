package txn

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Decision is the outcome of a transaction as far as the log says.
type Decision uint8

// The decisions.
const (
	Open     Decision = 0
	Commit   Decision = 1
	Rollback Decision = 2
)

// Half is one open (or committed, not yet delivered) half message.
type Half struct {
	// Phys is the half message's physical offset: its identity.
	Phys uint64 `json:"phys"`
	// QueueOffset is its offset in the half topic's queue (RocketMQ's
	// tranStateTableOffset).
	QueueOffset uint64 `json:"queueOffset"`
	// Group is the producer group (property PGROUP): who is asked.
	Group string `json:"group"`
	// StoreMs is when the entry that stored it was proposed.
	StoreMs     int64    `json:"storeMs"`
	Checks      uint32   `json:"checks,omitempty"`
	LastCheckMs int64    `json:"lastCheckMs,omitempty"`
	Decision    Decision `json:"decision,omitempty"`
}

// Config sets the check-back rules (RocketMQ: transactionTimeOut,
// transactionCheckInterval, transactionCheckMax).
type Config struct {
	// FirstCheckDelay: an open half message is first checked this long
	// after it was stored.
	FirstCheckDelay time.Duration // 6s
	// CheckInterval spaces the later checks.
	CheckInterval time.Duration // 30s
	// MaxChecks: an open half message checked this many times is
	// discarded (rolled back) at its next due check, as RocketMQ does.
	MaxChecks uint32 // 15
	// MaxPerScan bounds the work one Scan plans.
	MaxPerScan int // 1000
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.FirstCheckDelay == 0 {
		c.FirstCheckDelay = 6 * time.Second
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 30 * time.Second
	}
	if c.MaxChecks == 0 {
		c.MaxChecks = 15
	}
	if c.MaxPerScan == 0 {
		c.MaxPerScan = 1000
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.FirstCheckDelay < 0 || c.CheckInterval < 100*time.Millisecond:
		return errors.New("txn: check delays must be positive (interval at least 100ms)")
	case c.MaxChecks < 1 || c.MaxChecks > 1000:
		return fmt.Errorf("txn: MaxChecks %d outside [1, 1000]", c.MaxChecks)
	case c.MaxPerScan < 1:
		return errors.New("txn: MaxPerScan must be positive")
	}
	return nil
}

// Table holds the half messages that are not finished. Its owner
// serialises calls (the broker's state machine lock).
type Table struct {
	halves    map[uint64]*Half
	committed map[uint64]struct{} // decided commit, awaiting delivery
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{halves: map[uint64]*Half{}, committed: map[uint64]struct{}{}}
}

// Add records a stored half message; a second Add of the same offset (a
// replay) keeps the first.
func (t *Table) Add(h Half) {
	if _, ok := t.halves[h.Phys]; ok {
		return
	}
	c := h
	t.halves[h.Phys] = &c
	if c.Decision == Commit {
		t.committed[c.Phys] = struct{}{}
	}
}

// Decide applies a commit or rollback. The first decision wins; it reports
// whether this one changed anything. A rollback removes the half message
// at once: nothing is delivered.
func (t *Table) Decide(phys uint64, d Decision) bool {
	h, ok := t.halves[phys]
	if !ok || h.Decision != Open || d == Open {
		return false
	}
	if d == Rollback {
		delete(t.halves, phys)
		return true
	}
	h.Decision = d
	t.committed[phys] = struct{}{}
	return true
}

// Checked counts a check-back sent at atMs; it reports whether the half
// message is still open.
func (t *Table) Checked(phys uint64, atMs int64) bool {
	h, ok := t.halves[phys]
	if !ok || h.Decision != Open {
		return false
	}
	h.Checks++
	h.LastCheckMs = atMs
	return true
}

// Remove forgets a half message (its committed copy was delivered).
func (t *Table) Remove(phys uint64) bool {
	if _, ok := t.halves[phys]; !ok {
		return false
	}
	delete(t.halves, phys)
	delete(t.committed, phys)
	return true
}

// Get returns a copy of one half message.
func (t *Table) Get(phys uint64) (Half, bool) {
	h, ok := t.halves[phys]
	if !ok {
		return Half{}, false
	}
	return *h, true
}

// Len is the number of unfinished half messages.
func (t *Table) Len() int { return len(t.halves) }

// All returns every half message ordered by offset (snapshots, tests).
func (t *Table) All() []Half {
	out := make([]Half, 0, len(t.halves))
	for _, h := range t.halves {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Phys < out[j].Phys })
	return out
}

// Plan is what the leader should propose next.
type Plan struct {
	// Deliver: committed half messages to copy to their real topic.
	Deliver []Half
	// Check: open half messages due for a check-back now.
	Check []Half
	// Discard: open half messages past MaxChecks, to roll back.
	Discard []Half
}

// Scan plans at most cfg.MaxPerScan items at time nowMs, oldest first.
func (t *Table) Scan(nowMs int64, cfg Config) Plan {
	var p Plan
	for phys := range t.committed {
		p.Deliver = append(p.Deliver, *t.halves[phys])
	}
	sort.Slice(p.Deliver, func(i, j int) bool { return p.Deliver[i].Phys < p.Deliver[j].Phys })
	if len(p.Deliver) > cfg.MaxPerScan {
		p.Deliver = p.Deliver[:cfg.MaxPerScan]
	}
	budget := cfg.MaxPerScan - len(p.Deliver)
	for _, h := range t.All() {
		if budget <= 0 {
			break
		}
		if h.Decision != Open || nowMs < NextCheckMs(h, cfg) {
			continue
		}
		if h.Checks >= cfg.MaxChecks {
			p.Discard = append(p.Discard, h)
		} else {
			p.Check = append(p.Check, h)
		}
		budget--
	}
	return p
}

// NextCheckMs is when an open half message is due for its next check.
func NextCheckMs(h Half, cfg Config) int64 {
	if h.Checks == 0 {
		return h.StoreMs + cfg.FirstCheckDelay.Milliseconds()
	}
	return h.LastCheckMs + cfg.CheckInterval.Milliseconds()
}
