package txn

import (
	"testing"
	"time"
)

var testCfg = Config{FirstCheckDelay: time.Second, CheckInterval: 2 * time.Second, MaxChecks: 2, MaxPerScan: 10}

func TestFirstDecisionWins(t *testing.T) {
	tb := NewTable()
	tb.Add(Half{Phys: 8, Group: "g", StoreMs: 1000})
	tb.Add(Half{Phys: 8, Group: "other"}) // a replay keeps the first
	if h, _ := tb.Get(8); h.Group != "g" {
		t.Fatalf("replayed Add replaced the half message: %+v", h)
	}
	if !tb.Decide(8, Commit) {
		t.Fatal("first commit refused")
	}
	if tb.Decide(8, Commit) || tb.Decide(8, Rollback) {
		t.Fatal("a second decision changed a committed transaction")
	}
	if p := tb.Scan(0, testCfg); len(p.Deliver) != 1 || p.Deliver[0].Phys != 8 || len(p.Check) != 0 {
		t.Fatalf("plan after commit = %+v", p)
	}
	if !tb.Remove(8) || tb.Len() != 0 {
		t.Fatal("delivered half message not removed")
	}
	if p := tb.Scan(0, testCfg); len(p.Deliver) != 0 {
		t.Fatalf("delivered twice: %+v", p)
	}
}

func TestRollbackRemoves(t *testing.T) {
	tb := NewTable()
	tb.Add(Half{Phys: 16})
	if !tb.Decide(16, Rollback) || tb.Len() != 0 {
		t.Fatal("rollback kept the half message")
	}
	if tb.Decide(16, Commit) {
		t.Fatal("commit after rollback accepted")
	}
}

func TestCheckScheduleAndDiscard(t *testing.T) {
	tb := NewTable()
	tb.Add(Half{Phys: 24, Group: "g", StoreMs: 10_000})
	steps := []struct {
		now         int64
		check, disc int
		markChecked bool
	}{
		{10_999, 0, 0, false}, // before FirstCheckDelay
		{11_000, 1, 0, true},  // first check
		{12_999, 0, 0, false}, // interval not over
		{13_000, 1, 0, true},  // second check
		{15_000, 0, 1, false}, // MaxChecks reached: discard
	}
	for _, s := range steps {
		p := tb.Scan(s.now, testCfg)
		if len(p.Check) != s.check || len(p.Discard) != s.disc {
			t.Fatalf("at %d: plan %+v, want %d checks %d discards", s.now, p, s.check, s.disc)
		}
		if s.markChecked && !tb.Checked(24, s.now) {
			t.Fatalf("at %d: Checked refused", s.now)
		}
	}
	if h, _ := tb.Get(24); h.Checks != 2 || h.LastCheckMs != 13_000 {
		t.Fatalf("half after checks = %+v", h)
	}
}

func TestScanIsBounded(t *testing.T) {
	tb := NewTable()
	for i := range 50 {
		tb.Add(Half{Phys: uint64(i) * 8})
		if i%2 == 0 {
			tb.Decide(uint64(i)*8, Commit)
		}
	}
	p := tb.Scan(1<<40, testCfg)
	if n := len(p.Deliver) + len(p.Check) + len(p.Discard); n != testCfg.MaxPerScan {
		t.Fatalf("planned %d, want %d", n, testCfg.MaxPerScan)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{MaxChecks: 5000}).WithDefaults().Validate(); err == nil {
		t.Fatal("MaxChecks 5000 accepted")
	}
}
