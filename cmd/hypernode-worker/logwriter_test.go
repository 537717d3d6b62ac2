package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/runtime/logwriter"
)

// TestLogWriterStartsEarly runs the worker binary as the containerd shim runs it
// for each operation (the log writer: its stdout and stderr pipes as fds 3 and 4, a
// readiness pipe as fd 5), with the Go runtime tracing package inits. The writer
// must copy the output to the log, and do so from package logwriter's init, before
// the heavy packages (gRPC, containerd's client, Solana, the CLI) initialize: the
// shim waits for it on every operation's start.
func TestLogWriterStartsEarly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker binary (skipped with -short)")
	}
	bin := workerBinary(t)
	logPath := filepath.Join(t.TempDir(), "op.log")
	var pipes [3][2]*os.File // stdout, stderr, readiness: {read, write}
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes[i] = [2]*os.File{r, w}
		t.Cleanup(func() { r.Close(); w.Close() })
	}
	cmd := exec.Command(bin, logwriter.ArgLogLimit, "1024", logwriter.ArgLogPath, logPath)
	cmd.Env = []string{"CONTAINER_ID=hn-test-1", "CONTAINER_NAMESPACE=hypernode", "GODEBUG=inittrace=1"}
	cmd.ExtraFiles = []*os.File{pipes[0][0], pipes[1][0], pipes[2][1]}
	var trace bytes.Buffer
	cmd.Stdout, cmd.Stderr = &trace, &trace
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pipes[0][0].Close()
	pipes[1][0].Close()
	pipes[2][1].Close()
	if _, err := io.Copy(io.Discard, pipes[2][0]); err != nil { // ready: fd 5 closed
		t.Fatal(err)
	}
	pipes[0][1].WriteString("out\n")
	pipes[1][1].WriteString("err\n")
	pipes[0][1].Close()
	pipes[1][1].Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("log writer: %v\n%s", err, trace.String())
	}
	got, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(got); s != "out\nerr\n" && s != "err\nout\n" {
		t.Errorf("log = %q, want both lines", s)
	}
	var inited []string
	for _, line := range strings.Split(trace.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			inited = append(inited, f[1])
		}
	}
	if len(inited) == 0 {
		t.Fatalf("no init trace in the writer's output:\n%s", trace.String())
	}
	for _, heavy := range []string{"google.golang.org/grpc", "github.com/containerd/containerd/v2/client",
		"github.com/gagliardetto/solana-go", "github.com/spf13/cobra", "github.com/hypernode-sol/worker/runtime", "main"} {
		for _, p := range inited {
			if p == heavy {
				t.Errorf("package %s initialized before the log writer ran (%d packages in all)", heavy, len(inited))
			}
		}
	}
}
