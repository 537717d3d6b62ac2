package main

// Four workers race for the same jobs on one localnet that answers 10% of
// requests with 429 and drops 5% of sent transactions: every job is claimed
// exactly once and finished exactly once, by the same node, and no worker
// logs an error (losing a claim race is normal).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
	"github.com/hypernode-sol/worker/statusapi"
)

// contentionJobs is the number of jobs (HYPERNODE_CONTENTION_JOBS overrides).
func contentionJobs(t *testing.T) int {
	if s := os.Getenv("HYPERNODE_CONTENTION_JOBS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > chain.MaxQueue {
			t.Fatalf("HYPERNODE_CONTENTION_JOBS %q is not 1..%d", s, chain.MaxQueue)
		}
		return n
	}
	return 200
}

// faultReport posts faults to the localnet's admin endpoint (nil: only
// reads) and returns its report: faults, injected counts, traffic.
func faultReport(t testing.TB, rpcURL string, f *localnet.Faults) localnet.FaultReport {
	t.Helper()
	var resp *http.Response
	var err error
	if f == nil {
		resp, err = http.Get(rpcURL + "/admin/faults")
	} else {
		body, _ := json.Marshal(f)
		resp, err = http.Post(rpcURL+"/admin/faults", "application/json", bytes.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep localnet.FaultReport
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&rep) != nil {
		t.Fatalf("/admin/faults: %s", resp.Status)
	}
	return rep
}

// postJobs stores one definition and posts n jobs of it, 8 at a time.
func postJobs(t *testing.T, rpcURL string, market solana.PublicKey, def []byte, n int) []solana.PublicKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cid, _, err := (&ipfs.Uploader{APIURL: rpcURL}).Add(ctx, "job.json", bytes.NewReader(def))
	if err != nil {
		t.Fatal(err)
	}
	digest, err := ipfs.DigestFromCID(cid)
	if err != nil {
		t.Fatal(err)
	}
	jobs := make([]solana.PublicKey, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		client, _ := solana.NewRandomPrivateKey()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				job, _, err := localnet.PostJob(ctx, rpcURL, client, market, digest, 0, chain.GPUAny)
				if err != nil {
					errs <- err
					continue
				}
				jobs[i] = job
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("post job: %v", err)
	}
	return jobs
}

// errorLines returns the error-level lines of a JSON log.
func errorLines(log string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Level == "error" || l.Level == "fatal" || l.Level == "panic") {
			out = append(out, sc.Text())
		}
	}
	return out
}

func TestContention(t *testing.T) {
	if testing.Short() {
		t.Skip("contention: needs containerd and the real binary (skipped with -short)")
	}
	const workers = 4
	nJobs := contentionJobs(t)
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	dir := t.TempDir()
	// The localnet, standalone, with every worker's node staked and fast blocks.
	n := &crashNet{dir: filepath.Join(dir, "localnet")}
	keys := make([]string, workers)
	nodes := make([]solana.PublicKey, workers)
	n.args = []string{"localnet", "--addr", loopbackAddr(t), "--dir", n.dir, "--slot-interval", "200ms"}
	for i := range keys {
		keys[i] = filepath.Join(dir, fmt.Sprintf("node-%d.json", i))
		k, err := solana.PublicKeyFromBase58(runCLI(t, nil, "keygen", keys[i]))
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = k
		n.args = append(n.args, "--stake", keys[i])
	}
	n.URL = "http://" + n.args[2]
	n.keypair, n.node = keys[0], nodes[0]
	n.start(t)
	market, err := findMarket(context.Background(), n.URL, chain.DefaultMarketsProgramID)
	if err != nil {
		t.Fatal(err)
	}
	def, _ := json.Marshal(map[string]any{"image": runtimetest.ImageRef,
		"operations": []map[string]any{{"type": "run", "command": "echo ok > /workspace/output/ok.txt"}}, "timeout": 60})
	started := time.Now()
	jobs := postJobs(t, n.URL, market, def, nJobs)
	posted := time.Since(started)

	faultReport(t, n.URL, &localnet.Faults{Seed: 42, Rate429: 0.10, DropRate: 0.05})
	runs := make([]*child, workers)
	datas := make([]string, workers)
	for i := range runs {
		datas[i] = filepath.Join(dir, fmt.Sprintf("data-%d", i))
		runs[i] = workerRun{net: n, data: datas[i], ctd: s.ctd, archive: s.archive, keypair: keys[i]}.start(t)
		// One at a time until ready: concurrent imports of the same image
		// archive into one containerd race ("already exists").
		if err := runs[i].ready(60 * time.Second); err != nil {
			t.Fatalf("worker %d: %v\n%s", i, err, lastLines(runs[i].stderr.String(), 20))
		}
	}
	// Wait until no job is queued or running on chain (read through the
	// faults, with the worker's own retrying client).
	key, _ := solana.NewRandomPrivateKey()
	watcher := chain.NewClient(n.URL, key, chain.DefaultMarketsProgramID, chain.DefaultStakingProgramID, market, chain.WithWebSocket(""))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var accs map[solana.PublicKey]*chain.Job
	for {
		accs, err = watcher.Jobs(ctx, jobs)
		if err == nil && len(accs) == len(jobs) {
			open := 0
			for _, a := range accs {
				if a.State == chain.JobQueued || a.State == chain.JobRunning {
					open++
				}
			}
			if open == 0 {
				break
			}
		}
		for i, w := range runs {
			if w.exited() {
				t.Fatalf("worker %d exited (%s):\n%s", i, w.state, lastLines(w.stderr.String(), 30))
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jobs not done: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	took := time.Since(started) - posted
	// The chain is done; let each worker journal what it saw land (a finish
	// confirmed on chain becomes `finished` a moment later) before stopping it.
	for i, d := range datas {
		for {
			st, err := statusapi.Get(ctx, filepath.Join(d, "worker.sock"))
			if err == nil && st.ActiveJobs == 0 {
				break
			}
			if runs[i].exited() {
				t.Fatalf("worker %d exited (%s):\n%s", i, runs[i].state, lastLines(runs[i].stderr.String(), 30))
			}
			select {
			case <-ctx.Done():
				t.Fatalf("worker %d still has jobs in flight: %v", i, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for i, w := range runs {
		if err := w.interrupt(60 * time.Second); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	rep := faultReport(t, n.URL, &localnet.Faults{}) // count from the ledger without faults
	t.Logf("%d jobs, %d workers: posted in %s, done in %s; injected %+v", nJobs, workers, posted.Round(time.Millisecond), took.Round(time.Millisecond), rep.Injected)
	if rep.Injected.TooMany == 0 || rep.Injected.Dropped == 0 {
		t.Errorf("faults were not injected: %+v", rep.Injected)
	}

	// The ledger, not the journals: one successful work_job and one
	// successful finish_job per job, by the same node.
	var v []string
	perNode := map[solana.PublicKey]int{}
	lost := 0
	for _, job := range jobs {
		counts, err := localnet.CountInstructions(context.Background(), n.URL, chain.DefaultMarketsProgramID, job)
		if err != nil {
			t.Fatal(err)
		}
		claim, finish := counts[chain.IxWorkJob], counts[chain.IxFinishJob]
		lost += claim.Failed
		if claim.Succeeded != 1 || finish.Succeeded != 1 {
			v = append(v, fmt.Sprintf("%s: work_job landed %d times, finish_job %d times", job, claim.Succeeded, finish.Succeeded))
			continue
		}
		for node := range claim.SucceededBy {
			if finish.SucceededBy[node] != 1 {
				v = append(v, fmt.Sprintf("%s: claimed by %s, finished by %v", job, node, finish.SucceededBy))
			}
			perNode[node]++
		}
		if a := accs[job]; a.State != chain.JobCompleted {
			v = append(v, fmt.Sprintf("%s: %s on chain", job, a.State))
		}
	}
	// The journals agree: each job finished in one worker's journal; in the
	// others it is lost (the claim race was lost) or unknown.
	finished, lostRaces, polledAtStop := map[string]int{}, 0, 0
	for i, d := range datas {
		for job, st := range journalStates(context.Background(), d) {
			switch st {
			case "finished":
				finished[job]++
			case "lost":
				lostRaces++
			case "polled":
				// Seen queued, then the worker was stopped before its claim
				// attempt ended: the next start reconciles it (to lost, as the
				// ledger above shows another node finished it). Not a double.
				polledAtStop++
			default:
				v = append(v, fmt.Sprintf("worker %d's journal has %s %s", i, job, st))
			}
		}
	}
	for _, job := range jobs {
		if finished[job.String()] != 1 {
			v = append(v, fmt.Sprintf("%s finished in %d journals", job, finished[job.String()]))
		}
	}
	if lostRaces == 0 {
		v = append(v, "no worker ever lost a claim race: the test did not contend")
	}
	var share []string
	for i, k := range nodes {
		share = append(share, fmt.Sprintf("worker %d: %d", i, perNode[k]))
	}
	sort.Strings(share)
	t.Logf("jobs per worker: %s; claim races lost (journal state lost): %d; failed claims that landed: %d; polled when stopped: %d", strings.Join(share, ", "), lostRaces, lost, polledAtStop)
	for i, w := range runs {
		if lines := errorLines(w.stderr.String()); len(lines) > 0 {
			v = append(v, fmt.Sprintf("worker %d logged %d errors, first: %s", i, len(lines), lines[0]))
		}
		if !strings.Contains(w.stderr.String(), `"level"`) {
			v = append(v, fmt.Sprintf("worker %d wrote no JSON log", i))
		}
	}
	if ids, err := s.rt.List(context.Background()); err != nil || len(ids) != 0 {
		v = append(v, fmt.Sprintf("containerd: containers left %v (%v)", ids, err))
	}
	for _, x := range v {
		t.Error(x)
	}
}
