package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/hypernode-sol/worker/journal"
)

// TestQuarantineOnlyCorruptJournals: with --quarantine-corrupt-journal,
// start moves a corrupt journal aside and starts with an empty one, but
// never moves a sound journal of a newer worker (a rollback to this worker):
// that one is refused with ErrNewerSchema and left exactly as it was.
func TestQuarantineOnlyCorruptJournals(t *testing.T) {
	open := func(t *testing.T, content func(path string)) (*worker, string, *bytes.Buffer, error) {
		data := t.TempDir()
		cfg := &Config{DataDir: data, QuarantineJournal: true}
		content(cfg.JournalPath())
		var out bytes.Buffer
		w := &worker{log: zerolog.Nop(), cfg: cfg, out: &out}
		err := w.openJournal()
		if w.journal != nil {
			t.Cleanup(func() { w.journal.Close() })
		}
		return w, data, &out, err
	}
	aside := func(data string) []string {
		m, _ := filepath.Glob(filepath.Join(data, "journal.db.corrupt-*"))
		return m
	}

	t.Run("corrupt", func(t *testing.T) {
		w, data, out, err := open(t, func(path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("not a journal "), 400), 0o600); err != nil {
				t.Fatal(err)
			}
		})
		if err != nil || w.journal == nil {
			t.Fatalf("open with quarantine: %v", err)
		}
		if got := aside(data); len(got) != 1 || !strings.Contains(out.String(), "corrupt journal moved aside to "+got[0]) {
			t.Fatalf("moved aside: %v; output %q", got, out.String())
		}
	})

	t.Run("newer", func(t *testing.T) {
		var before []byte
		_, data, _, err := open(t, func(path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				for _, b := range []string{"meta", "log", "jobs", "jobrecs"} {
					if _, err := tx.CreateBucket([]byte(b)); err != nil {
						return err
					}
				}
				return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("99"))
			})
			if err := errors.Join(err, db.Close()); err != nil {
				t.Fatal(err)
			}
			if before, err = os.ReadFile(path); err != nil {
				t.Fatal(err)
			}
		})
		if !errors.Is(err, journal.ErrNewerSchema) || errors.Is(err, journal.ErrCorrupt) || !strings.Contains(err.Error(), "never moves it") {
			t.Fatalf("open of a newer journal with quarantine: %v", err)
		}
		if got := aside(data); len(got) != 0 {
			t.Fatalf("a newer journal was moved aside: %v", got)
		}
		if after, err := os.ReadFile(filepath.Join(data, "journal.db")); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("the newer journal changed (%v)", err)
		}
	})
}
