package hardware

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Health is one health sample of the machine.
type Health struct {
	At            time.Time
	CPUPercent    float64 // all cores, busy share over the sampling window, 0..100
	RAMPercent    float64 // (total - available) / total, 0..100
	DiskFreeBytes uint64  // free bytes on the data directory's filesystem
}

// Sample measures CPU over a 200 ms window (from /proc/stat), RAM (from
// /proc/meminfo) and free disk at path. It returns an error only when none of
// them can be read.
func Sample(ctx context.Context, path string) (*Health, error) {
	h := &Health{At: time.Now()}
	var errs []string
	a, errA := cpuTimes()
	if errA == nil {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		b, errB := cpuTimes()
		if errB == nil && b[1] > a[1] {
			h.CPUPercent = 100 * float64(b[0]-a[0]) / float64(b[1]-a[1])
		}
	} else {
		errs = append(errs, errA.Error())
	}
	if p, err := ramPercent(); err == nil {
		h.RAMPercent = p
	} else {
		errs = append(errs, err.Error())
	}
	if free, err := diskFree(path); err == nil {
		h.DiskFreeBytes = free
	} else {
		errs = append(errs, err.Error())
	}
	if len(errs) == 3 {
		return nil, fmt.Errorf("health sample: %s", strings.Join(errs, "; "))
	}
	return h, nil
}

// cpuTimes returns (busy, total) jiffies from the first line of /proc/stat.
func cpuTimes() ([2]uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return [2]uint64{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
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
	return [2]uint64{total - idle, total}, nil
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
