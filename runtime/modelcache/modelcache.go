// Package modelcache keeps the shared model cache: per job-definition `model`, a
// directory the first job of that model fills read-write (at runtime.ModelsDir in its
// container), sealed when that job succeeds (its tree digest recorded, the files made
// read-only and moved to a content-addressed directory, sha256-<digest>), then mounted
// read-only into every later job of the same model. A size budget evicts the least
// recently used sealed models no running job holds.
//
// Layout under the cache directory: index.json (the entries), lock (flock: the daemon
// and the `cache` command share the index), pop-<key>/ (a model being populated; key is
// the SHA-256 of the model name) and sha256-<digest>/ (sealed content, shared by
// models whose content is identical).
package modelcache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Entry states.
const (
	StatePopulating = "populating" // a job is filling it; nobody else mounts it
	StateSealed     = "sealed"     // read-only, digest recorded
)

// Errors callers branch on.
var (
	// ErrBusy: another job is populating the model; run without the cache.
	ErrBusy = errors.New("model is being populated by another job")
	// ErrCorrupt: index.json cannot be read.
	ErrCorrupt = errors.New("model cache index is corrupt")
)

// Entry is one model in the cache.
type Entry struct {
	Model string `json:"model"`
	State string `json:"state"`
	// Dir is the entry's directory, relative to the cache directory: pop-<key> while
	// populating, sha256-<digest> once sealed.
	Dir string `json:"dir"`
	// Digest is "sha256:<hex>" over the sealed tree (paths, types, modes, contents).
	Digest string `json:"digest,omitempty"`
	// Bytes is the size of the sealed files.
	Bytes int64 `json:"bytes"`
	// Populator is the job filling a populating entry.
	Populator string `json:"populator,omitempty"`
	// Users are the jobs that hold the sealed entry mounted.
	Users    []string  `json:"users,omitempty"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
}

// Mount is what a job gets: Source is the host directory to bind at
// runtime.ModelsDir, read-only when ReadOnly.
type Mount struct {
	Source   string
	ReadOnly bool
}

// Cache is a model cache directory with a size budget. Its methods are safe for
// concurrent use, also across processes.
type Cache struct {
	dir   string
	limit int64
	now   func() time.Time
}

// Open opens (creating, mode 0700) the cache in dir with a budget of limitBytes (> 0).
func Open(dir string, limitBytes int64) (*Cache, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("model cache directory %q is not absolute", dir)
	}
	if limitBytes <= 0 {
		return nil, fmt.Errorf("model cache limit %d bytes is not positive", limitBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("model cache: %w", err)
	}
	return &Cache{dir: dir, limit: limitBytes, now: time.Now}, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Limit is the budget in bytes.
func (c *Cache) Limit() int64 { return c.limit }

type index struct {
	Version int               `json:"version"`
	Entries map[string]*Entry `json:"entries"` // by model
}

// locked runs fn on the index under the cache's file lock and saves it when fn
// returns save=true.
func (c *Cache) locked(fn func(ix *index) (save bool, err error)) error {
	lf, err := os.OpenFile(filepath.Join(c.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("model cache lock: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("model cache lock: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	ix := &index{Version: 1, Entries: map[string]*Entry{}}
	b, err := os.ReadFile(filepath.Join(c.dir, "index.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("model cache index: %w", err)
	default:
		if err := json.Unmarshal(b, ix); err != nil || ix.Version != 1 {
			return fmt.Errorf("%w: %s: version %d, %v", ErrCorrupt, filepath.Join(c.dir, "index.json"), ix.Version, err)
		}
		if ix.Entries == nil {
			ix.Entries = map[string]*Entry{}
		}
		for m, e := range ix.Entries {
			if e == nil || e.Model != m || !validDir(e.Dir) {
				return fmt.Errorf("%w: entry %q is malformed", ErrCorrupt, m)
			}
		}
	}
	save, err := fn(ix)
	if err != nil || !save {
		return err
	}
	out, err := json.MarshalIndent(ix, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.dir, "index.json"), out)
}

// validDir: an entry directory is a single name of the two forms this package makes.
func validDir(d string) bool {
	return d != "" && filepath.Base(d) == d && d != "." && d != ".." &&
		(len(d) == len("pop-")+64 && d[:4] == "pop-" || len(d) == len("sha256-")+64 && d[:7] == "sha256-")
}

// Key is the directory key of a model name: hex SHA-256.
func Key(model string) string {
	h := sha256.Sum256([]byte(model))
	return hex.EncodeToString(h[:])
}

// Acquire gives job the cache of model: the sealed content read-only (job becomes
// one of its users until Finish), or, when the model is not cached, a fresh directory
// read-write that job populates (again the same one when job asks twice, as after a
// restart). ErrBusy when another job is populating it.
func (c *Cache) Acquire(model, job string) (Mount, error) {
	if model == "" || job == "" {
		return Mount{}, errors.New("model cache: empty model or job")
	}
	var m Mount
	err := c.locked(func(ix *index) (bool, error) {
		now := c.now().UTC()
		e := ix.Entries[model]
		switch {
		case e != nil && e.State == StateSealed:
			if !slices.Contains(e.Users, job) {
				e.Users = append(e.Users, job)
			}
			e.LastUsed = now
			m = Mount{Source: filepath.Join(c.dir, e.Dir), ReadOnly: true}
			return true, nil
		case e != nil && e.Populator == job:
			m = Mount{Source: filepath.Join(c.dir, e.Dir)}
			return false, os.MkdirAll(m.Source, 0o755)
		case e != nil:
			return false, fmt.Errorf("model %q: %w (%s)", model, ErrBusy, e.Populator)
		}
		e = &Entry{Model: model, State: StatePopulating, Dir: "pop-" + Key(model), Populator: job, Created: now, LastUsed: now}
		src := filepath.Join(c.dir, e.Dir)
		if err := os.RemoveAll(src); err != nil { // a leftover of a crash
			return false, err
		}
		if err := os.Mkdir(src, 0o755); err != nil {
			return false, err
		}
		ix.Entries[model] = e
		m = Mount{Source: src}
		return true, nil
	})
	return m, err
}

// Finish releases what job holds. The model job populated is sealed when succeeded
// (then the budget is enforced: least recently used unused models are evicted, and a
// model larger than the whole budget is not kept) or discarded when not. Finish is
// idempotent.
func (c *Cache) Finish(job string, succeeded bool) error {
	return c.locked(func(ix *index) (bool, error) {
		changed := false
		for model, e := range ix.Entries {
			if i := slices.Index(e.Users, job); i >= 0 {
				e.Users = slices.Delete(e.Users, i, i+1)
				changed = true
			}
			if e.State != StatePopulating || e.Populator != job {
				continue
			}
			changed = true
			src := filepath.Join(c.dir, e.Dir)
			if !succeeded {
				delete(ix.Entries, model)
				if err := removeTree(src); err != nil {
					return true, err
				}
				continue
			}
			digest, size, err := seal(src)
			if err != nil {
				return true, fmt.Errorf("seal model %q: %w", model, err)
			}
			if size > c.limit {
				// It would evict everything and still not fit.
				delete(ix.Entries, model)
				if err := removeTree(src); err != nil {
					return true, err
				}
				continue
			}
			dst := "sha256-" + digest
			if _, err := os.Stat(filepath.Join(c.dir, dst)); err == nil {
				// The same content is cached already under another model.
				if err := removeTree(src); err != nil {
					return true, err
				}
			} else if err := os.Rename(src, filepath.Join(c.dir, dst)); err != nil {
				return true, err
			}
			e.State, e.Dir, e.Digest, e.Bytes, e.Populator = StateSealed, dst, "sha256:"+digest, size, ""
			e.LastUsed = c.now().UTC()
		}
		if _, err := c.evict(ix, false); err != nil {
			return true, err
		}
		return changed, nil
	})
}

// List returns the entries, most recently used first.
func (c *Cache) List() ([]Entry, error) {
	var out []Entry
	err := c.locked(func(ix *index) (bool, error) {
		for _, e := range ix.Entries {
			out = append(out, *e)
		}
		return false, nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, err
}

// Prune evicts sealed models no job holds, least recently used first, until the
// cache is within its budget; with all, every such model. Populating entries and
// models in use are kept. It returns what it evicted.
func (c *Cache) Prune(all bool) ([]Entry, error) {
	var out []Entry
	err := c.locked(func(ix *index) (bool, error) {
		ev, err := c.evict(ix, all)
		out = ev
		return len(ev) > 0, err
	})
	return out, err
}

// evict removes unused sealed entries, oldest use first, while the sealed bytes
// exceed the budget (or all of them).
func (c *Cache) evict(ix *index, all bool) ([]Entry, error) {
	var total int64
	var idle []*Entry
	for _, e := range ix.Entries {
		if e.State != StateSealed {
			continue
		}
		total += e.Bytes
		if len(e.Users) == 0 {
			idle = append(idle, e)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].LastUsed.Before(idle[j].LastUsed) })
	var out []Entry
	for _, e := range idle {
		if !all && total <= c.limit {
			break
		}
		delete(ix.Entries, e.Model)
		total -= e.Bytes
		out = append(out, *e)
		shared := false
		for _, o := range ix.Entries {
			shared = shared || o.Dir == e.Dir
		}
		if !shared {
			if err := removeTree(filepath.Join(c.dir, e.Dir)); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// seal makes every file and directory under dir read-only (symlinks and special
// files are removed: a model is regular files) and returns the hex SHA-256 over the
// tree (each entry's relative path, kind, permission bits and, for files, content
// digest, in lexical order) and the files' total size.
func seal(dir string) (string, int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", 0, err
	}
	defer root.Close()
	h := sha256.New()
	var size int64
	var dirs []string
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
			fmt.Fprintf(h, "d %s\n", p)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode := info.Mode().Perm() &^ 0o222
			f, err := root.Open(p)
			if err != nil {
				return err
			}
			fh := sha256.New()
			n, err := io.Copy(fh, f)
			f.Close()
			if err != nil {
				return err
			}
			size += n
			fmt.Fprintf(h, "f %s %s %d %x\n", p, strconv.FormatUint(uint64(mode), 8), n, fh.Sum(nil))
			if err := root.Chmod(p, mode); err != nil {
				return err
			}
		default:
			return root.Remove(p)
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i], 0o555); err != nil {
			return "", 0, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}

// removeTree makes a sealed tree writable again and removes it.
func removeTree(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".index-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
