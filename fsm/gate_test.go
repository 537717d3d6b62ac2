package fsm

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/chain"
)

// gateMarket serves the rig's fake chain as a Market whose queue holds the
// given jobs, and counts the calls the gate must prevent.
type gateMarket struct {
	c     *fakeChain
	queue []solana.PublicKey

	mu                      sync.Mutex
	getMarket, list, unlist int
}

func (m *gateMarket) GetMarket(context.Context) (*chain.Market, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.getMarket++
	return &chain.Market{QueueType: chain.QueueJobs, Queue: m.queue}, nil
}

func (m *gateMarket) Jobs(ctx context.Context, keys []solana.PublicKey) (map[solana.PublicKey]*chain.Job, error) {
	out := map[solana.PublicKey]*chain.Job{}
	for _, k := range keys {
		if j, err := m.c.Job(ctx, k); err == nil {
			out[k] = j
		}
	}
	return out, nil
}

func (m *gateMarket) AssignedJobs(context.Context) (map[solana.PublicKey]*chain.Job, error) {
	return nil, nil
}

func (m *gateMarket) ListNode(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list++
	return nil
}

func (m *gateMarket) UnlistNode(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unlist++
	return nil
}

// TestGatePausesClaiming: while the gate is closed the loop reads no queue,
// claims nothing and leaves the node queue once, logging the reason once;
// when it opens the queued job is claimed and run.
func TestGatePausesClaiming(t *testing.T) {
	r := newRig(t)
	var logs bytes.Buffer
	r.driver.Log = zerolog.New(&logs)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hi"}]}`)
	m := &gateMarket{c: r.chain, queue: []solana.PublicKey{job}}
	var mu sync.Mutex
	ok, reason := false, "GPU 1 (NVIDIA RTX A5000, GPU-2) is gone"
	l := &Loop{Driver: r.driver, Market: m, Slots: 1, AutoAccept: true, running: map[solana.PublicKey]bool{},
		Gate: func() (bool, string) { mu.Lock(); defer mu.Unlock(); return ok, reason }}
	ctx := context.Background()

	for range 3 {
		if l.poll(ctx) {
			t.Fatal("poll reports work while paused")
		}
	}
	l.wg.Wait()
	if m.getMarket != 0 || m.list != 0 || m.unlist != 1 || l.known(job) || r.chain.count("work_job") != 0 {
		t.Fatalf("paused: GetMarket %d, ListNode %d, UnlistNode %d, journaled %v, work_job %d; want 0, 0, 1, false, 0",
			m.getMarket, m.list, m.unlist, l.known(job), r.chain.count("work_job"))
	}
	if n := strings.Count(logs.String(), `"message":"claiming paused"`); n != 1 || !strings.Contains(logs.String(), reason) {
		t.Fatalf("logged %d pause lines (want 1 naming the reason):\n%s", n, logs.String())
	}

	mu.Lock()
	ok, reason = true, ""
	mu.Unlock()
	if !l.poll(ctx) {
		t.Fatal("the open gate let nothing run")
	}
	l.wg.Wait()
	if m.getMarket != 1 || r.chain.count("work_job") != 1 {
		t.Fatalf("resumed: GetMarket %d, work_job %d; want 1, 1", m.getMarket, r.chain.count("work_job"))
	}
	if got := r.path(job); got[len(got)-1] != string(Finished) {
		t.Errorf("job path %v; want it finished", got)
	}
	if !strings.Contains(logs.String(), `"message":"claiming resumed"`) {
		t.Errorf("no resume line:\n%s", logs.String())
	}
}
