package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// smallJournal writes records 1..6: A poll, A tx intent, B poll, A claim,
// B progress, A container intent.
func smallJournal(t *testing.T) string { return smallJournalSchema(t, SchemaVersion) }

// smallJournalSchema is smallJournal written in the layout of schema (2 and
// up).
func smallJournalSchema(t *testing.T, schema int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := openSchema(path, Options{}, schema)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Record{
		{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindIntent, Intent: IntentTx, Tx: &TxIntent{Instruction: "work_job", Signature: "sig1", Raw: []byte{1, 2, 3}}},
		{Job: "B", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindTransition, Event: "claim", From: "polled", To: "claimed", Fields: map[string]string{"claim_sig": "sig1"}},
		{Job: "B", Kind: KindProgress, Fields: map[string]string{"note": "x"}},
		{Job: "A", Kind: KindIntent, Intent: IntentContainer, Container: &ContainerIntent{ID: "hn-A-1", Attempt: 1}},
	} {
		if _, err := j.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func mutate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// setIndex sets job's index to seqs, in the file's layout (a packed value
// from schema 4, a bucket per job before).
func setIndex(t *testing.T, job string, seqs ...uint64) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketJobRecs)
		if string(tx.Bucket(bucketMeta).Get(keySchema)) >= "4" {
			v, err := encodeIndex(nil, 0, seqs)
			if err != nil {
				return err
			}
			return idx.Put([]byte(job), v)
		}
		if err := idx.DeleteBucket([]byte(job)); err != nil {
			return err
		}
		b, err := idx.CreateBucket([]byte(job))
		for _, seq := range seqs {
			if err == nil {
				err = b.Put(seqKey(seq), []byte{})
			}
		}
		return err
	}
}

// checkDamage checks the sound journal at path, damages it, and asserts
// that Check then fails with ErrCorrupt naming want and, when records names
// a job, that reading its records fails with ErrCorrupt too.
func checkDamage(t *testing.T, path string, damage func(tx *bolt.Tx) error, want, records string) {
	t.Helper()
	if err := Check(path); err != nil {
		t.Fatalf("check before damage: %v", err)
	}
	mutate(t, path, damage)
	if err := Check(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("check: %v; want ErrCorrupt naming %q", err, want)
	}
	if records == "" {
		return
	}
	j, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Records(records); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("records of %s: %v; want ErrCorrupt", records, err)
	}
}

// TestCheckSchema3Index: a schema-3 file's index (a bucket per job) is
// checked, and read by Records, in its own layout.
func TestCheckSchema3Index(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mutate  func(tx *bolt.Tx) error
		want    string
		records string
	}{
		{"entry missing", setIndex(t, "A", 1, 2, 6), "jobrecs/A: record 4 of the job is not indexed", ""},
		{"another job's record", setIndex(t, "A", 1, 2, 3, 4, 6), "jobrecs/A/3: not a record of the job", "A"},
		{"a missing record", setIndex(t, "B", 3, 5, 99), "jobrecs/B/99", "B"},
		{"index missing", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).DeleteBucket([]byte("B")) }, "jobrecs/B: no index", ""},
		{"a value, not a bucket", func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketJobRecs).DeleteBucket([]byte("A")); err != nil {
				return err
			}
			return tx.Bucket(bucketJobRecs).Put([]byte("A"), []byte{1})
		}, "jobrecs/A: a value, not a bucket", "A"},
		{"key not a seq", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobRecs).Bucket([]byte("A")).Put([]byte("x"), []byte{})
		}, "jobrecs/A/78: not a sequence number", "A"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkDamage(t, smallJournalSchema(t, 3), tt.mutate, tt.want, tt.records)
		})
	}
}

func TestCheckFindsTheFirstBadKey(t *testing.T) {
	rewrite := func(seq uint64, edit func(*Record)) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			rec, err := decodeRecord(seqKey(seq), tx.Bucket(bucketLog).Get(seqKey(seq)))
			if err != nil {
				return err
			}
			edit(&rec)
			b, _ := json.Marshal(rec)
			return tx.Bucket(bucketLog).Put(seqKey(seq), b)
		}
	}
	tests := []struct {
		name    string
		mutate  func(tx *bolt.Tx) error
		want    string // in the error
		records string // job whose Records must fail too, if any
	}{
		{"record not JSON", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Put(seqKey(3), []byte("{")) }, "record 3:", "B"},
		{"record under another seq", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLog).Put(seqKey(3), tx.Bucket(bucketLog).Get(seqKey(5)))
		}, "record under key 3 says seq 5", "B"},
		{"record without job", rewrite(2, func(r *Record) { r.Job = "" }), "record 2 has no job", "A"},
		{"unknown kind", rewrite(2, func(r *Record) { r.Kind = "bogus" }), "log/2: unknown record kind", ""},
		{"record missing", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(seqKey(3)) }, "log/3: missing (the record after 2 is 4", ""},
		{"records missing from the end", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).SetSequence(9) }, "log: records 7 to 9 are missing", ""},
		{"log key not a seq", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Put([]byte("x"), []byte("{}")) }, "log key 78", ""},
		{"snapshot disagrees", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put([]byte("A"), []byte(`{"job":"A","state":"running","last_seq":6}`))
		}, "jobs/A: snapshot (last seq 6) disagrees", ""},
		{"snapshot not JSON", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte("B"), []byte("[")) }, "jobs/B:", ""},
		{"snapshot of another job", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put([]byte("B"), tx.Bucket(bucketJobs).Get([]byte("A")))
		}, `jobs/B: snapshot of job "A"`, ""},
		{"snapshot missing", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Delete([]byte("B")) }, "jobs/B: no snapshot", ""},
		{"snapshot without records", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put([]byte("Z"), []byte(`{"job":"Z"}`))
		}, "jobs/Z: snapshot of a job without records", ""},
		{"index entry missing", setIndex(t, "A", 1, 2, 6), "jobrecs/A: record 4 of the job is not indexed", ""},
		{"index names another job's record", setIndex(t, "A", 1, 2, 3, 4, 6), "jobrecs/A/3: not a record of the job", "A"},
		{"index names a missing record", setIndex(t, "B", 3, 5, 99), "jobrecs/B/99", "B"},
		{"index of a job missing", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).Delete([]byte("B")) }, "jobrecs/B: no index", ""},
		{"index not packed", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).Put([]byte("A"), []byte{0x01, 0x80}) }, "jobrecs/A: truncated or overlong uvarint after record 1", "A"},
		{"index not ascending", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).Put([]byte("A"), []byte{0x01, 0x00}) }, "jobrecs/A: sequence numbers not ascending after record 1", "A"},
		{"index a bucket", func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketJobRecs).Delete([]byte("A")); err != nil {
				return err
			}
			_, err := tx.Bucket(bucketJobRecs).CreateBucket([]byte("A"))
			return err
		}, "jobrecs/A: a bucket, not a packed index", "A"},
		{"log sequence behind", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).SetSequence(2) }, "log sequence 2 is behind its last record 6", ""},
		{"schema not a number", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("two")) }, `schema version "two"`, ""},
		{"schema 4 without index", func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketJobRecs) }, "schema 4 without bucket jobrecs", ""},
		{"derived not a number", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyDerived, []byte("x")) }, `meta/derived "x" is not a sequence number`, ""},
		{"derived past the log", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyDerived, []byte("7")) }, "meta/derived 7 is past the last record 6", ""},
		{"derived missing", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyDerived) }, "schema 4 without meta/derived", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDamage(t, smallJournal(t), tt.mutate, tt.want, tt.records)
		})
	}
}

// TestCheckNamesBboltDamageWithoutPanic: a damaged meta page (its page id
// flipped) fails bbolt's own consistency check, whose checker reports it as
// a panic; Check's error says the file is corrupt, keeps bbolt's detail and
// does not say "panic".
func TestCheckNamesBboltDamageWithoutPanic(t *testing.T) {
	b, err := os.ReadFile(v1File)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1 // page 0's id: 1
	path := filepath.Join(t.TempDir(), "j.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err = Check(path)
	want := "journal file is corrupt: " + path + ": bbolt's consistency check: Page expected to be: 0, but self identifies as 1"
	if !errors.Is(err, ErrCorrupt) || err.Error() != want {
		t.Fatalf("Check = %v; want ErrCorrupt %q", err, want)
	}
}

func TestCheckErrorsThatAreNotCorruption(t *testing.T) {
	if err := Check(filepath.Join(t.TempDir(), "none.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	path := smallJournal(t)
	j := open(t, path)
	defer j.Close()
	if err := Check(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("check while open read-write: %v", err)
	}
}

// flipCase damages a copy of a sound file and requires Open to refuse it with
// ErrCorrupt or to open it; when it opens, reading it must not panic, and
// Check must pass or return ErrCorrupt. It reports which of those happened.
func flipCase(t *testing.T, path string, readOnly bool) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Sprintf("panic: %v", r)
			}
		}()
		j, err := Open(path, Options{ReadOnly: readOnly, NoSync: true})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerSchema) {
				done <- fmt.Sprintf("open: %v (not ErrCorrupt)", err)
				return
			}
			// The repair an operator would try, but not after a refused
			// read-write open: bbolt leaks the mapping of a file whose
			// read-write open panicked, and with it the file's lock, for
			// the rest of this process (start exits then; see openBolt).
			if readOnly {
				if _, err := Rebuild(path, RebuildVerifier{}); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerSchema) {
					done <- fmt.Sprintf("rebuild after a refused open: %v (not ErrCorrupt)", err)
					return
				}
			}
			done <- "open refused"
			return
		}
		// What the worker does with a journal it opened: every call either
		// works or says ErrCorrupt.
		var readErr error
		if err := j.Each(func(Record) error { return nil }); err != nil && !errors.Is(err, ErrCorrupt) {
			readErr = err
		}
		snaps, err := j.Snapshots()
		if err != nil && !errors.Is(err, ErrCorrupt) {
			readErr = err
		}
		for _, s := range snaps {
			if _, err := j.Records(s.Job); err != nil && !errors.Is(err, ErrCorrupt) {
				readErr = err
			}
		}
		if !readOnly && j.Schema() > 0 {
			j.Append(Record{Job: "new", Kind: KindProgress})
		}
		j.Close()
		if readErr != nil {
			done <- fmt.Sprintf("read: %v (not ErrCorrupt)", readErr)
			return
		}
		switch err := Check(path); {
		case err == nil:
			done <- "check passed"
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNewerSchema):
			// The repair an operator would try: it works, or refuses
			// with ErrCorrupt; what it rebuilt checks sound unless the
			// damage is outside the derived data.
			switch _, err := Rebuild(path, RebuildVerifier{}); {
			case err == nil:
				if err := Check(path); err != nil && !errors.Is(err, ErrCorrupt) {
					done <- fmt.Sprintf("check after rebuild: %v (not ErrCorrupt)", err)
					return
				}
			case !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerSchema):
				done <- fmt.Sprintf("rebuild: %v (not ErrCorrupt)", err)
				return
			}
			done <- "check refused"
		default:
			done <- fmt.Sprintf("check: %v (not ErrCorrupt)", err)
		}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer after 30s (hang)", path)
		return ""
	}
}

func TestDamagedFilesNeverPanic(t *testing.T) {
	v2 := v1FileCopy(t)
	j := open(t, v2) // the committed file, upgraded
	j.Close()
	sources := map[string][]byte{}
	for name, p := range map[string]string{"v1": v1File, "v2": v2} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sources[name] = b
	}
	n := 600
	if testing.Short() {
		n = 100
	}
	rng := rand.New(rand.NewPCG(2025, 3))
	dir := t.TempDir()
	tally := map[string]int{}
	for i := 0; i < n; i++ {
		name := []string{"v1", "v2"}[i%2]
		b := append([]byte(nil), sources[name]...)
		pages := len(b) / 4096
		var off int
		switch i % 4 {
		case 0: // a page header: id, flags, count, overflow
			off = rng.IntN(pages)*4096 + rng.IntN(pageHeaderSize)
		case 1: // an element table or the meta
			off = rng.IntN(pages)*4096 + pageHeaderSize + rng.IntN(256)
		default: // anywhere
			off = rng.IntN(len(b))
		}
		b[off] ^= byte(1 + rng.IntN(255))
		if i%8 == 7 { // and a second byte elsewhere
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.db", name, i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got := flipCase(t, path, i%3 == 0)
		switch got {
		case "open refused", "check refused", "check passed":
			tally[got]++
		default:
			t.Errorf("%s flip %d at offset %d (page %d + %d): %s", name, i, off, off/4096, off%4096, got)
		}
		os.Remove(path)
	}
	t.Logf("%d damaged files: %v", n, tally)
	if tally["open refused"] == 0 || tally["check refused"]+tally["check passed"] == 0 {
		t.Fatalf("flips exercised one outcome only: %v", tally)
	}
}

func TestTruncatedEmptyAndDirectory(t *testing.T) {
	src, err := os.ReadFile(v1File)
	if err != nil {
		t.Fatal(err)
	}
	used := int(usedBytes(t, v1File)) // bbolt grows files ahead of use
	if used >= len(src) {
		t.Fatalf("the testdata file has no unused tail (%d of %d bytes used)", used, len(src))
	}
	dir := t.TempDir()
	for _, n := range []int{1, 100, 4095, 4096, 8192, 8193, 3 * 4096, used / 2, used - 4096, used - 1} {
		path := filepath.Join(dir, fmt.Sprintf("trunc-%d.db", n))
		if err := os.WriteFile(path, src[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{true, false} {
			j, err := Open(path, Options{ReadOnly: ro})
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("truncated to %d bytes, read-only %v: %v", n, ro, err)
			}
			if err == nil {
				j.Close()
			}
		}
		if err := Check(path); !errors.Is(err, ErrCorrupt) {
			t.Errorf("check of a file truncated to %d bytes: %v", n, err)
		}
		if b, _ := os.ReadFile(path); len(b) != n {
			t.Errorf("truncated file of %d bytes now has %d", n, len(b))
		}
	}

	// Cutting the unused tail loses nothing.
	tail := filepath.Join(dir, "tail.db")
	if err := os.WriteFile(tail, src[:used], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(tail); err != nil {
		t.Fatalf("file without its unused tail: %v", err)
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(empty, Options{ReadOnly: true}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "zero length") {
		t.Fatalf("read-only open of a zero-length file: %v", err)
	}
	if err := Check(empty); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("check of a zero-length file: %v", err)
	}
	j, err := Open(empty, Options{}) // a journal never initialised: initialised now
	if err != nil {
		t.Fatalf("read-write open of a zero-length file: %v", err)
	}
	snaps, err := j.Snapshots()
	if j.Schema() != SchemaVersion || err != nil || len(snaps) != 0 {
		t.Fatalf("zero-length file opened as schema %d with %d snapshots (%v)", j.Schema(), len(snaps), err)
	}
	j.Close()
	if err := Check(empty); err != nil {
		t.Fatalf("check after initialising: %v", err)
	}

	d := filepath.Join(dir, "dir.db")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{true, false} {
		if _, err := Open(d, Options{ReadOnly: ro}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("directory, read-only %v: %v", ro, err)
		}
	}
	if err := Check(d); !errors.Is(err, ErrCorrupt) {
		t.Errorf("check of a directory: %v", err)
	}
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal.db")
	at := time.Date(2025, 3, 14, 9, 26, 53, 0, time.FixedZone("CET", 3600))
	now = func() time.Time { return at }
	t.Cleanup(func() { now = time.Now })

	for i, want := range []string{
		path + ".corrupt-20250314T082653Z",
		path + ".corrupt-20250314T082653Z-1",
		path + ".corrupt-20250314T082653Z-2",
	} {
		content := fmt.Sprint("damaged journal ", i)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Quarantine(path)
		if err != nil || got != want {
			t.Fatalf("quarantine %d: %q, %v; want %q", i, got, err, want)
		}
		if b, _ := os.ReadFile(got); string(b) != content {
			t.Fatalf("quarantined file %s holds %q", got, b)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s still there after quarantine: %v", path, err)
		}
	}
	if b, _ := os.ReadFile(path + ".corrupt-20250314T082653Z"); string(b) != "damaged journal 0" {
		t.Fatalf("first quarantined file overwritten: %q", b)
	}

	// A directory in place of the journal is moved aside too.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := Quarantine(path)
	if fi, statErr := os.Stat(got); err != nil || statErr != nil || !fi.IsDir() || got != path+".corrupt-20250314T082653Z-3" {
		t.Fatalf("quarantine of a directory: %q, %v", got, err)
	}

	if _, err := Quarantine(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("quarantine of nothing: %v", err)
	}

	j := open(t, path)
	defer j.Close()
	if _, err := Quarantine(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("quarantine of an open journal: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("open journal moved: %v", err)
	}
}

// usedBytes is the size of the pages below the file's high-water mark.
func usedBytes(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	w := &pageWalker{f: f, size: fi.Size()}
	m, err := w.meta()
	if err != nil {
		t.Fatal(err)
	}
	return int64(m.hwm * w.pageSize)
}

// TestPrintableErrors: the bytes of a damaged key never reach an error
// raw, and a long bbolt key is shortened.
func TestPrintableErrors(t *testing.T) {
	for in, want := range map[string]string{
		"jobs/abc: ok":           "jobs/abc: ok",
		"jobs/a\x01b\xffc":       `jobs/a\x01b\xffc`,
		"snapshot of \"jöb\" ✓":  "snapshot of \"jöb\" ✓",
		"tab\there\nnewline\x7f": `tab\there\nnewline\x7f`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := hexKey(bytes.Repeat([]byte{0xab}, 150)); got != "abababababababababababababababab… (150 bytes)" {
		t.Errorf("hexKey of 150 bytes = %q", got)
	}
	if got := hexKey([]byte{1, 2}); got != "0102" {
		t.Errorf("hexKey = %q", got)
	}
	// A snapshot whose key and value are damaged bytes: Check's error
	// holds only printable text.
	path := smallJournal(t)
	mutate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte("B\x01\xfe"), []byte("\x01\x0a\xff\x00"))
	})
	err := Check(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `jobs/B\x01\xfe`) {
		t.Fatalf("check: %v", err)
	}
	for _, r := range err.Error() {
		if r == utf8.RuneError || (!unicode.IsPrint(r) && r != ' ') {
			t.Fatalf("check's error holds %U: %q", r, err.Error())
		}
	}
}
