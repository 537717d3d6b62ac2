package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/failpoint"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// mi100Inventory is the captured 4× MI100 inventory the parallel tests give
// the worker (GPU_INVENTORY), with a tree standing in for its host
// (GPU_HOST_ROOT: device nodes, sysfs, groups).
func mi100Inventory(tb testing.TB) (inventory, devRoot string) {
	tb.Helper()
	inventory, err := filepath.Abs(filepath.Join("..", "..", "testdata", "gpu", "rocm-smi-json_4x-mi100_rocm6.0.2.json"))
	if err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(inventory)
	if err != nil {
		tb.Fatal(err)
	}
	gpus, _, err := hardware.ParseInventory(b)
	if err != nil || len(gpus) != 4 {
		tb.Fatalf("inventory: %d GPUs, %v", len(gpus), err)
	}
	return inventory, runtimetest.GPUDeviceTree(tb, gpus)
}

// gpuJobDef writes a definition asking for gpus ("all" or a count) whose
// first operation writes how many render nodes it sees to
// /workspace/output/gpus.txt and sleeps, and whose second appends to
// runs.txt as writeJobDef's do.
func gpuJobDef(tb testing.TB, dir, name string, gpus any, sleep string) string {
	tb.Helper()
	def := map[string]any{
		"image": "hypernode.local/test:latest",
		"operations": []map[string]any{
			{"type": "run", "command": "mkdir -p /workspace/output && echo op0 >> /workspace/output/runs.txt && " +
				"ls /dev/dri 2>/dev/null | grep -c renderD > /workspace/output/gpus.txt; sleep " + sleep},
			{"type": "run", "command": "echo op1 >> /workspace/output/runs.txt"},
		},
		"resources": map[string]any{"gpus": gpus},
		"timeout":   120,
	}
	b, err := json.Marshal(def)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// postArgs posts def with extra `localnet post` flags (--gpu-type, --min-vram).
func (n *crashNet) postArgs(bin, def string, extra ...string) (solana.PublicKey, error) {
	out, err := cliOutput(bin, nil, append([]string{"localnet", "post", "--rpc", n.URL}, append(extra, def)...)...)
	if err != nil {
		return solana.PublicKey{}, err
	}
	return solana.PublicKeyFromBase58(out)
}

// gpuWatch samples, from containerd itself, the OCI spec of every container
// whose task is running, and records any GPU device node held by two
// running containers at once.
type gpuWatch struct {
	mu         sync.Mutex
	violations []string
	maxRunning int
	seen       map[string][]string // container ID -> its render nodes
	stop       chan struct{}
	done       chan struct{}
}

func watchGPUs(tb testing.TB, ctd string) *gpuWatch {
	tb.Helper()
	c, err := client.New(ctd, client.WithDefaultNamespace(runtime.DefaultNamespace))
	if err != nil {
		tb.Fatal(err)
	}
	w := &gpuWatch{seen: map[string][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer c.Close()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			w.sample(c)
		}
	}()
	tb.Cleanup(w.finish)
	return w
}

func (w *gpuWatch) sample(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return
	}
	holder := map[string]string{} // device path -> container
	running := 0
	for _, ctr := range ctrs {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != client.Running {
			continue
		}
		spec, err := ctr.Spec(ctx)
		if err != nil || spec.Linux == nil {
			continue
		}
		running++
		var nodes []string
		for _, d := range spec.Linux.Devices {
			if strings.HasPrefix(d.Path, "/dev/dri/") || strings.HasPrefix(d.Path, "/dev/nvidia") && d.Path != "/dev/nvidiactl" && !strings.HasPrefix(d.Path, "/dev/nvidia-") {
				nodes = append(nodes, fmt.Sprintf("%s(%d:%d)", d.Path, d.Major, d.Minor))
			}
		}
		for _, kv := range spec.Process.Env {
			if v, ok := strings.CutPrefix(kv, "NVIDIA_VISIBLE_DEVICES="); ok && v != "void" {
				for _, id := range strings.Split(v, ",") {
					nodes = append(nodes, "nvidia:"+id)
				}
			}
		}
		w.mu.Lock()
		w.seen[ctr.ID()] = nodes
		for _, n := range nodes {
			if other, ok := holder[n]; ok {
				w.violations = append(w.violations, fmt.Sprintf("%s given to running containers %s and %s", n, other, ctr.ID()))
			}
			holder[n] = ctr.ID()
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.maxRunning = max(w.maxRunning, running)
	w.mu.Unlock()
}

func (w *gpuWatch) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// TestParallelGPUJobs: 4 parallel slots, 12 jobs of mixed GPU needs (0, 1,
// 2 and "all" of a captured 4× MI100 inventory; some asking for AMD and
// 32 GiB on chain) on the localnet. All finish succeeded; each job saw as
// many render nodes as it asked for; no two running containers ever held
// the same GPU (checked from the specs containerd holds, sampled while they
// run); jobs did run at once; the journal records each job's GPUs.
func TestParallelGPUJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	inventory, devRoot := mi100Inventory(t)
	ctd := runtimetest.StartContainerd(t)
	s := newCrashSetup(t, ctd)
	dir := t.TempDir()
	n := startCrashNet(t, dir)
	needs := []any{1, 2, 1, 0, "all", 1, 2, 1, 1, 0, 2, 1}
	want := map[solana.PublicKey]int{}
	jobs := make([]solana.PublicKey, len(needs))
	bin := workerBinary(t)
	for i, need := range needs {
		def := gpuJobDef(t, dir, fmt.Sprintf("job%02d", i), need, "2")
		var extra []string
		if i%3 == 0 {
			extra = []string{"--gpu-type", "amd", "--min-vram", "32"}
		}
		k, err := n.postArgs(bin, def, extra...)
		if err != nil {
			t.Fatal(err)
		}
		jobs[i] = k
		if need == "all" {
			want[k] = 4
		} else {
			want[k] = need.(int)
		}
	}
	watch := watchGPUs(t, ctd)
	run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: ctd, archive: s.archive,
		extra: []string{"--max-parallel-jobs", "4", "--gpu-inventory", inventory, "--gpu-host-root", devRoot}}
	w := run.start(t)
	accs, err := settle(context.Background(), n.URL, run.data, jobs, w, 4*time.Minute)
	watch.finish()
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(w.stderr.String(), 40))
	}
	if err := w.interrupt(30 * time.Second); err != nil {
		t.Error(err)
	}
	f := &ipfs.Fetcher{Gateways: []string{n.URL}, MaxBytes: 1 << 20, PerGatewayTimeout: 10 * time.Second}
	for i, k := range jobs {
		acc := accs[k]
		if acc.State != chain.JobCompleted {
			t.Errorf("job %d: chain state %s", i, acc.State)
			continue
		}
		b, err := f.Fetch(context.Background(), ipfs.CIDFromDigest(ipfs.Digest(acc.IPFSResult)))
		if err != nil {
			t.Fatal(err)
		}
		res, err := jobdef.ParseResult(b)
		if err != nil || res.Status != jobdef.StatusSucceeded {
			t.Errorf("job %d (gpus %v): result %+v %v", i, needs[i], res, err)
			continue
		}
		for _, o := range res.Outputs {
			if o.Path != "gpus.txt" {
				continue
			}
			b, err := f.Fetch(context.Background(), o.CID)
			if got := strings.TrimSpace(string(b)); err != nil || got != fmt.Sprint(want[k]) {
				t.Errorf("job %d asked gpus %v: saw %q render nodes (%v)", i, needs[i], got, err)
			}
		}
	}
	watch.mu.Lock()
	defer watch.mu.Unlock()
	for _, v := range watch.violations {
		t.Error(v)
	}
	var sampled []string
	for id, nodes := range watch.seen {
		sampled = append(sampled, fmt.Sprintf("%s…: %v", id[:11], nodes))
	}
	sort.Strings(sampled)
	t.Logf("at most %d containers running at once; GPU nodes seen per container:\n%s", watch.maxRunning, strings.Join(sampled, "\n"))
	if watch.maxRunning < 2 {
		t.Errorf("at most %d container ran at once with 4 slots", watch.maxRunning)
	}
	if len(watch.seen) < len(jobs)/2 {
		t.Errorf("only %d of %d containers sampled while running", len(watch.seen), len(jobs))
	}
	j, err := journal.Open(filepath.Join(run.data, "journal.db"), journal.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i, k := range jobs {
		snap, err := j.Snapshot(k.String())
		if err != nil || snap.Container == nil || len(snap.Container.GPUs) != want[k] {
			t.Errorf("job %d: journaled container intent %+v (%v), want %d GPUs", i, snap.Container, err, want[k])
		}
	}
	if v := verifyReplay(t, run.data); len(v) > 0 {
		t.Error(v)
	}
}

// parallelFailpoints are TestCrashParallel's default crash points: a kill
// while four jobs are in flight, at the third operation start and at the
// second finish_job sent.
var parallelFailpoints = []string{failpoint.OpAfterTaskStart + ":3", failpoint.FinishJobAfterSend + ":2"}

// parallelCrash is one case of TestCrashParallel: a failpoint, or a kill -9
// that long after the worker is ready.
type parallelCrash struct {
	failpoint string
	kill      time.Duration
}

func (c parallelCrash) String() string {
	if c.failpoint != "" {
		return c.failpoint
	}
	return fmt.Sprintf("kill-9@ready+%dms", c.kill.Milliseconds())
}

// TestCrashParallel is the crash matrix with 4 jobs in flight on 4 slots and
// a 4-GPU inventory (one GPU each): the worker is killed at a failpoint, or
// by kill -9 at a random instant, restarted, and every job is checked as in
// TestCrashMatrix (exactly one claim and finish, result verifies, runs.txt
// op0 op1, nothing left, replay verifies); besides, the restart kept each
// job's attempt on the GPUs journaled before the crash, and no two running
// containers shared a GPU. By default 2 failpoints and 1 random kill;
// HYPERNODE_CRASH_FULL=1 runs 6 failpoints and 8 random kills
// (HYPERNODE_CRASH_SEED replays a draw).
func TestCrashParallel(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: needs containerd and the real binary (skipped with -short)")
	}
	inventory, devRoot := mi100Inventory(t)
	ctd := runtimetest.StartContainerd(t)
	s := newCrashSetup(t, ctd)
	points := parallelFailpoints
	randomRuns := 1
	if crashFull() {
		points = append(points, failpoint.StartAfterCreate+":2", failpoint.UploadAfterAdd+":3", failpoint.ClaimAfterLanded+":3", failpoint.OpAfterExit+":4")
		randomRuns = 8
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HYPERNODE_CRASH_SEED"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			seed = n
		}
	}
	t.Logf("random kills: seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	var cases []parallelCrash
	for _, fp := range points {
		cases = append(cases, parallelCrash{failpoint: fp})
	}
	for range randomRuns {
		cases = append(cases, parallelCrash{kill: time.Duration(rng.IntN(2500)) * time.Millisecond}) // the 4 jobs end about 2.5 s after ready
	}
	began := time.Now()
	var rows []matrixRow
	for _, c := range cases {
		row := matrixRow{name: c.String() + " (4 in flight)"}
		start := time.Now()
		t.Run(c.String(), func(t *testing.T) {
			row.runs++
			dir := t.TempDir()
			n := startCrashNet(t, dir)
			bin := workerBinary(t)
			jobs := make([]solana.PublicKey, 4)
			for i := range jobs {
				k, err := n.postArgs(bin, gpuJobDef(t, dir, fmt.Sprintf("job%d", i), 1, "1"))
				if err != nil {
					t.Fatal(err)
				}
				jobs[i] = k
			}
			watch := watchGPUs(t, ctd)
			run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: ctd, archive: s.archive, failpoint: c.failpoint,
				extra: []string{"--max-parallel-jobs", "4", "--gpu-inventory", inventory, "--gpu-host-root", devRoot}}
			w1 := run.start(t)
			var v []string
			if c.failpoint != "" {
				if err := waitFailpoint(context.Background(), w1, run.data, jobs, c.failpoint); err != nil {
					v = append(v, err.Error())
					if !w1.exited() {
						_ = w1.interrupt(30 * time.Second)
					}
				}
			} else if err := w1.ready(30 * time.Second); err != nil {
				v = append(v, err.Error())
			} else if w1.waitExit(c.kill) {
				v = append(v, fmt.Sprintf("worker exited by itself (%s) before its kill", w1.state))
			} else {
				w1.kill9()
			}
			before := journaledGPUs(t, run.data)
			inFlight := 0
			for _, j := range jobs {
				if len(before[j.String()]) > 0 {
					inFlight++
				}
			}
			row.note = fmt.Sprintf("%d jobs held GPUs at the kill; states %s", inFlight, jobStates(run.data, jobs))
			run.failpoint = ""
			w2 := run.start(t)
			v = append(v, finishRun(t, s, n, run.data, jobs, w2)...)
			watch.finish()
			after := journaledGPUs(t, run.data)
			for job, byAttempt := range before {
				for attempt, g := range byAttempt {
					if a := after[job][attempt]; a != g || strings.Contains(a, "≠") {
						v = append(v, fmt.Sprintf("job %s attempt %d: GPUs %s before the crash, %s after", job[:8], attempt, g, a))
					}
				}
			}
			watch.mu.Lock()
			v = append(v, watch.violations...)
			watch.mu.Unlock()
			row.violations = v
			reportRun(t, v, w1, w2)
		})
		row.took = time.Since(start)
		if row.runs > 0 {
			rows = append(rows, row)
		}
	}
	logMatrix(t, fmt.Sprintf("crash matrix, 4 jobs in flight: %d failpoints, %d random kills", len(points), randomRuns), rows, time.Since(began))
}

// journaledGPUs reads, from the journal's container intents, each job's
// GPUs by attempt (comma-joined); a job whose attempt was journaled twice
// with different GPUs is reported by a "≠" in the value.
func journaledGPUs(t *testing.T, data string) map[string]map[int]string {
	t.Helper()
	j, err := journal.Open(filepath.Join(data, "journal.db"), journal.Options{ReadOnly: true, LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	out := map[string]map[int]string{}
	err = j.Each(func(r journal.Record) error {
		if r.Container == nil {
			return nil
		}
		if out[r.Job] == nil {
			out[r.Job] = map[int]string{}
		}
		g := strings.Join(r.Container.GPUs, ",")
		if old, ok := out[r.Job][r.Container.Attempt]; ok && old != g {
			g = old + "≠" + g
		}
		out[r.Job][r.Container.Attempt] = g
		return nil
	})
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		t.Fatal(err)
	}
	return out
}
