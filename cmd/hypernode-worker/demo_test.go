package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestDemoScript runs `make demo`'s script as the README's first screen
// promises (the worker on its embedded market, the four sample jobs, the
// balance change, the replayed journal) on a private containerd and a free
// loopback port, and checks it ends with "Demo passed".
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	demoDir := t.TempDir()
	t.Cleanup(func() { runtimetest.UnmountUnder(demoDir) })
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEMO_DIR="+demoDir, "CONTAINERD_ADDRESS="+ctd, "LOCALNET_ADDR="+loopbackAddr(t))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Demo passed") {
		t.Fatalf("demo: %v\n%s", err, lastLines(string(out), 40))
	}
	for _, want := range []string{"change +", "journal verified"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, lastLines(string(out), 40))
		}
	}
}
