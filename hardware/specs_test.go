package hardware

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func inventory(t *testing.T, name string) []GPU {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gpuDir, name))
	if err != nil {
		t.Fatal(err)
	}
	gpus, _, err := ParseInventory(b)
	if err != nil {
		t.Fatal(err)
	}
	return gpus
}

func TestFits(t *testing.T) {
	h100 := inventory(t, "nvidia-smi-query-gpu-csv_h100-80gb-hbm3_590.48.01.csv")        // 81559 MiB
	rtx4080 := inventory(t, "nvidia-smi-query-gpu-csv_rtx4080super_linux_595.71.05.csv") // 16376 MiB
	t4 := inventory(t, "nvidia-smi-q-x_tesla-t4_515.105.01_v11.xml")                     // 15360 MiB (ECC on)
	a5000x2 := inventory(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")             // 24564 MiB each
	mi100x4 := inventory(t, "rocm-smi-json_4x-mi100_rocm6.0.2.json")                     // 32 GiB each
	h200mig := inventory(t, "nvidia-smi-query-gpu-csv_h200-mig-enabled_590.48.01.csv")   // MIG on
	mixed := append(slices.Clone(rtx4080), mi100x4...)
	noVRAM := []GPU{{Vendor: VendorAMD, Name: "narrow query"}}

	tests := []struct {
		name    string
		gpus    []GPU
		minVRAM uint8
		gpuType uint8
		want    bool
	}{
		{"no GPUs, no requirement", nil, 0, GPUTypeAny, true},
		{"no GPUs, NVIDIA wanted", nil, 0, GPUTypeNVIDIA, false},
		{"no GPUs, 1 GiB wanted", nil, 1, GPUTypeAny, false},
		{"H100 reports 81559 MiB, sold as 80 GB", h100, 80, GPUTypeNVIDIA, true},
		{"H100 not 81 GiB", h100, 81, GPUTypeAny, false},
		{"H100 is not AMD", h100, 0, GPUTypeAMD, false},
		{"RTX 4080 SUPER 16376 MiB meets 16", rtx4080, 16, GPUTypeNVIDIA, true},
		{"RTX 4080 SUPER misses 17", rtx4080, 17, GPUTypeNVIDIA, false},
		{"T4 with ECC has 15 GiB usable", t4, 16, GPUTypeAny, false},
		{"T4 meets 15", t4, 15, GPUTypeAny, true},
		{"A5000 meets 24", a5000x2, 24, GPUTypeNVIDIA, true},
		{"MI100 meets 32 AMD", mi100x4, 32, GPUTypeAMD, true},
		{"MI100 is not NVIDIA", mi100x4, 8, GPUTypeNVIDIA, false},
		{"mixed: AMD 32", mixed, 32, GPUTypeAMD, true},
		{"mixed: NVIDIA 32 only on AMD", mixed, 32, GPUTypeNVIDIA, false},
		{"mixed: any 32", mixed, 32, GPUTypeAny, true},
		{"MIG-enabled H200 counts for nothing", h200mig, 8, GPUTypeNVIDIA, false},
		{"MIG-enabled H200, vendor only", h200mig, 0, GPUTypeNVIDIA, false},
		{"MIG machine still takes a job without requirements", h200mig, 0, GPUTypeAny, true},
		{"unknown VRAM meets no VRAM requirement", noVRAM, 1, GPUTypeAMD, false},
		{"unknown VRAM meets a vendor-only requirement", noVRAM, 0, GPUTypeAMD, true},
		{"unknown gpu_type", mi100x4, 0, 3, false},
		{"max u8", mi100x4, 255, GPUTypeAny, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Specs{GPUs: tt.gpus}
			if got := s.Fits(tt.minVRAM, tt.gpuType); got != tt.want {
				t.Errorf("Fits(%d, %d) = %v; want %v", tt.minVRAM, tt.gpuType, got, tt.want)
			}
		})
	}
}

// fakeRunner answers for nvidia-smi and rocm-smi from a table; a missing
// entry means "not installed".
type fakeRunner struct {
	out   map[string][]byte
	err   map[string]error
	block map[string]bool // wait for ctx to end
	calls []string
}

func (f *fakeRunner) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if f.block[name] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err, ok := f.err[name]; ok {
		return nil, err
	}
	if out, ok := f.out[name]; ok {
		return out, nil
	}
	return nil, &exec.Error{Name: name, Err: exec.ErrNotFound}
}

func noPCI(string) ([]PCIDevice, error) { return nil, nil }

func readCapture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gpuDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDetectGPUsThroughTools(t *testing.T) {
	a5000 := readCapture(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")
	mi100 := readCapture(t, "rocm-smi-json_4x-mi100_rocm6.0.2.json")
	a100mig := readCapture(t, "nvidia-smi-q-x_a100-sxm4-80gb_mig-enabled_535.54.03_v12.xml")
	tests := []struct {
		name      string
		runner    fakeRunner
		wantNames []string
		wantWarns []string
	}{
		{name: "no tools installed", wantNames: nil,
			wantWarns: []string{"GPU detection: no GPU found (nvidia-smi not installed, rocm-smi not installed): only jobs without GPU requirements (min_vram 0, gpu_type Any) fit"}},
		{name: "nvidia only", runner: fakeRunner{out: map[string][]byte{"nvidia-smi": a5000}},
			wantNames: []string{"nvidia/0/NVIDIA RTX A5000", "nvidia/1/NVIDIA RTX A5000"}},
		{name: "both vendors", runner: fakeRunner{out: map[string][]byte{"nvidia-smi": a5000, "rocm-smi": mi100}},
			wantNames: []string{"nvidia/0/NVIDIA RTX A5000", "nvidia/1/NVIDIA RTX A5000", "amd/0/Arcturus GL-XL [Instinct MI100]", "amd/1/Arcturus GL-XL [Instinct MI100]", "amd/2/Arcturus GL-XL [Instinct MI100]", "amd/3/Arcturus GL-XL [Instinct MI100]"}},
		{name: "nvidia-smi fails (driver not loaded), rocm fine",
			runner:    fakeRunner{out: map[string][]byte{"rocm-smi": mi100}, err: map[string]error{"nvidia-smi": errors.New("exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")}},
			wantNames: []string{"amd/0/Arcturus GL-XL [Instinct MI100]", "amd/1/Arcturus GL-XL [Instinct MI100]", "amd/2/Arcturus GL-XL [Instinct MI100]", "amd/3/Arcturus GL-XL [Instinct MI100]"},
			wantWarns: []string{"GPU detection: nvidia-smi failed; no GPUs of this vendor reported: exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"}},
		{name: "nvidia-smi hangs", runner: fakeRunner{block: map[string]bool{"nvidia-smi": true}},
			wantWarns: []string{"GPU detection: nvidia-smi: no answer within 50ms; no GPUs of this vendor reported", "GPU detection: no GPU found (rocm-smi not installed): only jobs without GPU requirements (min_vram 0, gpu_type Any) fit"}},
		{name: "garbage output", runner: fakeRunner{out: map[string][]byte{"rocm-smi": []byte("Segmentation fault")}},
			wantWarns: []string{"GPU detection: rocm-smi output unreadable; no GPUs of this vendor reported: unrecognised GPU tool output: not rocm-smi --json output: no JSON object", "GPU detection: no GPU found (nvidia-smi not installed): only jobs without GPU requirements (min_vram 0, gpu_type Any) fit"}},
		{name: "MIG and trimmed capture warn", runner: fakeRunner{out: map[string][]byte{"nvidia-smi": a100mig}},
			wantNames: []string{"nvidia/0/NVIDIA A100-SXM4-80GB"},
			wantWarns: []string{"GPU detection: nvidia-smi: attached_gpus says 4 but 1 <gpu> elements are listed", "GPU detection: GPU 0 (NVIDIA A100-SXM4-80GB): MIG is enabled; the worker runs jobs on whole GPUs only, so it meets no GPU requirement"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.runner
			s, err := Detect(context.Background(), Options{Run: r.run, ToolTimeout: 50 * time.Millisecond, DiskPath: t.TempDir(), ScanPCI: noPCI})
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			var names []string
			for _, g := range s.GPUs {
				names = append(names, fmt.Sprintf("%s/%d/%s", g.Vendor, g.Index, g.Name))
			}
			if !slices.Equal(names, tt.wantNames) {
				t.Errorf("GPUs %q; want %q", names, tt.wantNames)
			}
			if !slices.Equal(s.Warnings, tt.wantWarns) {
				t.Errorf("warnings\n got %q\nwant %q", s.Warnings, tt.wantWarns)
			}
			wantCalls := []string{"nvidia-smi -q -x", "rocm-smi --showproductname --showmeminfo vram --showbus --showuniqueid --showdriverversion --json"}
			if !slices.Equal(r.calls, wantCalls) {
				t.Errorf("ran %q; want %q", r.calls, wantCalls)
			}
			if s.CPU.Threads == 0 || s.RAMBytes == 0 || s.DiskFreeBytes == 0 || !strings.HasPrefix(s.OS, runtime.GOOS) {
				t.Errorf("host part missing: %+v", s)
			}
		})
	}
}

func TestDetectInventoryFile(t *testing.T) {
	var ran []string
	never := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		ran = append(ran, name)
		return nil, errors.New("must not run")
	}
	s, err := Detect(context.Background(), Options{InventoryFile: filepath.Join(gpuDir, "rocm-smi-json_4x-mi100_rocm6.0.2.json"), Run: never})
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if len(ran) != 0 {
		t.Errorf("ran %q with an inventory file", ran)
	}
	if len(s.GPUs) != 4 || s.GPUs[3].Index != 3 || s.GPUs[3].VRAMGiB() != 32 || len(s.Warnings) != 0 {
		t.Errorf("got %+v", s)
	}
	if !s.Fits(32, GPUTypeAMD) || s.Fits(33, GPUTypeAMD) {
		t.Errorf("Fits on the 4x MI100 inventory is wrong")
	}

	// The narrow rocm-smi query has VRAM; one without VRAM warns, not fails.
	dir := t.TempDir()
	narrow := filepath.Join(dir, "narrow.json")
	if err := os.WriteFile(narrow, []byte(`{"card0":{"Card Series":"Navi 31","Unique ID":"0x1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Detect(context.Background(), Options{InventoryFile: narrow})
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if len(s.GPUs) != 1 || s.GPUs[0].VRAMBytes != 0 || !slices.Equal(s.Warnings, []string{"GPU detection: GPU 0 (amd Navi 31): VRAM unknown; it meets no VRAM requirement"}) {
		t.Errorf("got %+v", s)
	}

	for name, content := range map[string]string{"missing": "", "garbage": "hello\n"} {
		p := filepath.Join(dir, name)
		if name != "missing" {
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Detect(context.Background(), Options{InventoryFile: p}); err == nil {
			t.Errorf("%s inventory: Detect succeeded", name)
		} else if name == "missing" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing inventory: %v", err)
		} else if name == "garbage" && !errors.Is(err, ErrFormat) {
			t.Errorf("garbage inventory: %v", err)
		}
	}
}

func TestDetectCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := fakeRunner{block: map[string]bool{"nvidia-smi": true}}
	if _, err := Detect(ctx, Options{Run: r.run}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Detect on a canceled context: %v", err)
	}
}

func TestDetectBadDiskPath(t *testing.T) {
	r := fakeRunner{}
	s, err := Detect(context.Background(), Options{Run: r.run, DiskPath: "/nonexistent/hn-test"})
	if err != nil {
		t.Fatal(err)
	}
	if s.DiskFreeBytes != 0 || !strings.HasPrefix(s.Warnings[0], "disk: free space of /nonexistent/hn-test: ") {
		t.Errorf("got %+v", s)
	}
}

func TestExecRunner(t *testing.T) {
	if _, err := execRunner(context.Background(), "hn-surely-not-installed-tool"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("absent tool: %v; want exec.ErrNotFound", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh: ", err)
	}
	out, err := execRunner(context.Background(), sh, "-c", "echo hello")
	if err != nil || string(out) != "hello\n" {
		t.Errorf("got %q %v", out, err)
	}
	_, err = execRunner(context.Background(), sh, "-c", "echo 'NVIDIA-SMI has failed'; exit 9")
	if err == nil || err.Error() != "exit status 9: NVIDIA-SMI has failed" {
		t.Errorf("failing tool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := execRunner(ctx, sh, "-c", "exec sleep 30"); err == nil {
		t.Errorf("hung tool: no error")
	}
}

func TestHostFallbacks(t *testing.T) {
	root := t.TempDir()
	must := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Two sockets × 2 cores × 2 threads.
	var cpuinfo strings.Builder
	n := 0
	for phys := range 2 {
		for core := range 2 {
			for range 2 {
				fmt.Fprintf(&cpuinfo, "processor\t: %d\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6248\nphysical id\t: %d\ncore id\t\t: %d\n\n", n, phys, core)
				n++
			}
		}
	}
	must("proc/cpuinfo", cpuinfo.String())
	must("proc/meminfo", "MemTotal:       16318164 kB\nMemFree:         1234 kB\n")
	must("etc/os-release", "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n")

	c, err := cpuFromProc(root)
	if err != nil || c != (CPU{Model: "Intel(R) Xeon(R) Gold 6248", Cores: 4, Threads: 8}) {
		t.Errorf("cpuFromProc = %+v, %v", c, err)
	}
	if m, err := memFromProc(root); err != nil || m != 16318164*1024 {
		t.Errorf("memFromProc = %d, %v", m, err)
	}
	if os := detectOS(root); os != runtime.GOOS+" Ubuntu 22.04.4 LTS" {
		t.Errorf("detectOS = %q", os)
	}
	// ghw chrooted into the fake root may or may not manage; either way
	// Detect reports something sensible from the same files.
	r := fakeRunner{}
	s, err := Detect(context.Background(), Options{Root: root, Run: r.run})
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU.Threads != 8 || s.RAMBytes == 0 || s.OS != runtime.GOOS+" Ubuntu 22.04.4 LTS" {
		t.Errorf("Detect with a fake root: %+v", s)
	}

	empty := t.TempDir()
	if _, err := cpuFromProc(empty); err == nil {
		t.Error("cpuFromProc of nothing succeeded")
	}
	if detectOS(empty) != runtime.GOOS {
		t.Errorf("detectOS of nothing = %q", detectOS(empty))
	}
	var warns []string
	if c := detectCPU(empty, &warns); c != (CPU{}) || len(warns) != 1 {
		t.Errorf("detectCPU of nothing = %+v %q", c, warns)
	}
}

func TestParseCPUInfoARM(t *testing.T) {
	// arm64 kernels list no "model name" nor core ids.
	c, err := parseCPUInfo([]byte("processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"))
	if err != nil || c != (CPU{Model: "Raspberry Pi 4 Model B Rev 1.4", Cores: 2, Threads: 2}) {
		t.Errorf("got %+v %v", c, err)
	}
}

func TestDetectThisMachine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real nvidia-smi/rocm-smi when installed")
	}
	s, err := Detect(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU.Threads < runtime.NumCPU() || s.CPU.Model == "" || s.RAMBytes < 1<<28 || s.DiskFreeBytes == 0 {
		t.Errorf("implausible specs: %+v", s)
	}
	t.Logf("this machine: %+v", s)
}
