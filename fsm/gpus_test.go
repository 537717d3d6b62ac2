package fsm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

func gpu(v hardware.Vendor, index int, gib uint64) hardware.GPU {
	return hardware.GPU{Vendor: v, Index: index, VRAMBytes: gib << 30}
}

var (
	twoNvidia = []hardware.GPU{gpu(hardware.VendorNVIDIA, 0, 24), gpu(hardware.VendorNVIDIA, 1, 24)}
	mixed     = []hardware.GPU{gpu(hardware.VendorNVIDIA, 0, 16), gpu(hardware.VendorAMD, 0, 32), gpu(hardware.VendorAMD, 1, 32)}
)

func gpuIDs(gpus []hardware.GPU) []string {
	var out []string
	for _, g := range gpus {
		out = append(out, GPUID(g))
	}
	return out
}

// TestGPUPoolSelection: what an idle pool gives one job: resources.gpus as a
// count or "all", only GPUs of at least min_vram_gb, of the on-chain vendor,
// never GPUs of two vendors; what it can never give is ErrGPUsNeverFit
// saying what the machine has, from Check as from Acquire.
func TestGPUPoolSelection(t *testing.T) {
	minVRAM := []hardware.GPU{gpu(hardware.VendorNVIDIA, 0, 8), gpu(hardware.VendorNVIDIA, 1, 24), gpu(hardware.VendorNVIDIA, 2, 24)}
	tests := []struct {
		name    string
		have    []hardware.GPU
		need    GPUNeed
		ids     []string
		errText string
	}{
		{"none wanted", twoNvidia, GPUNeed{Count: 0}, nil, ""},
		{"all of two", twoNvidia, GPUNeed{Count: jobdef.GPUsAll}, []string{"nvidia:0", "nvidia:1"}, ""},
		{"all on a machine without GPUs", nil, GPUNeed{Count: jobdef.GPUsAll}, nil, ""},
		{"one of two", twoNvidia, GPUNeed{Count: 1}, []string{"nvidia:0"}, ""},
		{"two of two", twoNvidia, GPUNeed{Count: 2}, []string{"nvidia:0", "nvidia:1"}, ""},
		{"three of two", twoNvidia, GPUNeed{Count: 3}, nil, "3 GPUs asked (vendor any, ≥ 0 GiB each), this machine has 2 nvidia that fit"},
		{"one on none", nil, GPUNeed{Count: 1}, nil, "this machine has none that fit"},
		{"all of mixed: the first vendor's", mixed, GPUNeed{Count: jobdef.GPUsAll}, []string{"nvidia:0"}, ""},
		{"two of mixed: never across vendors", mixed, GPUNeed{Count: 2}, []string{"amd:0", "amd:1"}, ""},
		{"three of mixed", mixed, GPUNeed{Count: 3}, nil, "this machine has 1 nvidia and 2 amd that fit"},
		{"all of the on-chain vendor", mixed, GPUNeed{Count: jobdef.GPUsAll, Vendor: hardware.VendorAMD}, []string{"amd:0", "amd:1"}, ""},
		{"one of the on-chain vendor", mixed, GPUNeed{Count: 1, Vendor: hardware.VendorAMD}, []string{"amd:0"}, ""},
		{"all of an absent vendor", twoNvidia, GPUNeed{Count: jobdef.GPUsAll, Vendor: hardware.VendorAMD}, nil, "all GPUs asked (vendor amd"},
		{"all of min 16 GiB", minVRAM, GPUNeed{Count: jobdef.GPUsAll, MinVRAMGiB: 16}, []string{"nvidia:1", "nvidia:2"}, ""},
		{"one of min 24 GiB", minVRAM, GPUNeed{Count: 1, MinVRAMGiB: 24}, []string{"nvidia:1"}, ""},
		{"two of min 16 GiB", minVRAM, GPUNeed{Count: 2, MinVRAMGiB: 16}, []string{"nvidia:1", "nvidia:2"}, ""},
		{"three of min 16 GiB", minVRAM, GPUNeed{Count: 3, MinVRAMGiB: 16}, nil, "3 GPUs asked (vendor any, ≥ 16 GiB each), this machine has 2 nvidia"},
		{"one of min 25 GiB", minVRAM, GPUNeed{Count: 1, MinVRAMGiB: 25}, nil, "≥ 25 GiB each), this machine has none that fit"},
		{"none of min 80 GiB", minVRAM, GPUNeed{Count: 0, MinVRAMGiB: 80}, nil, ""},
		{"the smallest that fits first", mixed, GPUNeed{Count: 1}, []string{"nvidia:0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewGPUPool(tt.have, 1, 0, 0)
			got, err := p.Acquire(context.Background(), "job", tt.need)
			checkErr := p.Check(tt.need)
			if tt.errText != "" {
				if !errors.Is(err, ErrGPUsNeverFit) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v; want ErrGPUsNeverFit saying %q", err, tt.errText)
				}
				if checkErr == nil || checkErr.Error() != err.Error() {
					t.Errorf("Check = %v; want Acquire's error", checkErr)
				}
				return
			}
			if err != nil || checkErr != nil || !slices.Equal(gpuIDs(got), tt.ids) {
				t.Errorf("= %v, %v (Check %v); want %v", gpuIDs(got), err, checkErr, tt.ids)
			}
		})
	}
	// Without a pool only a job asking for no GPU runs.
	var none *GPUPool
	if err := none.Check(GPUNeed{Count: 1}); !errors.Is(err, ErrGPUsNeverFit) {
		t.Errorf("nil pool, 1 GPU: %v", err)
	}
	if g, err := none.Acquire(context.Background(), "job", GPUNeed{Count: 0}); err != nil || g != nil {
		t.Errorf("nil pool, no GPU: %v %v", g, err)
	}
}

// TestGPUPoolWaitsForOneVendor: a two-GPU job on a machine of one NVIDIA and
// two AMD GPUs waits for the AMD pair while another job holds one of them,
// rather than taking the free NVIDIA and AMD GPUs together.
func TestGPUPoolWaitsForOneVendor(t *testing.T) {
	p := NewGPUPool(mixed, 2, 0, 0)
	ctx := context.Background()
	if g, err := p.Acquire(ctx, "A", GPUNeed{Count: 1, Vendor: hardware.VendorAMD}); err != nil || GPUID(g[0]) != "amd:0" {
		t.Fatal(g, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if g, err := p.Acquire(short, "B", GPUNeed{Count: 2}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("B got %v, %v across vendors; want it to wait", gpuIDs(g), err)
	}
	p.Release("A")
	if g, err := p.Acquire(ctx, "B", GPUNeed{Count: 2}); err != nil || !slices.Equal(gpuIDs(g), []string{"amd:0", "amd:1"}) {
		t.Fatalf("B got %v, %v", gpuIDs(g), err)
	}
}

func TestDriverGivesTheJobItsGPUs(t *testing.T) {
	tests := []struct {
		name    string
		gpus    string // resources.gpus in the definition, "" for none given
		gpuType chain.GPUType
		ids     []string
	}{
		{"default is all", "", chain.GPUAny, []string{"nvidia:0"}},
		{"count of the on-chain vendor", "2", chain.GPUAMD, []string{"amd:0", "amd:1"}},
		{"all of the on-chain vendor", "", chain.GPUAMD, []string{"amd:0", "amd:1"}},
		{"none", "0", chain.GPUAny, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.driver.GPUs = NewGPUPool(mixed, 1, 0, 0)
			res := ""
			if tt.gpus != "" {
				res = `,"resources":{"gpus":` + tt.gpus + `}`
			}
			job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}]` + res + `}`)
			r.chain.jobs[job].GPUType = tt.gpuType
			r.run(job)
			if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,running,uploaded,finished" {
				t.Fatalf("path %s", got)
			}
			var spec ContainerSpec
			for _, s := range r.rt.created {
				spec = s
			}
			if !slices.Equal(gpuIDs(spec.GPUs), tt.ids) {
				t.Errorf("container GPUs %v; want %v", gpuIDs(spec.GPUs), tt.ids)
			}
		})
	}
}

func TestDriverFailsJobAskingForMoreGPUs(t *testing.T) {
	r := newRig(t)
	r.driver.GPUs = NewGPUPool(twoNvidia, 1, 0, 0)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}],"resources":{"gpus":4}}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,uploaded,failed" {
		t.Fatalf("path %s", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || res.Error != "resources.gpus: "+ErrGPUsNeverFit.Error()+": 4 GPUs asked (vendor any, ≥ 0 GiB each), this machine has 2 nvidia that fit" {
		t.Errorf("result %s %q", res.Status, res.Error)
	}
	if len(r.rt.created) != 0 {
		t.Errorf("containers created: %v", r.rt.created)
	}
	r.verify()
}

// loopMarket serves the fake chain's queued jobs as the market's job queue.
type loopMarket struct{ c *fakeChain }

func (m loopMarket) GetMarket(context.Context) (*chain.Market, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	mk := &chain.Market{QueueType: chain.QueueJobs}
	for k, j := range m.c.jobs {
		if j.State == chain.JobQueued {
			mk.Queue = append(mk.Queue, k)
		}
	}
	if len(mk.Queue) == 0 {
		mk.QueueType = chain.QueueNodes
	}
	return mk, nil
}

func (m loopMarket) Jobs(ctx context.Context, keys []solana.PublicKey) (map[solana.PublicKey]*chain.Job, error) {
	out := map[solana.PublicKey]*chain.Job{}
	for _, k := range keys {
		j, err := m.c.Job(ctx, k)
		if err != nil {
			return nil, err
		}
		out[k] = j
	}
	return out, nil
}

func (m loopMarket) AssignedJobs(context.Context) (map[solana.PublicKey]*chain.Job, error) {
	return nil, nil
}

func (m loopMarket) ListNode(context.Context) error { return nil }

// TestLoopNeverClaimsJobsThatDoNotFit: with the Fits of hardware.Specs (as the
// worker wires it), a job needing more VRAM or another GPU vendor stays queued and
// unjournaled; the one that fits runs.
func TestLoopNeverClaimsJobsThatDoNotFit(t *testing.T) {
	r := newRig(t)
	specs := &hardware.Specs{GPUs: []hardware.GPU{{Index: 0, Vendor: hardware.VendorNVIDIA, VRAMBytes: 24 << 30}}}
	const def = `{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}]}`
	tooBig, amd, fits := r.post(def), r.post(def), r.post(def)
	r.chain.jobs[tooBig].MinVRAM, r.chain.jobs[tooBig].GPUType = 48, chain.GPUNvidia
	r.chain.jobs[amd].MinVRAM, r.chain.jobs[amd].GPUType = 8, chain.GPUAMD
	r.chain.jobs[fits].MinVRAM, r.chain.jobs[fits].GPUType = 24, chain.GPUNvidia

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := &Loop{Driver: r.driver, Market: loopMarket{r.chain}, AutoAccept: true, PollInterval: time.Millisecond,
		Fits:   func(v uint8, g chain.GPUType) bool { return specs.Fits(v, uint8(g)) },
		OnIdle: cancel}
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != context.Canceled {
		t.Fatal("loop never went idle")
	}
	if got := r.path(fits); len(got) == 0 || got[len(got)-1] != "finished" {
		t.Errorf("fitting job path %v", got)
	}
	for name, job := range map[string]solana.PublicKey{"48 GiB": tooBig, "AMD": amd} {
		if st := r.chain.jobs[job].State; st != chain.JobQueued {
			t.Errorf("%s job state %v; want still queued", name, st)
		}
		if _, err := r.j.Snapshot(job.String()); err == nil {
			t.Errorf("%s job is in the journal", name)
		}
	}
	if n := r.chain.count("work_job"); n != 1 {
		t.Errorf("%d work_job sent; want 1", n)
	}
}

func capture(t *testing.T, name string) []hardware.GPU {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "gpu", name))
	if err != nil {
		t.Fatal(err)
	}
	gpus, _, err := hardware.ParseInventory(b)
	if err != nil {
		t.Fatal(err)
	}
	return gpus
}

const mi100x4 = "rocm-smi-json_4x-mi100_rocm6.0.2.json"

func ids(gpus []hardware.GPU) map[string]bool {
	m := map[string]bool{}
	for _, g := range gpus {
		m[GPUID(g)] = true
	}
	return m
}

func TestGPUPoolDisjointAndNeverFit(t *testing.T) {
	gpus := capture(t, mi100x4)
	p := NewGPUPool(gpus, 4, 32, 128<<30)
	ctx := context.Background()
	a, err := p.Acquire(ctx, "A", GPUNeed{Count: 1})
	if err != nil || len(a) != 1 {
		t.Fatal(a, err)
	}
	b, err := p.Acquire(ctx, "B", GPUNeed{Count: 2, Vendor: hardware.VendorAMD, MinVRAMGiB: 32})
	if err != nil || len(b) != 2 {
		t.Fatal(b, err)
	}
	for id := range ids(b) {
		if ids(a)[id] {
			t.Fatalf("GPU %s given to A and B", id)
		}
	}
	if again, _ := p.Acquire(ctx, "A", GPUNeed{Count: 1}); GPUID(again[0]) != GPUID(a[0]) {
		t.Error("a job asking again does not get its own GPUs back")
	}
	for _, need := range []GPUNeed{{Count: 5}, {Count: 1, MinVRAMGiB: 33}, {Count: 1, Vendor: hardware.VendorNVIDIA}, {Count: jobdef.GPUsAll, Vendor: hardware.VendorNVIDIA}} {
		if _, err := p.Acquire(ctx, "C", need); !errors.Is(err, ErrGPUsNeverFit) {
			t.Errorf("%+v: %v, want ErrGPUsNeverFit", need, err)
		}
	}
	if g, err := p.Acquire(ctx, "D", GPUNeed{Count: 0}); err != nil || len(g) != 0 {
		t.Errorf("no GPU asked: %v %v", g, err)
	}
	if !p.Admits(32, chain.GPUType(hardware.GPUTypeAMD)) || p.Admits(1, chain.GPUType(hardware.GPUTypeNVIDIA)) || !p.Admits(0, 0) {
		t.Error("Admits with one free MI100")
	}
	if c, m := p.Share(); c != 8 || m != 32<<30 {
		t.Errorf("share %g CPUs %d bytes, want 8 and 32 GiB", c, m)
	}
	p.Acquire(ctx, "E", GPUNeed{Count: 1})
	if p.Admits(1, chain.GPUType(hardware.GPUTypeAMD)) {
		t.Error("admits a GPU job with every GPU held")
	}
}

// TestGPUPoolWaitsFirstComeFirstServed: a job asking for all GPUs waits
// until every holder releases; a later one-GPU job does not overtake it.
func TestGPUPoolWaitsFirstComeFirstServed(t *testing.T) {
	p := NewGPUPool(capture(t, mi100x4), 4, 4, 4<<30)
	ctx := context.Background()
	if _, err := p.Acquire(ctx, "A", GPUNeed{Count: 3}); err != nil {
		t.Fatal(err)
	}
	all := make(chan []hardware.GPU)
	go func() {
		g, err := p.Acquire(ctx, "ALL", GPUNeed{Count: jobdef.GPUsAll})
		if err != nil {
			t.Error(err)
		}
		all <- g
	}()
	// Wait until ALL is queued.
	for {
		p.mu.Lock()
		n := len(p.queue)
		p.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if g, err := p.Acquire(short, "LATE", GPUNeed{Count: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a later job overtook the waiting one: %v %v", g, err)
	}
	p.Release("A")
	if g := <-all; len(g) != 4 {
		t.Fatalf("ALL got %d GPUs", len(g))
	}
	p.Release("ALL")
	if g, err := p.Acquire(ctx, "LATE", GPUNeed{Count: 1}); err != nil || len(g) != 1 {
		t.Fatal(g, err)
	}
}

func TestGPUPoolMIGAndRestore(t *testing.T) {
	if p := NewGPUPool(capture(t, "nvidia-smi-q-x_a100-sxm4-80gb_mig-enabled_535.54.03_v12.xml"), 1, 1, 1); len(p.GPUs()) != 0 {
		t.Errorf("a MIG-enabled GPU is handed out: %+v", p.GPUs())
	}
	gpus := capture(t, "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml")
	p := NewGPUPool(gpus, 2, 2, 2<<30)
	d := &Driver{GPUs: p}
	deadline := time.Now()
	d.RestoreGPUs([]journal.Snapshot{
		{Job: "A", State: string(Running), Container: &journal.ContainerIntent{GPUs: []string{GPUID(gpus[1])}, Deadline: deadline}},
		{Job: "B", State: string(Finished), Container: &journal.ContainerIntent{GPUs: []string{GPUID(gpus[0])}}},
	})
	if h := p.Held("A"); len(h) != 1 || GPUID(h[0]) != gpus[1].UUID {
		t.Fatalf("A holds %v after restore", h)
	}
	g, err := p.Acquire(context.Background(), "C", GPUNeed{Count: 1})
	if err != nil || GPUID(g[0]) != gpus[0].UUID {
		t.Fatalf("C got %v, %v; want the GPU A does not hold", g, err)
	}
	if err := p.Hold("D", []string{gpus[1].UUID, "GPU-gone"}); err == nil {
		t.Error("holding another job's GPU and an unknown one is not an error")
	}
	if _, err := p.Lookup([]string{"GPU-gone"}); err == nil {
		t.Error("Lookup of an unknown GPU")
	}
}

// TestDriverAssignsGPUs: the driver gives a job the GPUs its definition asks
// for and its share of the host, journals them in the container intent,
// hands them back once the result is uploaded, and fails a job asking for
// more GPUs than the machine has.
func TestDriverAssignsGPUs(t *testing.T) {
	r := newRig(t)
	gpus := capture(t, mi100x4)
	r.driver.GPUs = NewGPUPool(gpus, 2, 8, 8<<30)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}],"resources":{"gpus":2,"memory_mb":8192}}`)
	r.run(job)
	spec := r.rt.created[ContainerID(job.String(), 1)]
	if len(spec.GPUs) != 2 || spec.CPUs != 4 || spec.MemoryBytes != 2<<30 {
		t.Fatalf("container spec GPUs %v, CPUs %g, memory %d; want 2 GPUs, 4 CPUs, the 2 GiB worker limit", spec.GPUs, spec.CPUs, spec.MemoryBytes)
	}
	snap, _ := r.j.Snapshot(job.String())
	if c := snap.Container; c == nil || len(c.GPUs) != 2 || c.GPUs[0] != GPUID(spec.GPUs[0]) || c.CPUs != 4 || c.MemoryBytes != 4<<30 {
		t.Fatalf("container intent %+v", snap.Container)
	}
	if held := r.driver.GPUs.Held(job.String()); len(held) != 0 {
		t.Fatalf("GPUs still held after the job ended: %v", held)
	}
	big := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}],"resources":{"gpus":8}}`)
	r.run(big)
	if res := r.result(big); res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "resources.gpus: "+ErrGPUsNeverFit.Error()+": 8 GPUs asked (vendor any, ≥ 0 GiB each), this machine has 4 amd that fit") {
		t.Fatalf("8 GPUs on a 4-GPU machine: %+v", res)
	}
	if _, ok := r.rt.created[ContainerID(big.String(), 1)]; ok {
		t.Fatal("a container was created for a job that cannot get its GPUs")
	}
	r.verify()
}
