package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/hardware"
)

// baseRaw is a valid localnet configuration keyed by environment name.
func baseRaw(t *testing.T) map[string]string {
	raw := map[string]string{}
	for _, s := range settings {
		raw[s.env] = s.def
	}
	raw["HYPERNODE_DATA_DIR"] = t.TempDir()
	return raw
}

// TestParallelJobsConfig: MAX_PARALLEL_JOBS takes a count or auto (one slot
// per GPU handed out, at least one), PARALLEL_JOBS is its deprecated alias,
// MAX_PARALLEL_JOBS wins over it, and bad values are usage errors naming
// the setting.
func TestParallelJobsConfig(t *testing.T) {
	for _, c := range []struct {
		max, alias string
		slots      int
		auto       bool
	}{
		{"", "", 1, false},
		{"4", "", 4, false},
		{"", "3", 3, false},
		{"2", "7", 2, false},
		{"auto", "", 0, true},
	} {
		raw := baseRaw(t)
		raw["MAX_PARALLEL_JOBS"], raw["PARALLEL_JOBS"] = c.max, c.alias
		cfg, err := parseConfig(raw)
		if err != nil || cfg.Slots != c.slots || cfg.SlotsAuto != c.auto {
			t.Errorf("MAX_PARALLEL_JOBS=%q PARALLEL_JOBS=%q: slots %v auto %v, %v", c.max, c.alias, cfg.Slots, cfg.SlotsAuto, err)
		}
	}
	for _, c := range []struct{ key, val string }{
		{"MAX_PARALLEL_JOBS", "0"}, {"MAX_PARALLEL_JOBS", "257"}, {"MAX_PARALLEL_JOBS", "many"}, {"PARALLEL_JOBS", "-1"}, {"GPU_HOST_ROOT", "dev"},
	} {
		raw := baseRaw(t)
		raw[c.key] = c.val
		if _, err := parseConfig(raw); !errors.Is(err, errUsage) {
			t.Errorf("%s=%q: %v, want a usage error", c.key, c.val, err)
		}
	}
	// auto: one slot per GPU the pool hands out (the MIG GPU is not one).
	gpus := []hardware.GPU{{Index: 0, Vendor: hardware.VendorAMD}, {Index: 1, Vendor: hardware.VendorAMD}, {Index: 2, Vendor: hardware.VendorNVIDIA, MIG: true}}
	cfg := &Config{SlotsAuto: true}
	pool := newGPUPool(cfg, &hardware.Specs{GPUs: gpus, CPU: hardware.CPU{Threads: 8}, RAMBytes: 16 << 30})
	if cpus, mem := pool.Share(); cfg.Slots != 2 || cpus != 4 || mem != 8<<30 {
		t.Errorf("auto with 2 usable GPUs: %d slots, share %g CPUs %d bytes", cfg.Slots, cpus, mem)
	}
	cfg = &Config{SlotsAuto: true}
	newGPUPool(cfg, &hardware.Specs{})
	if cfg.Slots != 1 {
		t.Errorf("auto without GPUs: %d slots", cfg.Slots)
	}
}

// TestParseConfigCountsTheOtherBadSettings: start names the first bad
// setting on one line and says how many more `config` lists.
func TestParseConfigCountsTheOtherBadSettings(t *testing.T) {
	_, err := parseConfig(rawDefaultsWith(t, map[string]string{"MAX_PARALLEL_JOBS": "bogus", "WORKSPACE_SPARES": "99"}))
	var se *settingError
	if !errors.As(err, &se) || se.Setting != "MAX_PARALLEL_JOBS" || !errors.Is(err, errUsage) {
		t.Fatalf("err %v, want a usage error of MAX_PARALLEL_JOBS", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, `MAX_PARALLEL_JOBS "bogus"`) ||
		!strings.Contains(msg, "and 1 more invalid setting: `hypernode-worker config` lists them all") {
		t.Fatalf("message %q", msg)
	}
	if _, err := parseConfig(rawDefaultsWith(t, map[string]string{"WORKSPACE_SPARES": "99"})); err == nil || strings.Contains(err.Error(), "more invalid") {
		t.Fatalf("one bad setting: %v", err)
	}
}

// TestUnknownNetworkIsOneError: an unknown NETWORK is reported once, not
// with the settings a known network would require as well.
func TestUnknownNetworkIsOneError(t *testing.T) {
	_, errs := checkConfig(rawDefaultsWith(t, map[string]string{"NETWORK": "moon"}))
	if len(errs) != 1 || errs[0].Setting != "NETWORK" {
		t.Fatalf("errors %v, want the NETWORK one only", errs)
	}
	_, errs = checkConfig(rawDefaultsWith(t, map[string]string{"NETWORK": "moon", "IPFS_UPLOAD": "pinata"}))
	if len(errs) != 2 || errs[1].Setting != "PINATA_JWT" && !strings.Contains(errs[1].Msg, "PINATA_JWT") {
		t.Fatalf("errors %v, want NETWORK and the upload choice's", errs)
	}
}
