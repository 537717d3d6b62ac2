package fsm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/journal"
)

// Market is what the loop needs of the chain beyond Chain: discovery and
// registration (implemented by chain.Client).
type Market interface {
	GetMarket(ctx context.Context) (*chain.Market, error)
	Jobs(ctx context.Context, keys []solana.PublicKey) (map[solana.PublicKey]*chain.Job, error)
	AssignedJobs(ctx context.Context) (map[solana.PublicKey]*chain.Job, error)
	ListNode(ctx context.Context) error
}

// Notifier pushes market changes (implemented by chain.MarketWatch).
type Notifier interface {
	// C receives a value after the market changed (and when push is lost).
	C() <-chan struct{}
	// Live reports whether changes are being pushed now.
	Live() bool
}

// Fits says whether this machine can run a job with these on-chain needs
// (min_vram GiB, gpu_type).
type Fits func(minVRAM uint8, gpu chain.GPUType) bool

// Loop watches the market, claims jobs this machine fits, keeps the node
// registered, and runs each job with the Driver. Jobs the journal left
// unfinished are resumed first.
type Loop struct {
	Driver *Driver
	Market Market
	Fits   Fits
	// Slots is how many jobs run at once (default 1).
	Slots int
	// PollInterval is the time between market reads (default 10s).
	PollInterval time.Duration
	// AutoAccept claims queued jobs; when false only jobs the chain assigns
	// to this node run.
	AutoAccept bool
	// OnIdle is called after each poll that found nothing to do (tests, demo).
	OnIdle func()
	// Reaper, when set, runs after the resumed jobs are relaunched and then
	// every ReapEvery (default 5 minutes).
	Reaper    *Reaper
	ReapEvery time.Duration
	// Gate, when set, is asked before each claim and before joining the
	// node queue; while it answers false the loop claims nothing new (see
	// gate.go). Jobs already running or assigned go on.
	Gate Gate

	gate gateState
	// Notify, when set, wakes the loop for a poll as soon as the market
	// changes; while it is live, polls without a wake-up happen every
	// PushPollInterval (default 60s) instead of PollInterval.
	Notify           Notifier
	PushPollInterval time.Duration

	ended   chan struct{} // a job's driver returned: a slot may be free
	mu      sync.Mutex
	running map[solana.PublicKey]bool
	wg      sync.WaitGroup
}

// Active returns how many jobs are being driven now.
func (l *Loop) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.running)
}

// Run resumes unfinished jobs, then polls until ctx ends; it waits for the
// jobs it started before returning.
func (l *Loop) Run(ctx context.Context) error {
	if l.Slots <= 0 {
		l.Slots = 1
	}
	if l.PollInterval <= 0 {
		l.PollInterval = 10 * time.Second
	}
	if l.PushPollInterval <= 0 {
		l.PushPollInterval = time.Minute
	}
	l.running = map[solana.PublicKey]bool{}
	l.ended = make(chan struct{}, 1)
	defer l.wg.Wait()

	snaps, err := l.Driver.Journal.Snapshots()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		// A state no transition leads to: the snapshot is damaged, and the
		// job could only be retried for ever. The journal is refused whole,
		// as an unreadable one is.
		if !State(s.State).Known() {
			return fmt.Errorf("%w: %s: job %s: snapshot names state %q, which is not a lifecycle state (check it with `hypernode-worker replay --verify`)",
				journal.ErrCorrupt, l.Driver.Journal.Path(), s.Job, s.State)
		}
	}
	l.Driver.RestoreGPUs(snaps)
	for _, s := range snaps {
		if State(s.State).Terminal() {
			continue
		}
		key, err := solana.PublicKeyFromBase58(s.Job)
		if err != nil {
			l.Driver.Log.Error().Str("job", s.Job).Msg("journal names a job that is not a public key; skipped")
			continue
		}
		ev := l.Driver.Log.Info().Str("job", s.Job).Str("state", s.State)
		if rec, err := l.Driver.Reconcile(ctx, key); err == nil {
			ev = ev.Str("chain", rec.Chain).Str("pending_tx", rec.PendingTx).Str("container", rec.Container).Str("next", rec.Next)
		}
		ev.Msg("resuming job from journal")
		l.launch(ctx, key)
	}
	if l.ReapEvery <= 0 {
		l.ReapEvery = 5 * time.Minute
	}
	var lastReap time.Time
	for {
		if l.Reaper != nil && time.Since(lastReap) >= l.ReapEvery {
			lastReap = time.Now()
			if _, err := l.Reaper.Reap(ctx); err != nil && ctx.Err() == nil {
				l.Driver.Log.Warn().Err(err).Msg("reap")
			}
		}
		busy := l.poll(ctx)
		if !busy && l.OnIdle != nil {
			l.OnIdle()
		}
		wait, wake := l.PollInterval, (<-chan struct{})(nil)
		if l.Notify != nil {
			wake = l.Notify.C()
			if l.Notify.Live() {
				wait = l.PushPollInterval
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-l.ended:
		case <-t.C:
		}
		t.Stop()
	}
}

func (l *Loop) launch(ctx context.Context, job solana.PublicKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[job] {
		return false
	}
	l.running[job] = true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() {
			l.mu.Lock()
			delete(l.running, job)
			l.mu.Unlock()
			select {
			case l.ended <- struct{}{}:
			default:
			}
		}()
		if err := l.Driver.Run(ctx, job); err != nil && ctx.Err() == nil {
			l.Driver.Log.Error().Err(err).Str("job", job.String()).Msg("job stopped")
		}
	}()
	return true
}

func (l *Loop) known(job solana.PublicKey) bool {
	_, err := l.Driver.Journal.Snapshot(job.String())
	return err == nil
}

// poll does one round of discovery and reports whether a job is running.
func (l *Loop) poll(ctx context.Context) bool {
	log := l.Driver.Log
	// Jobs the chain assigned to us (create_job popped us from the node
	// queue), including ones a crash left behind.
	assigned, err := l.Market.AssignedJobs(ctx)
	if ctx.Err() != nil {
		return l.Active() > 0 // stopping: nothing to report
	}
	if err != nil {
		log.Warn().Err(err).Msg("look up jobs assigned to this node")
	}
	for _, key := range sortedKeys(assigned) {
		if j := assigned[key]; j.State == chain.JobRunning && !l.known(key) && l.Active() < l.Slots {
			log.Info().Str("job", key.String()).Msg("job assigned to this node")
			if _, err := l.Driver.Poll(key); err == nil {
				l.launch(ctx, key)
			}
		}
	}
	if l.Active() >= l.Slots {
		return true
	}
	if !l.gateOpen(ctx) {
		return l.Active() > 0
	}
	m, err := l.Market.GetMarket(ctx)
	if ctx.Err() != nil {
		return l.Active() > 0
	}
	if err != nil {
		log.Warn().Err(err).Msg("read market")
		return l.Active() > 0
	}
	if m.QueueType == chain.QueueJobs && len(m.Queue) > 0 {
		if !l.AutoAccept {
			log.Info().Int("queued", len(m.Queue)).Msg("jobs waiting; AUTO_ACCEPT is off, not claiming")
			return l.Active() > 0
		}
		jobs, err := l.Market.Jobs(ctx, m.Queue)
		if err != nil {
			log.Warn().Err(err).Msg("read queued jobs")
			return l.Active() > 0
		}
		for _, key := range m.Queue { // queue order: oldest first
			j, ok := jobs[key]
			if !ok || j.State != chain.JobQueued || l.known(key) {
				continue
			}
			if l.Fits != nil && !l.Fits(j.MinVRAM, j.GPUType) {
				log.Debug().Str("job", key.String()).Uint8("min_vram", j.MinVRAM).Stringer("gpu_type", j.GPUType).Msg("job needs hardware this machine lacks; skipped")
				continue
			}
			if !l.Driver.GPUs.Admits(j.MinVRAM, j.GPUType) {
				log.Debug().Str("job", key.String()).Msg("no free GPU fits the job now; not claiming")
				continue
			}
			if _, err := l.Driver.Poll(key); err != nil {
				log.Error().Err(err).Str("job", key.String()).Msg("journal poll")
				continue
			}
			l.launch(ctx, key)
			if l.Active() >= l.Slots {
				break
			}
		}
		return l.Active() > 0
	}
	if l.Active() >= l.Slots {
		return true
	}
	// A free slot and no job waiting: be in the node queue so create_job
	// assigns the next job to us directly.
	inQueue := false
	if m.QueueType == chain.QueueNodes {
		node := l.Driver.Chain.Node()
		for _, k := range m.Queue {
			if k == node {
				inQueue = true
			}
		}
	}
	if !inQueue {
		err := l.Market.ListNode(ctx)
		var txErr *chain.TxError
		switch {
		case err == nil:
			log.Info().Msg("node registered in the market queue")
		case errors.As(err, &txErr) && (txErr.Program == chain.ErrNodeAlreadyQueued || txErr.Program == chain.ErrQueueHasJobs):
		case ctx.Err() != nil:
		default:
			log.Warn().Err(err).Msg("register node (list_node)")
		}
	}
	return l.Active() > 0
}

func sortedKeys(m map[solana.PublicKey]*chain.Job) []solana.PublicKey {
	keys := make([]solana.PublicKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a].String() < keys[b].String() })
	return keys
}
