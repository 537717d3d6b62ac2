package hardware

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// logLines decodes the JSON lines logged so far.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	b.Reset()
	return out
}

func messages(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l["message"].(string))
	}
	return out
}

// TestMonitorPauseResume drives the Monitor with an injected sampler: a GPU
// of the startup inventory disappears, then the disk falls under its floor,
// then all is well again. The gate follows, each change is logged once with
// its reason, and every sample is a "health" line with the readings.
func TestMonitorPauseResume(t *testing.T) {
	inv := inventory(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")
	util := 37.0
	used := uint64(1 << 30)
	withUsage := func(gpus []GPU) []GPU {
		out := append([]GPU(nil), gpus...)
		for i := range out {
			out[i].UtilizationPct, out[i].VRAMUsedBytes = &util, &used
			out[i].PCIBusID = strings.Replace(out[i].PCIBusID, "00000000:", "0000:", 1) // CSV and XML write it differently
			out[i].UUID = ""                                                            // matched by bus ID then
		}
		return out
	}
	next := &Health{}
	var sampleErr error
	var logs bytes.Buffer
	active := 1
	m := &Monitor{
		Sample: func(context.Context) (*Health, error) {
			h := *next
			h.At = time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
			return &h, sampleErr
		},
		Inventory: inv, DiskFloorBytes: 10 << 30, Active: func() int { return active },
		Started: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Log: zerolog.New(&logs),
	}
	ctx := context.Background()
	if ok, _ := m.Gate(); !ok || m.Last() != nil {
		t.Fatal("a new monitor is closed or has a sample")
	}

	// Healthy.
	next = &Health{CPUPercent: 12.34, RAMPercent: 40, DiskFreeBytes: 50 << 30, GPUs: withUsage(inv)}
	m.Check(ctx)
	lines := logLines(t, &logs)
	if ok, r := m.Gate(); !ok || len(lines) != 1 {
		t.Fatalf("healthy: gate %v %q, logs %v", ok, r, lines)
	}
	h := lines[0]
	if h["message"] != "health" || h["cpu_pct"] != 12.3 || h["ram_pct"] != 40.0 || h["disk_free_mb"] != float64(50<<10) ||
		h["active_jobs"] != 1.0 || h["gpus"] != 2.0 || h["uptime"] != float64((10*time.Minute).Milliseconds()) {
		t.Errorf("health line %v", h)
	}
	if g, _ := h["gpu1"].(map[string]any); g["util_pct"] != 37.0 || g["vram_used_mb"] != 1024.0 || g["vram_pct"] != 4.2 || g["name"] != "NVIDIA RTX A5000" {
		t.Errorf("gpu1 %v", h["gpu1"])
	}
	if m.Last().ActiveJobs != 1 || m.Last().Uptime != 10*time.Minute {
		t.Errorf("last sample %+v", m.Last())
	}

	// GPU 1 disappears (nvidia-smi lists one).
	next = &Health{DiskFreeBytes: 50 << 30, GPUs: withUsage(inv[:1])}
	m.Check(ctx)
	ok, reason := m.Gate()
	wantReason := "GPU 1 (NVIDIA RTX A5000, GPU-00000000-0000-0000-0000-000000000002) is gone"
	if ok || reason != wantReason {
		t.Fatalf("GPU gone: gate %v %q; want closed %q", ok, reason, wantReason)
	}
	lines = logLines(t, &logs)
	if got := messages(lines); len(got) != 2 || got[0] != "health" || got[1] != "claiming paused" || lines[1]["reason"] != wantReason || lines[0]["paused"] != wantReason {
		t.Fatalf("GPU gone: logged %v", lines)
	}
	m.Check(ctx) // same state: only the health line
	if got := messages(logLines(t, &logs)); len(got) != 1 {
		t.Fatalf("unchanged pause logged %v", got)
	}

	// The GPU is back but the disk is under the floor.
	next = &Health{DiskFreeBytes: 3 << 30, GPUs: withUsage(inv)}
	m.Check(ctx)
	if ok, reason := m.Gate(); ok || reason != "disk free 3072 MiB is under the floor of 10240 MiB (DISK_FLOOR_MB)" {
		t.Fatalf("disk: gate %v %q", ok, reason)
	}
	if got := messages(logLines(t, &logs)); len(got) != 2 || got[1] != "claiming still paused" {
		t.Fatalf("disk: logged %v", got)
	}

	// A failed sample keeps the last verdict.
	sampleErr = errors.New("health sample: cpu: x; memory: y; disk: z")
	m.Check(ctx)
	if ok, _ := m.Gate(); ok {
		t.Fatal("a failed sample opened the gate")
	}
	if lines := logLines(t, &logs); len(lines) != 1 || lines[0]["level"] != "warn" {
		t.Fatalf("failed sample logged %v", lines)
	}
	sampleErr = nil

	// Healthy again.
	next = &Health{DiskFreeBytes: 11 << 30, GPUs: withUsage(inv)}
	m.Check(ctx)
	if ok, _ := m.Gate(); !ok {
		t.Fatal("healthy again: still paused")
	}
	if got := messages(logLines(t, &logs)); len(got) != 2 || got[1] != "claiming resumed: healthy again" {
		t.Fatalf("resume logged %v", got)
	}
}

// TestMonitorToolFailurePauses: when nvidia-smi stops answering, the GPUs
// count as gone and the reason names the tool's failure.
func TestMonitorToolFailurePauses(t *testing.T) {
	inv := inventory(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")
	r := fakeRunner{block: map[string]bool{"nvidia-smi": true}}
	s := &HostSampler{DiskPath: t.TempDir(), Vendors: VendorsOf(inv), Run: r.run, ToolTimeout: 20 * time.Millisecond}
	m := &Monitor{Sample: s.Sample, Inventory: inv, Log: zerolog.Nop()}
	m.Check(context.Background())
	ok, reason := m.Gate()
	if ok || !strings.Contains(reason, "GPU 0 (NVIDIA RTX A5000") || !strings.Contains(reason, "GPU detection: nvidia-smi: no answer within 20ms") {
		t.Fatalf("gate %v %q", ok, reason)
	}
}

// TestHostSamplerGPUs: the sampler runs the health query of each vendor in
// the inventory and reads utilisation and VRAM in use from it.
func TestHostSamplerGPUs(t *testing.T) {
	csv := "index, uuid, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], mig.mode.current, driver_version\n" +
		"0, GPU-a, NVIDIA RTX A5000, 00000000:81:00.0, 24564 MiB, 22437 MiB, 87 %, [N/A], 590.44.01\n"
	r := fakeRunner{out: map[string][]byte{"nvidia-smi": []byte(csv)}}
	s := &HostSampler{DiskPath: t.TempDir(), Vendors: []Vendor{VendorNVIDIA}, Run: r.run}
	h, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 || r.calls[0] != "nvidia-smi "+strings.Join(NvidiaSMIHealthArgs, " ") {
		t.Errorf("ran %q", r.calls)
	}
	if len(h.GPUs) != 1 || *h.GPUs[0].UtilizationPct != 87 || *h.GPUs[0].VRAMUsedBytes != 22437<<20 || h.GPUs[0].VRAMBytes != 24564<<20 || len(h.Errors) != 0 {
		t.Fatalf("sample %+v", h)
	}
	if h.RAMPercent <= 0 || h.DiskFreeBytes == 0 {
		t.Errorf("host part %+v", h)
	}
	// The second sample measures CPU since the first.
	if _, err := s.Sample(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestParseCPUTimes(t *testing.T) {
	got, err := parseCPUTimes([]byte("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n"))
	if err != nil || got != [2]uint64{150, 1000} {
		t.Errorf("got %v %v", got, err)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 x 4 5"} {
		if _, err := parseCPUTimes([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
