package journal

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestAppendSnapshotAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	j := open(t, path)
	steps := []Record{
		{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindIntent, Intent: IntentTx, Tx: &TxIntent{Instruction: "work_job", Signature: "sig1", Raw: []byte{1, 2}, LastValidBlockHeight: 150}},
		{Job: "B", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindTransition, Event: "claim", From: "polled", To: "claimed", Fields: map[string]string{"claim_sig": "sig1"}},
		{Job: "A", Kind: KindIntent, Intent: IntentContainer, Container: &ContainerIntent{ID: "hn-A-1", Attempt: 1, Deadline: time.Unix(100, 0).UTC()}},
	}
	for i, r := range steps {
		got, err := j.Append(r)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != uint64(i+1) || got.At.IsZero() {
			t.Fatalf("record %d: seq %d at %v", i, got.Seq, got.At)
		}
	}
	snap, err := j.Snapshot("A")
	if err != nil {
		t.Fatal(err)
	}
	if snap.State != "claimed" || snap.Tx != nil || snap.Container == nil || snap.Container.ID != "hn-A-1" || snap.Fields["claim_sig"] != "sig1" || snap.LastSeq != 5 {
		t.Fatalf("snapshot %+v", snap)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, path)
	defer j.Close()
	recs, err := j.Records("A")
	if err != nil || len(recs) != 4 || recs[1].Tx.Signature != "sig1" || string(recs[1].Tx.Raw) != "\x01\x02" {
		t.Fatalf("records after reopen: %+v %v", recs, err)
	}
	snaps, _ := j.Snapshots()
	if len(snaps) != 2 || snaps[0].Job != "A" || snaps[1].State != "polled" {
		t.Fatalf("snapshots %+v", snaps)
	}
	if _, err := j.Snapshot("C"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing job: %v", err)
	}
}

func TestAppendRejectsBadRecords(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if _, err := j.Append(Record{Kind: KindTransition}); err == nil {
		t.Fatal("record without job accepted")
	}
	if _, err := j.Append(Record{Job: "A", Kind: "bogus"}); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	defer j.Close()
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another hypernode-worker") {
		t.Fatalf("second open: %v", err)
	}
}

func TestCorruptFilesGiveClearErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	after, _ := os.ReadFile(garbage)
	if !strings.HasPrefix(string(after), "not a bbolt file") {
		t.Fatal("corrupt file was overwritten")
	}

	truncated := filepath.Join(dir, "truncated.db")
	j := open(t, truncated)
	j.Append(Record{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"})
	j.Close()
	if err := os.Truncate(truncated, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(truncated, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}

	newer := filepath.Join(dir, "newer.db")
	db, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketLog, bucketJobs} {
			tx.CreateBucket(b)
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("99"))
	})
	db.Close()
	// A newer worker's journal is not corrupt: nothing may quarantine it.
	before := fileSum(t, newer)
	for _, ro := range []bool{false, true} {
		if _, err := Open(newer, Options{ReadOnly: ro}); !errors.Is(err, ErrNewerSchema) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "schema version 99 is newer") {
			t.Fatalf("newer schema (read-only %v): %v", ro, err)
		}
	}
	if err := Check(newer); !errors.Is(err, ErrNewerSchema) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("check of a newer schema: %v", err)
	}
	if fileSum(t, newer) != before {
		t.Fatal("the newer journal was changed")
	}
}

func TestReadOnlyOpenOfMissingFile(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open created a journal")
	}
}

func TestRecordsIndexMatchesScan(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if j.Schema() != SchemaVersion {
		t.Fatalf("new journal has schema %d", j.Schema())
	}
	jobs := []string{"A", "B", "C", "AB", "a"}
	for i := 0; i < 60; i++ {
		job := jobs[(i*7)%len(jobs)]
		if _, err := j.Append(Record{Job: job, Kind: KindProgress, Fields: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, job := range append(jobs, "missing", "") {
		got, err := j.Records(job)
		if err != nil {
			t.Fatal(err)
		}
		want, err := j.scanRecords(job)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("job %q: index gives %d records, scan %d", job, len(got), len(want))
		}
		if job == "A" && len(got) != 12 {
			t.Fatalf("job A: %d records, want 12", len(got))
		}
	}
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func schemaOf(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get(keySchema))
		if tx.Bucket(bucketJobRecs) != nil {
			v += "+jobrecs"
		}
		return nil
	})
	return v
}

// v1Content is what a schema-1 file holds, read without upgrading it.
type v1Content struct {
	all   []Record
	byJob map[string][]Record
	snaps []Snapshot
}

func readV1(t *testing.T, path string) v1Content {
	t.Helper()
	j, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Schema() != 1 {
		t.Fatalf("read-only open of a schema-1 file reports schema %d", j.Schema())
	}
	var c v1Content
	c.byJob = map[string][]Record{}
	if err := j.Each(func(r Record) error { c.all = append(c.all, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if c.snaps, err = j.Snapshots(); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.snaps {
		if c.byJob[s.Job], err = j.Records(s.Job); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestUpgradeCommittedV1File(t *testing.T) {
	before := fileSum(t, v1File)
	path := v1FileCopy(t)
	if got := schemaOf(t, path); got != "1" {
		t.Fatalf("testdata file has schema %q, want 1 without jobrecs", got)
	}
	v1 := readV1(t, path)
	if len(v1.all) != 40 || len(v1.snaps) != 5 {
		t.Fatalf("testdata file: %d records, %d snapshots; want 40 and 5", len(v1.all), len(v1.snaps))
	}
	states := map[string]int{}
	for _, s := range v1.snaps {
		states[s.State]++
	}
	if !reflect.DeepEqual(states, map[string]int{"finished": 1, "lost": 1, "running": 1, "uploaded": 1, "abandoned": 1}) {
		t.Fatalf("testdata states %v", states)
	}
	if got := schemaOf(t, path); got != "1" {
		t.Fatalf("read-only open changed the file: schema %q", got)
	}
	if err := Check(path); err != nil {
		t.Fatalf("check of the schema-1 file: %v", err)
	}

	j := open(t, path) // upgrades
	if j.Schema() != SchemaVersion {
		t.Fatalf("after upgrade Schema() = %d", j.Schema())
	}
	snaps, err := j.Snapshots()
	if err != nil || !reflect.DeepEqual(snaps, v1.snaps) {
		t.Fatalf("snapshots changed by the upgrade (%v)", err)
	}
	for job, want := range v1.byJob {
		got, err := j.Records(job)
		if err != nil {
			t.Fatal(err)
		}
		scan, err := j.scanRecords(job)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got, scan) {
			t.Fatalf("job %s: %d indexed records, %d in the schema-1 file, %d by scan", job, len(got), len(want), len(scan))
		}
	}
	// Appends after the upgrade are indexed.
	job := v1.snaps[0].Job
	rec, err := j.Append(Record{Job: job, Kind: KindProgress, Fields: map[string]string{"op.2.exit": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := j.Records(job)
	if rec.Seq != 41 || len(recs) != len(v1.byJob[job])+1 || recs[len(recs)-1].Seq != 41 {
		t.Fatalf("append after upgrade: seq %d, %d records", rec.Seq, len(recs))
	}
	j.Close()
	if got := schemaOf(t, path); got != "4+jobrecs" {
		t.Fatalf("upgraded file: schema %q", got)
	}
	if err := Check(path); err != nil {
		t.Fatalf("check after upgrade: %v", err)
	}
	j = open(t, path)
	if j.Schema() != SchemaVersion {
		t.Fatalf("reopen: schema %d", j.Schema())
	}
	j.Close()
	if fileSum(t, v1File) != before {
		t.Fatal("the committed testdata file changed")
	}
}

func TestFailedUpgradeLeavesSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := openSchema(path, Options{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if _, err := j.Append(Record{Job: fmt.Sprint("job", i%3), Kind: KindProgress, Fields: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	// Record 20 stops decoding: the upgrade fails two thirds of the way
	// through its transaction, after indexing records 1..19.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Put(seqKey(20), []byte(`{"seq":20,"job":`)) })
	db.Close()
	before := fileSum(t, path)

	_, err = Open(path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "upgrade from schema 1") || !strings.Contains(err.Error(), "record 20") {
		t.Fatalf("open: %v", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("the failed upgrade changed the file")
	}
	if got := schemaOf(t, path); got != "1" {
		t.Fatalf("after the failed upgrade: schema %q", got)
	}
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Records("job1"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record 20") {
		t.Fatalf("records of the damaged schema-1 file: %v", err)
	}
}

func TestReadOnlyOpenOfEmptyBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	db, err := bolt.Open(path, 0o600, nil) // bbolt initialised, no journal buckets yet
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	j, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	recs, err := j.Records("A")
	if j.Schema() != 0 || err != nil || len(recs) != 0 {
		t.Fatalf("schema %d, records %v, %v", j.Schema(), recs, err)
	}
	if err := Check(path); err != nil {
		t.Fatalf("check of an empty journal: %v", err)
	}
}

// benchRecord is the record BenchmarkAppend appends: a progress record of
// the size the driver writes after an operation.
var benchRecord = Record{Job: "J57Ypo8mm2AmFXtQSeNNG4ZRfdoSXsjmyqCGt94qJutd", Kind: KindProgress, Fields: map[string]string{"op.0.exit": "0"}}

func BenchmarkAppend(b *testing.B) {
	j, err := Open(filepath.Join(b.TempDir(), "j.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := j.Append(benchRecord); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendSchema1 is BenchmarkAppend without the schema-2 index: what
// the index costs an append.
func BenchmarkAppendSchema1(b *testing.B) {
	j, err := openSchema(filepath.Join(b.TempDir(), "j.db"), Options{}, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := j.Append(benchRecord); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareBoltUpdate is BenchmarkAppend's floor: the same record bytes
// put under the next sequence number of one bucket in a bbolt Update, fsync
// on, without snapshot or index, with the journal's bbolt options (no freelist
// written per commit).
func BenchmarkBareBoltUpdate(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bare.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rec := benchRecord
	rec.Seq, rec.At = 1, time.Now().UTC()
	val, _ := json.Marshal(rec)
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketLog); return err }); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketLog)
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			return bk.Put(seqKey(seq), val)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// buildJournal writes n records over jobs jobs (interleaved, as concurrent
// jobs write them) through appendTx, 5000 to a transaction, and returns the
// journal reopened with fsync on.
func buildJournal(b testing.TB, path string, n, jobs int) *Journal {
	b.Helper()
	return buildJournalSchema(b, path, n, jobs, SchemaVersion)
}

func buildJournalSchema(b testing.TB, path string, n, jobs, schema int) *Journal {
	b.Helper()
	j, err := openSchema(path, Options{NoSync: true}, schema)
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		var batch []Record
		func() {
			for k := 0; k < 5000 && done < n; k, done = k+1, done+1 {
				rec := Record{Job: fmt.Sprintf("job%04d", done%jobs), Kind: KindProgress, At: at.Add(time.Duration(done) * time.Millisecond),
					Fields: map[string]string{"op.0.exit": "0", "op.0.ms": fmt.Sprint(done)}}
				if done%jobs == 0 {
					rec = Record{Job: rec.Job, Kind: KindIntent, At: rec.At, Intent: IntentTx,
						Tx: &TxIntent{Instruction: "finish_job", Signature: strings.Repeat("5", 88), Raw: make([]byte, 300), LastValidBlockHeight: 2800150}}
				}
				batch = append(batch, rec)
			}
		}()
		if _, err := j.AppendBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	j.Close()
	if j, err = openSchema(path, Options{}, schema); err != nil {
		b.Fatal(err)
	}
	return j
}

// BenchmarkRecordsOneJob reads one job's 100 records out of 100 000 (1 000
// jobs): through the schema-2 index, and by the schema-1 scan of the log.
func BenchmarkRecordsOneJob(b *testing.B) {
	j := buildJournal(b, filepath.Join(b.TempDir(), "j.db"), 100_000, 1_000)
	defer j.Close()
	for _, bm := range []struct {
		name    string
		records func(string) ([]Record, error)
	}{{"index", j.Records}, {"scan", j.scanRecords}} {
		b.Run(bm.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				recs, err := bm.records(fmt.Sprintf("job%04d", i%1000))
				if err != nil || len(recs) != 100 {
					b.Fatalf("%d records, %v", len(recs), err)
				}
			}
		})
	}
}

// BenchmarkOpen100k measures Open's page check on the 100 000-record file
// against a bare bbolt open of the same file (both read-only).
func BenchmarkOpen100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "j.db")
	buildJournal(b, path, 100_000, 1_000).Close()
	if fi, err := os.Stat(path); err == nil {
		b.Logf("file: %d bytes", fi.Size())
	}
	b.Run("journal", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			j, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			j.Close()
		}
	})
	b.Run("bare-bolt", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
}

// TestDamageDetail: what bbolt panics with, or its checker reports as a
// panic, is kept without the words of the mechanism.
func TestDamageDetail(t *testing.T) {
	var idx []int
	i := 5
	runtimeErr := func() (r any) {
		defer func() { r = recover() }()
		_ = idx[i]
		return nil
	}()
	for _, tt := range []struct {
		in   any
		want string
	}{
		{"assertion failed: page 7: has unexpected type/flags: 20", "page 7: has unexpected type/flags: 20"},
		{errors.New("panic: assertion failed: Page expected to be: 0, but self identifies as 1"), "Page expected to be: 0, but self identifies as 1"},
		{"freepages: failed to get all reachable pages (key[3] on leaf page(9))", "freepages: failed to get all reachable pages (key[3] on leaf page(9))"},
		{runtimeErr, "index out of range [5] with length 0"},
	} {
		if got := damageDetail(tt.in); got != tt.want {
			t.Errorf("damageDetail(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestPanicsInsideTransactions(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if _, err := j.Append(Record{Job: "A", Kind: KindProgress}); err != nil {
		t.Fatal(err)
	}
	// A bbolt panic (here simulated) is ErrCorrupt, and the transaction is
	// rolled back: the journal stays usable.
	err := j.update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketLog).Put(seqKey(99), []byte("{}"))
		panic("assertion failed: read: zero-length inode key")
	})
	// It says the file is damaged, with bbolt's detail, not that something
	// panicked (an operator reads that as a crash of the worker).
	if want := "journal file is corrupt: " + j.path + ": bbolt could not read it: read: zero-length inode key"; !errors.Is(err, ErrCorrupt) || err.Error() != want {
		t.Fatalf("panic in update: %v; want ErrCorrupt %q", err, want)
	}
	if rec, err := j.Append(Record{Job: "A", Kind: KindProgress}); err != nil || rec.Seq != 2 {
		t.Fatalf("append after the rolled-back panic: seq %d, %v", rec.Seq, err)
	}
	// A panic of Each's callback is the caller's: it is not turned into an error.
	defer func() {
		if r := recover(); r != "caller bug" {
			t.Fatalf("Each's callback panic came back as %v", r)
		}
	}()
	j.Each(func(Record) error { panic("caller bug") })
	t.Fatal("Each returned after its callback panicked")
}
