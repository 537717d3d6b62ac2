package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/hardware"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// checkGolden compares got with testdata/name, or writes it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking the change)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestStartupSpecsGolden reproduces the seed README's startup output
// (spec/seed-worker-README.md, "Start Worker") through the real Detect: a
// machine root with an AMD Ryzen 9 5950X (16 cores, 32 threads), 64 GB RAM
// and Ubuntu 22.04, the captured nvidia-smi -q -x of a 2× RTX A5000 machine,
// and containerd as the runtime. Differences from the seed's sample are the
// real ones: /proc/cpuinfo's full model name, the A5000s instead of the
// sample's RTX 4090/3090, containerd instead of Docker.
func TestStartupSpecsGolden(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var cpuinfo strings.Builder
	for n := range 32 {
		fmt.Fprintf(&cpuinfo, "processor\t: %d\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 9 5950X 16-Core Processor\nphysical id\t: 0\ncore id\t\t: %d\n\n", n, n%16)
	}
	write("proc/cpuinfo", cpuinfo.String())
	write("proc/meminfo", "MemTotal:       66946304 kB\nMemAvailable:   60000000 kB\n") // 63.8 GiB usable
	write("etc/os-release", "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 22.04\"\n")

	specs, err := hardware.Detect(context.Background(), hardware.Options{
		Root: root, DiskPath: t.TempDir(),
		InventoryFile:    "../../testdata/gpu/nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml",
		ContainerRuntime: func(context.Context) (string, error) { return "containerd 1.6.20", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString(banner)
	out.WriteString("📊 Detecting system specifications...\n")
	printSpecs(&out, specs)
	checkGolden(t, "startup-2x-rtx-a5000.golden", out.Bytes())
}
