package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// Idle targets of issue 7: an idle worker stays under these.
const (
	idleRSSTargetMiB = 40
	idleCPUTargetPct = 0.5 // of one core
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture the worker runs on.
const userHZ = 100

// BenchmarkIdle measures the real `hypernode-worker start` process, idle on
// the embedded localnet with the default settings (poll every 10 s, health
// every 60 s, no API_ADDR), for IDLE_SECONDS (default 300) after it is
// ready: resident memory (VmRSS sampled every second: mean and max; VmHWM)
// and CPU (utime+stime over the window) as a share of one core. The
// in-process localnet's work counts; containerd's does not. It reports
// the ratios to the targets (40 MiB, 0.5% of a core): under 1 meets them.
//
//	IDLE_SECONDS=60 go test ./cmd/hypernode-worker -run '^$' -bench BenchmarkIdle -benchtime 1x
func BenchmarkIdle(b *testing.B) {
	window := 300 * time.Second
	if v := os.Getenv("IDLE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("IDLE_SECONDS %q is not a positive number of seconds", v)
		}
		window = time.Duration(n) * time.Second
	}
	ctd := runtimetest.StartContainerd(b)
	for i := 0; i < b.N; i++ {
		r := measureIdle(b, ctd, window)
		b.ReportMetric(r.rssMaxMiB, "rss-max-MiB")
		b.ReportMetric(r.rssMeanMiB, "rss-mean-MiB")
		b.ReportMetric(r.cpuPct, "cpu-%-of-core")
		b.ReportMetric(r.rssMaxMiB/idleRSSTargetMiB, "rss/target")
		b.ReportMetric(r.cpuPct/idleCPUTargetPct, "cpu/target")
		b.Logf("idle %s: VmRSS mean %.1f MiB, max %.1f MiB, VmHWM %.1f MiB; CPU %.3f s = %.3f%% of a core (targets %d MiB, %.1f%%); startup CPU %.2f s",
			window, r.rssMeanMiB, r.rssMaxMiB, r.hwmMiB, r.cpuSeconds, r.cpuPct, idleRSSTargetMiB, idleCPUTargetPct, r.startupCPU)
	}
}

type idleResult struct {
	rssMeanMiB, rssMaxMiB, hwmMiB  float64
	cpuSeconds, cpuPct, startupCPU float64
}

func measureIdle(b *testing.B, ctd string, window time.Duration) idleResult {
	b.Helper()
	data := b.TempDir()
	var out, errb bytes.Buffer
	cmd := exec.Command(workerBinary(b), "start", "--network", "localnet", "--localnet-addr", freeAddrTB(b),
		"--containerd-address", ctd, "--log-format", "json", "--env-file", "")
	cmd.Env = append(os.Environ(), "HYPERNODE_DATA_DIR="+data)
	lw := &lockedWriter{w: &out}
	cmd.Stdout, cmd.Stderr = lw, &lockedWriter{w: &errb}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lw.mu.Lock()
		ready := strings.Contains(out.String(), "Watching for jobs")
		lw.mu.Unlock()
		if ready {
			break
		}
		select {
		case err := <-exited:
			b.Fatalf("worker exited: %v\n%s\n%s", err, out.String(), errb.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("worker not ready in 60s:\n%s", out.String())
		}
	}
	pid := cmd.Process.Pid
	b.ResetTimer()
	cpu0, err := procCPUSeconds(pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var sum, maxRSS float64
	var n int
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < window {
		select {
		case err := <-exited:
			b.Fatalf("worker exited while idle: %v\n%s", err, errb.String())
		case <-tick.C:
		}
		rss, err := procStatusKiB(pid, "VmRSS")
		if err != nil {
			b.Fatal(err)
		}
		mib := float64(rss) / 1024
		sum += mib
		maxRSS = max(maxRSS, mib)
		n++
	}
	cpu1, err := procCPUSeconds(pid)
	if err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	hwm, _ := procStatusKiB(pid, "VmHWM")
	return idleResult{rssMeanMiB: sum / float64(max(n, 1)), rssMaxMiB: maxRSS, hwmMiB: float64(hwm) / 1024,
		cpuSeconds: cpu1 - cpu0, cpuPct: 100 * (cpu1 - cpu0) / elapsed.Seconds(), startupCPU: cpu0}
}

func freeAddrTB(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procCPUSeconds is utime+stime of process pid (all its threads), in seconds.
func procCPUSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted from
	// after its closing parenthesis, where field 3 (state) is first.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(utime+stime) / userHZ, nil
}

// procStatusKiB reads a "Name:  N kB" line of /proc/<pid>/status.
func procStatusKiB(pid int, name string) (uint64, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, name)
}
