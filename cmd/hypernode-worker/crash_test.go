package main

// The crash matrix of issue 3: kill -9 anywhere, and no job is doubled, lost
// or orphaned. The real binary runs as a child process against a real
// containerd and a standalone localnet (a process of its own, so the chain
// outlives the worker). The tests kill the worker at every named failpoint
// (TestCrashMatrix), at random instants (TestCrashRandomKill), stop it
// gracefully mid-operation (TestCrashGracefulStop), kill containerd or the
// chain under it (TestCrashContainerdRestart, TestCrashLocalnetRestart),
// let another node win a claim it journaled (TestCrashClaimRace) and keep it
// down until its journaled transactions expired (TestCrashBlockhashExpiry);
// then a restarted worker finishes and the outcome is checked against the
// ledger, the verified result, the journal, containerd and the data
// directory.
//
//	go test ./cmd/hypernode-worker -run TestCrash -v         # default set, about 2 minutes
//	HYPERNODE_CRASH_FULL=1 go test ./cmd/hypernode-worker -run TestCrash -v -timeout 30m
//	    # every failpoint and its second-operation variants, 24 random runs,
//	    # blockhash expiry: about 9 minutes
//	HYPERNODE_CRASH_SEED=<n> go test ./cmd/hypernode-worker -run TestCrashRandomKill -v
//	    # replay the random runs of a logged seed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/failpoint"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// crashFull reports whether HYPERNODE_CRASH_FULL asks for the whole matrix.
func crashFull() bool { return os.Getenv("HYPERNODE_CRASH_FULL") == "1" }

// defaultFailpoints is the matrix's default subset: one failpoint inside
// each step's intent → effect → transition sequence, favouring the windows
// where an effect happened but its transition is not journaled.
var defaultFailpoints = []string{
	failpoint.WorkJobAfterSend, failpoint.ClaimAfterLanded,
	failpoint.StartAfterCreate,
	failpoint.OpAfterTaskStart, failpoint.OpAfterExit,
	failpoint.UploadAfterAdd,
	failpoint.FinishJobAfterSend, failpoint.FinishAfterLanded,
}

// secondOpFailpoints are the operation failpoints at their second hit
// (operation 1), added to the full matrix.
var secondOpFailpoints = []string{
	failpoint.OpAfterIntent + ":2", failpoint.OpAfterTaskStart + ":2", failpoint.OpAfterExit + ":2", failpoint.OpAfterProgress + ":2",
}

// crashSetup is what every run of one test function shares.
type crashSetup struct {
	ctd     string
	archive string
	rt      *runtime.Runtime
}

func newCrashSetup(t *testing.T, ctd string) crashSetup {
	t.Helper()
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		t.Fatal(err)
	}
	workerBinary(t)
	return crashSetup{ctd: ctd, archive: archive, rt: newRuntimeAt(t, ctd)}
}

// matrixRow is one line of the matrix's summary table.
type matrixRow struct {
	name       string
	runs       int
	violations []string
	took       time.Duration
	note       string // e.g. where the kills landed
}

func logMatrix(t *testing.T, title string, rows []matrixRow, took time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s in all)\n%-48s %4s %10s %7s  %s\n", title, took.Round(time.Second), "case", "runs", "violations", "took", "note / first violation")
	for _, r := range rows {
		note := r.note
		if len(r.violations) > 0 {
			note = strings.SplitN(r.violations[0], "\n", 2)[0]
		}
		fmt.Fprintf(&b, "%-48s %4d %10d %6.1fs  %s\n", r.name, r.runs, len(r.violations), r.took.Seconds(), note)
	}
	t.Log("\n" + b.String())
}

// waitFailpoint waits for the worker to die at failpoint fp: by SIGKILL,
// with the failpoint's message on stderr. A failpoint that has not fired 3s
// after every job is terminal in the journal, or within a minute, never will.
func waitFailpoint(ctx context.Context, w *child, data string, jobs []solana.PublicKey, fp string) error {
	deadline := time.Now().Add(time.Minute)
	var settledAt time.Time
	for {
		if w.exited() {
			if !w.killedBy(syscall.SIGKILL) {
				return fmt.Errorf("failpoint %s: the worker exited with %s, not by SIGKILL", fp, w.state)
			}
			name, _, _ := strings.Cut(fp, ":")
			if !strings.Contains(w.stderr.String(), "failpoint "+name+":") {
				return fmt.Errorf("failpoint %s: the worker was SIGKILLed without the failpoint's message", fp)
			}
			return nil
		}
		if settledAt.IsZero() {
			states := journalStates(ctx, data)
			all := true
			for _, j := range jobs {
				all = all && fsm.State(states[j.String()]).Terminal()
			}
			if all {
				settledAt = time.Now()
			}
		} else if time.Since(settledAt) > 3*time.Second {
			return fmt.Errorf("failpoint %s never fired: the job became terminal and the worker lives on (dead code or misplaced)", fp)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("failpoint %s never fired within a minute", fp)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// finishRun takes a worker w that was restarted without failpoints, waits
// until the jobs settle, stops w with SIGINT and checks every job, the
// journal and the data directory; it returns the violations.
func finishRun(t *testing.T, s crashSetup, n *crashNet, data string, jobs []solana.PublicKey, w *child) []string {
	t.Helper()
	ctx := context.Background()
	var v []string
	accs, err := settle(ctx, n.URL, data, jobs, w, 90*time.Second)
	if err != nil {
		v = append(v, "settle: "+err.Error())
	}
	// A job settled by an earlier run leaves its workspace (or container) to
	// the restarted worker's first reaper pass: give it a moment.
	awaitClean(ctx, s.rt, data, jobs, w, 5*time.Second)
	if err := w.ready(30 * time.Second); err != nil {
		v = append(v, err.Error())
	}
	if err := w.interrupt(30 * time.Second); err != nil {
		v = append(v, "stop: "+err.Error())
	}
	states := journalStates(ctx, data)
	for _, j := range jobs {
		for _, msg := range verifyJob(ctx, crashCheck{net: n, data: data, rt: s.rt}, j, accs[j], states[j.String()]) {
			v = append(v, "job "+j.String()[:8]+": "+msg)
		}
	}
	v = append(v, verifyReplay(t, data)...)
	removeJobContainers(ctx, s.rt, jobs)
	return v
}

// reportRun fails t with each violation and shows the workers' logs.
func reportRun(t *testing.T, v []string, workers ...*child) {
	t.Helper()
	if len(v) == 0 {
		return
	}
	for _, msg := range v {
		t.Error(msg)
	}
	for i, w := range workers {
		if w != nil {
			t.Logf("worker run %d (%s), stderr tail:\n%s", i+1, w.name, lastLines(w.stderr.String(), 40))
		}
	}
}

// TestCrashMatrix kills the worker at every failpoint of failpoint.All
// (HYPERNODE_CRASH_FULL=1; by default defaultFailpoints), restarts it
// without, and checks that the job is done exactly once.
func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	points := defaultFailpoints
	if crashFull() {
		points = append(append([]string{}, failpoint.All...), secondOpFailpoints...)
	}
	began := time.Now()
	var rows []matrixRow
	for _, fp := range points {
		row := matrixRow{name: fp}
		start := time.Now()
		t.Run(fp, func(t *testing.T) {
			row.runs++
			dir := t.TempDir()
			n := startCrashNet(t, dir)
			job := n.post(t, writeJobDef(t, dir, "job", "sleep 1"))
			run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: s.ctd, archive: s.archive, failpoint: fp}
			w1 := run.start(t)
			var v []string
			if err := waitFailpoint(context.Background(), w1, run.data, []solana.PublicKey{job}, fp); err != nil {
				v = append(v, err.Error())
				if !w1.exited() {
					if err := w1.interrupt(30 * time.Second); err != nil {
						v = append(v, "stop the armed worker: "+err.Error())
					}
				}
			}
			run.failpoint = ""
			w2 := run.start(t)
			v = append(v, finishRun(t, s, n, run.data, []solana.PublicKey{job}, w2)...)
			row.violations = v
			reportRun(t, v, w1, w2)
		})
		row.took = time.Since(start)
		if row.runs > 0 { // not filtered out by -run
			rows = append(rows, row)
		}
	}
	logMatrix(t, fmt.Sprintf("crash matrix: %d failpoints", len(points)), rows, time.Since(began))
}

// jobStates lists the jobs' journal states, in order ("-" for none).
func jobStates(data string, jobs []solana.PublicKey) string {
	states := journalStates(context.Background(), data)
	var out []string
	for _, j := range jobs {
		st := states[j.String()]
		if st == "" {
			st = "-"
		}
		out = append(out, st)
	}
	return strings.Join(out, ",")
}

// randomKill is one run of TestCrashRandomKill, drawn before any runs: the
// worker's slots and one or two kills.
type randomKill struct {
	slots int
	kills []killAt
}

// killAt is when a kill -9 comes: delay after the process started (a crash
// during start-up: image import, registration, resumption) or after it
// printed that it watches for jobs.
type killAt struct {
	fromStart bool
	delay     time.Duration
}

func (k randomKill) String() string {
	s := fmt.Sprintf("slots%d", k.slots)
	for _, at := range k.kills {
		from := "ready"
		if at.fromStart {
			from = "start"
		}
		s += fmt.Sprintf("_kill@%s+%dms", from, at.delay.Milliseconds())
	}
	return s
}

// drawKills draws count runs from rng: one kill in two runs, two in the
// others; a kill comes during start-up one time in four (0-1.5s after the
// process started), else 0-4s after the worker is ready, which covers both
// jobs' lives.
func drawKills(rng *rand.Rand, count int) []randomKill {
	draw := func() killAt {
		if rng.IntN(4) == 0 {
			return killAt{fromStart: true, delay: time.Duration(rng.IntN(1500)) * time.Millisecond}
		}
		return killAt{delay: time.Duration(rng.IntN(4000)) * time.Millisecond}
	}
	runs := make([]randomKill, count)
	for i := range runs {
		runs[i] = randomKill{slots: 1 + rng.IntN(2), kills: []killAt{draw()}}
		if rng.IntN(2) == 0 {
			runs[i].kills = append(runs[i].kills, draw())
		}
	}
	return runs
}

// TestCrashRandomKill posts two jobs, kills the worker with SIGKILL at a
// random instant, sometimes once more after its restart, then lets it
// finish: both jobs must be done exactly once. The seed is logged; set
// HYPERNODE_CRASH_SEED to replay it. HYPERNODE_CRASH_FULL=1 runs 24 runs,
// the default 6.
func TestCrashRandomKill(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HYPERNODE_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("HYPERNODE_CRASH_SEED %q is not a number", v)
		}
		seed = n
	}
	t.Logf("random kills: seed %d (replay with HYPERNODE_CRASH_SEED=%d)", seed, seed)
	count := 6
	if crashFull() {
		count = 24
	}
	kills := drawKills(rand.New(rand.NewPCG(seed, 0x68797065726e6f64)), count)

	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	began := time.Now()
	var rows []matrixRow
	for i, k := range kills {
		row := matrixRow{name: fmt.Sprintf("%02d_%s", i, k)}
		start := time.Now()
		t.Run(row.name, func(t *testing.T) {
			row.runs++
			dir := t.TempDir()
			n := startCrashNet(t, dir)
			def := writeJobDef(t, dir, "job", "sleep 1")
			jobs := []solana.PublicKey{n.post(t, def), n.post(t, def)}
			run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: s.ctd, archive: s.archive,
				extra: []string{"--parallel-jobs", strconv.Itoa(k.slots)}}
			var v []string
			var ws []*child
			for _, at := range k.kills {
				w := run.start(t)
				ws = append(ws, w)
				if !at.fromStart {
					if err := w.ready(30 * time.Second); err != nil {
						v = append(v, err.Error())
						continue
					}
				}
				if w.waitExit(at.delay) {
					v = append(v, fmt.Sprintf("worker run %d exited by itself (%s) before its kill", len(ws), w.state))
					continue
				}
				w.kill9()
				row.note += fmt.Sprintf("kill %d: %s; ", len(ws), jobStates(run.data, jobs))
			}
			w := run.start(t)
			ws = append(ws, w)
			v = append(v, finishRun(t, s, n, run.data, jobs, w)...)
			row.violations = v
			reportRun(t, v, ws...)
		})
		row.took = time.Since(start)
		if row.runs > 0 { // not filtered out by -run
			rows = append(rows, row)
		}
	}
	logMatrix(t, fmt.Sprintf("random kill -9: %d runs, seed %d", count, seed), rows, time.Since(began))
}

// waitOpRunning waits until operation op of job's first container runs in
// containerd and its log holds printed.
func waitOpRunning(t *testing.T, rt *runtime.Runtime, w *child, data string, job solana.PublicKey, op int, printed string) {
	t.Helper()
	id := fsm.ContainerID(job.String(), 1)
	logPath := filepath.Join(data, "jobs", job.String(), "logs", fmt.Sprintf("op-%d.log", op))
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := rt.Inspect(context.Background(), id)
		b, _ := os.ReadFile(logPath)
		if err == nil && st.TaskStatus == runtime.StatusRunning && st.Op == op && strings.Contains(string(b), printed) {
			return
		}
		if w.exited() || time.Now().After(deadline) {
			t.Fatalf("operation %d of %s never ran (worker exited: %v)\n%s", op, id, w.exited(), lastLines(w.stderr.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runningJob starts a private containerd, a standalone localnet and the
// worker, posts a job whose first operation prints "sleeping" and sleeps
// 3 s, and returns once that operation runs.
func runningJob(t *testing.T) (crashSetup, *crashNet, solana.PublicKey, workerRun, *child) {
	t.Helper()
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	dir := t.TempDir()
	n := startCrashNet(t, dir)
	job := n.post(t, writeJobDef(t, dir, "job", "echo sleeping; sleep 3"))
	run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: s.ctd, archive: s.archive}
	w := run.start(t)
	waitOpRunning(t, s.rt, w, run.data, job, 0, "sleeping")
	return s, n, job, run, w
}

// TestCrashGracefulStop stops the worker with SIGINT while an operation
// runs, as an operator upgrading it would: the worker exits 0 at once,
// leaving the operation running, and once restarted re-attaches to it; the
// job is done exactly once.
func TestCrashGracefulStop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	s, n, job, run, w1 := runningJob(t)
	var v []string
	stopped := time.Now()
	if err := w1.interrupt(10 * time.Second); err != nil {
		v = append(v, err.Error())
	}
	took := time.Since(stopped)
	st, err := s.rt.Inspect(context.Background(), fsm.ContainerID(job.String(), 1))
	if err != nil || st.TaskStatus != runtime.StatusRunning {
		v = append(v, fmt.Sprintf("after the worker stopped (in %s), operation 0's task is %q (%v), want running", took, st.TaskStatus, err))
	}
	w2 := run.start(t)
	v = append(v, finishRun(t, s, n, run.data, []solana.PublicKey{job}, w2)...)
	reportRun(t, v, w1, w2)
}

// TestCrashContainerdRestart SIGKILLs containerd (not its shims) while an
// operation runs, starts it again on the same root, state and socket, and
// checks that the worker re-attaches: both operations exit 0, runs.txt shows
// each ran once, and the log tail holds what the operation printed before
// and after the restart.
func TestCrashContainerdRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	ctd := startRestartableContainerd(t)
	s := newCrashSetup(t, ctd.sock)
	dir := t.TempDir()
	n := startCrashNet(t, dir)
	job := n.post(t, writeJobDef(t, dir, "job", "echo before-restart; sleep 4; echo after-restart"))
	run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: ctd.sock, archive: s.archive}
	w := run.start(t)

	ctx := context.Background()
	waitOpRunning(t, s.rt, w, run.data, job, 0, "before-restart")
	ctd.kill9()
	restarted := time.Now()
	if err := ctd.start(); err != nil {
		t.Fatalf("restart containerd: %v\n%s", err, ctd.logTail())
	}
	t.Logf("containerd killed and answering again in %s", time.Since(restarted).Round(time.Millisecond))

	v := finishRun(t, s, n, run.data, []solana.PublicKey{job}, w)
	// The result's operations: both exit 0; op 0's log is complete.
	if acc, err := chainJob(ctx, n.URL, job); err != nil {
		v = append(v, err.Error())
	} else if res, err := fetchResult(ctx, n.URL, acc); err != nil {
		v = append(v, err.Error())
	} else if res.Status != jobdef.StatusSucceeded || len(res.Operations) != 2 {
		v = append(v, fmt.Sprintf("result %s with %d operations", res.Status, len(res.Operations)))
	} else if tail := res.Operations[0].LogTail; !strings.Contains(tail, "before-restart") || !strings.Contains(tail, "after-restart") {
		v = append(v, fmt.Sprintf("operation 0's log tail %q lacks what it printed before or after the restart", tail))
	}
	reportRun(t, v, w)
	if len(v) == 0 {
		t.Logf("worker log:\n%s", lastLines(w.stderr.String(), 30))
	}
}

// TestCrashBlockhashExpiry (HYPERNODE_CRASH_FULL=1 only: it waits out the
// 150 blocks of a blockhash, and for two cases the 300 slots of the status
// cache, about two minutes on the localnet) kills the worker right after it
// journaled a transaction, or right after it sent one, and restarts it only
// once that transaction's blockhash has expired. A journaled transaction
// that never went out must be rebuilt (and land once); one that went out
// must be found landed, not sent again. The noHistory cases restart the
// worker against an RPC node without transaction history once even the
// status cache has forgotten the landed transaction: the worker cannot find
// its signature, and must recognise its effect from the job account instead
// of rebuilding it; the job must still be done, once.
func TestCrashBlockhashExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	if !crashFull() {
		t.Skip("waits two minutes for blockhashes and statuses to expire: set HYPERNODE_CRASH_FULL=1")
	}
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	cases := []struct {
		failpoint string
		noHistory bool
		rebuilt   string // the log line of a rebuilt transaction, or "" when none may be rebuilt
	}{
		{failpoint.ClaimAfterIntent, false, "work_job expired without landing; rebuilding"},
		{failpoint.WorkJobAfterSend, false, ""},
		{failpoint.FinishAfterIntent, false, "finish_job expired without landing; rebuilding"},
		{failpoint.FinishJobAfterSend, false, ""},
		{failpoint.WorkJobAfterSend, true, ""},
		{failpoint.FinishJobAfterSend, true, ""},
	}
	name := func(i int) string {
		if cases[i].noHistory {
			return cases[i].failpoint + "_rpc_without_history"
		}
		return cases[i].failpoint
	}
	// Kill each worker at its failpoint, then wait out the blockhashes of
	// all of them at once (each localnet makes a block every 400ms).
	type killed struct {
		net    *crashNet
		run    workerRun
		job    solana.PublicKey
		w1     *child
		height uint64 // block height just after the kill
	}
	ctx := context.Background()
	var runs []killed
	for _, c := range cases {
		dir := t.TempDir()
		n := startCrashNet(t, dir)
		job := n.post(t, writeJobDef(t, dir, "job", ""))
		run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: s.ctd, archive: s.archive, failpoint: c.failpoint}
		w1 := run.start(t)
		if err := waitFailpoint(ctx, w1, run.data, []solana.PublicKey{job}, c.failpoint); err != nil {
			t.Fatalf("%v\n%s", err, lastLines(w1.stderr.String(), 30))
		}
		h, err := rpc.New(n.URL).GetBlockHeight(ctx, rpc.CommitmentConfirmed)
		if err != nil {
			t.Fatal(err)
		}
		if c.noHistory {
			run.rpc = startNoHistoryRPC(t, n.URL)
		}
		runs = append(runs, killed{net: n, run: run, job: job, w1: w1, height: h})
	}
	for i, k := range runs {
		// The blockhash was fetched before the kill: valid for 150 blocks
		// after the height of then at most. The status cache keeps 300
		// slots (a slot is a block on the localnet).
		wait := uint64(151)
		if cases[i].noHistory {
			wait = 301
		}
		for {
			h, err := rpc.New(k.net.URL).GetBlockHeight(ctx, rpc.CommitmentConfirmed)
			if err != nil {
				t.Fatal(err)
			}
			if h > k.height+wait {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	for i, c := range cases {
		k := runs[i]
		t.Run(name(i), func(t *testing.T) {
			k.run.failpoint = ""
			w2 := k.run.start(t)
			v := finishRun(t, s, k.net, k.run.data, []solana.PublicKey{k.job}, w2)
			rebuilt := strings.Contains(w2.stderr.String(), "expired without landing; rebuilding")
			switch {
			case c.rebuilt != "" && !strings.Contains(w2.stderr.String(), c.rebuilt):
				v = append(v, "the expired journaled transaction was not rebuilt (no log line "+c.rebuilt+")")
			case c.rebuilt == "" && rebuilt:
				v = append(v, "a transaction that was sent was rebuilt after its blockhash expired")
			}
			reportRun(t, v, k.w1, w2)
		})
	}
}

// TestCrashClaimRace: worker A journals its work_job and dies before
// sending it; worker B (another node) claims and runs the job meanwhile.
// Restarted, A must record the job lost (its journaled claim can no longer
// land), not retry forever nor run it: on the ledger one work_job and one
// finish_job landed, both B's.
func TestCrashClaimRace(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	ctx := context.Background()
	dir := t.TempDir()
	keyB := filepath.Join(dir, "node-b.json")
	out := runCLI(t, nil, "keygen", keyB)
	nodeB, err := solana.PublicKeyFromBase58(out)
	if err != nil {
		t.Fatalf("keygen printed %q", out)
	}
	n := startCrashNet(t, dir, keyB)
	job := n.post(t, writeJobDef(t, dir, "job", ""))
	runA := workerRun{net: n, data: filepath.Join(dir, "data-a"), ctd: s.ctd, archive: s.archive, failpoint: failpoint.ClaimAfterIntent}
	a1 := runA.start(t)
	var v []string
	if err := waitFailpoint(ctx, a1, runA.data, []solana.PublicKey{job}, runA.failpoint); err != nil {
		t.Fatal(err)
	}
	runB := workerRun{net: n, data: filepath.Join(dir, "data-b"), ctd: s.ctd, archive: s.archive, keypair: keyB}
	b := runB.start(t)
	if _, err := settle(ctx, n.URL, runB.data, []solana.PublicKey{job}, b, 60*time.Second); err != nil {
		v = append(v, "B: "+err.Error())
	}
	runA.failpoint = ""
	a2 := runA.start(t)
	if _, err := settle(ctx, n.URL, runA.data, []solana.PublicKey{job}, a2, 60*time.Second); err != nil {
		v = append(v, "A: "+err.Error())
	}
	for _, w := range []*child{a2, b} {
		if err := w.ready(30 * time.Second); err != nil {
			v = append(v, err.Error())
		}
		if err := w.interrupt(30 * time.Second); err != nil {
			v = append(v, err.Error())
		}
	}
	if st := journalStates(ctx, runA.data)[job.String()]; st != string(fsm.Lost) {
		v = append(v, fmt.Sprintf("A's journal has the job %q, want lost", st))
	}
	if st := journalStates(ctx, runB.data)[job.String()]; st != string(fsm.Finished) {
		v = append(v, fmt.Sprintf("B's journal has the job %q, want finished", st))
	}
	counts, err := localnet.CountInstructions(ctx, n.URL, chain.DefaultMarketsProgramID, job)
	if err != nil {
		v = append(v, "ledger: "+rpcErrorText(err))
	}
	for _, ix := range []string{chain.IxWorkJob, chain.IxFinishJob} {
		if c := counts[ix]; c.Succeeded != 1 || c.SucceededBy[nodeB] != 1 {
			v = append(v, fmt.Sprintf("ledger: %s landed %d times, %d by B; want once, by B", ix, c.Succeeded, c.SucceededBy[nodeB]))
		}
	}
	if acc, err := chainJob(ctx, n.URL, job); err != nil {
		v = append(v, err.Error())
	} else {
		v = append(v, verifyResult(ctx, n.URL, job, nodeB, acc)...)
	}
	v = append(v, verifyReplay(t, runA.data)...)
	v = append(v, verifyReplay(t, runB.data)...)
	if ids, err := s.rt.List(ctx); err != nil || len(ids) != 0 {
		v = append(v, fmt.Sprintf("containerd: containers left %v (%v)", ids, err))
	}
	reportRun(t, v, a1, b, a2)
}

// TestCrashLocalnetRestart SIGKILLs the chain (the standalone localnet)
// while an operation runs and again while the worker finishes the job, and
// starts it again on the same state: the worker rides out the outages and
// the job is done exactly once.
func TestCrashLocalnetRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	s, n, job, run, w := runningJob(t)
	n.restart(t)
	// Then once the result is uploaded, before finish_job lands (or just after).
	deadline := time.Now().Add(60 * time.Second)
	for st := ""; st != string(fsm.Uploaded) && !fsm.State(st).Terminal(); st = journalStates(context.Background(), run.data)[job.String()] {
		if w.exited() || time.Now().After(deadline) {
			t.Fatalf("job never uploaded (worker exited: %v)\n%s", w.exited(), lastLines(w.stderr.String(), 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.restart(t)
	v := finishRun(t, s, n, run.data, []solana.PublicKey{job}, w)
	reportRun(t, v, w)
}
