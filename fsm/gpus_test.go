package fsm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

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
	if res := r.result(big); res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "8 GPUs asked (vendor any, ≥ 0 GiB each), this machine has 4") {
		t.Fatalf("8 GPUs on a 4-GPU machine: %+v", res)
	}
	if _, ok := r.rt.created[ContainerID(big.String(), 1)]; ok {
		t.Fatal("a container was created for a job that cannot get its GPUs")
	}
	r.verify()
}
