package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// cliExit runs the binary with the worker's data directory and returns
// stdout, stderr and the exit status.
func (w *workerProc) cliExit(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(workerBinary(t), args...)
	cmd.Env = append(os.Environ(), "HYPERNODE_DATA_DIR="+w.data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("hypernode-worker %v: %v", args, err)
	return "", "", -1
}

// TestOperatorCommands runs the real binary against a running worker and
// then a stopped one: `test` prints its table with every service checked
// and the missing GPU skipped (not failed); it fails, still reporting every
// other check, when containerd is unreachable; `logs -f` follows a running
// job's output scrubbed of its secret until the job ends; `logs` and
// `status` work from the journal after the worker stopped.
func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	w := spawnWorker(t, ctd)
	addr := strings.TrimPrefix(w.rpc, "http://")
	common := []string{"--env-file", "", "--localnet-addr", addr, "--containerd-address", ctd}

	// test, on a machine without a GPU, against the running worker.
	out, stderr, code := w.cliExit(t, append([]string{"test", "--json", "--test-image", runtimetest.ImageRef}, common...)...)
	if code != 0 {
		t.Fatalf("test exited %d:\n%s%s", code, out, stderr)
	}
	var rep selfTestReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("test --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range rep.Checks {
		got[c.Check] = c.Result
	}
	want := map[string]string{"hardware": checkOK, "disk": checkOK, "containerd": checkOK, "test container": checkOK,
		"keypair": checkOK, "RPC": checkOK, "market": checkOK, "stake": checkOK, "gateways": checkOK}
	if len(w.cliSpecsGPUs(t)) == 0 {
		want["GPU"], want["GPU in container"] = checkSkip, checkSkip
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("check %q = %q; want %q (%+v)", k, got[k], v, rep.Checks)
		}
	}
	if rep.Failed != 0 {
		t.Errorf("failed %d", rep.Failed)
	}

	// containerd unreachable: that check fails, the others are still reported.
	out, _, code = w.cliExit(t, append([]string{"test", "--test-image", runtimetest.ImageRef}, append(common, "--containerd-address", filepath.Join(t.TempDir(), "none.sock"))...)...)
	if code != 1 || !strings.Contains(out, "containerd") || !strings.Contains(out, "❌ FAIL") || !strings.Contains(out, "gateways") || !strings.Contains(out, "1 check(s) failed") {
		t.Errorf("test without containerd exited %d:\n%s", code, out)
	}

	// logs -f of a running job, scrubbed.
	def := filepath.Join(t.TempDir(), "slow.json")
	if err := os.WriteFile(def, []byte(`{"image":"`+runtimetest.ImageRef+`","operations":[{"type":"run","command":"for i in 1 2 3; do echo tick $i $TOKEN; sleep 0.5; done"},{"type":"run","command":"echo second"}],"env":{"TOKEN":"s3cr3t-tok-42"},"timeout":60}`), 0o600); err != nil {
		t.Fatal(err)
	}
	job, err := solana.PublicKeyFromBase58(w.cli(t, "localnet", "post", "--rpc", w.rpc, def))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, w.data, job, "running") // the journal is read through the status API
	out, stderr, code = w.cliExit(t, append([]string{"logs", "-f", job.String()}, common...)...)
	if code != 0 {
		t.Fatalf("logs -f exited %d: %s", code, stderr)
	}
	wantLog := "── operation 0 ──\ntick 1 [redacted]\ntick 2 [redacted]\ntick 3 [redacted]\n── operation 1 ──\nsecond\n"
	if out != wantLog || !strings.Contains(stderr, "is finished") {
		t.Errorf("logs -f printed\n%q\nstderr %q\nwant %q", out, stderr, wantLog)
	}

	w.stop(t)
	out, _, code = w.cliExit(t, append([]string{"logs", "--json", job.String()}, common...)...)
	if code != 0 || strings.Contains(out, "s3cr3t") || !strings.Contains(out, `{"op":1,"text":"second\n"}`) {
		t.Errorf("logs after stop exited %d:\n%s", code, out)
	}
	out, _, code = w.cliExit(t, "status", "--json")
	if code != 0 || !strings.Contains(out, job.String()) || !strings.Contains(out, `"state": "finished"`) ||
		!strings.Contains(out, `"running": false`) || strings.Contains(out, `"node"`) || strings.Contains(out, "0001-01-01") {
		t.Errorf("status from the journal exited %d:\n%s", code, out)
	}
}

// cliSpecsGPUs: the GPUs this machine reports (the tests run on machines
// with and without them).
func (w *workerProc) cliSpecsGPUs(t *testing.T) []string {
	var gpus []string
	for _, line := range strings.Split(w.stdout(), "\n") {
		if strings.HasPrefix(line, "    ") && strings.Contains(line, "GB VRAM") {
			gpus = append(gpus, line)
		}
	}
	return gpus
}
