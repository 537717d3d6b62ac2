package hardware

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTools puts shell scripts named after the vendor tools in a fresh
// directory and makes it the whole PATH, so Detect runs them through the real
// exec path.
func fakeTools(t *testing.T, scripts map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

// TestDetectWithFakeToolsOnPATH: tools missing, hanging, failing or printing
// garbage each give a "GPU detection: …" line and no GPUs of that vendor;
// never a crash, never an error from Detect.
func TestDetectWithFakeToolsOnPATH(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh for the fake tools")
	}
	capture, err := filepath.Abs(filepath.Join(gpuDir, "rocm-smi-json_rx6700xt_rocm6.1.2.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		scripts map[string]string
		gpus    int
		warns   []string // each warning must contain these, in order
	}{
		{"none on PATH", nil, 0, []string{"GPU detection: no GPU found (nvidia-smi not installed, rocm-smi not installed)"}},
		{"nvidia-smi hangs", map[string]string{"nvidia-smi": "exec /bin/sleep 30"}, 0,
			[]string{"GPU detection: nvidia-smi: no answer within 300ms", "GPU detection: no GPU found (rocm-smi not installed)"}},
		{"nvidia-smi prints garbage", map[string]string{"nvidia-smi": "echo '\x00\x01 not xml <<<'"}, 0,
			[]string{"GPU detection: nvidia-smi output unreadable", "GPU detection: no GPU found (rocm-smi not installed)"}},
		{"nvidia-smi prints truncated XML", map[string]string{"nvidia-smi": "echo '<nvidia_smi_log><gpu><product_name>X'"}, 0,
			[]string{"GPU detection: nvidia-smi output unreadable; no GPUs of this vendor reported: unrecognised GPU tool output: not nvidia-smi -q -x XML: XML syntax error", "GPU detection: no GPU found"}},
		{"nvidia-smi fails without a driver", map[string]string{"nvidia-smi": "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9"}, 0,
			[]string{"GPU detection: nvidia-smi failed; no GPUs of this vendor reported: exit status 9: NVIDIA-SMI has failed", "GPU detection: no GPU found"}},
		{"rocm-smi killed by a signal", map[string]string{"rocm-smi": "kill -SEGV $$"}, 0,
			[]string{"GPU detection: rocm-smi failed; no GPUs of this vendor reported: signal: segmentation fault", "GPU detection: no GPU found (nvidia-smi not installed)"}},
		{"rocm-smi answers, nvidia-smi garbage", map[string]string{"rocm-smi": "exec /bin/cat " + capture, "nvidia-smi": "echo hello"}, 1,
			[]string{"GPU detection: nvidia-smi output unreadable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeTools(t, tt.scripts)
			s, err := Detect(context.Background(), Options{ToolTimeout: 300 * time.Millisecond, DiskPath: t.TempDir(), ScanPCI: noPCI})
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if len(s.GPUs) != tt.gpus {
				t.Errorf("%d GPUs; want %d: %+v", len(s.GPUs), tt.gpus, s.GPUs)
			}
			if len(s.Warnings) != len(tt.warns) {
				t.Fatalf("warnings %q; want %d like %q", s.Warnings, len(tt.warns), tt.warns)
			}
			for i, w := range tt.warns {
				if !strings.HasPrefix(s.Warnings[i], w) {
					t.Errorf("warning %d %q; want it to start with %q", i, s.Warnings[i], w)
				}
			}
		})
	}
}

// recordingTransport fails and records every request made through it.
type recordingTransport struct {
	mu   sync.Mutex
	urls []string
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	return nil, errors.New("network use in a test")
}

// TestPCIScanNeverFetchesTheDatabase: with no pci.ids on the machine and
// PCIDB_ENABLE_NETWORK_FETCH=1 in the environment (which would make pcidb
// download it), the PCI scan still makes no HTTP request, and still finds the
// NVIDIA display controller by its numeric IDs.
func TestPCIScanNeverFetchesTheDatabase(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "sys/bus/pci/devices/0000:81:00.0")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"modalias": "pci:v000010DEd00002231sv000010DEsd0000147Ebc03sc00i00\n",
		"class":    "0x030000\n", "vendor": "0x10de\n", "device": "0x2231\n", "revision": "0xa1\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dev, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PCIDB_ENABLE_NETWORK_FETCH", "1")
	t.Setenv("PCIDB_CACHE_PATH", filepath.Join(t.TempDir(), "pci.ids"))
	rec := &recordingTransport{}
	saved := http.DefaultTransport
	http.DefaultTransport = rec
	t.Cleanup(func() { http.DefaultTransport = saved })

	pci, err := detectPCIGPUs(root)
	if err != nil {
		t.Fatalf("detectPCIGPUs: %v", err)
	}
	if len(rec.urls) != 0 {
		t.Fatalf("the PCI scan reached for the network: %q", rec.urls)
	}
	if len(pci) != 1 || pci[0].Address != "0000:81:00.0" || pci[0].VendorID != PCIVendorNVIDIA || pci[0].DeviceID != "2231" {
		t.Fatalf("PCI GPUs %+v; want the one NVIDIA device", pci)
	}
	if _, err := os.Stat(filepath.Join(root, "pci.ids")); err == nil {
		t.Error("a pci.ids was written")
	}

	// Detect on that machine without nvidia-smi names the unused card.
	fakeTools(t, nil)
	s, err := Detect(context.Background(), Options{Root: root, DiskPath: t.TempDir(), ScanPCI: func(string) ([]PCIDevice, error) { return pci, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := "GPU detection: the PCI bus lists 1 NVIDIA display device(s) but nvidia-smi reports 0: install or repair the driver and nvidia-smi"
	found := false
	for _, w := range s.Warnings {
		found = found || w == want
	}
	if !found || len(s.PCIGPUs) != 1 {
		t.Errorf("warnings %q; want %q", s.Warnings, want)
	}
	if len(rec.urls) != 0 {
		t.Fatalf("Detect reached for the network: %q", rec.urls)
	}
}

func TestContainerRuntimeProbe(t *testing.T) {
	r := fakeRunner{}
	s, err := Detect(context.Background(), Options{Run: r.run, DiskPath: t.TempDir(), ScanPCI: noPCI,
		ContainerRuntime: func(context.Context) (string, error) { return "containerd 1.6.20", nil }})
	if err != nil || s.ContainerRuntime != "containerd 1.6.20" {
		t.Fatalf("got %q %v", s.ContainerRuntime, err)
	}
	s, err = Detect(context.Background(), Options{Run: r.run, DiskPath: t.TempDir(), ScanPCI: noPCI,
		ContainerRuntime: func(context.Context) (string, error) { return "", errors.New("containerd at /x.sock does not answer") }})
	if err != nil || s.ContainerRuntime != "" || !strings.Contains(strings.Join(s.Warnings, "\n"), "container runtime: containerd at /x.sock does not answer") {
		t.Fatalf("got %+v %v", s, err)
	}
}

func TestROCmVersion(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "opt/rocm/.info"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "opt/rocm/.info/version"), []byte("6.0.2-115\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := fakeRunner{out: map[string][]byte{"rocm-smi": readCapture(t, "rocm-smi-json_4x-mi100_rocm6.0.2.json")}}
	s, err := Detect(context.Background(), Options{Root: root, Run: r.run, DiskPath: t.TempDir(), ScanPCI: noPCI})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.GPUs) != 4 || s.GPUs[0].ROCm != "6.0.2-115" {
		t.Fatalf("GPUs %+v", s.GPUs)
	}
}
