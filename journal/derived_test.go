package journal

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// smallCheckpoints makes the test checkpoint every 64 records.
func smallCheckpoints(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = 64
	t.Cleanup(func() { checkpointEvery = old })
}

// derivedOf reads meta/derived of a closed journal file.
func derivedOf(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error { v = string(tx.Bucket(bucketMeta).Get(keyDerived)); return nil })
	return v
}

// appendAll appends n progress records round-robin over jobs and returns the
// expected snapshot fields and record counts.
func appendAll(t *testing.T, j *Journal, n int, jobs []string) map[string]int {
	t.Helper()
	count := map[string]int{}
	for i := 0; i < n; i++ {
		job := jobs[i%len(jobs)]
		if _, err := j.Append(Record{Job: job, Kind: KindProgress, Fields: map[string]string{"i": strconv.Itoa(i), job: "x"}}); err != nil {
			t.Fatal(err)
		}
		count[job]++
	}
	return count
}

// TestCrashLosesOnlyTheOverlay: records acknowledged but not yet checkpointed
// are in the log only; a process that dies there (the file closed without
// Close's checkpoint) leaves a journal whose read-only Open folds the tail in
// memory (the file unchanged) and whose read-write Open checkpoints it: both
// give the same snapshots and records as the live journal did.
func TestCrashLosesOnlyTheOverlay(t *testing.T) {
	smallCheckpoints(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	jobs := []string{"a", "b", "c"}
	n := checkpointEvery + checkpointEvery/2
	count := appendAll(t, j, n, jobs)
	if j.ov.derived != uint64(checkpointEvery) || j.ov.pending != n-checkpointEvery {
		t.Fatalf("overlay: derived %d, pending %d; want %d, %d", j.ov.derived, j.ov.pending, checkpointEvery, n-checkpointEvery)
	}
	live, err := j.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	liveRecs := map[string][]Record{}
	for _, job := range jobs {
		if liveRecs[job], err = j.Records(job); err != nil || len(liveRecs[job]) != count[job] {
			t.Fatalf("live records of %s: %d, %v; want %d", job, len(liveRecs[job]), err, count[job])
		}
	}
	j.db.Close() // the crash: no checkpoint
	if got := derivedOf(t, path); got != strconv.Itoa(checkpointEvery) {
		t.Fatalf("meta/derived after the crash = %s, want %d", got, checkpointEvery)
	}
	if err := Check(path); err != nil {
		t.Fatalf("check with an unfolded tail: %v", err)
	}
	before := fileSum(t, path)

	for _, readOnly := range []bool{true, false} {
		j, err := Open(path, Options{ReadOnly: readOnly})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := j.Snapshots()
		if err != nil || !reflect.DeepEqual(snaps, live) {
			t.Errorf("read-only %v: snapshots after the crash differ from the live ones (%v)\n got %+v\nwant %+v", readOnly, err, snaps, live)
		}
		for _, job := range jobs {
			recs, err := j.Records(job)
			if err != nil || !reflect.DeepEqual(recs, liveRecs[job]) {
				t.Errorf("read-only %v: records of %s after the crash: %d, %v; want %d", readOnly, job, len(recs), err, len(liveRecs[job]))
			}
			s, err := j.Snapshot(job)
			if err != nil || s.LastSeq != liveRecs[job][len(liveRecs[job])-1].Seq {
				t.Errorf("read-only %v: snapshot of %s: %+v, %v", readOnly, job, s, err)
			}
		}
		if readOnly {
			j.Close()
			if fileSum(t, path) != before {
				t.Fatal("a read-only open changed the file")
			}
			continue
		}
		// The read-write Open checkpointed the tail: nothing is pending.
		if j.ov.pending != 0 || j.ov.derived != uint64(n) {
			t.Errorf("read-write open: pending %d, derived %d; want 0, %d", j.ov.pending, j.ov.derived, n)
		}
		j.Close()
		if got := derivedOf(t, path); got != strconv.Itoa(n) {
			t.Errorf("meta/derived after a read-write open = %s, want %d", got, n)
		}
	}
	if err := Check(path); err != nil {
		t.Fatalf("check after recovery: %v", err)
	}
}

// TestCloseCheckpoints: a clean Close leaves nothing to fold.
func TestCloseCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	appendAll(t, j, 10, []string{"a", "b"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := derivedOf(t, path); got != "10" {
		t.Fatalf("meta/derived after Close = %s, want 10", got)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeSchema2And3: a schema-2 file (derived data with every record,
// no meta/derived) and a schema-3 file (the index a bucket per job; this one
// crashed with records after meta/derived) read as they are read-only and
// are upgraded read-write to schema 4: meta/derived at the last record, one
// packed index value per job covering every record.
func TestUpgradeSchema2And3(t *testing.T) {
	for _, schema := range []int{2, 3} {
		t.Run(fmt.Sprintf("schema%d", schema), func(t *testing.T) {
			smallCheckpoints(t)
			path := filepath.Join(t.TempDir(), "j.db")
			j, err := openSchema(path, Options{}, schema)
			if err != nil {
				t.Fatal(err)
			}
			count := appendAll(t, j, 100, []string{"a", "b", "c"})
			if schema == 3 {
				j.db.Close() // a crash: records 65..100 are after meta/derived
				if got := derivedOf(t, path); got != "64" {
					t.Fatalf("schema-3 file: meta/derived %s, want 64", got)
				}
			} else {
				j.Close()
			}
			if got := schemaOf(t, path); got != fmt.Sprintf("%d+jobrecs", schema) {
				t.Fatalf("schema-%d file: %q", schema, got)
			}
			if err := Check(path); err != nil {
				t.Fatalf("check of the schema-%d file: %v", schema, err)
			}
			ro, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if ro.Schema() != schema {
				t.Fatalf("read-only schema %d", ro.Schema())
			}
			if recs, err := ro.Records("b"); err != nil || len(recs) != count["b"] {
				t.Fatalf("read-only records of b: %d, %v", len(recs), err)
			}
			ro.Close()
			j = open(t, path)
			if j.Schema() != SchemaVersion || j.UpgradedFrom() != schema {
				t.Fatalf("after upgrade: schema %d, upgraded from %d", j.Schema(), j.UpgradedFrom())
			}
			appendAll(t, j, 5, []string{"a"})
			if recs, err := j.Records("a"); err != nil || len(recs) != count["a"]+5 {
				t.Fatalf("records of a after upgrade: %d, %v", len(recs), err)
			}
			j.Close()
			if got, d := schemaOf(t, path), derivedOf(t, path); got != "4+jobrecs" || d != "105" {
				t.Fatalf("upgraded file: schema %q, derived %q", got, d)
			}
			if err := Check(path); err != nil {
				t.Fatalf("check after upgrade: %v", err)
			}
			again := open(t, path)
			if again.UpgradedFrom() != 0 {
				t.Fatalf("a second open upgraded from %d", again.UpgradedFrom())
			}
			again.Close()
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.View(func(tx *bolt.Tx) error {
				idx := tx.Bucket(bucketJobRecs)
				for _, job := range []string{"a", "b", "c"} {
					seqs, err := decodeIndex(idx.Get([]byte(job)), nil)
					if err != nil || len(seqs) != count[job]+map[string]int{"a": 5}[job] {
						t.Errorf("jobrecs/%s: %d records packed, %v", job, len(seqs), err)
					}
				}
				return nil
			})
		})
	}
}

// TestReadersDuringCheckpoints: readers running while appends cross
// checkpoints never see a job's records go back, repeat or skip, nor its
// snapshot run behind the records they saw before (run with -race).
func TestReadersDuringCheckpoints(t *testing.T) {
	smallCheckpoints(t)
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	jobs := []string{"a", "b", "c", "d"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs))
	for _, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := 0
			var lastSeq uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				recs, err := j.Records(job)
				if err != nil {
					errs <- err
					return
				}
				if len(recs) < seen {
					errs <- fmt.Errorf("%s: %d records after %d", job, len(recs), seen)
					return
				}
				for i, r := range recs {
					if r.Fields["n"] != strconv.Itoa(i) {
						errs <- fmt.Errorf("%s: record %d is the job's #%s", job, i, r.Fields["n"])
						return
					}
				}
				seen = len(recs)
				s, err := j.Snapshot(job)
				if seen > 0 && (err != nil || s.LastSeq < recs[seen-1].Seq || s.LastSeq < lastSeq) {
					errs <- fmt.Errorf("%s: snapshot %+v (%v) behind record %d", job, s, err, recs[seen-1].Seq)
					return
				}
				lastSeq = s.LastSeq
			}
		}()
	}
	n := map[string]int{}
	for i := 0; i < 3*checkpointEvery; i++ {
		job := jobs[i%len(jobs)]
		if _, err := j.Append(Record{Job: job, Kind: KindProgress, Fields: map[string]string{"n": strconv.Itoa(n[job])}}); err != nil {
			t.Fatal(err)
		}
		n[job]++
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSnapshotCodec: a snapshot survives the binary format; a legacy JSON
// snapshot still reads; a record or garbage is refused with an error.
func TestSnapshotCodec(t *testing.T) {
	s := Snapshot{Job: "j", State: "running", LastSeq: 42, Updated: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Fields:    map[string]string{"claim_sig": "sig", "op.0.exit": "0"},
		Tx:        &TxIntent{Instruction: "finish_job", Signature: "s", Raw: []byte{1, 2}, LastValidBlockHeight: 9},
		Container: &ContainerIntent{ID: "hn-j-1", Attempt: 1, Deadline: time.Unix(100, 0).UTC(), GPUs: []string{"GPU-1"}, CPUs: 1.5, MemoryBytes: 1 << 30},
		Op:        &OpIntent{Index: 2}, Upload: &UploadIntent{What: "result", CID: "bafy"}}
	var got Snapshot
	if err := unmarshalSnapshot(marshalSnapshot(s), &got); err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("binary round trip: %+v, %v", got, err)
	}
	js, _ := json.Marshal(s)
	if err := unmarshalSnapshot(js, &got); err != nil || !reflect.DeepEqual(marshalSnapshot(got), marshalSnapshot(s)) {
		t.Fatalf("legacy JSON snapshot: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, []byte("["), marshalRecord(Record{Job: "j", Kind: KindProgress}), {0x01, 0xff}} {
		if err := unmarshalSnapshot(bad, &got); err == nil {
			t.Errorf("unmarshalSnapshot(%q) accepted", bad)
		}
	}
}

func FuzzUnmarshalSnapshot(f *testing.F) {
	f.Add(marshalSnapshot(Snapshot{Job: "j", State: "claimed", LastSeq: 3, Fields: map[string]string{"a": "b"}}))
	f.Add([]byte(`{"job":"j","state":"claimed","last_seq":3}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		var s Snapshot
		if err := unmarshalSnapshot(v, &s); err != nil || (len(v) > 0 && v[0] == '{') {
			return
		}
		var again Snapshot
		if err := unmarshalSnapshot(marshalSnapshot(s), &again); err != nil || !reflect.DeepEqual(marshalSnapshot(again), marshalSnapshot(s)) {
			t.Fatalf("re-encoded snapshot %+v does not round-trip: %+v, %v", s, again, err)
		}
	})
}

// TestSameSnapshotCoversEveryField: changing any one field of a snapshot,
// or of the intents it holds, makes sameSnapshot false (a field added later
// without a comparison fails here).
func TestSameSnapshotCoversEveryField(t *testing.T) {
	base := func() Snapshot {
		return Snapshot{Job: "j", State: "running", LastSeq: 4, Updated: time.Unix(5, 0).UTC(), Fields: map[string]string{"a": "b"},
			Tx:        &TxIntent{Instruction: "i", Signature: "s", Raw: []byte{1}, LastValidBlockHeight: 2},
			Container: &ContainerIntent{ID: "c", Attempt: 1, Deadline: time.Unix(9, 0).UTC(), Image: "img", GPUs: []string{"g"}, CPUs: 1, MemoryBytes: 3},
			Op:        &OpIntent{Index: 1}, Upload: &UploadIntent{What: "result", CID: "cid"}}
	}
	if !sameSnapshot(base(), base()) {
		t.Fatal("equal snapshots differ")
	}
	change := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Float64:
			v.SetFloat(v.Float() + 1)
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				v.SetBytes(append(v.Bytes(), 7))
			} else {
				v.Set(reflect.Append(v, reflect.ValueOf("more")))
			}
		case reflect.Map:
			v.SetMapIndex(reflect.ValueOf("new"), reflect.ValueOf("v"))
		case reflect.Struct: // time.Time
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Second)))
		case reflect.Pointer:
			v.Set(reflect.Zero(v.Type()))
		default:
			t.Fatalf("no way to change a %s", v.Kind())
		}
	}
	st := reflect.TypeOf(Snapshot{})
	for i := range st.NumField() {
		s := base()
		change(reflect.ValueOf(&s).Elem().Field(i))
		if sameSnapshot(s, base()) {
			t.Errorf("a change of %s goes unseen", st.Field(i).Name)
		}
		if f := st.Field(i); f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct {
			for k := range f.Type.Elem().NumField() {
				s := base()
				change(reflect.ValueOf(&s).Elem().Field(i).Elem().Field(k))
				if sameSnapshot(s, base()) {
					t.Errorf("a change of %s.%s goes unseen", f.Name, f.Type.Elem().Field(k).Name)
				}
			}
		}
	}
}

// FuzzDecodeIndex: a packed index from a damaged file never panics the
// decoder; what decodes ascends strictly and survives a re-encoding.
func FuzzDecodeIndex(f *testing.F) {
	for _, seed := range [][]byte{nil, {1}, {1, 1, 1}, {0x80}, {1, 0}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1}, {0x81, 0x00, 0x05}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		seqs, err := decodeIndex(v, nil)
		if err != nil {
			return
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%x decodes to %v: not ascending", v, seqs)
			}
		}
		if len(seqs) > 0 && seqs[0] == 0 {
			t.Fatalf("%x decodes to record 0", v)
		}
		enc, err := encodeIndex(nil, 0, seqs)
		if err != nil {
			t.Fatalf("re-encoding %v: %v", seqs, err)
		}
		again, err := decodeIndex(enc, nil)
		if err != nil || !slices.Equal(again, seqs) {
			t.Fatalf("%v re-encoded as %x decodes to %v, %v", seqs, enc, again, err)
		}
	})
}
