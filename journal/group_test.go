package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// jobLife is the transitions one job makes through the lifecycle, with the
// intents between them: what the driver appends for a job.
func jobLife(job string) []Record {
	tr := func(ev, from, to string) Record {
		return Record{Job: job, Kind: KindTransition, Event: ev, From: from, To: to}
	}
	return []Record{
		tr("poll", "", "polled"),
		{Job: job, Kind: KindIntent, Intent: IntentTx, Tx: &TxIntent{Instruction: "work_job", Signature: "sig-" + job, Raw: make([]byte, 300), LastValidBlockHeight: 150}},
		tr("claim", "polled", "claimed"),
		tr("fetch", "claimed", "fetched"),
		{Job: job, Kind: KindIntent, Intent: IntentContainer, Container: &ContainerIntent{ID: "hn-" + job + "-1", Attempt: 1, Deadline: time.Unix(100, 0).UTC(), GPUs: []string{"GPU-" + job}}},
		tr("start", "fetched", "running"),
	}
}

// TestGroupCommitConcurrent: 32 jobs appending at once all land, each job's
// records in its order with distinct sequence numbers, each Append returns
// its own record, and fewer transactions than records were committed.
func TestGroupCommitConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	const jobs = 32
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	for n := 0; n < jobs; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			job := fmt.Sprintf("job%02d", n)
			var last uint64
			for _, r := range jobLife(job) {
				got, err := j.Append(r)
				if err != nil {
					errs <- err
					return
				}
				if got.Job != job || got.Event != r.Event || got.Seq <= last {
					errs <- fmt.Errorf("%s: Append returned %+v after seq %d", job, got, last)
					return
				}
				last = got.Seq
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := jobs * len(jobLife("x"))
	if c := j.group.commits.Load(); c >= uint64(total) || c == 0 {
		t.Errorf("%d commits for %d records: appends did not share transactions", c, total)
	} else {
		t.Logf("%d records in %d commits", total, c)
	}
	j.Close()
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
	j = open(t, path)
	defer j.Close()
	seen := map[uint64]bool{}
	for n := 0; n < jobs; n++ {
		job := fmt.Sprintf("job%02d", n)
		recs, err := j.Records(job)
		if err != nil {
			t.Fatal(err)
		}
		want := jobLife(job)
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records after reopen, want %d", job, len(recs), len(want))
		}
		for i, r := range recs {
			if r.Kind != want[i].Kind || r.Event != want[i].Event || seen[r.Seq] {
				t.Fatalf("%s record %d: %+v", job, i, r)
			}
			seen[r.Seq] = true
		}
		snap, err := j.Snapshot(job)
		if err != nil || snap.State != "running" || snap.Container == nil || len(snap.Container.GPUs) != 1 {
			t.Fatalf("%s snapshot %+v, %v", job, snap, err)
		}
	}
}

// TestGroupCommitIsolatesBadRecord: a record that cannot be written (its
// job's stored snapshot does not decode) fails only its own Append when it
// shares a group with good ones.
func TestGroupCommitIsolatesBadRecord(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	// Make jobs/bad undecodable: deriving its snapshot then fails.
	if err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte("bad"), []byte("[")) }); err != nil {
		t.Fatal(err)
	}
	var batch []*pending
	for _, job := range []string{"good1", "bad", "good2"} {
		rec := Record{Job: job, Kind: KindProgress, At: time.Now()}
		prep, err := prepare(rec)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, &pending{rec: rec, prep: prep, wake: make(chan struct{}, 1)})
	}
	j.commit(batch)
	if batch[0].err != nil || batch[2].err != nil || batch[0].rec.Seq == 0 || batch[2].rec.Seq == 0 {
		t.Fatalf("good records: %+v %v / %+v %v", batch[0].rec, batch[0].err, batch[2].rec, batch[2].err)
	}
	if !errors.Is(batch[1].err, ErrCorrupt) {
		t.Fatalf("bad record: err %v, want ErrCorrupt", batch[1].err)
	}
	for _, job := range []string{"good1", "good2"} {
		if _, err := j.Snapshot(job); err != nil {
			t.Errorf("%s: %v", job, err)
		}
	}
}

// TestAppendBatch: all records land in order; an invalid one fails the
// batch before anything is written.
func TestAppendBatch(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	got, err := j.AppendBatch(jobLife("A"))
	if err != nil || len(got) != 6 || got[0].Seq != 1 || got[5].Seq != 6 {
		t.Fatalf("AppendBatch = %v, %v", got, err)
	}
	if _, err := j.AppendBatch([]Record{{Job: "B", Kind: KindProgress}, {Job: "B", Kind: "nonsense"}}); err == nil {
		t.Fatal("a batch with an unknown kind was written")
	}
	if _, err := j.Snapshot("B"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("job B after a failed batch: %v", err)
	}
}

// BenchmarkConcurrentJobs measures journal throughput with 1, 8 and 64 jobs
// in flight at once: each slot is a goroutine that appends a job's records
// (jobLife: poll, claim intent, claim, fetch, container intent, start; fsync
// on), then starts the next job, as a worker slot does. Metric:
// transitions/s (records of every kind made durable per second); the 1-job
// figure is the baseline.
func BenchmarkConcurrentJobs(b *testing.B) {
	for _, jobs := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("jobs=%d", jobs), func(b *testing.B) {
			j, err := Open(filepath.Join(b.TempDir(), "j.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			per := max(1, b.N/jobs)
			life := jobLife("x")
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for n := 0; n < jobs; n++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						r := life[i%len(life)]
						r.Job = fmt.Sprintf("job%02d-%d", n, i/len(life))
						if _, err := j.Append(r); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(per*jobs)/el.Seconds(), "transitions/s")
			b.ReportMetric(float64(per*jobs)/float64(j.group.commits.Load()), "records/commit")
		})
	}
}

// livesRecords are n records of successive jobs' first six records
// (jobLife), as the driver appends them: each job's index stays small.
func livesRecords(n int) []Record {
	out := make([]Record, 0, n)
	for k := 0; len(out) < n; k++ {
		for _, r := range jobLife(fmt.Sprintf("job%07d", k)) {
			if len(out) < n {
				r.At = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				out = append(out, r)
			}
		}
	}
	return out
}

// BenchmarkAppendLives is BenchmarkAppend with job-shaped records: each job
// gets the six records of jobLife, then the next job (BenchmarkAppend puts
// every record under one job, whose index grows without end, which the
// driver never does).
func BenchmarkAppendLives(b *testing.B) {
	j, err := Open(filepath.Join(b.TempDir(), "j.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	recs := livesRecords(b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := j.Append(recs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareBoltLives is BenchmarkAppendLives' floor: the same records'
// JSON bytes put under the next sequence number of one bucket, one bbolt
// Update each, fsync on, with the journal's bbolt options.
func BenchmarkBareBoltLives(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bare.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketLog); return err }); err != nil {
		b.Fatal(err)
	}
	recs := livesRecords(b.N)
	vals := make([][]byte, len(recs))
	for i, r := range recs {
		r.Seq = uint64(i + 1)
		vals[i], _ = json.Marshal(r)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketLog)
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			return bk.Put(seqKey(seq), vals[i])
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestBadIndexDoesNotStopAppends: a damaged index entry (jobrecs/bad a
// truncated uvarint) fails the checkpoints, not the appends: every
// record is still logged and readable, and Check names the damage.
func TestBadIndexDoesNotStopAppends(t *testing.T) {
	smallCheckpoints(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	if err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJobRecs).Put([]byte("bad"), []byte{0x80}) }); err != nil {
		t.Fatal(err)
	}
	n := 2*checkpointEvery + 3
	perJob, last := map[string]int{}, map[string]int{}
	for i := 0; i < n; i++ {
		job := fmt.Sprintf("job%d", i%5)
		if i%10 == 0 {
			job = "bad"
		}
		perJob[job]++
		last[job] = i
		if _, err := j.Append(Record{Job: job, Kind: KindProgress, Fields: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	s, err := j.Snapshot("bad")
	if err != nil || s.Fields["i"] != fmt.Sprint(last["bad"]) {
		t.Fatalf("snapshot of bad = %+v, %v", s, err)
	}
	for _, job := range []string{"job1", "job4"} {
		if recs, err := j.Records(job); err != nil || len(recs) != perJob[job] {
			t.Errorf("records of %s: %d, %v; want %d", job, len(recs), err, perJob[job])
		}
	}
	if err := j.Close(); err == nil {
		t.Error("Close checkpointed over a damaged index without an error")
	}
	if err := Check(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "jobrecs/bad") {
		t.Fatalf("Check = %v, want ErrCorrupt naming jobrecs/bad", err)
	}
}
