package fsm

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
)

var (
	twoNvidia = []GPU{{"nvidia", "0", 24}, {"nvidia", "1", 24}}
	mixed     = []GPU{{"nvidia", "0", 16}, {"amd", "0", 32}, {"amd", "1", 32}}
)

func TestSelectGPUs(t *testing.T) {
	tests := []struct {
		name    string
		have    []GPU
		want    int
		vendor  string
		ids     []string
		errText string
	}{
		{"none wanted", twoNvidia, 0, "", nil, ""},
		{"all of two", twoNvidia, jobdef.GPUsAll, "nvidia", []string{"0", "1"}, ""},
		{"all on a machine without GPUs", nil, jobdef.GPUsAll, "", nil, ""},
		{"one of two", twoNvidia, 1, "nvidia", []string{"0"}, ""},
		{"two of two", twoNvidia, 2, "nvidia", []string{"0", "1"}, ""},
		{"three of two", twoNvidia, 3, "", nil, "asks for 3 GPUs; this machine has 2 nvidia"},
		{"one on none", nil, 1, "", nil, "asks for 1 GPUs; this machine has none"},
		{"all of mixed: the first vendor's", mixed, jobdef.GPUsAll, "nvidia", []string{"0"}, ""},
		{"two of mixed: never across vendors", mixed, 2, "amd", []string{"0", "1"}, ""},
		{"three of mixed", mixed, 3, "", nil, "this machine has 1 nvidia and 2 amd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vendor, ids, err := SelectGPUs(tt.have, tt.want, 0)
			if tt.errText != "" {
				if !errors.Is(err, ErrNotEnoughGPUs) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v; want ErrNotEnoughGPUs saying %q", err, tt.errText)
				}
				return
			}
			if err != nil || vendor != tt.vendor || !slices.Equal(ids, tt.ids) {
				t.Errorf("= %q %v %v; want %q %v", vendor, ids, err, tt.vendor, tt.ids)
			}
		})
	}
}

func TestSelectGPUsMinVRAM(t *testing.T) {
	have := []GPU{{"nvidia", "0", 8}, {"nvidia", "1", 24}, {"nvidia", "2", 24}}
	for _, tt := range []struct {
		want    int
		min     uint8
		ids     []string
		errText string
	}{
		{jobdef.GPUsAll, 16, []string{"1", "2"}, ""},
		{1, 24, []string{"1"}, ""},
		{2, 16, []string{"1", "2"}, ""},
		{3, 16, nil, "asks for 3 GPUs"},
		{1, 25, nil, "asks for GPUs of 25 GiB; this machine has 3 nvidia"},
		{0, 80, nil, ""},
	} {
		_, ids, err := SelectGPUs(have, tt.want, tt.min)
		if tt.errText != "" {
			if !errors.Is(err, ErrNotEnoughGPUs) || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("(%d, %d GiB): err = %v; want %q", tt.want, tt.min, err, tt.errText)
			}
			continue
		}
		if err != nil || !slices.Equal(ids, tt.ids) {
			t.Errorf("(%d, %d GiB) = %v, %v; want %v", tt.want, tt.min, ids, err, tt.ids)
		}
	}
}

func TestDriverGivesTheJobItsGPUs(t *testing.T) {
	tests := []struct {
		name    string
		gpus    string // resources.gpus in the definition, "" for none given
		gpuType chain.GPUType
		vendor  string
		ids     []string
	}{
		{"default is all", "", chain.GPUAny, "nvidia", []string{"0"}},
		{"count of the on-chain vendor", "2", chain.GPUAMD, "amd", []string{"0", "1"}},
		{"none", "0", chain.GPUAny, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.driver.GPUs = mixed
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
			if spec.GPUVendor != tt.vendor || !slices.Equal(spec.GPUs, tt.ids) {
				t.Errorf("container GPUs %q %v; want %q %v", spec.GPUVendor, spec.GPUs, tt.vendor, tt.ids)
			}
		})
	}
}

func TestDriverFailsJobAskingForMoreGPUs(t *testing.T) {
	r := newRig(t)
	r.driver.GPUs = twoNvidia
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}],"resources":{"gpus":4}}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,uploaded,failed" {
		t.Fatalf("path %s", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || res.Error != "resources.gpus: the job asks for 4 GPUs; this machine has 2 nvidia: not enough GPUs" {
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
