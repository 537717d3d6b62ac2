package fsm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/journal"
)

// fakeMarket is the market view over a rig's fakeChain: queued jobs in
// posting order, none assigned. polls receives a value at each poll.
type fakeMarket struct {
	c     *fakeChain
	mu    sync.Mutex
	order []solana.PublicKey
	polls chan struct{}
}

func (m *fakeMarket) add(k solana.PublicKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.order = append(m.order, k)
}

func (m *fakeMarket) GetMarket(context.Context) (*chain.Market, error) {
	m.mu.Lock()
	order := append([]solana.PublicKey(nil), m.order...)
	m.mu.Unlock()
	mk := &chain.Market{QueueType: chain.QueueJobs}
	m.c.mu.Lock()
	for _, k := range order {
		if m.c.jobs[k].State == chain.JobQueued {
			mk.Queue = append(mk.Queue, k)
		}
	}
	m.c.mu.Unlock()
	if len(mk.Queue) == 0 {
		mk.QueueType = chain.QueueNodes
	}
	return mk, nil
}

func (m *fakeMarket) Jobs(ctx context.Context, keys []solana.PublicKey) (map[solana.PublicKey]*chain.Job, error) {
	out := map[solana.PublicKey]*chain.Job{}
	for _, k := range keys {
		if j, err := m.c.Job(ctx, k); err == nil {
			out[k] = j
		}
	}
	return out, nil
}

func (m *fakeMarket) AssignedJobs(context.Context) (map[solana.PublicKey]*chain.Job, error) {
	select {
	case m.polls <- struct{}{}:
	default:
	}
	return nil, nil
}

func (m *fakeMarket) ListNode(context.Context) error { return nil }

// fakeNotifier is a market push the test fires by hand.
type fakeNotifier struct{ c chan struct{} }

func (n fakeNotifier) C() <-chan struct{} { return n.c }
func (n fakeNotifier) Live() bool         { return true }

// TestLoopClaimsOnlyWhatFitsOneAtATime: a job needing more VRAM than the
// machine has is never claimed; with one slot, no second job is claimed
// while the first runs, however many polls pass.
func TestLoopClaimsOnlyWhatFitsOneAtATime(t *testing.T) {
	r := newRig(t)
	m := &fakeMarket{c: r.chain, polls: make(chan struct{})}
	big := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo big"}]}`)
	r.chain.jobs[big].MinVRAM = 80
	first := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"sleep"}]}`)
	second := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo second"}]}`)
	for _, k := range []solana.PublicKey{big, first, second} {
		m.add(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idle := make(chan struct{}, 1)
	l := &Loop{Driver: r.driver, Market: m, Slots: 1, PollInterval: time.Millisecond, AutoAccept: true,
		Fits: func(v uint8, g chain.GPUType) bool { return v <= 24 },
		OnIdle: func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		}}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	// While "sleep" blocks, let several polls pass.
	for i := 0; i < 5; i++ {
		select {
		case <-m.polls:
		case <-ctx.Done():
			t.Fatal("the loop stopped polling")
		}
	}
	snaps, err := r.j.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Job != first.String() {
		t.Fatalf("journal knows %d jobs (%v) while the first runs; want only %s", len(snaps), snaps, first)
	}
	close(r.rt.blocking)
	// Until the second job is done; then idle.
	for {
		j, _ := r.chain.Job(ctx, second)
		if j.State == chain.JobCompleted {
			break
		}
		select {
		case <-idle:
		case <-m.polls:
		case <-ctx.Done():
			t.Fatal("the second job never finished")
		}
	}
	cancel()
	<-done
	if j, _ := r.chain.Job(context.Background(), big); j.State != chain.JobQueued || r.chain.count(chain.IxWorkJob) != 2 {
		t.Fatalf("the job needing 80 GiB is %s; %d claims landed, want 2", j.State, r.chain.count(chain.IxWorkJob))
	}
	if _, err := r.j.Snapshot(big.String()); err == nil {
		t.Fatal("the job needing 80 GiB reached the journal")
	}
}

// TestLoopWakesOnPush: with an hour between polls, a market push makes the
// loop claim a new job at once; a job's end wakes it too.
func TestLoopWakesOnPush(t *testing.T) {
	r := newRig(t)
	m := &fakeMarket{c: r.chain, polls: make(chan struct{}, 1)}
	push := fakeNotifier{c: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idle := make(chan struct{})
	l := &Loop{Driver: r.driver, Market: m, Slots: 1, PollInterval: time.Hour, PushPollInterval: time.Hour, AutoAccept: true,
		Notify: push, OnIdle: func() {
			select {
			case idle <- struct{}{}:
			case <-ctx.Done():
			}
		}}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	<-idle // the first poll found nothing
	a := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo a"}]}`)
	b := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo b"}]}`)
	m.add(a)
	m.add(b)
	push.c <- struct{}{} // create_job changed the market
	<-idle               // a, then (woken by a's end) b, then nothing left
	cancel()
	<-done
	for _, k := range []solana.PublicKey{a, b} {
		if j, _ := r.chain.Job(context.Background(), k); j.State != chain.JobCompleted {
			t.Errorf("job %s is %s, want completed without waiting an hour", k, j.State)
		}
	}
}

// refusingChain refuses every work_job at preflight with one Markets error,
// as the RPC does when another node claimed the job first.
type refusingChain struct {
	*fakeChain
	code chain.ProgramError
}

func (c refusingChain) Submit(ctx context.Context, tx *chain.SignedTx) error {
	if tx.Instruction == chain.IxWorkJob {
		return &chain.TxError{Signature: tx.Signature.String(), Program: c.code, Err: `{"InstructionError":[0,{"Custom":6001}]}`}
	}
	return c.fakeChain.Submit(ctx, tx)
}

// TestLostClaimIsQuiet: JobNotInQueue or JobNotQueued on a claim means
// another node won: the job goes to lost, logged below warning.
func TestLostClaimIsQuiet(t *testing.T) {
	for _, code := range []chain.ProgramError{chain.ErrJobNotInQueue, chain.ErrJobNotQueued} {
		t.Run(code.Name(), func(t *testing.T) {
			r := newRig(t)
			var log bytes.Buffer
			d := r.newDriver()
			d.Chain = refusingChain{fakeChain: r.chain, code: code}
			d.Log = zerolog.New(&log)
			job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
			if _, err := d.Poll(job); err != nil {
				t.Fatal(err)
			}
			if err := d.Run(context.Background(), job); err != nil {
				t.Fatalf("run: %v", err)
			}
			if got := strings.Join(r.path(job), ","); got != "polled,lost" {
				t.Fatalf("path %s", got)
			}
			if s := log.String(); strings.Contains(s, `"level":"warn"`) || strings.Contains(s, `"level":"error"`) || !strings.Contains(s, "claim lost") {
				t.Fatalf("log of a lost race:\n%s", s)
			}
		})
	}
}

// TestLoopRefusesUnknownSnapshotState: a snapshot whose state is no lifecycle
// state (a damaged journal) stops the loop with ErrCorrupt naming the job,
// instead of retrying the job for ever.
func TestLoopRefusesUnknownSnapshotState(t *testing.T) {
	r := newRig(t)
	job := solana.NewWallet().PublicKey()
	if _, err := r.j.Append(journal.Record{Job: job.String(), Kind: journal.KindTransition, Event: EvPoll, To: "finishdd"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := &Loop{Driver: r.driver, Market: &fakeMarket{c: r.chain, polls: make(chan struct{}, 100)}, PollInterval: time.Millisecond}
	err := l.Run(ctx)
	if !errors.Is(err, journal.ErrCorrupt) || !strings.Contains(err.Error(), job.String()) || !strings.Contains(err.Error(), "finishdd") {
		t.Fatalf("Run over a snapshot in state finishdd = %v; want ErrCorrupt naming the job and the state", err)
	}
}
