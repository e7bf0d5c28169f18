package broker

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/raft/v3/raftpb"
)

// TestRestartWithCommitIndexBehindApplied: the raft commit index is saved
// lazily, so after a crash (or a storage failure that stops the loop before
// its last save) meta.db can hold a commit index below what the dispatcher
// already applied and checkpointed. The node must start anyway: an applied
// entry was committed. This is the full-disk restart failure ("scan entry N
// beyond the immutable log").
func TestRestartWithCommitIndexBehindApplied(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ready", b.Ready)
	var want []string
	var queue uint32
	for i := range 20 {
		body := string(rune('a'+i%26)) + "-msg"
		res, err := b.Produce(ctx(t), []Message{msg("restart", "", "k", body)})
		if err != nil {
			t.Fatal(err)
		}
		queue = res[0].Queue
		want = append(want, body)
	}
	applied := b.Status().Applied
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	setSavedCommit(t, filepath.Join(dir, "meta.db"), 1)

	b = openBroker(t, cfg)
	if got := b.Status().Applied; got < applied {
		t.Fatalf("applied index after restart %d, want at least %d", got, applied)
	}
	got := fetchAll(t, b, "restart", queue)
	if len(got) != len(want) {
		t.Fatalf("after restart: %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// setSavedCommit rewrites the commit index raft saved in meta.db.
func setSavedCommit(t *testing.T, path string, commit uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	err = db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("raft"))
		var hs raftpb.HardState
		if err := hs.Unmarshal(bk.Get([]byte("hardstate"))); err != nil {
			return err
		}
		if hs.Commit <= commit {
			t.Fatalf("saved commit %d is not above %d: the test proves nothing", hs.Commit, commit)
		}
		hs.Commit = commit
		v, err := hs.Marshal()
		if err != nil {
			return err
		}
		return bk.Put([]byte("hardstate"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}
