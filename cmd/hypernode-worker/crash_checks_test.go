package main

// What the crash tests check once a job is over: the chain (counted from the
// ledger, independently of the worker's journal), the verified result, the
// journal, containerd and the data directory.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime"
)

// runsWant is runs.txt after a job whose two operations each ran once, in order.
const runsWant = "op0\nop1\n"

// writeJobDef writes the crash tests' job definition to dir/name.json: two
// operations that append their name to /workspace/output/runs.txt, so an
// operation run twice or skipped shows in the job's output. op0Extra runs
// after op0's append (e.g. "sleep 1").
func writeJobDef(tb testing.TB, dir, name, op0Extra string) string {
	tb.Helper()
	op0 := "echo op0 >> /workspace/output/runs.txt"
	if op0Extra != "" {
		op0 += "; " + op0Extra
	}
	def := map[string]any{
		"image": "hypernode.local/test:latest",
		"operations": []map[string]any{
			{"type": "run", "command": op0},
			{"type": "run", "command": "echo op1 >> /workspace/output/runs.txt"},
		},
		"timeout": 120,
	}
	b, err := json.MarshalIndent(def, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// settle waits until every job is final on chain (neither queued nor
// running) and terminal in the worker's journal. It gives up when the worker
// exits or timeout passes, with an error saying where each job stands.
func settle(ctx context.Context, rpcURL, data string, jobs []solana.PublicKey, w *child, timeout time.Duration) (map[solana.PublicKey]*chain.Job, error) {
	c := &chain.Client{RPC: rpc.New(rpcURL), Program: chain.DefaultMarketsProgramID}
	deadline := time.Now().Add(timeout)
	for {
		accs := map[solana.PublicKey]*chain.Job{}
		states := journalStates(ctx, data)
		done := true
		var where []string
		for _, k := range jobs {
			acc, err := c.Job(ctx, k)
			if err != nil {
				return nil, fmt.Errorf("read job %s: %w", k, err)
			}
			accs[k] = acc
			if acc.State == chain.JobQueued || acc.State == chain.JobRunning || !fsm.State(states[k.String()]).Terminal() {
				done = false
			}
			where = append(where, fmt.Sprintf("%s: chain %s, journal %q", k, acc.State, states[k.String()]))
		}
		if done {
			return accs, nil
		}
		if w != nil && w.exited() {
			return accs, fmt.Errorf("the worker exited (%s) before the jobs settled: %s", w.state, strings.Join(where, "; "))
		}
		if time.Now().After(deadline) {
			return accs, fmt.Errorf("jobs not settled in %s: %s", timeout, strings.Join(where, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crashCheck is what verifyJob needs to look at one run.
type crashCheck struct {
	net  *crashNet
	data string
	rt   *runtime.Runtime
}

// verifyJob checks the contract of issue 3 for one job of a run whose worker
// has stopped, and returns each violation in a sentence:
//   - the ledger (localnet.CountInstructions: getSignaturesForAddress and
//     getTransaction, not the journal) holds exactly one successful work_job
//     and one successful finish_job for the job, both sent by the node;
//   - the job is completed on chain by the node and finished in the journal;
//   - its result document verifies against the CID on chain, says succeeded
//     with both operations exiting 0, and its runs.txt output is runsWant;
//   - no container of the job is left in containerd, no workspace on disk.
func verifyJob(ctx context.Context, c crashCheck, job solana.PublicKey, acc *chain.Job, journalState string) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	counts, err := localnet.CountInstructions(ctx, c.net.URL, chain.DefaultMarketsProgramID, job)
	if err != nil {
		bad("ledger: %s", rpcErrorText(err))
	} else {
		for _, ix := range []string{chain.IxWorkJob, chain.IxFinishJob} {
			n := counts[ix]
			if n.Succeeded != 1 || n.SucceededBy[c.net.node] != 1 {
				bad("ledger: %s landed successfully %d times (%d paid and signed by the node), want exactly once by the node; %d landed failed", ix, n.Succeeded, n.SucceededBy[c.net.node], n.Failed)
			}
		}
	}
	if acc == nil || acc.State != chain.JobCompleted || acc.Node == nil || *acc.Node != c.net.node {
		bad("chain: job is not completed by the node: %+v", acc)
	}
	if journalState != string(fsm.Finished) {
		bad("journal: job is %q, want finished", journalState)
	}
	if acc != nil && acc.IPFSResult != ([32]byte{}) {
		v = append(v, verifyResult(ctx, c.net.URL, job, c.net.node, acc)...)
	} else {
		bad("chain: no result digest")
	}
	prefix := "hn-" + job.String() + "-" // fsm.ContainerID of any attempt
	ids, err := c.rt.List(ctx)
	if err != nil {
		bad("containerd: %v", err)
	}
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			bad("containerd: container %s left behind", id)
		}
	}
	ws := filepath.Join(c.data, "jobs", job.String(), "workspace")
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		bad("disk: workspace %s left behind (stat: %v)", ws, err)
	}
	return v
}

// verifyResult fetches the job's result document from the localnet gateway
// (the fetcher checks the bytes against the CID) and checks it.
func verifyResult(ctx context.Context, gateway string, job, node solana.PublicKey, acc *chain.Job) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }
	res, err := fetchResult(ctx, gateway, acc)
	if err != nil {
		bad("result: %v", err)
		return v
	}
	if res.Status != jobdef.StatusSucceeded || res.Job != job.String() || res.Node != node.String() {
		bad("result: status %q for job %s node %s (error %q), want succeeded for %s by %s", res.Status, res.Job, res.Node, res.Error, job, node)
	}
	if len(res.Operations) != 2 {
		bad("result: %d operations, want 2", len(res.Operations))
	}
	for i, op := range res.Operations {
		if op.Index != i || op.ExitCode != 0 {
			bad("result: operation %d: index %d exit code %d, want exit 0", i, op.Index, op.ExitCode)
		}
	}
	var runs *jobdef.Output
	for i := range res.Outputs {
		if res.Outputs[i].Path == "runs.txt" {
			runs = &res.Outputs[i]
		}
	}
	if runs == nil {
		bad("result: no runs.txt among the outputs %+v", res.Outputs)
		return v
	}
	f := &ipfs.Fetcher{Gateways: []string{gateway}, MaxBytes: 1 << 20, PerGatewayTimeout: 10 * time.Second}
	b, err := f.Fetch(ctx, runs.CID)
	if err != nil {
		bad("result: runs.txt %s: %v", runs.CID, err)
	} else if string(b) != runsWant {
		bad("result: runs.txt is %q, want %q (an operation ran twice or not at all)", b, runsWant)
	}
	return v
}

// fetchResult fetches and parses the result document whose digest is on chain.
func fetchResult(ctx context.Context, gateway string, acc *chain.Job) (*jobdef.Result, error) {
	cid := ipfs.CIDFromDigest(ipfs.Digest(acc.IPFSResult))
	f := &ipfs.Fetcher{Gateways: []string{gateway}, MaxBytes: jobdef.MaxResultBytes, PerGatewayTimeout: 10 * time.Second}
	b, err := f.Fetch(ctx, cid)
	if err != nil {
		return nil, fmt.Errorf("result document %s: %w", cid, err)
	}
	res, err := jobdef.ParseResult(b)
	if err != nil {
		return nil, fmt.Errorf("result document %s: %w", cid, err)
	}
	return res, nil
}

// verifyReplay runs `replay --data-dir data`; a non-zero exit is a violation.
func verifyReplay(tb testing.TB, data string) []string {
	cmd := exec.Command(workerBinary(tb), "replay", "--data-dir", data)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return []string{fmt.Sprintf("replay: %v\n%s", err, lastLines(out.String(), 15))}
	}
	return nil
}

// removeJobContainers removes what a run left in containerd, so that the
// next run of a shared daemon starts clean.
func removeJobContainers(ctx context.Context, rt *runtime.Runtime, jobs []solana.PublicKey) {
	ids, err := rt.List(ctx)
	if err != nil {
		return
	}
	for _, id := range ids {
		for _, j := range jobs {
			if strings.HasPrefix(id, "hn-"+j.String()+"-") {
				_ = rt.Remove(ctx, id)
			}
		}
	}
}

// chainJob reads a job account from the localnet.
func chainJob(ctx context.Context, rpcURL string, job solana.PublicKey) (*chain.Job, error) {
	c := &chain.Client{RPC: rpc.New(rpcURL), Program: chain.DefaultMarketsProgramID}
	acc, err := c.Job(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", job, err)
	}
	return acc, nil
}

// rpcErrorText says what err is; solana-go's *jsonrpc.RPCError prints as a
// multi-line dump otherwise.
func rpcErrorText(err error) string {
	var re *jsonrpc.RPCError
	if errors.As(err, &re) {
		return fmt.Sprintf("JSON-RPC error %d: %s", re.Code, re.Message)
	}
	return err.Error()
}

// awaitClean waits up to d, while the worker w runs, until the jobs have no
// container in containerd and no workspace on disk; verifyJob reports what
// is left.
func awaitClean(ctx context.Context, rt *runtime.Runtime, data string, jobs []solana.PublicKey, w *child, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !w.exited() {
		clean := true
		ids, err := rt.List(ctx)
		if err != nil {
			return
		}
		for _, j := range jobs {
			for _, id := range ids {
				clean = clean && !strings.HasPrefix(id, "hn-"+j.String()+"-")
			}
			_, err := os.Stat(filepath.Join(data, "jobs", j.String(), "workspace"))
			clean = clean && errors.Is(err, os.ErrNotExist)
		}
		if clean {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
