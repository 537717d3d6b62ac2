package ipfs

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// kuboBinEnv names an `ipfs` (kubo) binary for the integration test; without it, `ipfs`
// on PATH is used, and the test is skipped when there is none. RUNS-HERE.md says how to
// build kubo v0.42.0 from the module cache.
const kuboBinEnv = "HYPERNODE_KUBO_BIN"

// startKubo runs an offline kubo daemon on 127.0.0.1 in a fresh repository and returns
// its RPC API and gateway base URLs. The daemon is killed when the test ends.
func startKubo(t *testing.T) (api, gateway string) {
	t.Helper()
	if testing.Short() {
		t.Skip("kubo integration test; skipped under -short")
	}
	bin := os.Getenv(kuboBinEnv)
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("ipfs"); err != nil {
			t.Skipf("no kubo binary: set %s or put ipfs on PATH", kuboBinEnv)
		}
	}
	repo := t.TempDir()
	env := append(os.Environ(), "IPFS_PATH="+repo)
	run := func(args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ipfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("init", "--profile", "test")
	run("config", "Addresses.API", "/ip4/127.0.0.1/tcp/0")
	run("config", "Addresses.Gateway", "/ip4/127.0.0.1/tcp/0")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bin, "daemon", "--offline")
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills the daemon
		_ = cmd.Wait()
	})
	addr := func(line, prefix string) string {
		// "/ip4/127.0.0.1/tcp/PORT" → "http://127.0.0.1:PORT"
		ma := strings.TrimSpace(strings.TrimPrefix(line, prefix))
		parts := strings.Split(ma, "/")
		if len(parts) != 5 || parts[1] != "ip4" || parts[3] != "tcp" {
			t.Fatalf("unexpected address line %q", line)
		}
		return "http://" + parts[2] + ":" + parts[4]
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "RPC API server listening on "):
			api = addr(line, "RPC API server listening on ")
		case strings.HasPrefix(line, "Gateway server listening on "):
			gateway = addr(line, "Gateway server listening on ")
		}
		if strings.HasPrefix(line, "Daemon is ready") {
			break
		}
	}
	if api == "" || gateway == "" {
		t.Fatalf("kubo daemon did not come up (api %q, gateway %q): %v\n%s", api, gateway, sc.Err(), stderr.String())
	}
	// Keep draining stdout so the daemon never blocks on it; ends when it exits.
	go func() {
		for sc.Scan() {
		}
	}()
	return api, gateway
}

// TestKuboAgreesWithComputeCID uploads content to a real kubo through Uploader (which
// fails on any CID other than the locally computed one) and fetches it back through
// kubo's gateway with Fetcher (which verifies the bytes).
func TestKuboAgreesWithComputeCID(t *testing.T) {
	api, gw := startKubo(t)
	up := &Uploader{APIURL: api}
	f := &Fetcher{Gateways: []string{gw}, MaxBytes: 64 << 20, PerGatewayTimeout: time.Minute}
	ctx := context.Background()
	for _, data := range [][]byte{
		nil, []byte("hello world\n"), make([]byte, ChunkSize), pattern(2*ChunkSize + 1),
		pattern(1000000), pattern((MaxLinks+1)*ChunkSize + 5),
	} {
		c, n, err := up.AddBytes(ctx, "content.bin", data)
		if err != nil {
			t.Fatalf("%d bytes: %v", len(data), err)
		}
		if n != int64(len(data)) {
			t.Errorf("%d bytes: Add size %d", len(data), n)
		}
		got, err := f.Fetch(ctx, c)
		if err != nil {
			t.Fatalf("%d bytes: fetch %s from kubo: %v", len(data), c, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%d bytes: kubo served other bytes for %s", len(data), c)
		}
	}
}
