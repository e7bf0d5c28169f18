package index

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conflux-mq/conflux/core/log/vfs"
)

const testDir = "/idx"

// tinyCfg forces hash collisions (8 slots) and file rolls (16 entries).
func tinyCfg(fs vfs.FS) Config {
	return Config{FS: fs, Dir: testDir, SlotCount: 8, EntriesPerFile: 16}
}

func newMem(t testing.TB) *vfs.MemFS {
	t.Helper()
	m := vfs.NewMem()
	must(t, m.MkdirAll(testDir))
	return m
}

func mustOpen(t testing.TB, cfg Config) *Index {
	t.Helper()
	x, err := Open(cfg)
	must(t, err)
	return x
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rec is one Add.
type rec struct {
	key  string
	phys uint64
	ms   int64
}

// model is the obviously correct index: the list of Adds.
type model []rec

// lookup is what Lookup must return: matches, newest first, at most max.
func (m model) lookup(key string, begin, end int64, max int) []uint64 {
	w := newWindow(begin, end)
	var out []uint64
	for i := len(m) - 1; i >= 0 && len(out) < max; i-- {
		if m[i].key == key && w.has(m[i].ms) {
			out = append(out, m[i].phys)
		}
	}
	return out
}

// gen makes n Adds in dispatch order: messages of 1 to 3 distinct keys from a
// pool of nkeys, increasing offsets from start, store times that mostly grow
// but jitter back and forth.
func gen(rng *rand.Rand, n, nkeys int, start uint64) model {
	var m model
	phys, ms := start, int64(1_700_000_000_000)
	for len(m) < n {
		keys := rng.Perm(nkeys)[:min(1+rng.IntN(3), n-len(m), nkeys)]
		for _, k := range keys {
			m = append(m, rec{key: keyName(k), phys: phys, ms: ms + rng.Int64N(200) - 100})
		}
		phys += 1 + rng.Uint64N(300)
		ms += rng.Int64N(50)
	}
	return m
}

func keyName(k int) string { return fmt.Sprintf("key-%d", k) }

// msgStart returns an index i <= want at which a message starts (no Add
// before i shares an offset with i).
func msgStart(m model, want int) int {
	for want > 0 && want < len(m) && m[want-1].phys == m[want].phys {
		want--
	}
	return want
}

func addAll(t testing.TB, x *Index, m model) {
	t.Helper()
	for _, r := range m {
		must(t, x.Add([]byte(r.key), r.phys, r.ms))
	}
}

// query is one Lookup to compare.
type query struct {
	key        string
	begin, end int64
	max        int
}

// queries covers every key of the pool (and missing ones) with the whole
// time range, a few windows and a few limits.
func queries(m model, nkeys int) []query {
	var qs []query
	lo, hi := int64(0), int64(0)
	if len(m) > 0 {
		lo, hi = m[0].ms-200, m[len(m)-1].ms+200
	}
	mid := lo + (hi-lo)/2
	for k := -1; k <= nkeys; k++ {
		key := keyName(k)
		qs = append(qs,
			query{key, 0, 0, 1 << 30},
			query{key, 0, 0, 1},
			query{key, 0, 0, 3},
			query{key, lo, mid, 1 << 30},
			query{key, mid, hi, 2},
			query{key, mid - 100, mid + 100, 1 << 30},
			query{key, hi + 1, hi + 1000, 1 << 30},
		)
	}
	return qs
}

// checkAll compares every query between x and the model.
func checkAll(t testing.TB, x *Index, m model, nkeys int) {
	t.Helper()
	for _, q := range queries(m, nkeys) {
		got, err := x.Lookup([]byte(q.key), q.begin, q.end, q.max, nil)
		if err != nil {
			t.Fatalf("Lookup(%+v): %v", q, err)
		}
		if want := m.lookup(q.key, q.begin, q.end, q.max); !slices.Equal(got, want) {
			t.Fatalf("Lookup(%+v) = %v, want %v", q, got, want)
		}
	}
	last, ok := x.LastOffset()
	if ok != (len(m) > 0) || (ok && last != m[len(m)-1].phys) {
		t.Fatalf("LastOffset = %d, %v; want the last of %d adds", last, ok, len(m))
	}
}

// liveEntries counts the entries the index holds (test-only peek).
func liveEntries(x *Index) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, s := range x.mu.segs {
		n += int(s.st.used)
	}
	return n
}

func fileCount(x *Index) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.mu.segs)
}

func filePaths(x *Index) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for _, s := range x.mu.segs {
		out = append(out, s.path)
	}
	return out
}

// patch overwrites bytes of a file of a closed index.
func patch(t testing.TB, fs vfs.FS, path string, off int64, b []byte) {
	t.Helper()
	f, err := fs.Open(path)
	must(t, err)
	_, err = f.WriteAt(b, off)
	must(t, err)
	must(t, f.Close())
}
