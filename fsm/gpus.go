package fsm

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/jobdef"
)

// GPU is one GPU a job's container can be given.
type GPU struct {
	Vendor  string // "nvidia" or "amd"
	ID      string // the device ID the runtime understands: the vendor tool's index ("0")
	VRAMGiB uint64 // memory, whole GiB as the card is sold (hardware.GPU.VRAMGiB); 0 unknown
}

// ErrNotEnoughGPUs: a job asks for more GPUs than this machine has. The job fails
// with a result saying so (its on-chain requirements could not express the count).
var ErrNotEnoughGPUs = errors.New("not enough GPUs")

// SelectGPUs picks the GPUs of a job that asks for want (jobdef.Resources.GPUs:
// jobdef.GPUsAll or a count) of at least minVRAMGiB each (resources.min_vram_gb; 0
// for any) from have; GPUs with less memory are never given. All GPUs are of one vendor: the vendor of
// have[0] for "all", else the first vendor with at least want GPUs. "all" on a machine
// without GPUs gives none; a count above what one vendor has is ErrNotEnoughGPUs.
// The choice is deterministic (the first ones in have), so a container created again
// after a crash gets the same GPUs.
func SelectGPUs(have []GPU, want int, minVRAMGiB uint8) (vendor string, ids []string, err error) {
	if minVRAMGiB > 0 && want != 0 {
		var big []GPU
		for _, g := range have {
			if g.VRAMGiB >= uint64(minVRAMGiB) {
				big = append(big, g)
			}
		}
		if len(big) == 0 {
			return "", nil, fmt.Errorf("the job asks for GPUs of %d GiB; this machine has %s: %w", minVRAMGiB, describeGPUs(have), ErrNotEnoughGPUs)
		}
		have = big
	}
	switch {
	case want == 0:
		return "", nil, nil
	case want == jobdef.GPUsAll:
		if len(have) == 0 {
			return "", nil, nil
		}
		vendor = have[0].Vendor
		for _, g := range have {
			if g.Vendor == vendor {
				ids = append(ids, g.ID)
			}
		}
		return vendor, ids, nil
	case want < 0:
		return "", nil, fmt.Errorf("GPU count %d: %w", want, ErrNotEnoughGPUs)
	}
	counts := map[string]int{}
	for _, g := range have {
		counts[g.Vendor]++
		if counts[g.Vendor] == want {
			vendor = g.Vendor
			break
		}
	}
	if vendor == "" {
		return "", nil, fmt.Errorf("the job asks for %d GPUs; this machine has %s: %w", want, describeGPUs(have), ErrNotEnoughGPUs)
	}
	for _, g := range have {
		if g.Vendor == vendor && len(ids) < want {
			ids = append(ids, g.ID)
		}
	}
	return vendor, ids, nil
}

func describeGPUs(have []GPU) string {
	if len(have) == 0 {
		return "none"
	}
	counts := map[string]int{}
	var order []string
	for _, g := range have {
		if counts[g.Vendor] == 0 {
			order = append(order, g.Vendor)
		}
		counts[g.Vendor]++
	}
	out := ""
	for i, v := range order {
		if i > 0 {
			out += " and "
		}
		out += strconv.Itoa(counts[v]) + " " + v
	}
	return out
}

// gpusOfType keeps the GPUs of the vendor a job's on-chain gpu_type names (all for
// GPUAny).
func gpusOfType(have []GPU, t chain.GPUType) []GPU {
	var vendor string
	switch t {
	case chain.GPUNvidia:
		vendor = "nvidia"
	case chain.GPUAMD:
		vendor = "amd"
	default:
		return have
	}
	var out []GPU
	for _, g := range have {
		if g.Vendor == vendor {
			out = append(out, g)
		}
	}
	return out
}
