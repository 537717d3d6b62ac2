package hardware

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"
)

// ghwOptions returns ghw's options for root: quiet, chrooted when not "/".
func ghwOptions(root string) []any {
	opts := []any{ghw.WithDisableWarnings(), ghw.WithDisableTools()}
	if root != "/" {
		opts = append(opts, ghw.WithChroot(root))
	}
	return opts
}

// detectCPU asks ghw, and falls back to root/proc/cpuinfo when ghw fails or
// finds no threads.
func detectCPU(root string, warns *[]string) CPU {
	info, err := ghw.CPU(ghwOptions(root)...)
	if err == nil && info != nil && info.TotalHardwareThreads > 0 {
		c := CPU{Cores: int(info.TotalCores), Threads: int(info.TotalHardwareThreads)}
		for _, p := range info.Processors {
			if p != nil && p.Model != "" {
				c.Model = p.Model
				break
			}
		}
		if c.Model != "" && c.Cores > 0 {
			return c
		}
		// ghw knew the counts but not the model (or cores): fill in from /proc.
		if fb, ferr := cpuFromProc(root); ferr == nil {
			if c.Model == "" {
				c.Model = fb.Model
			}
			if c.Cores == 0 {
				c.Cores = fb.Cores
			}
		}
		return c
	}
	c, ferr := cpuFromProc(root)
	if ferr != nil {
		*warns = append(*warns, fmt.Sprintf("cpu: ghw: %v; /proc/cpuinfo: %v", errOrEmpty(err), ferr))
	}
	return c
}

func errOrEmpty(err error) any {
	if err == nil {
		return "found no processors"
	}
	return err
}

// cpuFromProc reads root/proc/cpuinfo: the model name of the first
// processor, one thread per "processor" entry, and cores as distinct
// (physical id, core id) pairs when the kernel lists them.
func cpuFromProc(root string) (CPU, error) {
	b, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return CPU{}, err
	}
	return parseCPUInfo(b)
}

func parseCPUInfo(b []byte) (CPU, error) {
	var c CPU
	cores := map[string]bool{}
	var physID, coreID string
	flush := func() {
		if coreID != "" {
			cores[physID+"/"+coreID] = true
		}
		physID, coreID = "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			flush()
			c.Threads++
		case "model name", "Model", "cpu model":
			if c.Model == "" {
				c.Model = val
			}
		case "physical id":
			physID = val
		case "core id":
			coreID = val
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return CPU{}, err
	}
	if c.Threads == 0 {
		return CPU{}, fmt.Errorf("no processor entries")
	}
	c.Cores = len(cores)
	if c.Cores == 0 {
		c.Cores = c.Threads
	}
	return c, nil
}

// detectRAM asks ghw for usable memory, and falls back to MemTotal of
// root/proc/meminfo.
func detectRAM(root string, warns *[]string) uint64 {
	info, err := ghw.Memory(ghwOptions(root)...)
	if err == nil && info != nil && info.TotalUsableBytes > 0 {
		return uint64(info.TotalUsableBytes)
	}
	n, ferr := memFromProc(root)
	if ferr != nil {
		*warns = append(*warns, fmt.Sprintf("memory: ghw: %v; /proc/meminfo: %v", errOrEmpty(err), ferr))
	}
	return n
}

func memFromProc(root string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || (len(f) > 1 && f[1] != "kB") {
			return 0, fmt.Errorf("unreadable MemTotal line %q", line)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no MemTotal line")
}

// detectOS returns GOOS and PRETTY_NAME of root/etc/os-release (or
// root/usr/lib/os-release): "linux Debian GNU/Linux 12 (bookworm)".
func detectOS(root string) string {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME=")
			if !ok {
				continue
			}
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			} else {
				v = strings.Trim(v, `"'`)
			}
			if v != "" {
				return runtime.GOOS + " " + v
			}
		}
	}
	return runtime.GOOS
}
