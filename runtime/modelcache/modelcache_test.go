package modelcache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCache(t *testing.T, limit int64) *Cache {
	t.Helper()
	c, err := Open(t.TempDir(), limit)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	return c
}

// populate runs a populating job that writes files (name → content) and finishes it.
func populate(t *testing.T, c *Cache, model, job string, files map[string]string, ok bool) Mount {
	t.Helper()
	m, err := c.Acquire(model, job)
	if err != nil || m.ReadOnly || m.Source == "" {
		t.Fatalf("Acquire(%s, %s) = %+v, %v; want a fresh read-write directory", model, job, m, err)
	}
	for name, content := range files {
		p := filepath.Join(m.Source, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Finish(job, ok); err != nil {
		t.Fatal(err)
	}
	return m
}

func entry(t *testing.T, c *Cache, model string) *Entry {
	t.Helper()
	es, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Model == model {
			return &e
		}
	}
	return nil
}

func TestPopulateSealShare(t *testing.T) {
	c := newCache(t, 1<<20)
	m, err := c.Acquire("llama", "job1")
	if err != nil || m.ReadOnly {
		t.Fatalf("first Acquire = %+v, %v", m, err)
	}
	if again, err := c.Acquire("llama", "job1"); err != nil || again != m {
		t.Fatalf("the populator asking again (a restart) = %+v, %v; want %+v", again, err, m)
	}
	if _, err := c.Acquire("llama", "job2"); !errors.Is(err, ErrBusy) {
		t.Fatalf("another job while populating = %v, want ErrBusy", err)
	}
	os.MkdirAll(filepath.Join(m.Source, "weights"), 0o755)
	os.WriteFile(filepath.Join(m.Source, "weights", "w.bin"), []byte("0123456789"), 0o644)
	os.WriteFile(filepath.Join(m.Source, "config.json"), []byte("{}"), 0o600)
	os.Symlink("/etc/shadow", filepath.Join(m.Source, "escape"))
	if err := c.Finish("job1", true); err != nil {
		t.Fatal(err)
	}
	e := entry(t, c, "llama")
	if e == nil || e.State != StateSealed || e.Bytes != 12 || !strings.HasPrefix(e.Digest, "sha256:") || e.Dir != "sha256-"+strings.TrimPrefix(e.Digest, "sha256:") {
		t.Fatalf("entry after sealing %+v", e)
	}
	ro, err := c.Acquire("llama", "job2")
	if err != nil || !ro.ReadOnly || ro.Source != filepath.Join(c.Dir(), e.Dir) {
		t.Fatalf("Acquire after sealing = %+v, %v", ro, err)
	}
	if _, err := os.Lstat(filepath.Join(ro.Source, "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a symlink survived sealing: %v", err)
	}
	for _, p := range []string{"weights/w.bin", "config.json"} {
		fi, err := os.Stat(filepath.Join(ro.Source, p))
		if err != nil || fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s after sealing: %v %v, want read-only", p, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(ro.Source, "weights")); fi.Mode().Perm() != 0o555 {
		t.Errorf("directory mode %v, want 0555", fi.Mode())
	}
	if _, err := os.Stat(m.Source); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("populating directory left: %v", err)
	}
	// The same content under another name shares the sealed directory.
	m2, _ := c.Acquire("llama-copy", "job3")
	os.MkdirAll(filepath.Join(m2.Source, "weights"), 0o755)
	os.WriteFile(filepath.Join(m2.Source, "weights", "w.bin"), []byte("0123456789"), 0o644)
	os.WriteFile(filepath.Join(m2.Source, "config.json"), []byte("{}"), 0o600)
	c.Finish("job3", true)
	if e2 := entry(t, c, "llama-copy"); e2 == nil || e2.Digest != e.Digest || e2.Dir != e.Dir {
		t.Errorf("identical content: %+v vs %+v", e2, e)
	}
	// Different content, different digest.
	populate(t, c, "other", "job4", map[string]string{"config.json": "{ }"}, true)
	if e3 := entry(t, c, "other"); e3.Digest == e.Digest {
		t.Error("different content, same digest")
	}
}

func TestFailedPopulationDiscarded(t *testing.T) {
	c := newCache(t, 1<<20)
	m := populate(t, c, "m", "job1", map[string]string{"half": "xx"}, false)
	if entry(t, c, "m") != nil {
		t.Fatal("entry of a failed population kept")
	}
	if _, err := os.Stat(m.Source); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory kept: %v", err)
	}
	if m2, err := c.Acquire("m", "job2"); err != nil || m2.ReadOnly {
		t.Fatalf("next job = %+v, %v; want to populate afresh", m2, err)
	}
	if err := c.Finish("job1", false); err != nil {
		t.Fatalf("Finish twice: %v", err)
	}
	if e := entry(t, c, "m"); e == nil || e.Populator != "job2" {
		t.Fatalf("a second Finish of job1 touched job2's population: %+v", e)
	}
}

func TestBudgetEvictsLeastRecentlyUsed(t *testing.T) {
	c := newCache(t, 1000)
	populate(t, c, "a", "j1", map[string]string{"w": strings.Repeat("a", 400)}, true)
	populate(t, c, "b", "j2", map[string]string{"w": strings.Repeat("b", 400)}, true)
	// a is used again (more recently than b), and is held by a running job.
	if _, err := c.Acquire("a", "j3"); err != nil {
		t.Fatal(err)
	}
	populate(t, c, "c", "j4", map[string]string{"w": strings.Repeat("c", 400)}, true)
	if entry(t, c, "b") != nil {
		t.Error("b, least recently used, not evicted")
	}
	if entry(t, c, "a") == nil || entry(t, c, "c") == nil {
		t.Error("a (in use) or c (newest) evicted")
	}
	// A model larger than the whole budget is not kept.
	populate(t, c, "huge", "j5", map[string]string{"w": strings.Repeat("h", 2000)}, true)
	if entry(t, c, "huge") != nil {
		t.Error("a model over the budget was kept")
	}
	// Prune all: every model no job holds goes; a, held by j3, stays.
	ev, err := c.Prune(true)
	if err != nil || len(ev) != 1 || ev[0].Model != "c" {
		t.Fatalf("Prune(all) = %+v, %v", ev, err)
	}
	c.Finish("j3", true)
	if ev, _ := c.Prune(true); len(ev) != 1 || ev[0].Model != "a" {
		t.Fatalf("after release, Prune(all) = %+v", ev)
	}
	ents, _ := os.ReadDir(c.Dir())
	for _, d := range ents {
		if d.IsDir() {
			t.Errorf("directory %s left after pruning everything", d.Name())
		}
	}
}

func TestCorruptIndex(t *testing.T) {
	for _, body := range []string{"{", `{"version":2}`, `{"version":1,"entries":{"m":{"model":"m","dir":"../../etc"}}}`, `{"version":1,"entries":{"m":null}}`} {
		c := newCache(t, 1000)
		os.WriteFile(filepath.Join(c.Dir(), "index.json"), []byte(body), 0o600)
		if _, err := c.List(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("index %s: List = %v, want ErrCorrupt", body, err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	if _, err := Open("rel", 1); err == nil {
		t.Error("relative dir accepted")
	}
	if _, err := Open(t.TempDir(), 0); err == nil {
		t.Error("zero budget accepted")
	}
}

// FuzzIndex: whatever index.json holds, List neither panics nor accepts an
// entry outside the cache: it answers, or fails with ErrCorrupt.
func FuzzIndex(f *testing.F) {
	f.Add([]byte(`{"version":1,"entries":{}}`))
	f.Add([]byte(`{"version":1,"entries":{"m":{"model":"m","state":"sealed","dir":"sha256-` + strings.Repeat("a", 64) + `"}}}`))
	f.Add([]byte(`{"version":1,"entries":{"m":{"model":"m","dir":"pop-../../../../etc/passwd"}}}`))
	f.Add([]byte(`null`))
	dir := f.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		es, err := c.List()
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("List = %v, want ErrCorrupt", err)
		}
		for _, e := range es {
			if !validDir(e.Dir) || strings.Contains(e.Dir, "/") {
				t.Fatalf("entry dir %q accepted", e.Dir)
			}
		}
	})
}
