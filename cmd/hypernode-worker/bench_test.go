package main

// Benchmarks `make bench` runs besides the packages' own (see bench/main.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// lifeRecords are the 14 records the driver journals for one job that
// succeeds with two operations: 6 transitions and the intents and progress
// between them, shaped as fsm's steps write them.
func lifeRecords(job string, at time.Time) []journal.Record {
	tr := func(ev string, from, to fsm.State, f map[string]string) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindTransition, Event: ev, From: string(from), To: string(to), Fields: f, At: at}
	}
	in := func(r journal.Record) journal.Record { r.Job, r.Kind, r.At = job, journal.KindIntent, at; return r }
	claimSig, finishSig := strings.Repeat("4", 87)+"a", strings.Repeat("5", 87)+"b"
	cid := "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	id := fsm.ContainerID(job, 1)
	return []journal.Record{
		tr(fsm.EvPoll, fsm.None, fsm.Polled, nil),
		in(journal.Record{Intent: journal.IntentTx, Tx: &journal.TxIntent{Instruction: chain.IxWorkJob, Signature: claimSig, Raw: make([]byte, 280), LastValidBlockHeight: 1150}}),
		tr(fsm.EvClaim, fsm.Polled, fsm.Claimed, map[string]string{"claim_sig": claimSig}),
		tr(fsm.EvFetch, fsm.Claimed, fsm.Fetched, map[string]string{fsm.FieldDefinition: cid, fsm.FieldImage: "hypernode.local/test:latest"}),
		in(journal.Record{Intent: journal.IntentContainer, Container: &journal.ContainerIntent{ID: id, Attempt: 1, Deadline: at.Add(time.Hour), Image: "hypernode.local/test:latest",
			GPUs: []string{"0x0000000000000001"}, CPUs: 4, MemoryBytes: 16 << 30}, Fields: map[string]string{fsm.FieldAttempts: "1"}}),
		tr(fsm.EvStart, fsm.Fetched, fsm.Running, map[string]string{"container": id, "deadline": at.Add(time.Hour).Format(time.RFC3339)}),
		in(journal.Record{Intent: journal.IntentOp, Op: &journal.OpIntent{Index: 0}, Fields: map[string]string{"op.0.started": at.Format(time.RFC3339Nano)}}),
		{Job: job, Kind: journal.KindProgress, At: at, Fields: map[string]string{"op.0.exit": "0", "op.0.ms": "1200"}},
		in(journal.Record{Intent: journal.IntentOp, Op: &journal.OpIntent{Index: 1}, Fields: map[string]string{"op.1.started": at.Format(time.RFC3339Nano)}}),
		{Job: job, Kind: journal.KindProgress, At: at, Fields: map[string]string{"op.1.exit": "0", "op.1.ms": "40"}},
		in(journal.Record{Intent: journal.IntentUpload, Upload: &journal.UploadIntent{What: "result", CID: cid}, Fields: map[string]string{fsm.FieldStatus: "succeeded", fsm.FieldError: ""}}),
		tr(fsm.EvUpload, fsm.Running, fsm.Uploaded, map[string]string{fsm.FieldResultCID: cid, fsm.FieldStatus: "succeeded"}),
		in(journal.Record{Intent: journal.IntentTx, Tx: &journal.TxIntent{Instruction: chain.IxFinishJob, Signature: finishSig, Raw: make([]byte, 310), LastValidBlockHeight: 1190}}),
		tr(fsm.EvFinish, fsm.Uploaded, fsm.Finished, map[string]string{"finish_sig": finishSig}),
	}
}

// BenchmarkReplayVerify1M measures `replay --verify` (journal.Check, then
// fsm.Verify of every record: what the command runs) on a journal of
// 1 000 000 records: 71 429 jobs' lives of 14 records (6 transitions each),
// 64 jobs interleaved at a time as concurrent jobs write them. The journal
// is generated first (not timed). Metrics: verify_s, and bolt-scan_s: a bare
// bbolt walk reading every log value of the same file, the floor.
// HYPERNODE_REPLAY_RECORDS changes the count.
func BenchmarkReplayVerify1M(b *testing.B) {
	records := 1_000_000
	if v := os.Getenv("HYPERNODE_REPLAY_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 14 {
			b.Fatalf("HYPERNODE_REPLAY_RECORDS %q", v)
		}
		records = n
	}
	path := filepath.Join(b.TempDir(), "journal.db")
	j, err := journal.Open(path, journal.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const width, per = 64, 14
	var batch []journal.Record
	written := 0
	for first := 0; written < records; first += width {
		lives := make([][]journal.Record, 0, width)
		for k := 0; k < width; k++ {
			lives = append(lives, lifeRecords(fmt.Sprintf("job%07d", first+k), at))
		}
		for step := 0; step < per && written < records; step++ {
			for k := 0; k < width && written < records; k++ {
				batch = append(batch, lives[k][step])
				written++
			}
		}
		if len(batch) >= 20_000 || written == records {
			if _, err := j.AppendBatch(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(path); err == nil {
		b.Logf("journal of %d records: %d MiB", records, fi.Size()>>20)
	}
	var verify, scan time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		// A journal cut short mid-life (not a multiple of 14) leaves open jobs: still valid.
		if err := verifyJournal(io.Discard, path); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		n, err := boltScan(path)
		if err != nil || n != records {
			b.Fatalf("bare scan: %d records, %v", n, err)
		}
		verify += t1.Sub(t0)
		scan += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(verify.Seconds()/float64(b.N), "verify_s")
	b.ReportMetric(scan.Seconds()/float64(b.N), "bolt-scan_s")
}

// boltScan reads every value of the log bucket of a journal file.
func boltScan(path string) (int, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	n := 0
	var sum byte
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		if b == nil {
			return errors.New("no log bucket")
		}
		return b.ForEach(func(_, v []byte) error {
			n++
			for _, c := range v {
				sum += c
			}
			return nil
		})
	})
	_ = sum
	return n, err
}

// BenchmarkJobsPerMinute: end-to-end throughput on the localnet (its own
// process, over HTTP) with a real containerd: 8 trivial jobs (one operation,
// `true`, no GPU) posted at once to a ready worker with 1 or 4 parallel
// slots, timed from the first post until every job is final on chain and
// in the journal. Metric: jobs/min. The 1-slot figure is the baseline.
func BenchmarkJobsPerMinute(b *testing.B) {
	runtimetest.Skip(b)
	ctd := runtimetest.StartContainerd(b)
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		b.Fatal(err)
	}
	bin := workerBinary(b)
	const jobsN = 8
	for _, slots := range []int{1, 4} {
		b.Run(fmt.Sprintf("slots=%d", slots), func(b *testing.B) {
			var took time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				n := startCrashNet(b, dir)
				def := filepath.Join(dir, "true.json")
				if err := os.WriteFile(def, []byte(`{"image": "hypernode.local/test:latest", "timeout": 120, "resources": {"gpus": 0},
  "operations": [{"type": "run", "command": ["true"]}]}`), 0o644); err != nil {
					b.Fatal(err)
				}
				run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: ctd, archive: archive,
					extra: []string{"--max-parallel-jobs", strconv.Itoa(slots)}}
				w := run.start(b)
				if err := w.ready(time.Minute); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				jobs := make([]solana.PublicKey, jobsN)
				errs := make([]error, jobsN)
				var wg sync.WaitGroup
				for k := range jobs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						jobs[k], errs[k] = n.postErr(bin, def)
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				accs, err := settle(context.Background(), n.URL, run.data, jobs, w, 5*time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
				b.StopTimer()
				for _, k := range jobs {
					if accs[k].State != chain.JobCompleted {
						b.Fatalf("job %s ended %s", k, accs[k].State)
					}
				}
				if err := w.interrupt(30 * time.Second); err != nil {
					b.Error(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(jobsN*b.N)/took.Minutes(), "jobs/min")
		})
	}
}
