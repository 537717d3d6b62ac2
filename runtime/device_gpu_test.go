package runtime_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestDeviceGPU runs nvidia-smi inside a container given GPU 0 through this package,
// on a machine with an NVIDIA GPU. It runs only when HN_GPU_CHECK=1 (set by
// scripts/device-gpu-check.sh, which also provides):
//
//	HN_GPU_IMAGE    an OCI archive of the test image plus the host's glibc (build.sh EXTRA_FILES)
//	HN_CDI_DIRS     colon-separated CDI spec directories (default /etc/cdi:/var/run/cdi)
//
// It checks: nvidia-smi -L in the container lists exactly one GPU (GPU 0 of the host,
// by UUID); a container given every GPU of the host's inventory lists them all; a container given none sees no
// /dev/nvidia* device and cannot run nvidia-smi.
func TestDeviceGPU(t *testing.T) {
	if os.Getenv("HN_GPU_CHECK") != "1" {
		t.Skip("device check: run scripts/device-gpu-check.sh on a machine with an NVIDIA GPU")
	}
	hostList, err := exec.Command("nvidia-smi", "-L").Output()
	if err != nil {
		t.Fatalf("nvidia-smi -L on the host: %v", err)
	}
	hostGPUs := strings.Split(strings.TrimSpace(string(hostList)), "\n")
	t.Logf("host GPUs:\n%s", hostList)
	inventory, err := exec.Command("nvidia-smi", "-q", "-x").Output()
	if err != nil {
		t.Fatalf("nvidia-smi -q -x on the host: %v", err)
	}
	gpus, _, err := hardware.ParseInventory(inventory)
	if err != nil || len(gpus) != len(hostGPUs) {
		t.Fatalf("host inventory: %d GPUs, %v; nvidia-smi -L lists %d", len(gpus), err, len(hostGPUs))
	}

	addr := runtimetest.StartContainerd(t)
	var h runtime.GPUHost
	if dirs := os.Getenv("HN_CDI_DIRS"); dirs != "" {
		h.CDISpecDirs = strings.Split(dirs, ":")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := runtime.New(ctx, runtime.Config{Address: addr, GPU: h})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	names, err := r.ImportArchive(ctx, os.Getenv("HN_GPU_IMAGE"))
	if err != nil || len(names) != 1 {
		t.Fatalf("import %s: %v %v", os.Getenv("HN_GPU_IMAGE"), names, err)
	}

	run := func(t *testing.T, ids []hardware.GPU, op runtime.Op) (runtime.Exit, string) {
		t.Helper()
		job := runtimetest.UniqueJob(t)
		s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: names[0],
			Workspace: t.TempDir(), MemoryBytes: 1 << 30,
			Env: []string{"LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:/usr/lib64:/usr/lib"}}
		s.GPUs = ids
		if err := r.Create(ctx, s); err != nil {
			t.Fatalf("Create with GPUs %v: %v", ids, err)
		}
		defer r.Remove(context.Background(), s.ID)
		logPath := filepath.Join(t.TempDir(), "op.log")
		exit, err := r.RunOp(ctx, s.ID, 0, op, logPath)
		if err != nil {
			t.Fatalf("RunOp %v: %v", op.Argv, err)
		}
		out, _ := os.ReadFile(logPath)
		t.Logf("%v with GPUs %v: exit %d\n%s", op.Argv, ids, exit.Code, out)
		return exit, string(out)
	}
	smi := runtime.Op{Argv: []string{"/usr/bin/nvidia-smi", "-L"}}

	t.Run("GPU 0", func(t *testing.T) {
		exit, out := run(t, gpus[:1], smi)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if exit.Code != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "GPU 0:") {
			t.Fatalf("exit %d, output %q; want one GPU listed", exit.Code, out)
		}
		if uuid := uuidOf(hostGPUs[0]); uuid == "" || !strings.Contains(lines[0], uuid) {
			t.Errorf("container sees %q; host GPU 0 is %q", lines[0], hostGPUs[0])
		}
	})
	t.Run("all", func(t *testing.T) {
		exit, out := run(t, gpus, runtime.Op{Argv: []string{"/usr/bin/nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"}})
		if exit.Code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) != len(hostGPUs) {
			t.Fatalf("exit %d, output %q; want %d GPUs", exit.Code, out, len(hostGPUs))
		}
	})
	t.Run("none", func(t *testing.T) {
		exit, out := run(t, nil, runtime.Op{Argv: []string{"/bin/sh", "-c", "ls /dev/nvidia* 2>&1; test ! -e /dev/nvidiactl && ! /usr/bin/nvidia-smi -L"}})
		if exit.Code != 0 {
			t.Fatalf("a container without GPUs reached one: exit %d, %q", exit.Code, out)
		}
	})
}

// uuidOf returns the "GPU-…" UUID in an nvidia-smi -L line.
func uuidOf(line string) string {
	i := strings.Index(line, "UUID: ")
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(line[i+len("UUID: "):]), ")")
}
