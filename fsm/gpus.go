package fsm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// ErrGPUsNeverFit: the job asks for GPUs this machine does not have at all
// (more than it has of the vendor and VRAM asked, with every job gone). The
// driver fails such a job instead of waiting.
var ErrGPUsNeverFit = errors.New("this machine does not have the GPUs the job asks for")

// GPUID names a GPU in the journal: its UUID when the vendor tool gave one,
// else "<vendor>:<index>".
func GPUID(g hardware.GPU) string {
	if g.UUID != "" {
		return g.UUID
	}
	return fmt.Sprintf("%s:%d", g.Vendor, g.Index)
}

// GPUNeed is what one job asks of the pool.
type GPUNeed struct {
	// Count is how many GPUs: jobdef.GPUsAll (every GPU that fits) or 0..n.
	Count int
	// MinVRAMGiB is the least VRAM of each GPU (hardware.GPU.VRAMGiB).
	MinVRAMGiB uint8
	// Vendor restricts the GPUs to one vendor; "" takes any.
	Vendor hardware.Vendor
}

// GPUPool hands each running job a disjoint set of this machine's GPUs and
// a share of its CPUs and memory. Safe for concurrent use.
//
// The rule for shares: with S slots (MAX_PARALLEL_JOBS), each job's
// container gets host logical CPUs / S as a CFS quota and host RAM / S as
// its memory limit, unless the definition's resources.memory_mb or the
// worker's own memory limit is lower (the lowest wins).
//
// GPUs are granted first come, first served: a job that waits for GPUs
// (say "all" of them while others run) is not overtaken by a later job, so
// it cannot starve. Among the free GPUs that fit, the smallest VRAM that
// fits is taken first, then the lowest index; a job's GPUs are all of one
// vendor. GPUs with MIG enabled are never handed out (the worker runs jobs on
// whole GPUs only), nor GPUs of vendors other than NVIDIA and AMD.
//
// The pool decides which GPUs a job gets; how they reach its container (CDI,
// the NVIDIA hook, AMD device nodes) is the runtime package's GPUSpecOpts.
type GPUPool struct {
	gpus  []hardware.GPU
	slots int
	cpus  int    // host logical CPUs
	ram   uint64 // host RAM, bytes

	mu      sync.Mutex
	owner   map[string]string // GPU ID -> job
	queue   []string          // jobs waiting for GPUs, oldest first
	changed chan struct{}     // closed and replaced at every release
}

// NewGPUPool returns a pool of gpus for slots jobs on a host of cpus logical
// CPUs and ram bytes of RAM (0: no share is imposed).
func NewGPUPool(gpus []hardware.GPU, slots, cpus int, ram uint64) *GPUPool {
	p := &GPUPool{slots: max(slots, 1), cpus: cpus, ram: ram, owner: map[string]string{}, changed: make(chan struct{})}
	for _, g := range gpus {
		if !g.MIG && (g.Vendor == hardware.VendorNVIDIA || g.Vendor == hardware.VendorAMD) {
			p.gpus = append(p.gpus, g)
		}
	}
	return p
}

// GPUs returns the GPUs the pool hands out: NVIDIA and AMD ones, MIG-enabled
// ones excluded.
func (p *GPUPool) GPUs() []hardware.GPU { return append([]hardware.GPU(nil), p.gpus...) }

// Share is one slot's share of the host: logical CPUs (fractional) and RAM
// bytes; zero when the host's figure is unknown.
func (p *GPUPool) Share() (cpus float64, memBytes int64) {
	if p == nil {
		return 0, 0
	}
	return float64(p.cpus) / float64(p.slots), int64(p.ram / uint64(p.slots))
}

func vendorOf(t chain.GPUType) (hardware.Vendor, bool) {
	switch uint8(t) {
	case hardware.GPUTypeAny:
		return "", true
	case hardware.GPUTypeNVIDIA:
		return hardware.VendorNVIDIA, true
	case hardware.GPUTypeAMD:
		return hardware.VendorAMD, true
	}
	return "", false
}

func (n GPUNeed) fits(g hardware.GPU) bool {
	return (n.Vendor == "" || g.Vendor == n.Vendor) && g.VRAMGiB() >= uint64(n.MinVRAMGiB)
}

// Admits reports whether a job with the on-chain needs min_vram (GiB) and
// gpu_type could start now: a job asking for nothing always can; otherwise
// some free GPU must fit. The loop claims only jobs it admits.
func (p *GPUPool) Admits(minVRAM uint8, gpuType chain.GPUType) bool {
	if p == nil || (minVRAM == 0 && uint8(gpuType) == hardware.GPUTypeAny) {
		return true
	}
	v, ok := vendorOf(gpuType)
	if !ok {
		return false
	}
	need := GPUNeed{Count: 1, MinVRAMGiB: minVRAM, Vendor: v}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.gpus {
		if _, held := p.owner[GPUID(g)]; !held && need.fits(g) {
			return true
		}
	}
	return false
}

// Held returns the GPUs job holds.
func (p *GPUPool) Held(job string) []hardware.GPU {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldLocked(job)
}

func (p *GPUPool) heldLocked(job string) []hardware.GPU {
	var out []hardware.GPU
	for _, g := range p.gpus {
		if p.owner[GPUID(g)] == job {
			out = append(out, g)
		}
	}
	return out
}

// Hold gives job the GPUs named by ids (GPUID), as a journal recorded them
// before a restart. It returns an error naming the IDs this machine does not
// have, or that another job holds; the others are held all the same.
func (p *GPUPool) Hold(job string, ids []string) error {
	if p == nil || len(ids) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	known := map[string]bool{}
	for _, g := range p.gpus {
		known[GPUID(g)] = true
	}
	var bad []string
	for _, id := range ids {
		switch other, held := p.owner[id]; {
		case !known[id]:
			bad = append(bad, id+" (not on this machine)")
		case held && other != job:
			bad = append(bad, id+" (held by job "+other+")")
		default:
			p.owner[id] = job
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("job %s: journaled GPUs %s", job, strings.Join(bad, ", "))
	}
	return nil
}

// Lookup returns the GPUs named by ids, in the order given; an ID this
// machine does not have is an error naming it.
func (p *GPUPool) Lookup(ids []string) ([]hardware.GPU, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if p == nil {
		return nil, fmt.Errorf("GPUs %s recorded, but this worker has no GPU pool", strings.Join(ids, ","))
	}
	by := map[string]hardware.GPU{}
	for _, g := range p.gpus {
		by[GPUID(g)] = g
	}
	out := make([]hardware.GPU, 0, len(ids))
	for _, id := range ids {
		g, ok := by[id]
		if !ok {
			return nil, fmt.Errorf("GPU %s recorded in the journal is not on this machine", id)
		}
		out = append(out, g)
	}
	return out, nil
}

// plan returns the GPUs need may be given, grouped by vendor (in the pool's
// order; a job's GPUs are never of two vendors), and how many it gets: for
// "all", every GPU that fits of the first vendor that has one; for a count,
// only the vendors with at least that many GPUs that fit. The error wraps
// ErrGPUsNeverFit when no vendor has enough (for "all": none fits although
// need names a vendor or VRAM); "all" on a machine without GPUs gives none.
func (p *GPUPool) plan(need GPUNeed) ([][]hardware.GPU, int, error) {
	var groups [][]hardware.GPU
	if p != nil {
		at := map[hardware.Vendor]int{}
		for _, g := range p.gpus {
			if !need.fits(g) {
				continue
			}
			i, ok := at[g.Vendor]
			if !ok {
				i = len(groups)
				at[g.Vendor] = i
				groups = append(groups, nil)
			}
			groups[i] = append(groups[i], g)
		}
	}
	never := func(asked string) error {
		return fmt.Errorf("%w: %s asked (vendor %s, ≥ %d GiB each), this machine has %s that fit",
			ErrGPUsNeverFit, asked, vendorName(need.Vendor), need.MinVRAMGiB, describeGPUs(groups))
	}
	switch {
	case need.Count == jobdef.GPUsAll:
		if len(groups) == 0 {
			if need.Vendor != "" || need.MinVRAMGiB > 0 {
				return nil, 0, never("all GPUs")
			}
			return nil, 0, nil
		}
		return groups[:1], len(groups[0]), nil
	case need.Count < 0:
		return nil, 0, never(fmt.Sprintf("%d GPUs", need.Count))
	case need.Count == 0:
		return nil, 0, nil
	}
	var fit [][]hardware.GPU
	for _, g := range groups {
		if len(g) >= need.Count {
			fit = append(fit, g)
		}
	}
	if len(fit) == 0 {
		return nil, 0, never(fmt.Sprintf("%d GPUs", need.Count))
	}
	return fit, need.Count, nil
}

// describeGPUs says how many GPUs of each vendor groups hold: "none",
// "4 amd", "1 nvidia and 2 amd".
func describeGPUs(groups [][]hardware.GPU) string {
	if len(groups) == 0 {
		return "none"
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		parts[i] = fmt.Sprintf("%d %s", len(g), g[0].Vendor)
	}
	return strings.Join(parts, " and ")
}

// Check returns the error Acquire would give at once because this machine
// can never give need (wrapping ErrGPUsNeverFit), without waiting or taking
// anything; nil when need can be met once enough GPUs are free. A nil pool
// meets only needs of no GPU ("all" included).
func (p *GPUPool) Check(need GPUNeed) error {
	_, _, err := p.plan(need)
	return err
}

// Acquire gives job need's GPUs, waiting (first come, first served) until
// they are free or ctx ends. A job that already holds GPUs gets those back.
// All of a job's GPUs are of one vendor (see plan); among the free GPUs that
// fit, the smallest VRAM that fits is taken first, then the lowest index, of
// the first vendor (in the pool's order) with enough free. It returns an
// error wrapping ErrGPUsNeverFit when this machine can never meet need
// (Check), ctx's error when it ends first.
func (p *GPUPool) Acquire(ctx context.Context, job string, need GPUNeed) ([]hardware.GPU, error) {
	groups, n, err := p.plan(need)
	if err != nil || n == 0 {
		return nil, err
	}
	p.mu.Lock()
	if held := p.heldLocked(job); len(held) > 0 {
		p.mu.Unlock()
		return held, nil
	}
	p.queue = append(p.queue, job)
	for {
		if p.queue[0] == job {
			for _, group := range groups {
				var free []hardware.GPU
				for _, g := range group {
					if _, held := p.owner[GPUID(g)]; !held {
						free = append(free, g)
					}
				}
				if len(free) < n {
					continue
				}
				sort.SliceStable(free, func(a, b int) bool {
					if free[a].VRAMBytes != free[b].VRAMBytes {
						return free[a].VRAMBytes < free[b].VRAMBytes
					}
					return free[a].Index < free[b].Index
				})
				got := free[:n]
				for _, g := range got {
					p.owner[GPUID(g)] = job
				}
				p.dequeueLocked(job)
				p.mu.Unlock()
				return got, nil
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.dequeueLocked(job)
			p.mu.Unlock()
			return nil, ctx.Err()
		case <-ch:
		}
		p.mu.Lock()
	}
}

// dequeueLocked removes job from the wait queue and wakes the waiters (the
// next one may now be at the head).
func (p *GPUPool) dequeueLocked(job string) {
	for i, q := range p.queue {
		if q == job {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			break
		}
	}
	p.wakeLocked()
}

func (p *GPUPool) wakeLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Release frees every GPU job holds. Releasing a job that holds none is a
// no-op.
func (p *GPUPool) Release(job string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	freed := false
	for id, j := range p.owner {
		if j == job {
			delete(p.owner, id)
			freed = true
		}
	}
	if freed {
		p.wakeLocked()
	}
}

func vendorName(v hardware.Vendor) string {
	if v == "" {
		return "any"
	}
	return string(v)
}

// RestoreGPUs gives every unfinished job of snaps the GPUs its container
// intent recorded, so that a restarted worker keeps each job on its GPUs
// and hands them to no other. Problems (a GPU gone from the machine) are
// logged; the job keeps the rest.
func (d *Driver) RestoreGPUs(snaps []journal.Snapshot) {
	for _, s := range snaps {
		if State(s.State).Terminal() || State(s.State) == Uploaded || s.Container == nil {
			continue
		}
		if err := d.GPUs.Hold(s.Job, s.Container.GPUs); err != nil {
			d.Log.Warn().Err(err).Msg("restore GPU assignment")
		}
	}
}

// gpuNeed is what job asks of the pool: the GPUs its definition asks for
// (resources.gpus), of the vendor its job account names (gpu_type), each
// with at least the larger of the account's min_vram and the definition's
// min_vram_gb. Without a pool "all" asks for none (the machine's GPUs are not
// handed out). An unknown gpu_type is an error wrapping ErrGPUsNeverFit.
func (d *Driver) gpuNeed(acc *chain.Job, def *jobdef.Definition) (GPUNeed, error) {
	vendor, ok := vendorOf(acc.GPUType)
	if !ok {
		return GPUNeed{}, fmt.Errorf("%w: unknown gpu_type %d", ErrGPUsNeverFit, acc.GPUType)
	}
	need := GPUNeed{Count: def.Resources.GPUs, MinVRAMGiB: max(acc.MinVRAM, def.Resources.MinVRAMGB), Vendor: vendor}
	if d.GPUs == nil && need.Count == jobdef.GPUsAll {
		need.Count = 0
	}
	return need, nil
}

// assignHost decides the GPUs and host share of a job's new container and
// records them in ci: the GPUs of gpuNeed, waiting for them until ctx ends.
func (d *Driver) assignHost(ctx context.Context, job string, acc *chain.Job, def *jobdef.Definition, ci *journal.ContainerIntent) error {
	need, err := d.gpuNeed(acc, def)
	if err != nil {
		return err
	}
	gpus, err := d.GPUs.Acquire(ctx, job, need)
	if err != nil {
		return err
	}
	ci.GPUs = nil
	for _, g := range gpus {
		ci.GPUs = append(ci.GPUs, GPUID(g))
	}
	ci.CPUs, ci.MemoryBytes = d.GPUs.Share()
	return nil
}
