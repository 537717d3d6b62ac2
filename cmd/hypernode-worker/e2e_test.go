package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

func TestMain(m *testing.M) { runtimetest.Main(m) }

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// workerProc is the real binary running `start` with the embedded localnet.
type workerProc struct {
	cmd  *exec.Cmd
	data string
	rpc  string
	out  *bytes.Buffer
	log  *bytes.Buffer
	done chan error
}

func spawnWorker(t testing.TB, ctd string, extra ...string) *workerProc {
	return spawnWorkerAt(t, ctd, freeAddr(t), extra...)
}

func spawnWorkerAt(t testing.TB, ctd, addr string, extra ...string) *workerProc {
	return spawnWorkerIn(t, ctd, addr, t.TempDir(), extra...)
}

// spawnWorkerIn starts the worker on data directory data (a restart when a
// worker ran there before).
func spawnWorkerIn(t testing.TB, ctd, addr, data string, extra ...string) *workerProc {
	t.Helper()
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		t.Fatal(err)
	}
	w := &workerProc{data: data, rpc: "http://" + addr, out: &bytes.Buffer{}, log: &bytes.Buffer{}, done: make(chan error, 1)}
	args := append([]string{"start", "--network", "localnet", "--localnet-addr", addr, "--containerd-address", ctd,
		"--import-image", archive, "--polling-interval", "300", "--log-format", "json", "--env-file", ""}, extra...)
	w.cmd = exec.Command(workerBinary(t), args...)
	w.cmd.Env = append(os.Environ(), "HYPERNODE_DATA_DIR="+w.data)
	w.cmd.Stdout, w.cmd.Stderr = &lockedWriter{w: w.out}, &lockedWriter{w: w.log}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	// After the worker stops: a worker killed with SIGKILL leaves its spare
	// workspaces (and a running job's) mounted for the next start to clear.
	t.Cleanup(func() { runtimetest.UnmountUnder(w.data) })
	t.Cleanup(func() { w.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(w.stdout(), "Watching for jobs") {
		select {
		case err := <-w.done:
			t.Fatalf("worker exited: %v\n%s\n%s", err, w.stdout(), w.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready in 60s:\n%s", w.stdout())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return w
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (w *workerProc) stdout() string {
	lw := w.cmd.Stdout.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return w.out.String()
}

func (w *workerProc) stop(t testing.TB) {
	if w.cmd.ProcessState != nil {
		return
	}
	_ = w.cmd.Process.Signal(os.Interrupt)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
		t.Error("worker did not stop on SIGINT within 30s")
	}
}

func (w *workerProc) cli(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(workerBinary(t), args...)
	cmd.Env = append(os.Environ(), "HYPERNODE_DATA_DIR="+w.data)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("hypernode-worker %v: %v\n%s%s", args, err, out, stderr)
	}
	return strings.TrimSpace(string(out))
}

func (w *workerProc) node(t testing.TB) solana.PublicKey {
	key, err := chain.LoadKeypair(filepath.Join(w.data, "node-keypair.json"))
	if err != nil {
		t.Fatal(err)
	}
	return key.PublicKey()
}

// waitJobs waits until every job is final on chain and terminal in the journal.
func (w *workerProc) waitJobs(t testing.TB, jobs []solana.PublicKey) map[solana.PublicKey]*chain.Job {
	t.Helper()
	c := &chain.Client{RPC: rpc.New(w.rpc), Program: chain.DefaultMarketsProgramID}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		accs := map[solana.PublicKey]*chain.Job{}
		states := journalStates(context.Background(), w.data)
		done := true
		for _, k := range jobs {
			acc, err := c.Job(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			accs[k] = acc
			if acc.State == chain.JobQueued || acc.State == chain.JobRunning || !fsm.State(states[k.String()]).Terminal() {
				done = false
			}
		}
		if done {
			return accs
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs not done in 2 minutes; journal %v\nlog:\n%s", states, w.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *workerProc) result(t testing.TB, acc *chain.Job) *jobdef.Result {
	t.Helper()
	cid := ipfs.CIDFromDigest(ipfs.Digest(acc.IPFSResult))
	f := &ipfs.Fetcher{Gateways: []string{w.rpc}, MaxBytes: jobdef.MaxResultBytes, PerGatewayTimeout: 10 * time.Second}
	b, err := f.Fetch(context.Background(), cid) // verifies the bytes against the CID
	if err != nil {
		t.Fatal(err)
	}
	res, err := jobdef.ParseResult(b)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func balance(t *testing.T, rpcURL string, k solana.PublicKey) uint64 {
	out, err := rpc.New(rpcURL).GetBalance(context.Background(), k, rpc.CommitmentConfirmed)
	if err != nil {
		t.Fatal(err)
	}
	return out.Value
}

// TestEndToEndSampleJobs runs the real binary against a real containerd and
// the embedded localnet over HTTP: the four sample jobs of the demo end in
// their expected states, results verify against their CIDs, the node is paid
// 99% of each price less fees, secrets stay out of logs and journal, and
// replay verifies the journal.
func TestEndToEndSampleJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	w := spawnWorker(t, ctd)
	node := w.node(t)
	before := balance(t, w.rpc, node)

	want := map[string]struct{ journal, status string }{
		"succeed": {string(fsm.Finished), jobdef.StatusSucceeded},
		"fail":    {string(fsm.Failed), jobdef.StatusFailed},
		"timeout": {string(fsm.Failed), jobdef.StatusTimeout},
		"invalid": {string(fsm.Failed), jobdef.StatusRejected},
	}
	names := map[solana.PublicKey]string{}
	var jobs []solana.PublicKey
	for _, name := range []string{"succeed", "fail", "timeout", "invalid"} {
		out := w.cli(t, "localnet", "post", "--rpc", w.rpc, filepath.Join("..", "..", "testdata", "jobs", name+".json"))
		k, err := solana.PublicKeyFromBase58(out)
		if err != nil {
			t.Fatalf("post printed %q", out)
		}
		names[k] = name
		jobs = append(jobs, k)
	}
	accs := w.waitJobs(t, jobs)
	states := journalStates(context.Background(), w.data)
	var price uint64
	for _, k := range jobs {
		name, acc := names[k], accs[k]
		if acc.State != chain.JobCompleted || acc.Node == nil || *acc.Node != node {
			t.Errorf("%s: chain state %s", name, acc.State)
			continue
		}
		price = acc.Price
		res := w.result(t, acc)
		if states[k.String()] != want[name].journal || res.Status != want[name].status {
			t.Errorf("%s: journal %s, result %s; want %s, %s", name, states[k.String()], res.Status, want[name].journal, want[name].status)
		}
		if res.Job != k.String() || res.Node != node.String() {
			t.Errorf("%s: result names job %s node %s", name, res.Job, res.Node)
		}
		switch name {
		case "succeed":
			if len(res.Outputs) != 1 || res.Outputs[0].Path != "result.txt" {
				t.Fatalf("succeed outputs %+v", res.Outputs)
			}
			f := &ipfs.Fetcher{Gateways: []string{w.rpc}, MaxBytes: 1 << 20}
			b, err := f.Fetch(context.Background(), res.Outputs[0].CID)
			if err != nil || !strings.Contains(string(b), "HELLO FROM THE HYPERNODE DEMO") {
				t.Errorf("output file %q %v", b, err)
			}
			if !strings.Contains(res.Operations[0].LogTail, "[redacted]") || strings.Contains(res.Operations[0].LogTail, "hn-demo-secret") {
				t.Errorf("secret not scrubbed from the log tail: %q", res.Operations[0].LogTail)
			}
		case "fail":
			if len(res.Operations) != 2 || res.Operations[1].ExitCode != 3 {
				t.Errorf("fail operations %+v", res.Operations)
			}
		case "timeout":
			if len(res.Operations) != 1 || res.Operations[0].ExitCode != 137 {
				t.Errorf("timeout operations %+v", res.Operations)
			}
			if d := res.FinishedAt.Sub(res.StartedAt); d > 30*time.Second {
				t.Errorf("timeout job ran %s, deadline was 3s", d)
			}
		case "invalid":
			if len(res.Operations) != 0 || !strings.Contains(res.Error, "operations[0].workdir: must be an absolute path") {
				t.Errorf("invalid result %+v", res)
			}
		}
	}
	// Paid 99% of the price for each of the four finished jobs, less 5000
	// lamports per transaction the node signed.
	after := balance(t, w.rpc, node)
	paid := int64(len(jobs)) * int64(price) * 99 / 100
	fees := paid - (int64(after) - int64(before))
	if fees < 0 || fees%chain.FeePerSignature != 0 || fees > 20*chain.FeePerSignature {
		t.Errorf("balance %d -> %d: paid %d, so fees %d lamports: not a small multiple of 5000", before, after, paid, fees)
	}
	w.stop(t)
	if strings.Contains(w.log.String(), "hn-demo-secret") {
		t.Error("the job's secret reached the worker log")
	}
	raw, _ := os.ReadFile(filepath.Join(w.data, "journal.db"))
	if bytes.Contains(raw, []byte("hn-demo-secret")) {
		t.Error("the job's secret reached the journal")
	}
	out := w.cli(t, "replay", "--data-dir", w.data)
	if !strings.Contains(out, "journal verified") || !strings.Contains(out, "polled → claimed → fetched → running → uploaded → finished") {
		t.Errorf("replay:\n%s", out)
	}
	// No container is left behind.
	rt := newRuntimeAt(t, ctd)
	ids, err := rt.List(context.Background())
	if err != nil || len(ids) != 0 {
		t.Errorf("containers left: %v %v", ids, err)
	}
}

// TestEndToEndLyingGateway: a definition whose bytes do not match its CID is
// rejected (finished with status rejected), and nothing runs.
func TestEndToEndLyingGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	// The gateway forwards to the localnet but alters every body.
	var target string
	lying := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		u, _ := url.Parse(target + r.URL.Path)
		resp, err := http.Get(u.String())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		rw.WriteHeader(resp.StatusCode)
		rw.Write(bytes.ReplaceAll(b, []byte("echo"), []byte("ECHO")))
	}))
	defer lying.Close()
	addr := freeAddr(t)
	target = "http://" + addr
	w := spawnWorkerAt(t, ctd, addr, "--ipfs-gateway", lying.URL)
	out := w.cli(t, "localnet", "post", "--rpc", w.rpc, filepath.Join("..", "..", "testdata", "jobs", "succeed.json"))
	k := solana.MustPublicKeyFromBase58(out)
	acc := w.waitJobs(t, []solana.PublicKey{k})[k]
	res := w.result(t, acc)
	if res.Status != jobdef.StatusRejected || !strings.Contains(res.Error, "served bytes whose CID is") {
		t.Fatalf("result %+v", res)
	}
	rt := newRuntimeAt(t, ctd)
	if ids, _ := rt.List(context.Background()); len(ids) != 0 {
		t.Fatalf("a container was created: %v", ids)
	}
}

func newRuntimeAt(t *testing.T, ctd string) *runtime.Runtime {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := runtime.New(ctx, runtime.Config{Address: ctd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// TestBadConfigurationExitsTwo: one clear line and exit code 2, no crash.
func TestBadConfigurationExitsTwo(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.json")
	key, _ := solana.NewRandomPrivateKey()
	if err := chain.WriteKeypair(open, key); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644)
	market := solana.NewWallet().PublicKey().String()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown network", []string{"start", "--network", "moon"}, `unknown network "moon"`},
		{"malformed market", []string{"start", "--network", "devnet", "--market", "not-a-key!", "--keypair", open}, `MARKET_PUBKEY "not-a-key!" is not a base58 public key`},
		{"missing keypair", []string{"start", "--network", "devnet", "--market", market, "--ipfs-gateway", "http://127.0.0.1:1", "--ipfs-upload-url", "http://127.0.0.1:1", "--keypair", filepath.Join(dir, "none.json")}, "does not exist"},
		{"world-readable keypair", []string{"start", "--network", "devnet", "--market", market, "--ipfs-gateway", "http://127.0.0.1:1", "--ipfs-upload-url", "http://127.0.0.1:1", "--keypair", open}, "readable by group or others"},
		{"bad polling interval", []string{"config", "--polling-interval", "soon"}, "POLLING_INTERVAL"},
		{"unknown flag", []string{"start", "--frobnicate"}, "unknown flag"},
		{"upload URL", []string{"config", "--ipfs-upload-url", "ftp://x"}, `IPFS_UPLOAD_URL "ftp://x" is not an http(s) URL`},
		{"localnet not loopback", []string{"start", "--localnet-addr", "8.8.8.8:53"}, "is not a loopback address"},
		{"localnet bad port", []string{"config", "--localnet-addr", "127.0.0.1:99999"}, "is not a loopback address"},
		{"missing inventory", []string{"config", "--gpu-inventory", filepath.Join(dir, "none.xml")}, "GPU_INVENTORY"},
		{"image archive is a directory", []string{"start", "--import-image", dir}, "is not a regular file"},
		{"workspace limit", []string{"config", "--workspace-limit-mb", "0"}, "WORKSPACE_LIMIT_MB"},
		{"workspace spares", []string{"config", "--workspace-spares", "17"}, "WORKSPACE_SPARES"},
		{"API address not loopback", []string{"config", "--api-addr", "0.0.0.0:9090"}, `API_ADDR "0.0.0.0:9090" is not a loopback address`},
		{"registry password without host", []string{"config", "--registry-user", "u", "--registry-password", "s3cr3t-registry-pw"}, "go together"},
		{"registry auth readable by others", []string{"config", "--registry-auth", open}, "REGISTRY_AUTH"},
		{"image cache limit", []string{"config", "--image-cache-limit-mb", "-1"}, "IMAGE_CACHE_LIMIT_MB"},
		{"prepull reference", []string{"config", "--prepull-images", "ok:1,Not A Ref"}, "PREPULL_IMAGES"},
	}
	envFile := filepath.Join(dir, "bad.env")
	os.WriteFile(envFile, []byte("bad line here\nPINATA_JWT=super-secret-token\n"), 0o600)
	cases = append(cases, struct {
		name string
		args []string
		want string
	}{"malformed env file", []string{"config", "--env-file", envFile}, "is not a list of KEY=VALUE lines"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			t.Setenv("HYPERNODE_DATA_DIR", dir)
			args := c.args
			if !strings.Contains(strings.Join(args, " "), "--env-file") {
				args = append(args, "--env-file", "")
			}
			code := run(args, &stdout, &stderr)
			msg := strings.TrimSpace(stderr.String())
			// config lists the invalid settings in its output and only
			// counts them on stderr; the rest say what is wrong on stderr.
			named := msg
			if args[0] == "config" && !strings.Contains(c.want, "KEY=VALUE") {
				named = stdout.String()
				if !strings.Contains(msg, "invalid setting") {
					t.Errorf("stderr %q does not count the invalid settings", msg)
				}
				if strings.Contains(stdout.String(), "super-secret") || strings.Contains(stdout.String(), "s3cr3t") {
					t.Fatal("secret material in the output")
				}
			}
			if code != 2 || strings.Count(msg, "\n") != 0 || !strings.Contains(named, c.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and one line; %q named in\n%s", code, msg, c.want, named)
			}
			if strings.Contains(msg, strconv.Itoa(int(key[0]))+",") || strings.Contains(msg, "super-secret") || strings.Contains(msg, "s3cr3t") {
				t.Fatal("secret material in the error")
			}
		})
	}
}
