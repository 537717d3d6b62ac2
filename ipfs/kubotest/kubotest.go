// Package kubotest runs a real kubo (`ipfs`) daemon for tests: offline, in a fresh
// repository, its RPC API and gateway on 127.0.0.1, stopped when the test ends.
//
// The binary is $HYPERNODE_KUBO, else DefaultBinary (where scripts/ci/kubo.sh builds
// it), else `ipfs` on PATH; without one, Start skips the test and says how to get it.
package kubotest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the kubo version scripts/ci/kubo.sh builds.
const Version = "v0.42.0"

// BinaryEnv names the environment variable that points at a kubo binary.
const BinaryEnv = "HYPERNODE_KUBO"

// DefaultBinary is where scripts/ci/kubo.sh puts kubo:
// ${HYPERNODE_CACHE:-$HOME/.cache/hypernode}/kubo/<Version>/ipfs.
func DefaultBinary() string {
	cache := os.Getenv("HYPERNODE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache", "hypernode")
	}
	return filepath.Join(cache, "kubo", Version, "ipfs")
}

// Binary returns the kubo binary to use and "", or "" and why there is none.
func Binary() (string, string) {
	if b := os.Getenv(BinaryEnv); b != "" {
		if fi, err := os.Stat(b); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Sprintf("%s=%s is not an executable file", BinaryEnv, b)
		}
		return b, ""
	}
	if b := DefaultBinary(); b != "" {
		if fi, err := os.Stat(b); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return b, ""
		}
	}
	if b, err := exec.LookPath("ipfs"); err == nil {
		return b, ""
	}
	return "", fmt.Sprintf("no kubo binary: run scripts/ci/kubo.sh (builds %s into %s) or set %s", Version, DefaultBinary(), BinaryEnv)
}

// Node is a running kubo daemon.
type Node struct {
	API     string // RPC API base URL, "http://127.0.0.1:PORT"
	Gateway string // gateway base URL, "http://127.0.0.1:PORT"
	Repo    string // IPFS_PATH
	Bin     string // the binary
}

// Start runs `ipfs init --profile test` in a temporary IPFS_PATH, binds the RPC API and
// the gateway to free 127.0.0.1 ports (port 0, read back from the daemon's output), runs
// `ipfs daemon --offline` and waits until it says it is ready. The daemon is stopped
// (SIGINT, then SIGKILL after 10 s) in t.Cleanup. Start skips the test under -short or
// when there is no kubo binary.
func Start(t testing.TB) *Node {
	t.Helper()
	if testing.Short() {
		t.Skip("kubo integration test; skipped under -short")
	}
	bin, why := Binary()
	if bin == "" {
		t.Skip(why)
	}
	n := &Node{Repo: t.TempDir(), Bin: bin}
	env := append(os.Environ(), "IPFS_PATH="+n.Repo)
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubotest: ipfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("init", "--profile", "test")
	run("config", "Addresses.API", "/ip4/127.0.0.1/tcp/0")
	run("config", "Addresses.Gateway", "/ip4/127.0.0.1/tcp/0")

	cmd := exec.Command(bin, "daemon", "--offline")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubotest: start daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	ready := make(chan error, 1)
	sc := bufio.NewScanner(stdout)
	go func() {
		var err error
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "RPC API server listening on "):
				n.API, err = httpURL(strings.TrimPrefix(line, "RPC API server listening on "))
			case strings.HasPrefix(line, "Gateway server listening on "):
				n.Gateway, err = httpURL(strings.TrimPrefix(line, "Gateway server listening on "))
			case strings.HasPrefix(line, "Daemon is ready"):
				ready <- err
				for sc.Scan() { // keep draining so the daemon never blocks on stdout
				}
				return
			}
		}
		ready <- fmt.Errorf("daemon output ended before \"Daemon is ready\" (%v)", sc.Err())
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = fmt.Errorf("daemon not ready after 2 minutes")
	}
	if err == nil && (n.API == "" || n.Gateway == "") {
		err = fmt.Errorf("daemon did not print its API (%q) and gateway (%q) addresses", n.API, n.Gateway)
	}
	if err != nil {
		t.Fatalf("kubotest: %v\nstderr:\n%s", err, stderr.String())
	}
	return n
}

// httpURL turns "/ip4/127.0.0.1/tcp/PORT" into "http://127.0.0.1:PORT".
func httpURL(ma string) (string, error) {
	parts := strings.Split(strings.TrimSpace(ma), "/")
	if len(parts) != 5 || parts[1] != "ip4" || parts[3] != "tcp" {
		return "", fmt.Errorf("unexpected listen address %q", ma)
	}
	return "http://" + parts[2] + ":" + parts[4], nil
}

// syncBuffer is a bytes.Buffer safe for the daemon's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
