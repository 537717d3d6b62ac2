package hardware

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Health is one health sample of the machine.
type Health struct {
	At            time.Time `json:"at"`
	CPUPercent    float64   `json:"cpu_pct"`         // all cores, busy share since the previous sample, 0..100
	RAMPercent    float64   `json:"ram_pct"`         // (total - available) / total, 0..100
	DiskFreeBytes uint64    `json:"disk_free_bytes"` // free bytes on the data directory's filesystem
	// GPUs are the GPUs the vendor tools (or the inventory file) list now,
	// with UtilizationPct and VRAMUsedBytes where the tool reports them.
	GPUs []GPU `json:"gpus"`
	// ActiveJobs and Uptime are filled in by the Monitor.
	ActiveJobs int           `json:"active_jobs"`
	Uptime     time.Duration `json:"uptime_ns"`
	// Errors name the parts that could not be read in this sample
	// ("GPU detection: nvidia-smi: no answer within 15s; …").
	Errors []string `json:"errors,omitempty"`
}

// Sample measures CPU over a 200 ms window (from /proc/stat), RAM (from
// /proc/meminfo) and free disk at path; no GPUs. It returns an error only
// when none of them can be read. The Monitor uses a HostSampler instead,
// which measures CPU between samples without waiting.
func Sample(ctx context.Context, path string) (*Health, error) {
	s := &HostSampler{DiskPath: path}
	if err := s.prime(); err != nil {
		return s.Sample(ctx)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(200 * time.Millisecond):
	}
	return s.Sample(ctx)
}

// HealthGPUArgs are the vendor tool commands a HostSampler runs each sample.
var (
	NvidiaSMIHealthArgs = []string{"--query-gpu=index,uuid,name,pci.bus_id,memory.total,memory.used,utilization.gpu,mig.mode.current,driver_version", "--format=csv"}
	ROCmSMIHealthArgs   = []string{"--showproductname", "--showmeminfo", "vram", "--showbus", "--showuniqueid", "--showuse", "--json"}
)

// HostSampler samples this machine. The zero value samples CPU, RAM and the
// root filesystem and no GPUs.
type HostSampler struct {
	// DiskPath is the path whose filesystem's free space is reported.
	DiskPath string
	// Vendors whose tool is run each sample: those of the startup inventory.
	Vendors []Vendor
	// InventoryFile, when set, is re-read instead of running vendor tools
	// (GPU_INVENTORY).
	InventoryFile string
	// Run runs the vendor tools. Default: os/exec with PATH lookup.
	Run Runner
	// ToolTimeout bounds each vendor tool run. Default 15s.
	ToolTimeout time.Duration

	mu      sync.Mutex
	lastCPU [2]uint64 // (busy, total) jiffies at the previous sample
}

// VendorsOf returns the vendors of gpus, each once, in order of appearance.
func VendorsOf(gpus []GPU) []Vendor {
	var out []Vendor
	for _, g := range gpus {
		found := false
		for _, v := range out {
			found = found || v == g.Vendor
		}
		if !found {
			out = append(out, g.Vendor)
		}
	}
	return out
}

func (s *HostSampler) prime() error {
	t, err := cpuTimes()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lastCPU = t
	s.mu.Unlock()
	return nil
}

// Sample takes one sample. CPUPercent is the busy share since the previous
// Sample (0 on the first). It returns an error only when ctx ends or none of
// CPU, RAM and disk can be read; GPU failures are listed in Health.Errors.
func (s *HostSampler) Sample(ctx context.Context) (*Health, error) {
	h := &Health{At: time.Now(), GPUs: []GPU{}}
	var hostErrs []string
	if t, err := cpuTimes(); err == nil {
		s.mu.Lock()
		prev := s.lastCPU
		s.lastCPU = t
		s.mu.Unlock()
		if prev[1] > 0 && t[1] > prev[1] && t[0] >= prev[0] {
			h.CPUPercent = min(100, 100*float64(t[0]-prev[0])/float64(t[1]-prev[1]))
		}
	} else {
		hostErrs = append(hostErrs, "cpu: "+err.Error())
	}
	if p, err := ramPercent(); err == nil {
		h.RAMPercent = p
	} else {
		hostErrs = append(hostErrs, "memory: "+err.Error())
	}
	path := s.DiskPath
	if path == "" {
		path = "/"
	}
	if free, err := diskFree(path); err == nil {
		h.DiskFreeBytes = free
	} else {
		hostErrs = append(hostErrs, fmt.Sprintf("disk: free space of %s: %v", path, err))
	}
	if len(hostErrs) == 3 {
		return nil, fmt.Errorf("health sample: %s", strings.Join(hostErrs, "; "))
	}
	h.Errors = hostErrs
	gpus, errs := s.sampleGPUs(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	h.GPUs = append(h.GPUs, gpus...)
	h.Errors = append(h.Errors, errs...)
	return h, nil
}

func (s *HostSampler) sampleGPUs(ctx context.Context) ([]GPU, []string) {
	if s.InventoryFile != "" {
		b, err := os.ReadFile(s.InventoryFile)
		if err != nil {
			return nil, []string{GPUWarningPrefix + "GPU inventory: " + err.Error()}
		}
		gpus, _, err := parseInventory(b)
		if err != nil {
			return nil, []string{fmt.Sprintf("%sGPU inventory %s: %v", GPUWarningPrefix, s.InventoryFile, err)}
		}
		return gpus, nil
	}
	opts := Options{Run: s.Run, ToolTimeout: s.ToolTimeout}
	if opts.Run == nil {
		opts.Run = execRunner
	}
	if opts.ToolTimeout <= 0 {
		opts.ToolTimeout = 15 * time.Second
	}
	var gpus []GPU
	var errs []string
	for _, v := range s.Vendors {
		var got []GPU
		var err error
		switch v {
		case VendorNVIDIA:
			got, _, err = runTool(ctx, opts, "nvidia-smi", NvidiaSMIHealthArgs, parseNvidiaSMICSV)
		case VendorAMD:
			got, _, err = runTool(ctx, opts, "rocm-smi", ROCmSMIHealthArgs, parseROCmSMIJSON)
		default:
			continue
		}
		if errors.Is(err, errToolMissing) {
			err = fmt.Errorf("%w since the worker started", err)
		}
		if err != nil {
			errs = append(errs, GPUWarningPrefix+err.Error())
		}
		gpus = append(gpus, got...)
	}
	return gpus, errs
}

// cpuTimes returns (busy, total) jiffies from the first line of /proc/stat.
func cpuTimes() ([2]uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}, err
	}
	return parseCPUTimes(b)
}

func parseCPUTimes(b []byte) ([2]uint64, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return [2]uint64{}, fmt.Errorf("/proc/stat: unexpected first line %q", clip(string(line)))
	}
	var total, idle uint64
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return [2]uint64{}, fmt.Errorf("/proc/stat: field %d: %v", i+1, err)
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return [2]uint64{total - min(idle, total), total}, nil
}

func ramPercent() (float64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total, avail uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	if total == 0 {
		return 0, fmt.Errorf("/proc/meminfo: no MemTotal")
	}
	return 100 * float64(total-min(avail, total)) / float64(total), nil
}
