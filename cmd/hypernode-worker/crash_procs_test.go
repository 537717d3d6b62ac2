package main

// Child processes of the crash tests: the real binary as a worker that a test
// kills with SIGKILL, and as a standalone localnet that outlives it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/failpoint"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

var workerBuild struct {
	once sync.Once
	path string
	err  error
}

// workerBinary builds the real binary once per test process (tests and
// benchmarks alike) and caches it under os.TempDir(),
// keyed by the test binary's hash: a test binary built from the same sources
// reuses it instead of leaving a copy per run.
func workerBinary(tb testing.TB) string {
	tb.Helper()
	workerBuild.once.Do(func() { workerBuild.path, workerBuild.err = buildCached() })
	if workerBuild.err != nil {
		tb.Fatal(workerBuild.err)
	}
	return workerBuild.path
}

func buildCached() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "hypernode-worker-crash-"+hex.EncodeToString(h.Sum(nil))[:16])
	path := filepath.Join(dir, "hypernode-worker")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), "hypernode-worker-build-")
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "build", "-o", filepath.Join(tmp, "hypernode-worker"), ".").CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	// Another test process may have won the race: then use its copy.
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(path); serr != nil {
			return "", fmt.Errorf("cache the worker binary: %w", err)
		}
	}
	return path, nil
}

// loopbackAddr returns a free 127.0.0.1 port, as host:port.
func loopbackAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a child's writer and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// child is a running hypernode-worker process with its output captured.
type child struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	started        time.Time
	done           chan struct{} // closed once the process is reaped
	state          *os.ProcessState
}

// startChild starts the binary with args; env is added to the test's
// environment. On cleanup a child still running is SIGKILLed.
func startChild(tb testing.TB, name string, env []string, args ...string) *child {
	tb.Helper()
	c := &child{name: name, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(workerBinary(tb), args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = c.cmd.Wait()
		c.state = c.cmd.ProcessState
		close(c.done)
	}()
	tb.Cleanup(func() {
		if !c.exited() {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to end and reports whether it did.
func (c *child) waitExit(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill9 SIGKILLs the process (as kill -9 does) and reaps it.
func (c *child) kill9() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// ready waits up to d for a worker to print that it watches for jobs: from
// then on SIGINT stops it gracefully (before, it kills it).
func (c *child) ready(d time.Duration) error {
	deadline := time.Now().Add(d)
	for !strings.Contains(c.stdout.String(), "Watching for jobs") {
		if c.exited() {
			return fmt.Errorf("%s exited (%s) before it was ready", c.name, c.state)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", c.name, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// interrupt sends SIGINT and waits up to d; a process still running then is
// SIGKILLed and the error says so. A non-zero exit is an error too.
func (c *child) interrupt(d time.Duration) error {
	if c.exited() {
		return fmt.Errorf("%s had already exited: %s", c.name, c.state)
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	if !c.waitExit(d) {
		c.kill9()
		return fmt.Errorf("%s did not stop within %s of SIGINT", c.name, d)
	}
	if !c.state.Success() {
		return fmt.Errorf("%s exited with %s after SIGINT", c.name, c.state)
	}
	return nil
}

// killedBy reports whether the process ended by signal sig.
func (c *child) killedBy(sig syscall.Signal) bool {
	if !c.exited() {
		return false
	}
	ws, ok := c.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCLI runs the binary to completion and returns its trimmed stdout; a
// non-zero exit fails the test.
func runCLI(tb testing.TB, env []string, args ...string) string {
	tb.Helper()
	out, err := cliOutput(workerBinary(tb), env, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// cliOutput runs bin to completion and returns its trimmed stdout, or an
// error with its stderr when it exits non-zero. Safe from any goroutine.
func cliOutput(bin string, env []string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hypernode-worker %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// crashNet is a standalone localnet (its own process, so it survives the
// worker's death) and the node keypair it stakes.
type crashNet struct {
	proc    *child
	URL     string
	dir     string
	keypair string
	node    solana.PublicKey
	args    []string
}

// startCrashNet creates a node keypair with `keygen` under dir and starts
// `localnet --stake <keypair>` on a free loopback port with its state in
// dir/localnet; it is stopped on cleanup. otherStakes are more node
// keypairs (or public keys) to stake.
func startCrashNet(tb testing.TB, dir string, otherStakes ...string) *crashNet {
	tb.Helper()
	n := &crashNet{dir: filepath.Join(dir, "localnet"), keypair: filepath.Join(dir, "node-keypair.json")}
	out := runCLI(tb, nil, "keygen", n.keypair)
	node, err := solana.PublicKeyFromBase58(out)
	if err != nil {
		tb.Fatalf("keygen printed %q", out)
	}
	n.node = node
	addr := loopbackAddr(tb)
	n.URL = "http://" + addr
	args := []string{"localnet", "--addr", addr, "--dir", n.dir, "--stake", n.keypair}
	for _, k := range otherStakes {
		args = append(args, "--stake", k)
	}
	n.args = args
	n.start(tb)
	return n
}

// start starts the localnet process and waits until it serves.
func (n *crashNet) start(tb testing.TB) {
	tb.Helper()
	p := startChild(tb, "localnet", nil, n.args...)
	n.proc = p
	tb.Cleanup(func() { // before startChild's, which would SIGKILL it
		if !p.exited() {
			if err := p.interrupt(15 * time.Second); err != nil {
				tb.Errorf("localnet: %v", err)
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(n.proc.stdout.String(), "localnet RPC:") {
		if n.proc.exited() {
			tb.Fatalf("localnet exited: %s\n%s", n.proc.state, n.proc.stderr.String())
		}
		if time.Now().After(deadline) {
			tb.Fatalf("localnet not ready in 30s:\n%s", n.proc.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart SIGKILLs the localnet and starts it again on the same address
// and state directory.
func (n *crashNet) restart(tb testing.TB) {
	tb.Helper()
	n.proc.kill9()
	n.start(tb)
}

// post stores the definition file and posts it with `localnet post`.
func (n *crashNet) post(tb testing.TB, def string) solana.PublicKey {
	tb.Helper()
	k, err := n.postErr(workerBinary(tb), def)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// postErr is post for goroutines other than the test's: it returns the error.
func (n *crashNet) postErr(bin, def string) (solana.PublicKey, error) {
	out, err := cliOutput(bin, nil, "localnet", "post", "--rpc", n.URL, def)
	if err != nil {
		return solana.PublicKey{}, err
	}
	k, err := solana.PublicKeyFromBase58(out)
	if err != nil {
		return k, fmt.Errorf("localnet post printed %q", out)
	}
	return k, nil
}

// workerRun says how to start a worker against a crashNet.
type workerRun struct {
	net       *crashNet
	data      string // HYPERNODE_DATA_DIR
	ctd       string // containerd socket
	archive   string // test image archive
	failpoint string // HYPERNODE_FAILPOINT; "" for none
	keypair   string // node keypair; "" for net's
	rpc       string // RPC URL; "" for net's
	extra     []string
}

// start starts `hypernode-worker start` with JSON logs on stderr.
func (r workerRun) start(tb testing.TB) *child {
	tb.Helper()
	// Workspaces of jobs left in flight may be filesystems of their own, kept
	// mounted for a restart: unmount them before the directory is removed.
	tb.Cleanup(func() { runtimetest.UnmountUnder(r.data) })
	keypair := r.keypair
	if keypair == "" {
		keypair = r.net.keypair
	}
	rpcURL := r.rpc
	if rpcURL == "" {
		rpcURL = r.net.URL
	}
	args := append([]string{"start", "--network", "localnet", "--rpc-url", rpcURL, "--keypair", keypair,
		"--containerd-address", r.ctd, "--import-image", r.archive, "--polling-interval", "200",
		"--log-format", "json", "--env-file", ""}, r.extra...)
	name := "worker"
	if r.failpoint != "" {
		name += " (" + failpoint.Env + "=" + r.failpoint + ")"
	}
	return startChild(tb, name, []string{"HYPERNODE_DATA_DIR=" + r.data, failpoint.Env + "=" + r.failpoint}, args...)
}
