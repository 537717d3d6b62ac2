package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestWorkerSurvivesFaults runs one worker through jobs on a localnet that
// injects, from its command line, every fault but 429s and drops (the
// contention test's): 100 ms latency, 5% 503s with Retry-After: 1, half the
// sent transactions landing with an error reply, blockhashes valid for 10
// blocks (2 s), no WebSocket; and the localnet is SIGKILLed and restarted on
// its state in the middle. Every job is claimed and finished once, and the
// worker logs no error.
func TestWorkerSurvivesFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("needs containerd and the real binary (skipped with -short)")
	}
	s := newCrashSetup(t, runtimetest.StartContainerd(t))
	dir := t.TempDir()
	n := &crashNet{dir: filepath.Join(dir, "localnet"), keypair: filepath.Join(dir, "node-keypair.json")}
	node, err := solana.PublicKeyFromBase58(runCLI(t, nil, "keygen", n.keypair))
	if err != nil {
		t.Fatal(err)
	}
	n.node = node
	addr := loopbackAddr(t)
	n.URL = "http://" + addr
	n.args = []string{"localnet", "--addr", addr, "--dir", n.dir, "--stake", n.keypair, "--slot-interval", "200ms"}
	n.start(t)
	var jobs []solana.PublicKey
	for i := 0; i < 4; i++ {
		jobs = append(jobs, n.post(t, writeJobDef(t, dir, fmt.Sprintf("job-%d", i), "")))
	}
	// From here on, the faults; they survive the restart (command line).
	if err := n.proc.interrupt(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	n.args = append(n.args, "--fault-seed", "11", "--fault-latency-ms", "100", "--fault-503", "0.05", "--fault-retry-after", "1",
		"--fault-reply-error", "0.5", "--fault-expiry-blocks", "10", "--fault-refuse-websocket")
	n.start(t)
	run := workerRun{net: n, data: filepath.Join(dir, "data"), ctd: s.ctd, archive: s.archive}
	w := run.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	key, _ := solana.NewRandomPrivateKey()
	market, err := findMarket(ctx, n.URL, chain.DefaultMarketsProgramID)
	if err != nil {
		t.Fatal(err)
	}
	watcher := chain.NewClient(n.URL, key, chain.DefaultMarketsProgramID, chain.DefaultStakingProgramID, market, chain.WithWebSocket(""))
	restarted := false
	for {
		accs, err := watcher.Jobs(ctx, jobs)
		done := 0
		for _, a := range accs {
			if a.State == chain.JobCompleted {
				done++
			}
		}
		if err == nil && done == len(jobs) {
			break
		}
		if done >= 1 && !restarted {
			n.restart(t) // SIGKILL, same state, same faults
			restarted = true
		}
		if w.exited() {
			t.Fatalf("worker exited: %s", lastLines(w.stderr.String(), 30))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jobs not done (%d of %d): %v\n%s", done, len(jobs), err, lastLines(w.stderr.String(), 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := w.interrupt(60 * time.Second); err != nil {
		t.Error(err)
	}
	rep := faultReport(t, n.URL, &localnet.Faults{})
	t.Logf("injected %+v; traffic %+v; localnet restarted: %v", rep.Injected, rep.Traffic, restarted)
	if rep.Injected.ReplyErrors == 0 || !restarted {
		t.Errorf("faults not exercised: %+v, restarted %v", rep.Injected, restarted)
	}
	for _, job := range jobs {
		counts, err := localnet.CountInstructions(context.Background(), n.URL, chain.DefaultMarketsProgramID, job)
		if err != nil {
			t.Fatal(err)
		}
		if c, f := counts[chain.IxWorkJob], counts[chain.IxFinishJob]; c.Succeeded != 1 || f.Succeeded != 1 || c.SucceededBy[node] != 1 {
			t.Errorf("%s: work_job landed %d times, finish_job %d times", job, c.Succeeded, f.Succeeded)
		}
	}
	if lines := errorLines(w.stderr.String()); len(lines) > 0 {
		t.Errorf("the worker logged %d errors, first: %s", len(lines), lines[0])
	}
	if !strings.Contains(w.stderr.String(), `"level"`) {
		t.Error("the worker wrote no JSON log")
	}
}
