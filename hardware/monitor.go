package hardware

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Monitor samples the machine's health every interval, logs each sample as a
// "health" line, and decides whether the worker may claim jobs: claiming
// pauses while a GPU of the startup inventory is gone or the data
// directory's free disk is under its floor, and resumes once both are
// healthy again. Each change is logged with its reason.
type Monitor struct {
	// Sample takes one sample (a HostSampler's Sample in the daemon, a fake
	// in tests).
	Sample func(ctx context.Context) (*Health, error)
	// Inventory is the GPU list at startup (Specs.GPUs); a GPU in it that a
	// sample no longer lists pauses claiming.
	Inventory []GPU
	// DiskFloorBytes pauses claiming while free disk is below it (0: no floor).
	DiskFloorBytes uint64
	// Active returns the number of jobs being run (fsm.Loop.Active).
	Active func() int
	// Started is when the worker started (uptime is measured from it).
	Started time.Time
	Log     zerolog.Logger

	mu     sync.Mutex
	last   *Health
	reason string // "" = healthy
}

// Gate reports whether claiming is allowed now and, when not, why. It is
// meant for fsm.Loop.Gate and never blocks on I/O.
func (m *Monitor) Gate() (ok bool, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason == "", m.reason
}

// Last returns the latest sample, or nil before the first.
func (m *Monitor) Last() *Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Run checks once at once, then every interval until ctx ends.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check takes one sample, logs it, and updates the gate. It returns the
// sample (nil when sampling failed).
func (m *Monitor) Check(ctx context.Context) *Health {
	h, err := m.Sample(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		// Nothing could be read: the last verdict stands.
		m.Log.Warn().Err(err).Msg("health")
		return nil
	}
	if m.Active != nil {
		h.ActiveJobs = m.Active()
	}
	if !m.Started.IsZero() {
		h.Uptime = h.At.Sub(m.Started).Round(time.Second)
	}
	reason := m.verdict(h)

	ev := m.Log.Info().Float64("cpu_pct", round1(h.CPUPercent)).Float64("ram_pct", round1(h.RAMPercent)).
		Uint64("disk_free_mb", h.DiskFreeBytes>>20).Int("active_jobs", h.ActiveJobs).Dur("uptime", h.Uptime).
		Int("gpus", len(h.GPUs))
	for _, g := range h.GPUs {
		key := fmt.Sprintf("gpu%d", g.Index)
		d := zerolog.Dict().Str("name", g.Name)
		if g.UtilizationPct != nil {
			d = d.Float64("util_pct", *g.UtilizationPct)
		}
		if g.VRAMUsedBytes != nil {
			d = d.Uint64("vram_used_mb", *g.VRAMUsedBytes>>20)
			if g.VRAMBytes > 0 {
				d = d.Float64("vram_pct", round1(100*float64(*g.VRAMUsedBytes)/float64(g.VRAMBytes)))
			}
		}
		ev = ev.Dict(key, d)
	}
	if len(h.Errors) > 0 {
		ev = ev.Strs("errors", h.Errors)
	}
	if reason != "" {
		ev = ev.Str("paused", reason)
	}
	ev.Msg("health")

	m.mu.Lock()
	prev := m.reason
	m.reason, m.last = reason, h
	m.mu.Unlock()
	switch {
	case prev == "" && reason != "":
		m.Log.Warn().Str("reason", reason).Msg("claiming paused")
	case prev != "" && reason == "":
		m.Log.Info().Str("was", prev).Msg("claiming resumed: healthy again")
	case prev != reason:
		m.Log.Warn().Str("reason", reason).Msg("claiming still paused")
	}
	return h
}

// verdict returns why claiming must pause after h, or "".
func (m *Monitor) verdict(h *Health) string {
	var why []string
	for _, g := range m.Inventory {
		present := false
		for _, s := range h.GPUs {
			present = present || sameGPU(g, s)
		}
		if !present {
			id := g.UUID
			if id == "" {
				id = g.PCIBusID
			}
			if id != "" {
				id = ", " + id
			}
			why = append(why, fmt.Sprintf("GPU %d (%s%s) is gone", g.Index, g.Name, id))
		}
	}
	if len(why) > 0 && len(h.Errors) > 0 {
		why = append(why, strings.Join(h.Errors, "; "))
	}
	if m.DiskFloorBytes > 0 && h.DiskFreeBytes < m.DiskFloorBytes {
		why = append(why, fmt.Sprintf("disk free %d MiB is under the floor of %d MiB (DISK_FLOOR_MB)", h.DiskFreeBytes>>20, m.DiskFloorBytes>>20))
	}
	return strings.Join(why, "; ")
}

// sameGPU reports whether a and b are the same card: same UUID when both
// have one, else the same PCI bus ID (case- and domain-width-insensitive:
// "00000000:81:00.0" is "0000:81:00.0"), else the same vendor and index.
func sameGPU(a, b GPU) bool {
	switch {
	case a.UUID != "" && b.UUID != "":
		return strings.EqualFold(a.UUID, b.UUID)
	case a.PCIBusID != "" && b.PCIBusID != "":
		return normBus(a.PCIBusID) == normBus(b.PCIBusID)
	}
	return a.Vendor == b.Vendor && a.Index == b.Index
}

func normBus(b string) string {
	b = strings.ToLower(b)
	if i := strings.IndexByte(b, ':'); i >= 0 && strings.Count(b, ":") == 2 {
		b = strings.TrimLeft(b[:i], "0") + b[i:]
	}
	return b
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
