// Package hardware finds out what this machine offers the market and whether
// it is healthy: CPU, RAM, free disk, OS, PCI display controllers (ghw, never
// downloading the PCI database) and GPUs (from nvidia-smi and rocm-smi, or
// from a captured inventory file), whether that meets a job's on-chain GPU
// requirements (Specs.Fits), and health samples whose Monitor pauses
// claiming while a GPU is gone or the disk is under its floor.
package hardware

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Vendor of a GPU.
type Vendor string

// Vendors.
const (
	VendorNVIDIA Vendor = "nvidia"
	VendorAMD    Vendor = "amd"
	VendorOther  Vendor = "other"
)

// On-chain gpu_type values of a job (spec/markets-program.md, JobAccount).
const (
	GPUTypeAny    uint8 = 0
	GPUTypeNVIDIA uint8 = 1
	GPUTypeAMD    uint8 = 2
)

// GiB is 2^30 bytes.
const GiB = 1 << 30

// Specs is what Detect found. Parts it could not find are zero and explained
// in Warnings.
type Specs struct {
	CPU           CPU    `json:"cpu"`
	RAMBytes      uint64 `json:"ram_bytes"`       // usable physical memory
	DiskFreeBytes uint64 `json:"disk_free_bytes"` // available to unprivileged users on Options.DiskPath
	DiskPath      string `json:"disk_path"`
	OS            string `json:"os"` // GOOS and the distribution's PRETTY_NAME: "linux Debian GNU/Linux 12 (bookworm)"
	GPUs          []GPU  `json:"gpus"`
	// PCIGPUs are the display controllers on the PCI bus (ghw), listed
	// whether or not a vendor tool reports them; empty with an inventory file.
	PCIGPUs []PCIDevice `json:"pci_gpus,omitempty"`
	// ContainerRuntime is the runtime's name and version as its daemon
	// reports it ("containerd 1.6.20"); "" when Options.ContainerRuntime is
	// unset or failed (Warnings says why).
	ContainerRuntime string `json:"container_runtime,omitempty"`
	// Warnings explain what could not be found. Every GPU-related one starts
	// with "GPU detection: ".
	Warnings []string `json:"warnings,omitempty"`
}

// CPU is the host processor(s), summed over sockets.
type CPU struct {
	Model   string `json:"model"`
	Cores   int    `json:"cores"`   // physical cores
	Threads int    `json:"threads"` // hardware threads (logical CPUs)
}

// GPU is one graphics card as its vendor tool reports it.
type GPU struct {
	Index     int    `json:"index"` // the vendor tool's index: nvidia-smi order (PCI bus order) or rocm-smi's cardN
	Vendor    Vendor `json:"vendor"`
	Name      string `json:"name"`       // "NVIDIA GeForce RTX 3080", "Arcturus GL-XL [Instinct MI100]"
	VRAMBytes uint64 `json:"vram_bytes"` // total framebuffer memory; 0 when the source did not say
	UUID      string `json:"uuid,omitempty"`
	PCIBusID  string `json:"pci_bus_id,omitempty"`   // as the tool writes it: "00000000:81:00.0", "0000:83:00.0"
	Driver    string `json:"driver,omitempty"`       // driver version
	CUDA      string `json:"cuda_version,omitempty"` // NVIDIA: highest CUDA version the driver supports ("12.2")
	ROCm      string `json:"rocm_version,omitempty"` // AMD: installed ROCm release ("6.0.2"), from ROCM_ROOT/.info/version
	MIG       bool   `json:"mig"`                    // NVIDIA Multi-Instance GPU mode is enabled
	// UtilizationPct is the GPU's busy share at the time of the reading,
	// 0..100; nil when the source did not say.
	UtilizationPct *float64 `json:"utilization_pct,omitempty"`
	// VRAMUsedBytes is the framebuffer memory in use; nil when unknown.
	VRAMUsedBytes *uint64 `json:"vram_used_bytes,omitempty"`
}

// VRAMGiB returns the VRAM in whole GiB, rounded to the nearest: the figure
// the card is sold with. Drivers report a little less than the nominal size
// (an "80GB" H100 reports 81559 MiB, a 16 GB RTX 4080 SUPER 16376 MiB), and
// a job asking for 16 GiB is meant for a 16 GB card.
func (g GPU) VRAMGiB() uint64 { return (g.VRAMBytes + GiB/2) / GiB }

// Fits reports whether this machine can take a job with the on-chain
// requirements min_vram (GiB) and gpu_type (GPUTypeAny, GPUTypeNVIDIA,
// GPUTypeAMD): some GPU of that vendor has at least minVRAMGiB (compared with
// VRAMGiB). A job asking for nothing (0, GPUTypeAny) fits every machine, even
// one without GPUs. GPUs with MIG enabled never count: their memory is split
// into instances and the worker runs jobs on whole GPUs only. An unknown
// gpu_type fits nothing.
func (s *Specs) Fits(minVRAMGiB uint8, gpuType uint8) bool {
	if minVRAMGiB == 0 && gpuType == GPUTypeAny {
		return true
	}
	for _, g := range s.GPUs {
		if g.MIG {
			continue
		}
		switch gpuType {
		case GPUTypeAny:
		case GPUTypeNVIDIA:
			if g.Vendor != VendorNVIDIA {
				continue
			}
		case GPUTypeAMD:
			if g.Vendor != VendorAMD {
				continue
			}
		default:
			return false
		}
		if g.VRAMGiB() >= uint64(minVRAMGiB) {
			return true
		}
	}
	return false
}

// Runner runs a vendor tool and returns its standard output. It must return
// an error wrapping exec.ErrNotFound when the program is not installed. It is
// the seam tests use instead of real nvidia-smi and rocm-smi.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Options of Detect. The zero value detects this machine.
type Options struct {
	// DiskPath is the path whose filesystem's free space is reported
	// (the worker's data directory). Default "/".
	DiskPath string
	// InventoryFile, when set (config GPU_INVENTORY), is a captured
	// nvidia-smi -q -x XML, nvidia-smi --query-gpu CSV (with header) or
	// rocm-smi --json file whose GPUs are reported instead of running the
	// vendor tools. The format is recognised from the content.
	InventoryFile string
	// Root is where /proc and /etc/os-release are read from, and ghw's
	// chroot. Default "/". For tests.
	Root string
	// Run runs nvidia-smi and rocm-smi. Default: os/exec, with PATH lookup.
	Run Runner
	// ToolTimeout bounds each vendor tool run. Default 15s.
	ToolTimeout time.Duration
	// ContainerRuntime, when set, asks the container runtime for its name
	// and version ("containerd 1.6.20"), e.g. through the containerd client.
	ContainerRuntime func(ctx context.Context) (string, error)
	// ScanPCI lists the PCI display controllers under root. Default: ghw,
	// with the PCI database's network fetch forced off. Tests replace it.
	ScanPCI func(root string) ([]PCIDevice, error)
}

// GPUWarningPrefix starts every GPU-related warning of Specs.
const GPUWarningPrefix = "GPU detection: "

// Commands Detect runs.
var (
	NvidiaSMIArgs = []string{"-q", "-x"}
	ROCmSMIArgs   = []string{"--showproductname", "--showmeminfo", "vram", "--showbus", "--showuniqueid", "--showdriverversion", "--json"}
)

// maxToolOutput bounds what is read from a vendor tool (nvidia-smi -q -x is
// about 50 KB per GPU).
const maxToolOutput = 16 << 20

// Detect reports this machine's specs. It never fails because one part could
// not be found: that part stays zero and Specs.Warnings says why. A missing
// nvidia-smi or rocm-smi means no GPUs of that vendor; when no GPU is found
// at all, one warning names the tools that were missing, failed, timed out
// or printed something unreadable. PCI display controllers that no tool
// reports are warned about too. Nothing here reaches the network. It returns
// an error only when ctx ends, or when Options.InventoryFile is set but
// cannot be read or parsed (a configuration error the operator must see).
func Detect(ctx context.Context, opts Options) (*Specs, error) {
	if opts.DiskPath == "" {
		opts.DiskPath = "/"
	}
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Run == nil {
		opts.Run = execRunner
	}
	if opts.ToolTimeout <= 0 {
		opts.ToolTimeout = 15 * time.Second
	}
	if opts.ScanPCI == nil {
		opts.ScanPCI = detectPCIGPUs
	}
	s := &Specs{DiskPath: opts.DiskPath, GPUs: []GPU{}}
	s.CPU = detectCPU(opts.Root, &s.Warnings)
	s.RAMBytes = detectRAM(opts.Root, &s.Warnings)
	s.OS = detectOS(opts.Root)
	if free, err := diskFree(opts.DiskPath); err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("disk: free space of %s: %v", opts.DiskPath, err))
	} else {
		s.DiskFreeBytes = free
	}

	if opts.InventoryFile != "" {
		b, err := os.ReadFile(opts.InventoryFile)
		if err != nil {
			return nil, fmt.Errorf("GPU inventory: %w", err)
		}
		gpus, warns, err := parseInventory(b)
		if err != nil {
			return nil, fmt.Errorf("GPU inventory %s: %w", opts.InventoryFile, err)
		}
		s.GPUs = append(s.GPUs, gpus...)
		s.Warnings = append(s.Warnings, warns...)
	} else {
		var missing []string
		for _, tool := range []struct {
			name  string
			args  []string
			parse func([]byte) ([]GPU, []string, error)
		}{
			{"nvidia-smi", NvidiaSMIArgs, parseNvidiaSMIXML},
			{"rocm-smi", ROCmSMIArgs, parseROCmSMIJSON},
		} {
			gpus, warns, err := runTool(ctx, opts, tool.name, tool.args, tool.parse)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("detect GPUs: %w", ctx.Err())
			}
			switch {
			case errors.Is(err, errToolMissing):
				missing = append(missing, tool.name+" not installed")
			case err != nil:
				s.Warnings = append(s.Warnings, GPUWarningPrefix+err.Error())
			}
			s.GPUs = append(s.GPUs, gpus...)
			for _, w := range warns {
				s.Warnings = append(s.Warnings, GPUWarningPrefix+w)
			}
		}
		if pci, err := opts.ScanPCI(opts.Root); err != nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%sPCI scan: %v", GPUWarningPrefix, err))
		} else {
			s.PCIGPUs = pci
			s.Warnings = append(s.Warnings, pciGPUWarnings(pci, s.GPUs)...)
		}
		if len(s.GPUs) == 0 {
			why := ""
			if len(missing) > 0 {
				why = " (" + strings.Join(missing, ", ") + ")"
			}
			s.Warnings = append(s.Warnings, GPUWarningPrefix+"no GPU found"+why+": only jobs without GPU requirements (min_vram 0, gpu_type Any) fit")
		}
		if v := rocmVersion(opts.Root); v != "" {
			for i := range s.GPUs {
				if s.GPUs[i].Vendor == VendorAMD {
					s.GPUs[i].ROCm = v
				}
			}
		}
	}
	for _, g := range s.GPUs {
		if g.VRAMBytes == 0 {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%sGPU %d (%s %s): VRAM unknown; it meets no VRAM requirement", GPUWarningPrefix, g.Index, g.Vendor, g.Name))
		}
		if g.MIG {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%sGPU %d (%s): MIG is enabled; the worker runs jobs on whole GPUs only, so it meets no GPU requirement", GPUWarningPrefix, g.Index, g.Name))
		}
	}
	if opts.ContainerRuntime != nil {
		if v, err := opts.ContainerRuntime(ctx); err != nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("container runtime: %v", err))
		} else {
			s.ContainerRuntime = v
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	return s, nil
}

// errToolMissing: the vendor tool is not installed.
var errToolMissing = errors.New("not installed")

// runTool runs one vendor tool and parses its output. A tool that is not
// installed yields no GPUs and errToolMissing.
func runTool(ctx context.Context, opts Options, name string, args []string, parse func([]byte) ([]GPU, []string, error)) ([]GPU, []string, error) {
	tctx, cancel := context.WithTimeout(ctx, opts.ToolTimeout)
	defer cancel()
	out, err := opts.Run(tctx, name, args...)
	if errors.Is(err, exec.ErrNotFound) {
		return nil, nil, fmt.Errorf("%s: %w", name, errToolMissing)
	}
	if err != nil {
		if tctx.Err() != nil && ctx.Err() == nil {
			return nil, nil, fmt.Errorf("%s: no answer within %s; no GPUs of this vendor reported", name, opts.ToolTimeout)
		}
		return nil, nil, fmt.Errorf("%s failed; no GPUs of this vendor reported: %w", name, err)
	}
	gpus, warns, err := parse(out)
	if err != nil {
		return nil, nil, fmt.Errorf("%s output unreadable; no GPUs of this vendor reported: %w", name, err)
	}
	return gpus, warns, nil
}

// execRunner runs name from PATH, returning its stdout (at most
// maxToolOutput bytes) and, on failure, an error with the first line of
// stderr.
func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, err // *exec.Error wrapping exec.ErrNotFound when absent
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxToolOutput, 4096
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if msg := firstLine(stderr.b); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, msg)
		}
		if msg := firstLine(stdout.b); msg != "" { // nvidia-smi prints its errors to stdout
			return nil, fmt.Errorf("%w: %s", err, msg)
		}
		return nil, err
	}
	if stdout.truncated {
		return nil, fmt.Errorf("%s wrote more than %d bytes", name, maxToolOutput)
	}
	return stdout.b, nil
}

type limitedBuffer struct {
	b         []byte
	max       int
	truncated bool
}

// Write keeps the first max bytes and discards the rest (reporting success,
// so that the tool is not killed by a broken pipe).
func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := l.max - len(l.b); n > room {
		l.truncated = true
		p = p[:max(room, 0)]
	}
	l.b = append(l.b, p...)
	return n, nil
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			b = b[:i]
			break
		}
	}
	s := string(b)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// rocmVersion reads the installed ROCm release from $ROCM_PATH/.info/version
// (default root/opt/rocm): "6.0.2-115" → "6.0.2-115". "" when absent.
func rocmVersion(root string) string {
	dir := os.Getenv("ROCM_PATH")
	if dir == "" || root != "/" {
		dir = filepath.Join(root, "opt/rocm")
	}
	b, err := os.ReadFile(filepath.Join(dir, ".info", "version"))
	if err != nil || len(b) > 256 {
		return ""
	}
	return strings.TrimSpace(firstLine(b))
}
