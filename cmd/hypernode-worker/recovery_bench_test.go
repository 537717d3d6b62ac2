package main

// BenchmarkRecovery100: how long a worker killed with 100 jobs in flight
// takes, once restarted, to have every job's operation back under its
// driver. Not part of `make test` (benchmarks do not run there):
//
//	go test ./cmd/hypernode-worker -run '^$' -bench BenchmarkRecovery100 -benchtime 1x -timeout 20m -v
//
// HYPERNODE_RECOVERY_JOBS=<n> changes the number of jobs (default 100).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// logEvents counts, in a worker's JSON log, the distinct jobs for which a
// line with this message was written.
func logEvents(log, message string) map[string]bool {
	jobs := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), message) {
			continue
		}
		var ev struct {
			Message string `json:"message"`
			Job     string `json:"job"`
		}
		if json.Unmarshal(line, &ev) == nil && ev.Message == message && ev.Job != "" {
			jobs[ev.Job] = true
		}
	}
	return jobs
}

// BenchmarkRecovery100 posts 100 jobs whose one operation sleeps 10 minutes,
// runs them on a worker with --parallel-jobs 100 until every operation's task
// runs in containerd, kills the worker with SIGKILL, restarts it, and
// measures the time from the restarted process's start until it has written
// "operation running" for all 100 jobs. The driver writes that line for a
// resumed job once it has reconciled it (journal snapshot, job account on
// chain, definition fetched and verified) and immediately before
// runtime.RunOp re-attaches to the existing task (load the container, find
// its task, wait on it): nothing of the recovery but those few containerd
// calls is left out. Metrics: recovery_s (process start → all re-attached),
// startup_s (process start → "worker started", before any job is resumed)
// and ms/job ((recovery − startup) / jobs).
func BenchmarkRecovery100(b *testing.B) {
	runtimetest.Skip(b)
	jobsN := 100
	if v := os.Getenv("HYPERNODE_RECOVERY_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("HYPERNODE_RECOVERY_JOBS %q is not a positive number", v)
		}
		jobsN = n
	}
	if _, err := cliOutput(workerBinary(b), []string{"HYPERNODE_DATA_DIR=" + b.TempDir()}, "config", "--env-file", "", "--parallel-jobs", strconv.Itoa(jobsN)); err != nil {
		b.Fatalf("the worker refuses %d parallel jobs (PARALLEL_JOBS' upper bound is in cmd/hypernode-worker/config.go): %v", jobsN, err)
	}
	ctd := runtimetest.StartContainerd(b)
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	rt, err := runtime.New(rctx, runtime.Config{Address: ctd})
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })

	dir := b.TempDir()
	// Job workspaces may be filesystems of their own, left mounted for the
	// re-attached jobs: unmount them (after stopSleepers, registered later, has
	// removed the containers) before the directory is removed.
	b.Cleanup(func() { runtimetest.UnmountUnder(dir) })
	n := startCrashNet(b, dir)
	defPath := filepath.Join(dir, "sleep.json")
	def := `{"image": "hypernode.local/test:latest", "timeout": 1800,
  "operations": [{"type": "run", "command": "echo started; sleep 600"}]}`
	if err := os.WriteFile(defPath, []byte(def), 0o644); err != nil {
		b.Fatal(err)
	}
	jobs := make([]solana.PublicKey, jobsN)
	errs := make([]error, jobsN)
	bin := workerBinary(b)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			jobs[i], errs[i] = n.postErr(bin, defPath)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: ctd, archive: archive,
		extra: []string{"--parallel-jobs", strconv.Itoa(jobsN)}}
	w := run.start(b)
	b.Cleanup(func() { stopSleepers(b, w, rt, jobs) })

	// Every operation's task runs in containerd.
	began := time.Now()
	deadline := began.Add(10 * time.Minute)
	for {
		running := 0
		for _, j := range jobs {
			st, err := rt.Inspect(ctx, fsm.ContainerID(j.String(), 1))
			if err == nil && st.TaskStatus == runtime.StatusRunning && st.Op == 0 {
				running++
			}
		}
		if running == jobsN {
			break
		}
		if w.exited() {
			b.Fatalf("worker exited (%s) with %d of %d operations running:\n%s", w.state, running, jobsN, lastLines(w.stderr.String(), 30))
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d operations running after 10 minutes:\n%s", running, jobsN, lastLines(w.stderr.String(), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Logf("%d operations running %s after the worker started", jobsN, time.Since(began).Round(time.Millisecond))
	w.kill9()

	var recovery, startup time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w = run.start(b)
		var startedAt time.Time
		deadline := time.Now().Add(5 * time.Minute)
		for {
			log := w.stderr.String()
			if startedAt.IsZero() && strings.Contains(log, `"message":"worker started"`) {
				startedAt = time.Now()
			}
			if got := len(logEvents(log, "operation running")); got == jobsN {
				break
			} else if w.exited() || time.Now().After(deadline) {
				b.Fatalf("%d of %d operations re-attached (worker exited: %v):\n%s", got, jobsN, w.exited(), lastLines(log, 30))
			}
			time.Sleep(5 * time.Millisecond)
		}
		recovery += time.Since(w.started)
		startup += startedAt.Sub(w.started)
		if i < b.N-1 {
			w.kill9()
		}
	}
	b.StopTimer()
	stopSleepers(b, w, rt, jobs)
	if got := len(logEvents(w.stderr.String(), "operation ended")); got != 0 {
		b.Errorf("%d operations ended during the recovery: they were not re-attached while running", got)
	}
	rec := recovery.Seconds() / float64(b.N)
	up := startup.Seconds() / float64(b.N)
	b.ReportMetric(rec, "recovery_s")
	b.ReportMetric(up, "startup_s")
	b.ReportMetric((rec-up)*1000/float64(jobsN), "ms/job")
	b.Logf("recovery of %d jobs: %.2fs from process start (%.2fs of it before the first job is resumed), %.1f ms per job",
		jobsN, rec, up, (rec-up)*1000/float64(jobsN))
}

// stopSleepers stops the worker with SIGINT (it detaches from running
// operations) and removes the jobs' containers, killing their sleeps.
func stopSleepers(tb testing.TB, w *child, rt *runtime.Runtime, jobs []solana.PublicKey) {
	if !w.exited() {
		if err := w.interrupt(time.Minute); err != nil {
			tb.Logf("stop worker: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fsm.ContainerID(j.String(), 1)
			if err := rt.Remove(ctx, id); err != nil { // a missing container is not an error
				tb.Logf("remove %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
}
