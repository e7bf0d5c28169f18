package raft

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	clog "github.com/conflux-mq/conflux/core/log"
	"github.com/conflux-mq/conflux/core/log/vfs"
)

// A power cut after a Ready's term/vote is saved but before its entries are
// durable must leave a node that restarts: the saved commit index may not
// run ahead of the durable log.
func TestCrashBeforeEntriesAreDurableRestarts(t *testing.T) {
	fs := vfs.NewMem()
	dir := filepath.Join(t.TempDir(), "n1")
	open := func(fs vfs.FS) (*Node, error) {
		return Open(Config{
			ID: 1, Dir: dir, Peers: map[uint64]string{1: "a", 2: "b", 3: "c"},
			Log:          clog.Config{FS: fs, SegmentSizeBytes: 4096},
			StateMachine: &testSM{}, Transport: &simTransport{net: &simNet{}},
			ProposalID: testProposalID,
		})
	}
	n, err := open(fs)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("power cut")
	fs.SetInjector(func(op vfs.Op, name string) error {
		if op == vfs.OpSync && strings.HasSuffix(name, ".seg") {
			return boom
		}
		return nil
	})
	// The first Ready carries the bootstrap entries (committed at once)
	// and a new term; the entries never reach the disk.
	if err := n.processReady(); !errors.Is(err, boom) {
		t.Fatalf("processReady = %v, want the injected sync failure", err)
	}
	n.closeStorage()
	crashed := fs.CrashClone(vfs.CrashDropUnsynced, nil)
	n2, err := open(crashed)
	if err != nil {
		t.Fatalf("restart after the crash: %v", err)
	}
	defer n2.closeStorage()
	if err := n2.processReady(); err != nil {
		t.Fatal(err)
	}
	if last, _ := n2.log.LastIndex(); last != 3 {
		t.Fatalf("after restart the bootstrap entries should be rewritten: last index %d", last)
	}
}
