package broker

import (
	"errors"
	"strings"
	"time"

	"testing"

	"github.com/conflux-mq/conflux/core/broker/command"
)

func TestRecordsApplyPersistAndRace(t *testing.T) {
	cfg := testConfig(t.TempDir())
	b := openBroker(t, cfg)
	waitFor(t, 10*time.Second, "leadership", b.Ready)
	if err := b.PutRecord(ctx(t), "a", "k1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := b.ChangeRecords(ctx(t),
		command.Record{Op: command.RecordPut, Namespace: "a", Key: "k2", Value: []byte("two")},
		command.Record{Op: command.RecordPut, Namespace: "b", Key: "k1", Value: []byte("other")},
		command.Record{Op: command.RecordDelete, Namespace: "a", Key: "k1"},
	); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Record("a", "k1"); ok {
		t.Fatal("a/k1 survived its delete")
	}
	won, err := b.PutRecordIfAbsent(ctx(t), "a", "k2", []byte("late"))
	if err != nil || won {
		t.Fatalf("put-if-absent over an existing key: won=%v err=%v", won, err)
	}
	won, err = b.PutRecordIfAbsent(ctx(t), "a", "k3", []byte("first"))
	if err != nil || !won {
		t.Fatalf("put-if-absent on a new key: won=%v err=%v", won, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openBroker(t, cfg)
	got := b.Records("a")
	if len(got) != 2 || string(got["k2"]) != "two" || string(got["k3"]) != "first" {
		t.Fatalf("namespace a after a restart: %q", got)
	}
	if v, ok := b.Record("b", "k1"); !ok || string(v) != "other" {
		t.Fatalf("b/k1 after a restart: %q %v", v, ok)
	}
}

// TestRecordLimitsRefusedBeforeProposing: a key too long for broker.db (or
// a namespace with a NUL) is refused by the caller's node; committed, it
// would fail Apply on every replica and stop the cluster.
func TestRecordLimitsRefusedBeforeProposing(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir()))
	waitFor(t, 10*time.Second, "leadership", b.Ready)
	long := strings.Repeat("k", command.MaxRecordKeyBytes+1)
	if err := b.PutRecord(ctx(t), "mqtt.retained", long, []byte("v")); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("a %d-byte key: %v, want ErrBadRecord", len(long), err)
	}
	if err := b.PutRecord(ctx(t), "a\x00b", "k", nil); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("a namespace with NUL: %v, want ErrBadRecord", err)
	}
	// The longest allowed key goes through broker.db and survives.
	longest := strings.Repeat("k", command.MaxRecordKeyBytes)
	ns := strings.Repeat("n", command.MaxNameBytes)
	if err := b.PutRecord(ctx(t), ns, longest, []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, ok := b.Record(ns, longest); !ok || string(v) != "v" {
		t.Fatalf("the longest key: %q %v", v, ok)
	}
	select {
	case <-b.Done():
		t.Fatalf("the node stopped: %v", b.Err())
	default:
	}
}
