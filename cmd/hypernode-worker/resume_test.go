package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestResumeCommand: a worker killed with a job running; the operator runs
// `resume --dry-run` (reconciled state), `resume --give-back` (quit_job: the
// job is queued again, its container gone), and, on a second job,
// `resume` (re-attached and finished).
func TestResumeCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	addr := freeAddr(t)
	w := spawnWorkerAt(t, ctd, addr)
	dir := t.TempDir()
	long := filepath.Join(dir, "long.json")
	os.WriteFile(long, []byte(`{"image":"hypernode.local/test:latest","timeout":120,
		"operations":[{"type":"run","command":"echo started; sleep 4; echo slept"},{"type":"run","command":"echo second"}]}`), 0o644)
	post := func() solana.PublicKey {
		return solana.MustPublicKeyFromBase58(w.cli(t, "localnet", "post", "--rpc", w.rpc, long))
	}
	first := post()
	waitState(t, w.data, first, "running")
	// Let the operation's task start, then kill the worker as a power loss would.
	time.Sleep(time.Second)
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w.done

	base := []string{"--localnet-addr", addr, "--containerd-address", ctd, "--env-file", "", "--log-format", "json"}
	out := w.cli(t, append([]string{"resume", first.String(), "--dry-run"}, base...)...)
	for _, want := range []string{"intent   op 0", "journal:     running", "Running, this node", "task running (operation 0)", "re-attach to operation 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("resume --dry-run lacks %q:\n%s", want, out)
		}
	}
	out = w.cli(t, append([]string{"resume", first.String(), "--give-back"}, base...)...)
	if !strings.Contains(out, "is now abandoned (given back with quit_job)") {
		t.Fatalf("resume --give-back:\n%s", out)
	}
	// The chain has it queued again, and its container is gone.
	c := &chain.Client{RPC: rpc.New(w.rpc), Program: chain.DefaultMarketsProgramID}
	// The localnet lives in the worker process: start the worker again (not
	// claiming) to read the chain.
	w2 := spawnWorkerIn(t, ctd, addr, w.data, "--auto-accept=false")
	acc, err := c.Job(context.Background(), first)
	if err != nil || acc.State != chain.JobQueued || acc.Node != nil {
		t.Fatalf("after give-back the job is %+v, %v", acc, err)
	}
	rt := newRuntimeAt(t, ctd)
	if ids, _ := rt.List(context.Background()); len(ids) != 0 {
		t.Fatalf("containers left after give-back: %v", ids)
	}
	w2.stop(t)

	// A second job: killed mid-operation, continued by `resume` to the end.
	// (The given-back job waits in the queue; this worker's journal has it
	// as abandoned, so it is not claimed again.)
	w3 := spawnWorkerIn(t, ctd, addr, w.data)
	second := post()
	waitState(t, w3.data, second, "running")
	time.Sleep(time.Second)
	w3.cmd.Process.Signal(syscall.SIGKILL)
	<-w3.done
	out = w3.cli(t, append([]string{"resume", second.String()}, base...)...)
	if !strings.Contains(out, "is now finished (result succeeded") {
		t.Fatalf("resume:\n%s", out)
	}
	out = w3.cli(t, "replay", "--verify", "--data-dir", w3.data)
	if !strings.Contains(out, "journal verified") {
		t.Fatalf("replay --verify:\n%s", out)
	}
}

func waitState(t *testing.T, dataDir string, job solana.PublicKey, state string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for journalStates(context.Background(), dataDir)[job.String()] != state {
		if time.Now().After(deadline) {
			t.Fatalf("job %s not %s in 60s: %v", job, state, journalStates(context.Background(), dataDir))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
