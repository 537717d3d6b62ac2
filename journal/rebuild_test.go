package journal

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// rebuildFixture writes a journal of 200 records of five jobs, checkpointed,
// and returns its path with the jobs' snapshots and records as written.
func rebuildFixture(t *testing.T, schema int) (string, map[string]Snapshot, map[string][]Record) {
	t.Helper()
	smallCheckpoints(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := openSchema(path, Options{}, schema)
	if err != nil {
		t.Fatal(err)
	}
	jobs := []string{"a", "b", "c", "d", "e"}
	appendAll(t, j, 200, jobs)
	snaps, recs := map[string]Snapshot{}, map[string][]Record{}
	for _, job := range jobs {
		if snaps[job], err = j.Snapshot(job); err != nil {
			t.Fatal(err)
		}
		if recs[job], err = j.Records(job); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return path, snaps, recs
}

// copyOf copies src into a new temporary directory and returns the copy.
func copyOf(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	copyFile(t, src, dst)
	return dst
}

// TestRebuildRepairsDerivedData: each kind of damage to the derived data
// (snapshots, index, meta/derived, the log's sequence) is found by Check and
// repaired by Rebuild, after which the journal checks sound and gives every
// job's snapshot and records as they were written.
func TestRebuildRepairsDerivedData(t *testing.T) {
	orig, snaps, recs := rebuildFixture(t, SchemaVersion)
	for _, tt := range []struct {
		name   string
		damage func(tx *bolt.Tx) error
	}{
		{"snapshot not decodable", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte("a"), []byte{0x01, 0xff}) }},
		{"snapshot of another job", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put([]byte("b"), tx.Bucket(bucketJobs).Get([]byte("a")))
		}},
		{"snapshot without records", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte("zzz"), []byte(`{"job":"zzz"}`)) }},
		{"snapshots gone", func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketJobs) }},
		{"index truncated", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).Put([]byte("b"), []byte{0x80}) }},
		{"index short of a record", setIndex(t, "c", 3, 8)},
		{"index a bucket", func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketJobRecs).Delete([]byte("c")); err != nil {
				return err
			}
			_, err := tx.Bucket(bucketJobRecs).CreateBucket([]byte("c"))
			return err
		}},
		{"meta/derived not a number", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyDerived, []byte("x")) }},
		{"log sequence behind", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).SetSequence(2) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := copyOf(t, orig)
			mutate(t, path, tt.damage)
			if err := Check(path); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("check of the damaged file: %v", err)
			}
			rep, err := Rebuild(path, RebuildVerifier{})
			if err != nil || rep.Records != 200 || rep.Jobs != 5 || rep.FromSchema != SchemaVersion {
				t.Fatalf("rebuild: %+v, %v", rep, err)
			}
			if err := Check(path); err != nil {
				t.Fatalf("check after rebuild: %v", err)
			}
			assertJobs(t, path, snaps, recs)
		})
	}
}

// assertJobs opens path read-write and compares every job with what was
// written, and checks that the next append continues the log.
func assertJobs(t *testing.T, path string, snaps map[string]Snapshot, recs map[string][]Record) {
	t.Helper()
	j := open(t, path)
	defer j.Close()
	all, err := j.Snapshots()
	if err != nil || len(all) != len(snaps) {
		t.Fatalf("snapshots: %d, %v; want %d", len(all), err, len(snaps))
	}
	for _, s := range all {
		if !sameSnapshot(s, snaps[s.Job]) {
			t.Errorf("snapshot of %s\n got %+v\nwant %+v", s.Job, s, snaps[s.Job])
		}
		got, err := j.Records(s.Job)
		if err != nil || !reflect.DeepEqual(seqsOf(got), seqsOf(recs[s.Job])) {
			t.Errorf("records of %s: %v, %v; want %v", s.Job, seqsOf(got), err, seqsOf(recs[s.Job]))
		}
	}
	if r, err := j.Append(Record{Job: "a", Kind: KindProgress}); err != nil || r.Seq != 201 {
		t.Fatalf("append after rebuild: seq %d, %v", r.Seq, err)
	}
}

func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

// TestRebuildUpgradesSchema3: Rebuild of a schema-3 file writes schema 4.
func TestRebuildUpgradesSchema3(t *testing.T) {
	path, snaps, recs := rebuildFixture(t, 3)
	mutate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte("d"), []byte("[")) })
	rep, err := Rebuild(path, RebuildVerifier{})
	if err != nil || rep.FromSchema != 3 {
		t.Fatalf("rebuild: %+v, %v", rep, err)
	}
	if got := schemaOf(t, path); got != fmt.Sprintf("%d+jobrecs", SchemaVersion) {
		t.Fatalf("schema after rebuild %q", got)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
	assertJobs(t, path, snaps, recs)
}

// TestRebuildRefuses: a damaged log record, a held lock and a newer
// worker's journal are refused, and the file is left as it was.
func TestRebuildRefuses(t *testing.T) {
	orig, _, _ := rebuildFixture(t, SchemaVersion)

	path := copyOf(t, orig)
	mutate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Put(seqKey(7), []byte("{")) })
	before := fileSum(t, path)
	if _, err := Rebuild(path, RebuildVerifier{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record 7") || !strings.Contains(err.Error(), "the log itself is damaged") {
		t.Fatalf("rebuild over a damaged record: %v", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("a refused rebuild changed the file")
	}

	// Records lost, or a log the worker could not have written: refused
	// before anything is written, so the evidence stays.
	for _, tt := range []struct {
		name   string
		damage func(tx *bolt.Tx) error
		rv     RebuildVerifier
		want   string
	}{
		{"last record lost", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(seqKey(200)) }, RebuildVerifier{}, "records 200 to 200 are missing"},
		{"last record and sequence lost", func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketLog).Delete(seqKey(200)); err != nil {
				return err
			}
			return tx.Bucket(bucketLog).SetSequence(199)
		}, RebuildVerifier{}, "meta/derived 200 is past the last record 199"},
		{"a record lost", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(seqKey(100)) }, RebuildVerifier{}, "log/100: missing"},
		{"unknown kind", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLog).Put(seqKey(100), []byte(`{"seq":100,"job":"a","kind":"bogus"}`))
		}, RebuildVerifier{}, `log/100: unknown record kind "bogus"`},
		{"the caller's check", func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Delete([]byte("a")) },
			RebuildVerifier{Done: func() error { return errors.New("lifecycle broken") }}, "lifecycle broken"},
	} {
		path := copyOf(t, orig)
		mutate(t, path, tt.damage)
		before := fileSum(t, path)
		if _, err := Rebuild(path, tt.rv); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: rebuild: %v; want ErrCorrupt naming %q", tt.name, err, tt.want)
		}
		if fileSum(t, path) != before {
			t.Errorf("%s: a refused rebuild changed the file", tt.name)
		}
		if err := Check(path); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: check: %v", tt.name, err)
		}
	}

	path = copyOf(t, orig)
	j := open(t, path)
	if _, err := Rebuild(path, RebuildVerifier{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("rebuild while open: %v", err)
	}
	j.Close()

	path = copyOf(t, orig)
	mutate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("99")) })
	before = fileSum(t, path)
	if _, err := Rebuild(path, RebuildVerifier{}); !errors.Is(err, ErrNewerSchema) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("rebuild of a newer journal: %v", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("a refused rebuild changed the newer journal")
	}
}
