package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
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

	t.Run("derived data damaged", func(t *testing.T) {
		w, data, out, err := open(t, func(path string) {
			writeJournal(t, path, 30)
			damage(t, path, "jobs", "job-1", []byte{0x01, 0xff})
		})
		if err != nil || w.journal == nil {
			t.Fatalf("open with quarantine: %v", err)
		}
		if got := aside(data); len(got) != 0 || !strings.Contains(out.String(), "rebuilt from its log (30 records, 30 jobs)") {
			t.Fatalf("moved aside %v; output %q", got, out.String())
		}
		if recs, err := w.journal.Records("job-1"); err != nil || len(recs) != 1 {
			t.Fatalf("records of job-1 after the repair: %d, %v", len(recs), err)
		}
	})

	// A log key made to break the key order: bbolt's read-write open
	// panics on such a file (recovered, but its mapping, and so the file's
	// lock, stays for the life of the process). The repair must refuse
	// before that happens, so that the move aside still gets the lock.
	t.Run("page structure damaged", func(t *testing.T) {
		w, data, out, err := open(t, func(path string) {
			writeJournal(t, path, 400)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			key := []byte{0, 0, 0, 0, 0, 0, 0, 200} // log/200
			at := bytes.Index(b[2*4096:], key)
			if at < 0 {
				t.Fatal("log/200's key is not in the file")
			}
			b[2*4096+at] = 0xff
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		})
		if err != nil || w.journal == nil {
			t.Fatalf("open with quarantine: %v", err)
		}
		if got := aside(data); len(got) != 1 || !strings.Contains(out.String(), "corrupt journal moved aside") {
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
		if !errors.Is(err, journal.ErrNewerSchema) || errors.Is(err, journal.ErrCorrupt) || !strings.Contains(err.Error(), "never moves a newer worker's journal aside") {
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

// writeJournal writes n jobs (job-0, job-1, …), each polled (one legal
// transition), into a new journal at path and closes it.
func writeJournal(t *testing.T, path string, n int) {
	t.Helper()
	j, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec := journal.Record{Job: fmt.Sprintf("job-%d", i), Kind: journal.KindTransition, Event: fsm.EvPoll, To: string(fsm.Polled)}
		if _, err := j.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// damage puts v under key in the journal's top-level bucket.
func damage(t *testing.T, path, bucket, key string, v []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), v) })
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
}

// TestReplayRepair: replay --repair rebuilds a damaged index from the log
// (after which --verify passes), and refuses when a log record is damaged.
func TestReplayRepair(t *testing.T) {
	data := t.TempDir()
	path := filepath.Join(data, "journal.db")
	writeJournal(t, path, 30)
	damage(t, path, "jobrecs", "job-2", []byte{0x80})
	if _, _, code := runIn(t, "replay", "--verify", "--data-dir", data); code != 1 {
		t.Fatalf("replay --verify of a damaged index exited %d", code)
	}
	out, errOut, code := runIn(t, "replay", "--repair", "--data-dir", data)
	if code != 0 || !strings.Contains(out, "journal rebuilt from its log: 30 records, 30 jobs") || !strings.Contains(out, "journal verified: 30 records") {
		t.Fatalf("replay --repair exited %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := runIn(t, "replay", "--verify", "--data-dir", data); code != 0 {
		t.Fatalf("replay --verify after the repair exited %d: %s%s", code, out, errOut)
	}

	// A log the worker could not have written (a progress record of a job
	// never polled): the repair refuses before it writes anything.
	bad := t.TempDir()
	badPath := filepath.Join(bad, "journal.db")
	j, err := journal.Open(badPath, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(journal.Record{Job: "x", Kind: journal.KindProgress}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	damage(t, badPath, "jobs", "x", []byte{0xff})
	before, _ := os.ReadFile(badPath)
	out, errOut, code = runIn(t, "replay", "--repair", "--data-dir", bad)
	if after, _ := os.ReadFile(badPath); code != 1 || !strings.Contains(errOut, "break the job lifecycle") || !bytes.Equal(before, after) {
		t.Fatalf("replay --repair of a log breaking the lifecycle exited %d (file changed: %v): %s%s", code, !bytes.Equal(before, after), out, errOut)
	}

	damage(t, path, "log", "\x00\x00\x00\x00\x00\x00\x00\x05", []byte("{"))
	out, errOut, code = runIn(t, "replay", "--repair", "--data-dir", data)
	if code != 1 || !strings.Contains(errOut, "the log itself is damaged") || !strings.Contains(errOut, "record 5") {
		t.Fatalf("replay --repair over a damaged record exited %d: %s%s", code, out, errOut)
	}
}

// TestReplayEscapesJobNames: a job name with terminal control bytes (from a
// damaged or hostile journal) reaches replay's text output and its errors
// escaped, never raw.
func TestReplayEscapesJobNames(t *testing.T) {
	data := t.TempDir()
	j, err := journal.Open(filepath.Join(data, "journal.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(journal.Record{Job: "\x1b[31mX\x07", Kind: journal.KindProgress}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	for _, args := range [][]string{{"replay"}, {"replay", "--verify"}} {
		out, errOut, code := runIn(t, append(args, "--data-dir", data)...)
		if code != 1 || !strings.Contains(out+errOut, `\x1b[31mX\a`) || strings.ContainsAny(out+errOut, "\x1b\x07") {
			t.Fatalf("%v exited %d: %q %q", args, code, out, errOut)
		}
	}
}

// TestStartStopsOnAnUnreadableSnapshot: a journal whose stored snapshot
// does not decode passes Open (it is read by the loop) and then stops start
// at once, exit 1, naming the journal and the repair, instead of a worker
// that says it started and fails only when it is stopped.
func TestStartStopsOnAnUnreadableSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd and the worker (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	data := t.TempDir()
	path := filepath.Join(data, "journal.db")
	job := solana.NewWallet().PublicKey().String()
	j, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(journal.Record{Job: job, Kind: journal.KindTransition, Event: fsm.EvPoll, To: string(fsm.Polled)}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	damage(t, path, "jobs", job, []byte{0xff})

	cmd := exec.Command(workerBinary(t), "start", "--network", "localnet", "--localnet-addr", freeAddr(t),
		"--containerd-address", ctd, "--log-format", "json", "--env-file", "")
	cmd.Env = append(os.Environ(), "HYPERNODE_DATA_DIR="+data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runtimetest.UnmountUnder(data) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("start exited with %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("start still running 60 s after the loop failed:\n%s\n%s", stdout.String(), stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "journal "+path) || !strings.Contains(msg, "replay --repair") || !strings.Contains(msg, "snapshot of "+job) {
		t.Fatalf("stderr does not name the journal, the job and the repair:\n%s", msg)
	}
}
