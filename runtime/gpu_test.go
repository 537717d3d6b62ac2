package runtime_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispecs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/runtime"
)

// gpuSpec builds the OCI spec Create would store for s on host h: image options
// (imageOpts stands in for the image's config), SpecOpts, then GPUSpecOpts.
func gpuSpec(t *testing.T, s runtime.ContainerSpec, h runtime.GPUHost, imageOpts ...oci.SpecOpts) (*oci.Spec, error) {
	t.Helper()
	gpuOpts, err := runtime.GPUSpecOpts(s, h)
	if err != nil {
		return nil, err
	}
	opts := append(append(imageOpts, runtime.SpecOpts(s)...), gpuOpts...)
	ctx := namespaces.WithNamespace(context.Background(), runtime.DefaultNamespace)
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: s.ID}, opts...)
}

func gpuContainer(gpus ...hardware.GPU) runtime.ContainerSpec {
	return runtime.ContainerSpec{ID: "hn-gpujob-1", Job: "gpujob", Attempt: 1, Image: "hypernode.local/test:latest",
		Workspace: "/var/lib/hypernode/jobs/gpujob/workspace", Env: []string{"NVIDIA_VISIBLE_DEVICES=all", "HF_TOKEN=x"},
		GPUs: gpus}
}

// nv and amd are GPUs as the hardware package reports them.
func nv(index int, uuid string) hardware.GPU {
	return hardware.GPU{Vendor: hardware.VendorNVIDIA, Index: index, UUID: uuid, Name: "NVIDIA RTX A5000"}
}

func amd(index int) hardware.GPU {
	return hardware.GPU{Vendor: hardware.VendorAMD, Index: index, Name: "AMD Instinct MI100"}
}

// The UUIDs of testdata/gpu-passthrough/cdi/nvidia.yaml: nvidia-smi's GPU 0 is
// /dev/nvidia1 on that host, GPU 1 /dev/nvidia0.
const (
	uuid0 = "GPU-00000000-0000-0000-0000-000000000001"
	uuid1 = "GPU-00000000-0000-0000-0000-000000000002"
)

// nvidiaNodes are the device numbers of the nodes in testdata/gpu-passthrough/cdi/nvidia.yaml on
// the host it describes (nvidia-uvm's major is dynamic; 508 is typical).
var nvidiaNodes = map[string][2]int64{
	"/dev/nvidia0": {195, 0}, "/dev/nvidia1": {195, 1}, "/dev/nvidiactl": {195, 255}, "/dev/nvidia-modeset": {195, 254},
	"/dev/nvidia-uvm": {508, 0}, "/dev/nvidia-uvm-tools": {508, 1},
	"/dev/dri/card0": {226, 0}, "/dev/dri/card1": {226, 1}, "/dev/dri/renderD128": {226, 128}, "/dev/dri/renderD129": {226, 129},
}

// nvidiaCDIDir writes testdata/gpu-passthrough/cdi/nvidia.yaml into a CDI directory with each
// device node's type and numbers filled in, as CDI would read them from the host's
// /dev (this machine has no NVIDIA device nodes to stat). Everything else is as
// nvidia-ctk wrote it.
func nvidiaCDIDir(t *testing.T) string {
	t.Helper()
	spec, err := cdi.ReadSpec("../testdata/gpu-passthrough/cdi/nvidia.yaml", 0)
	if err != nil {
		t.Fatalf("read the CDI spec: %v", err)
	}
	raw := *spec.Spec
	fillNodes := func(nodes []*cdispecs.DeviceNode) {
		for _, n := range nodes {
			num, ok := nvidiaNodes[n.Path]
			if !ok {
				t.Fatalf("no device numbers for %s", n.Path)
			}
			n.Type, n.Major, n.Minor = "c", num[0], num[1]
		}
	}
	fillNodes(raw.ContainerEdits.DeviceNodes)
	for i := range raw.Devices {
		fillNodes(raw.Devices[i].ContainerEdits.DeviceNodes)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nvidia.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func devicePaths(s *oci.Spec) []string {
	var out []string
	for _, d := range s.Linux.Devices {
		out = append(out, d.Path)
	}
	return out
}

// allowed reports whether the device cgroup rules, applied in order, let the
// container use char device major:minor.
func allowed(s *oci.Spec, major, minor int64) bool {
	ok := false
	for _, r := range s.Linux.Resources.Devices {
		if (r.Type == "" || r.Type == "a" || r.Type == "c") && (r.Major == nil || *r.Major == major) && (r.Minor == nil || *r.Minor == minor) {
			ok = r.Allow
		}
	}
	return ok
}

func envValue(s *oci.Spec, key string) []string {
	var out []string
	for _, kv := range s.Process.Env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			out = append(out, v)
		}
	}
	return out
}

func TestGPUNvidiaCDI(t *testing.T) {
	h := runtime.GPUHost{Root: t.TempDir(), CDISpecDirs: []string{nvidiaCDIDir(t)}}
	imageEnv := oci.WithEnv([]string{"NVIDIA_VISIBLE_DEVICES=all", "PATH=/usr/bin"}) // as CUDA images set it
	tests := []struct {
		name       string
		gpus       []hardware.GPU
		want, deny []string // GPU device nodes given and withheld
	}{
		{"index 0", []hardware.GPU{nv(0, "")}, []string{"/dev/nvidia1", "/dev/dri/renderD129"}, []string{"/dev/nvidia0", "/dev/dri/renderD128"}},
		{"index 1", []hardware.GPU{nv(1, "")}, []string{"/dev/nvidia0", "/dev/dri/renderD128"}, []string{"/dev/nvidia1", "/dev/dri/renderD129"}},
		{"UUID", []hardware.GPU{nv(1, uuid1)}, []string{"/dev/nvidia0"}, []string{"/dev/nvidia1"}},
		// The UUID names the GPU even where the index would name another (the
		// index a stale inventory gave).
		{"UUID over index", []hardware.GPU{nv(1, uuid0)}, []string{"/dev/nvidia1"}, []string{"/dev/nvidia0"}},
		{"UUID unknown to the spec: index", []hardware.GPU{nv(0, "GPU-ffffffff-0000-0000-0000-000000000009")}, []string{"/dev/nvidia1"}, []string{"/dev/nvidia0"}},
		{"both", []hardware.GPU{nv(0, uuid0), nv(1, uuid1)}, []string{"/dev/nvidia0", "/dev/nvidia1", "/dev/dri/card0", "/dev/dri/card1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := gpuSpec(t, gpuContainer(tt.gpus...), h, imageEnv)
			if err != nil {
				t.Fatal(err)
			}
			devs := devicePaths(s)
			for _, p := range append([]string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}, tt.want...) {
				if !slices.Contains(devs, p) {
					t.Errorf("device %s missing from %v", p, devs)
				}
				if n := nvidiaNodes[p]; !allowed(s, n[0], n[1]) {
					t.Errorf("device cgroup denies %s (%d:%d)", p, n[0], n[1])
				}
			}
			for _, p := range tt.deny {
				if slices.Contains(devs, p) {
					t.Errorf("device %s given, want withheld", p)
				}
				if n := nvidiaNodes[p]; allowed(s, n[0], n[1]) {
					t.Errorf("device cgroup allows withheld %s", p)
				}
			}
			if r := s.Linux.Resources.Devices[0]; r.Allow || r.Major != nil || allowed(s, 8, 0) { // runc adds /dev/null & co itself
				t.Errorf("device cgroup no longer starts from deny-all: %+v", s.Linux.Resources.Devices)
			}
			if m, ok := mountAt(s, "/usr/lib/x86_64-linux-gnu/libcuda.so.590.44.01"); !ok || !slices.Contains(m.Options, "ro") {
				t.Errorf("libcuda mount = %+v, %v; want read-only bind", m, ok)
			}
			if _, ok := mountAt(s, "/usr/bin/nvidia-smi"); !ok {
				t.Error("nvidia-smi not mounted")
			}
			var hookArgs []string
			for _, hk := range s.Hooks.CreateContainer {
				if hk.Path != "/usr/bin/nvidia-cdi-hook" {
					t.Errorf("unexpected hook %s", hk.Path)
				}
				hookArgs = append(hookArgs, hk.Args[1])
			}
			for _, want := range []string{"create-symlinks", "update-ldcache", "enable-cuda-compat"} {
				if !slices.Contains(hookArgs, want) {
					t.Errorf("createContainer hooks %v lack %s", hookArgs, want)
				}
			}
			if s.Hooks.Prestart != nil { //nolint:staticcheck // checking that the legacy hook is not used
				t.Errorf("prestart hooks %v with CDI", s.Hooks.Prestart) //nolint:staticcheck
			}
			if got := envValue(s, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(got, []string{"void"}) {
				t.Errorf("NVIDIA_VISIBLE_DEVICES = %v, want [void] over the image's and the job's", got)
			}
			// The hardening of SpecOpts survives the CDI edits.
			if len(s.Process.Capabilities.Bounding) != 0 || !s.Root.Readonly || !s.Process.NoNewPrivileges {
				t.Error("hardening lost")
			}
		})
	}
	t.Run("unknown device", func(t *testing.T) {
		_, err := gpuSpec(t, gpuContainer(nv(7, "GPU-ffffffff-0000-0000-0000-000000000007")), h)
		if !errors.Is(err, runtime.ErrNoGPU) || !strings.Contains(err.Error(), "nvidia.com/gpu=7") || !strings.Contains(err.Error(), "nvidia.com/gpu=all") {
			t.Errorf("err = %v; want ErrNoGPU naming the device and the known ones", err)
		}
	})
}

func TestGPUNvidiaHookFallback(t *testing.T) {
	root := t.TempDir()
	hook := filepath.Join(root, "usr/bin", runtime.NvidiaHookName)
	h := runtime.GPUHost{Root: root} // no CDI spec under root
	t.Run("no hook", func(t *testing.T) {
		_, err := gpuSpec(t, gpuContainer(nv(0, uuid0)), h)
		if !errors.Is(err, runtime.ErrNoGPU) || !strings.Contains(err.Error(), "nvidia-ctk cdi generate") {
			t.Errorf("err = %v; want ErrNoGPU with the fix", err)
		}
	})
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A CDI directory with another vendor's spec only: still the hook.
	amdDir := filepath.Join(root, "etc/cdi")
	if err := os.MkdirAll(amdDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(amdDir, "amd.json"), []byte(`{"cdiVersion":"0.5.0","kind":"amd.com/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/kfd","type":"c","major":235,"minor":0}]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := gpuSpec(t, gpuContainer(nv(1, ""), nv(0, uuid0)), h,
		oci.WithEnv([]string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all"}))
	if err != nil {
		t.Fatal(err)
	}
	pre := s.Hooks.Prestart //nolint:staticcheck // the toolkit's hook is a prestart hook
	if len(pre) != 1 || pre[0].Path != hook || !slices.Equal(pre[0].Args, []string{runtime.NvidiaHookName, "prestart"}) {
		t.Fatalf("prestart hooks %+v; want %s prestart", pre, hook)
	}
	if got := envValue(s, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(got, []string{"1," + uuid0}) { // UUIDs, the index where unknown
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %v", got)
	}
	if got := envValue(s, "NVIDIA_DRIVER_CAPABILITIES"); !slices.Equal(got, []string{"compute,utility"}) {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES = %v", got)
	}
	if slices.ContainsFunc(devicePaths(s), func(p string) bool { return strings.HasPrefix(p, "/dev/nvidia") }) {
		t.Error("device nodes added: the hook adds them")
	}
}

// amdRoot materialises testdata/gpu-passthrough/amd under a temporary root: device nodes (mknod,
// so root only), sysfs directories and /etc/group.
func amdRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create the AMD device nodes (mknod)")
	}
	root := t.TempDir()
	f, err := os.Open("../testdata/gpu-passthrough/amd/devices.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fs := strings.Fields(line)
		p := filepath.Join(root, fs[1])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch fs[0] {
		case "d":
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case "c":
			n := make([]uint64, 5)
			for i, s := range fs[2:7] {
				base := 10
				if i == 2 {
					base = 8
				}
				if n[i], err = strconv.ParseUint(s, base, 32); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
			}
			if err := unix.Mknod(p, unix.S_IFCHR|uint32(n[2]), int(unix.Mkdev(uint32(n[0]), uint32(n[1])))); err != nil {
				t.Skipf("mknod %s: %v", p, err)
			}
			if err := os.Chown(p, int(n[3]), int(n[4])); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, uint32(n[2])); err != nil { // mknod's mode went through the umask
				t.Fatal(err)
			}
		}
	}
	group, err := os.ReadFile("../testdata/gpu-passthrough/amd/group")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), group, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestGPUAMD(t *testing.T) {
	h := runtime.GPUHost{Root: amdRoot(t)}
	// rocm-smi's GPU 1 at PCI 0000:83:00.0 is DRM card 0 on this host (sysfs says so
	// by bus ID): the bus ID wins over the index.
	if err := os.MkdirAll(filepath.Join(h.Root, "sys/bus/pci/devices/0000:83:00.0/drm/renderD128"), 0o755); err != nil {
		t.Fatal(err)
	}
	byBus := amd(1)
	byBus.PCIBusID = "0000:83:00.0"
	tests := []struct {
		name string
		gpus []hardware.GPU
		want map[string][2]int64
		deny [][2]int64
	}{
		{"1", []hardware.GPU{amd(1)}, map[string][2]int64{"/dev/kfd": {235, 0}, "/dev/dri/renderD129": {226, 129}}, [][2]int64{{226, 128}, {226, 1}}},
		{"0", []hardware.GPU{amd(0)}, map[string][2]int64{"/dev/kfd": {235, 0}, "/dev/dri/renderD128": {226, 128}}, [][2]int64{{226, 129}}},
		{"0,1", []hardware.GPU{amd(0), amd(1)}, map[string][2]int64{"/dev/kfd": {235, 0}, "/dev/dri/renderD128": {226, 128}, "/dev/dri/renderD129": {226, 129}}, [][2]int64{{226, 0}}},
		{"by PCI bus ID", []hardware.GPU{byBus}, map[string][2]int64{"/dev/kfd": {235, 0}, "/dev/dri/renderD128": {226, 128}}, [][2]int64{{226, 129}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := gpuSpec(t, gpuContainer(tt.gpus...), h)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][2]int64{}
			for _, d := range s.Linux.Devices {
				if strings.HasPrefix(d.Path, "/dev/kfd") || strings.HasPrefix(d.Path, "/dev/dri/") {
					got[d.Path] = [2]int64{d.Major, d.Minor}
					if d.Type != "c" || d.GID == nil || *d.GID != 109 || d.FileMode == nil || *d.FileMode != 0o660 {
						t.Errorf("device %s type %s gid %v mode %v; want char device, gid 109 (render), mode 0660", d.Path, d.Type, deref(d.GID), deref(d.FileMode))
					}
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("devices %v; want %v", got, tt.want)
			}
			for p, n := range tt.want {
				if got[p] != n {
					t.Errorf("device %s = %v; want %v", p, got[p], n)
				}
				if !allowed(s, n[0], n[1]) {
					t.Errorf("device cgroup denies %s", p)
				}
			}
			for _, n := range tt.deny {
				if allowed(s, n[0], n[1]) {
					t.Errorf("device cgroup allows %d:%d", n[0], n[1])
				}
			}
			if g := s.Process.User.AdditionalGids; !slices.Contains(g, 44) || !slices.Contains(g, 109) {
				t.Errorf("additional GIDs %v; want video 44 and render 109 of the host", g)
			}
			if got := envValue(s, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(got, []string{"void"}) {
				t.Errorf("NVIDIA_VISIBLE_DEVICES = %v", got)
			}
		})
	}
	t.Run("missing card", func(t *testing.T) {
		if _, err := gpuSpec(t, gpuContainer(amd(5)), h); !errors.Is(err, runtime.ErrNoGPU) {
			t.Errorf("err = %v, want ErrNoGPU", err)
		}
	})
	t.Run("no kfd", func(t *testing.T) {
		if err := os.Remove(filepath.Join(h.Root, "dev/kfd")); err != nil {
			t.Fatal(err)
		}
		if _, err := gpuSpec(t, gpuContainer(amd(0)), h); !errors.Is(err, runtime.ErrNoGPU) || !strings.Contains(err.Error(), "kfd") {
			t.Errorf("err = %v, want ErrNoGPU naming /dev/kfd", err)
		}
	})
}

func TestGPUNone(t *testing.T) {
	s, err := gpuSpec(t, gpuContainer(), runtime.GPUHost{Root: t.TempDir()}, oci.WithEnv([]string{"NVIDIA_VISIBLE_DEVICES=all"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := envValue(s, "NVIDIA_VISIBLE_DEVICES"); !slices.Equal(got, []string{"void"}) {
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %v; want void, so no NVIDIA runtime on the host gives GPUs", got)
	}
	for _, d := range s.Linux.Devices {
		if strings.Contains(d.Path, "nvidia") || strings.Contains(d.Path, "dri") || d.Path == "/dev/kfd" {
			t.Errorf("GPU device %s without GPUs", d.Path)
		}
	}
}

func TestGPUValidate(t *testing.T) {
	negative := nv(-1, "")
	for _, tt := range []struct {
		name string
		gpus []hardware.GPU
	}{
		{"GPU without vendor", []hardware.GPU{{Index: 0}}},
		{"unknown vendor", []hardware.GPU{{Vendor: "intel", Index: 0}}},
		{"two vendors", []hardware.GPU{nv(0, ""), amd(0)}},
		{"duplicate index", []hardware.GPU{nv(0, ""), nv(0, "")}},
		{"duplicate UUID", []hardware.GPU{nv(0, uuid0), nv(1, uuid0)}},
		{"negative index", []hardware.GPU{negative}},
		{"UUID list", []hardware.GPU{nv(0, uuid0+","+uuid1)}},
		{"path UUID", []hardware.GPU{nv(0, "../0")}},
		{"UUID all", []hardware.GPU{nv(0, "all")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := gpuContainer(tt.gpus...)
			s.Env = nil
			if err := s.Validate(); !errors.Is(err, runtime.ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
			if _, err := runtime.GPUSpecOpts(s, runtime.GPUHost{}); err == nil {
				t.Error("GPUSpecOpts accepted it")
			}
		})
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestGPUPassthrough(t *testing.T) {
	how, err := runtime.GPUHost{CDISpecDirs: []string{nvidiaCDIDir(t)}}.Passthrough(hardware.VendorNVIDIA)
	if err != nil || !strings.HasPrefix(how, "CDI: ") || !strings.Contains(how, "nvidia.com/gpu=GPU-00000000-0000-0000-0000-000000000002") {
		t.Errorf("CDI: %q, %v", how, err)
	}
	if _, err := (runtime.GPUHost{Root: t.TempDir()}).Passthrough(hardware.VendorNVIDIA); !errors.Is(err, runtime.ErrNoGPU) {
		t.Errorf("nothing installed: %v, want ErrNoGPU", err)
	}
	if _, err := (runtime.GPUHost{Root: t.TempDir()}).Passthrough(hardware.VendorAMD); !errors.Is(err, runtime.ErrNoGPU) {
		t.Errorf("no /dev/kfd: %v, want ErrNoGPU", err)
	}
}
