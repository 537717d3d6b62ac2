package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

func captureGPUs(t *testing.T, name string) []hardware.GPU {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "gpu", name))
	if err != nil {
		t.Fatal(err)
	}
	gpus, _, err := hardware.ParseInventory(b)
	if err != nil {
		t.Fatal(err)
	}
	return gpus
}

// generateWithDevices builds the OCI spec Create would store for s on the host
// tree root (runtimetest.GPUDeviceTree).
func generateWithDevices(t *testing.T, root string, s runtime.ContainerSpec) *oci.Spec {
	t.Helper()
	spec, err := gpuSpec(t, s, runtime.GPUHost{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// GPUNodes returns the per-GPU device nodes of a spec (nvidia<N>,
// dri/renderD<N>) as "path major:minor", checking that the device cgroup
// allows each and no other GPU node.
func gpuNodes(t *testing.T, spec *oci.Spec) []string {
	t.Helper()
	var out []string
	allowed := map[string]bool{}
	for _, r := range spec.Linux.Resources.Devices {
		if r.Allow && r.Major != nil && r.Minor != nil {
			allowed[fmt.Sprintf("%d:%d", *r.Major, *r.Minor)] = true
		}
	}
	for _, d := range spec.Linux.Devices {
		mm := fmt.Sprintf("%d:%d", d.Major, d.Minor)
		if !allowed[mm] {
			t.Errorf("device %s %s is not allowed in the device cgroup", d.Path, mm)
		}
		if strings.HasPrefix(d.Path, "/dev/dri/renderD") || (strings.HasPrefix(d.Path, "/dev/nvidia") && strings.TrimLeft(d.Path[len("/dev/nvidia"):], "0123456789") == "") {
			out = append(out, d.Path+" "+mm)
		}
	}
	return out
}

// TestGPUSpecsDistinctOnCaptures: on the real multi-GPU captures (2× RTX
// A5000, 4× and 6× MI100), one job per GPU drawn from a GPUPool, and then
// jobs of 2 GPUs: every generated container spec (through GPUSpecOpts: CDI
// for NVIDIA, device nodes for AMD) carries only its own GPUs' device nodes,
// no node is in two specs, the NVIDIA ones are injected by CDI with
// NVIDIA_VISIBLE_DEVICES=void, and each has its CPU share.
func TestGPUSpecsDistinctOnCaptures(t *testing.T) {
	for _, c := range []struct {
		file string
		n    int
	}{
		{"nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml", 2},
		{"rocm-smi-json_4x-mi100_rocm6.0.2.json", 4},
		{"rocm-smi-json_6x-mi100_rocm5.7.1.json", 6},
	} {
		t.Run(c.file, func(t *testing.T) {
			gpus := captureGPUs(t, c.file)
			if len(gpus) != c.n {
				t.Fatalf("%d GPUs in the capture, want %d", len(gpus), c.n)
			}
			root := runtimetest.GPUDeviceTree(t, gpus)
			for _, per := range []int{1, 2} {
				pool := fsm.NewGPUPool(gpus, c.n, 16, 64<<30)
				owner := map[string]string{}
				for k := 0; k < c.n/per; k++ {
					job := fmt.Sprintf("job%d", k)
					got, err := pool.Acquire(context.Background(), job, fsm.GPUNeed{Count: per})
					if err != nil || len(got) != per {
						t.Fatalf("%s: Acquire(%d) = %v, %v", job, per, got, err)
					}
					cpus, mem := pool.Share()
					spec := generateWithDevices(t, root, runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Image: "x", Workspace: "/w",
						GPUs: got, CPUs: cpus, MemoryBytes: mem})
					nodes := gpuNodes(t, spec)
					if len(nodes) != per {
						t.Fatalf("%s: GPU nodes %v, want %d", job, nodes, per)
					}
					for _, n := range nodes {
						if o, ok := owner[n]; ok {
							t.Fatalf("%s and %s both have %s", o, job, n)
						}
						owner[n] = job
					}
					if gpus[0].Vendor == hardware.VendorNVIDIA {
						if v := envValue(spec, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(v, []string{"void"}) {
							t.Errorf("%s: NVIDIA_VISIBLE_DEVICES=%q, want void (CDI gave the GPUs)", job, v)
						}
						for _, g := range got {
							if !slices.ContainsFunc(nodes, func(n string) bool { return strings.HasPrefix(n, fmt.Sprintf("/dev/nvidia%d ", g.Index)) }) {
								t.Errorf("%s: GPU %d (%s) has not its node: %v", job, g.Index, g.UUID, nodes)
							}
						}
					} else if !slices.ContainsFunc(spec.Linux.Devices, func(d specsDevice) bool { return d.Path == "/dev/kfd" }) {
						t.Errorf("%s: no /dev/kfd", job)
					}
					if q := spec.Linux.Resources.CPU; q == nil || q.Quota == nil || *q.Quota != int64(cpus*100_000) {
						t.Errorf("%s: CPU quota %+v, want %g CPUs", job, q, cpus)
					}
				}
				if _, err := pool.Acquire(context.Background(), "one-more", fsm.GPUNeed{Count: c.n + 1}); !errors.Is(err, fsm.ErrGPUsNeverFit) {
					t.Errorf("asking %d GPUs of %d: %v", c.n+1, c.n, err)
				}
			}
		})
	}
}

// TestGPUSpecMissingNode: a GPU the host tree lacks fails with ErrNoGPU
// naming it; no GPU gives no device and NVIDIA_VISIBLE_DEVICES=void, which
// a job's env cannot widen.
func TestGPUSpecMissingNode(t *testing.T) {
	gpus := captureGPUs(t, "rocm-smi-json_4x-mi100_rocm6.0.2.json")
	root := runtimetest.GPUDeviceTree(t, gpus[:2])
	_, err := runtime.GPUSpecOpts(runtime.ContainerSpec{GPUs: gpus[3:]}, runtime.GPUHost{Root: root})
	if !errors.Is(err, runtime.ErrNoGPU) || !strings.Contains(err.Error(), "AMD GPU 3") {
		t.Fatalf("missing node: %v", err)
	}
	spec := generateWithDevices(t, root, runtime.ContainerSpec{ID: "hn-x-1", Image: "x", Workspace: "/w"})
	if len(spec.Linux.Devices) != 0 {
		t.Errorf("devices without GPUs: %+v", spec.Linux.Devices)
	}
	if v := envValue(spec, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(v, []string{"void"}) {
		t.Errorf("NVIDIA_VISIBLE_DEVICES=%q without GPUs, want void", v)
	}
	// A job's own env cannot widen what it sees.
	nv := captureGPUs(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")
	nroot := runtimetest.GPUDeviceTree(t, nv)
	for _, gpus := range [][]hardware.GPU{nil, nv[1:]} {
		spec = generateWithDevices(t, nroot, runtime.ContainerSpec{ID: "hn-x-1", Image: "x", Workspace: "/w", GPUs: gpus,
			Env: []string{"NVIDIA_VISIBLE_DEVICES=all"}})
		if v := envValue(spec, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(v, []string{"void"}) {
			t.Errorf("job env NVIDIA_VISIBLE_DEVICES=all, GPUs %d: got %q, want void", len(gpus), v)
		}
	}
}

type specsDevice = specs.LinuxDevice
