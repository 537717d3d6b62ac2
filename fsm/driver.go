package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/failpoint"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// Chain is what the driver needs of the Solana side (implemented by
// chain.Client).
type Chain interface {
	// Node is this worker's node public key.
	Node() solana.PublicKey
	// Job reads a job account; an error wrapping chain.ErrAccountNotFound when absent.
	Job(ctx context.Context, job solana.PublicKey) (*chain.Job, error)
	// SignWorkJob builds and signs work_job for job (not sent).
	SignWorkJob(ctx context.Context, job solana.PublicKey) (*chain.SignedTx, error)
	// SignFinishJob builds and signs finish_job with the result digest (not sent).
	SignFinishJob(ctx context.Context, job *chain.Job, jobKey solana.PublicKey, result [32]byte) (*chain.SignedTx, error)
	// SignQuitJob builds and signs quit_job: give the job back (not sent).
	SignQuitJob(ctx context.Context, job solana.PublicKey) (*chain.SignedTx, error)
	// TxStatus looks a signature up, with history search.
	TxStatus(ctx context.Context, sig solana.Signature) (chain.TxStatus, error)
	// Submit sends tx's bytes (re-sending the same bytes until it lands or
	// its blockhash expires) and waits for confirmation. nil: landed without
	// error. A *chain.TxError when it failed (preflight or on chain); an
	// error wrapping chain.ErrBlockhashExpired when it can no longer land.
	Submit(ctx context.Context, tx *chain.SignedTx) error
}

// Store is what the driver needs of IPFS (implemented over the ipfs package).
type Store interface {
	// Fetch returns the bytes behind cid, verified against it.
	Fetch(ctx context.Context, cid string) ([]byte, error)
	// ComputeCID returns the CIDv0 `ipfs add` would give r's bytes.
	ComputeCID(r io.Reader) (string, int64, error)
	// AddFile uploads a file and returns its CID, which must equal the local one.
	AddFile(ctx context.Context, path string) (string, int64, error)
}

// ContainerSpec, Op and Exit mirror the runtime package's types, so that this
// package does not depend on containerd.
type ContainerSpec struct {
	ID          string
	Job         string // the job account, base58
	Attempt     int
	Node        string // this node's key, stored as the LabelNode label
	Image       string
	Workspace   string   // host directory mounted at /workspace
	Env         []string // KEY=VALUE, may hold secrets
	MemoryBytes int64
	PidsLimit   int64
	// ModelDir is the model cache directory to mount at /models (read-only
	// when ModelReadOnly); "" for none.
	ModelDir      string
	ModelReadOnly bool
	ShmBytes      int64 // size of /dev/shm (resources.shm_mb); 0 = the runtime's default
	// GPUs are the GPUs this container alone may use (GPUPool; all of one
	// vendor); CPUs its CFS quota in logical CPUs (0: none).
	GPUs []hardware.GPU
	CPUs float64
}

// Op is one operation: argv and working directory inside the container.
type Op struct {
	Argv    []string
	Workdir string
}

// Exit is how an operation's process ended.
type Exit struct {
	Code      int
	ExitedAt  time.Time
	OOMKilled bool
}

// Runtime is what the driver needs of containerd (implemented over the
// runtime package).
type Runtime interface {
	EnsureImage(ctx context.Context, ref string) error
	// Create creates the container; an existing one with the same ID is not an error.
	Create(ctx context.Context, spec ContainerSpec) error
	// RunOp starts operation n (or re-attaches to it when its task already
	// exists) and waits for it; cancelling ctx detaches without killing.
	RunOp(ctx context.Context, id string, n int, op Op, logPath string) (Exit, error)
	Kill(ctx context.Context, id string) error
	Remove(ctx context.Context, id string) error
	// Inspect says what containerd knows of a container.
	Inspect(ctx context.Context, id string) (ContainerState, error)
	// List returns the IDs of the containers labelled as the worker's.
	List(ctx context.Context) ([]string, error)
}

// WorkspaceFS caps a job's workspace directory with a filesystem of its own
// (implemented by runtime/workspacefs).
type WorkspaceFS interface {
	// Mount makes dir the root of a filesystem of size bytes kept in the
	// file image; an existing image is mounted as it is, a mounted dir left
	// alone.
	Mount(dir, image string, bytes int64) error
	// Unmount unmounts dir if it is mounted.
	Unmount(dir string) error
	// Full says whether the mounted dir has (almost) no room left.
	Full(dir string) (bool, error)
}

// ModelCache is the shared model cache (implemented by runtime/modelcache).
type ModelCache interface {
	// Acquire gives job the cache directory of model: read-only when sealed,
	// read-write for the job that populates it. An error means the job runs
	// without the cache.
	Acquire(model, job string) (dir string, readOnly bool, err error)
	// Finish releases what job holds; the model it populated is sealed when
	// succeeded, discarded otherwise. Idempotent.
	Finish(job string, succeeded bool) error
}

// EnvModelDir names the model cache's mount point in a job's environment,
// when the cache is mounted.
const EnvModelDir = "HYPERNODE_MODEL_DIR"

// ModelsDir is where the model cache appears in the container.
const ModelsDir = "/models"

// ContainerState is what containerd knows of a container.
type ContainerState struct {
	Exists     bool
	TaskStatus string // "running", "stopped", "created", "" (no task)…
	Op         int    // the operation its current or last task belongs to; -1 none
	Exit       *Exit  // how that operation exited, when known
	Labels     map[string]string
}

// LabelNode marks a container with the node that runs it, so that a reaper
// never touches another worker's containers on a shared containerd.
const LabelNode = "hypernode.node"

// Errors a Runtime returns from RunOp that no retry can mend; the driver
// records the operation as failed.
var (
	// ErrOpCannotStart: the process could not be started (exit code 127).
	ErrOpCannotStart = errors.New("operation cannot start")
	// ErrOpLost: the operation ran but its exit status is lost (exit code 255).
	ErrOpLost = errors.New("operation's exit status lost")
)

// Limits bound what a job may use.
type Limits struct {
	MemoryBytes    int64 // per container
	PidsLimit      int64
	MaxOutputFiles int
	MaxOutputBytes int64 // sum of output file sizes
	LogTailBytes   int
	// MaxWorkspaceBytes bounds what a job may write under /workspace; past
	// it the job is killed and fails.
	MaxWorkspaceBytes int64
	// ImageAttempts is how many times pulling a job's image may fail before
	// the job fails.
	ImageAttempts int
	// MaxLogBytes is the most output one operation may write (the runtime's
	// log writer keeps no more); an operation whose log reaches it is
	// stopped and the job fails.
	MaxLogBytes int64
}

// DefaultLimits are used for zero fields of Driver.Limits.
var DefaultLimits = Limits{MemoryBytes: 2 << 30, PidsLimit: 256, MaxOutputFiles: 1000, MaxOutputBytes: 1 << 30, LogTailBytes: 4096,
	MaxWorkspaceBytes: 10 << 30, ImageAttempts: 5, MaxLogBytes: 64 << 20}

// Driver moves jobs through the lifecycle, journaling every step.
type Driver struct {
	Journal *journal.Journal
	Chain   Chain
	Store   Store
	Runtime Runtime
	// DataDir holds jobs/<job>/{workspace,logs}; named from the journal.
	DataDir string
	Limits  Limits
	// GPUs decides which of the machine's GPUs each job gets (resources.gpus,
	// min_vram, the on-chain gpu_type; disjoint while jobs run) and its share
	// of the host; nil: no GPU is given to any container and no CPU share is
	// imposed.
	GPUs *GPUPool
	Log  zerolog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// RetryMin and RetryMax bound the backoff between attempts of a step
	// that failed transiently (defaults 500ms and 15s).
	RetryMin, RetryMax time.Duration
	mu                 sync.Mutex
	imageFailures      map[string]int                // job -> failed image pulls since this process started
	definitions        map[string]*jobdef.Definition // CID -> parsed definition of a job not yet ended (read-only)

	// Workspaces, when set, gives each job's workspace a hard cap of
	// Limits.MaxWorkspaceBytes (a filesystem of that size); nil leaves only
	// the periodic size check of the watcher.
	Workspaces WorkspaceFS
	// Models, when set, is the shared model cache mounted into jobs whose
	// definition names a model.
	Models ModelCache
	// WatchInterval is how often the job account is checked while an
	// operation runs, so that a job timed out, stopped or taken away on
	// chain is abandoned and its container stopped (default 10s).
	WatchInterval time.Duration

	// Observer, when set, is told of every transition once it is journaled
	// (metrics). It must not block.
	Observer Observer
}

// Observer is told of each journaled transition record (Kind transition,
// Seq and At set).
type Observer interface {
	Transition(rec journal.Record)
}

func (d *Driver) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Driver) limits() Limits {
	l := d.Limits
	if l.MemoryBytes == 0 {
		l.MemoryBytes = DefaultLimits.MemoryBytes
	}
	if l.PidsLimit == 0 {
		l.PidsLimit = DefaultLimits.PidsLimit
	}
	if l.MaxOutputFiles == 0 {
		l.MaxOutputFiles = DefaultLimits.MaxOutputFiles
	}
	if l.MaxOutputBytes == 0 {
		l.MaxOutputBytes = DefaultLimits.MaxOutputBytes
	}
	if l.LogTailBytes == 0 {
		l.LogTailBytes = DefaultLimits.LogTailBytes
	}
	if l.MaxWorkspaceBytes == 0 {
		l.MaxWorkspaceBytes = DefaultLimits.MaxWorkspaceBytes
	}
	if l.ImageAttempts == 0 {
		l.ImageAttempts = DefaultLimits.ImageAttempts
	}
	if l.MaxLogBytes == 0 {
		l.MaxLogBytes = DefaultLimits.MaxLogBytes
	}
	return l
}

func (d *Driver) countImageFailure(job string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.imageFailures == nil {
		d.imageFailures = map[string]int{}
	}
	d.imageFailures[job]++
	return d.imageFailures[job]
}

// JobDir is where a job's files live: DataDir/jobs/<job>.
func (d *Driver) JobDir(job string) string { return filepath.Join(d.DataDir, "jobs", job) }

// errAlreadyLanded: the chain shows the effect of a transaction whose
// signature cannot be found.
var errAlreadyLanded = errors.New("the transaction's effect is already on chain")

// errAbandon is returned by a step that found the job gone from us on chain.
type errAbandon struct{ reason string }

func (e errAbandon) Error() string { return "abandon: " + e.reason }

// Poll records that job was seen (none → polled). It is a no-op for a job the
// journal already has; it returns the job's state.
func (d *Driver) Poll(job solana.PublicKey) (State, error) {
	snap, err := d.Journal.Snapshot(job.String())
	if err == nil {
		return State(snap.State), nil
	}
	if !errors.Is(err, journal.ErrNotFound) {
		return None, err
	}
	if err := d.transition(job.String(), None, EvPoll, nil); err != nil {
		return None, err
	}
	return Polled, nil
}

// transition validates and appends a transition record.
func (d *Driver) transition(job string, from State, event string, fields map[string]string) error {
	to, err := Next(from, event)
	if err != nil {
		return fmt.Errorf("job %s: %w", job, err)
	}
	rec, err := d.Journal.Append(journal.Record{Job: job, Kind: journal.KindTransition, Event: event, From: string(from), To: string(to), Fields: fields})
	if err == nil {
		d.Log.Info().Str("job", job).Str("from", string(from)).Str("to", string(to)).Str("event", event).Msg("transition")
		if d.Observer != nil {
			d.Observer.Transition(rec)
		}
	}
	return err
}

func (d *Driver) intent(job string, rec journal.Record) error {
	rec.Job, rec.Kind = job, journal.KindIntent
	_, err := d.Journal.Append(rec)
	return err
}

// Run drives job from its journaled state until it is terminal or ctx ends.
// Transient failures are retried with exponential backoff; the returned
// error is ctx's, or one that no retry can mend (a corrupt journal).
func (d *Driver) Run(ctx context.Context, job solana.PublicKey) error {
	key := job.String()
	backoff := d.RetryMin
	if backoff == 0 {
		backoff = 500 * time.Millisecond
	}
	maxBackoff := d.RetryMax
	if maxBackoff == 0 {
		maxBackoff = 15 * time.Second
	}
	for {
		snap, err := d.Journal.Snapshot(key)
		if err != nil {
			return err
		}
		state := State(snap.State)
		if state.Terminal() || state == Uploaded {
			d.GPUs.Release(key) // the container has ended
		}
		if state.Terminal() {
			d.cleanup(ctx, snap)
			return nil
		}
		err = d.step(ctx, job, snap)
		var ab errAbandon
		if errors.As(err, &ab) {
			d.abandon(ctx, key, state, snap, ab.reason)
			continue
		}
		if err == nil {
			backoff = d.RetryMin
			if backoff == 0 {
				backoff = 500 * time.Millisecond
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, journal.ErrCorrupt) {
			return err
		}
		d.Log.Warn().Err(err).Str("job", key).Str("state", string(state)).Dur("retry_in", backoff).Msg("step failed; will retry")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
		if backoff > maxBackoff {
			backoff = maxBackoff
		}
	}
}

func (d *Driver) step(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	switch State(snap.State) {
	case Polled:
		return d.claim(ctx, job, snap)
	case Claimed:
		return d.fetch(ctx, job, snap)
	case Fetched:
		return d.start(ctx, job, snap)
	case Running:
		return d.run(ctx, job, snap)
	case Uploaded:
		return d.finish(ctx, job, snap)
	}
	return fmt.Errorf("job %s: no step from state %q", job, snap.State)
}

func (d *Driver) abandon(ctx context.Context, job string, from State, snap journal.Snapshot, reason string) {
	if snap.Container != nil {
		if err := d.Runtime.Remove(ctx, snap.Container.ID); err != nil {
			d.Log.Warn().Err(err).Str("job", job).Msg("remove container of abandoned job")
		}
	}
	if err := d.transition(job, from, EvAbandon, map[string]string{"reason": reason}); err != nil {
		d.Log.Error().Err(err).Str("job", job).Msg("journal abandon")
	}
}

// ours checks that the chain still has job running for this node.
func (d *Driver) ours(ctx context.Context, job solana.PublicKey) (*chain.Job, error) {
	acc, err := d.Chain.Job(ctx, job)
	if errors.Is(err, chain.ErrAccountNotFound) {
		return nil, errAbandon{"job account no longer exists"}
	}
	if err != nil {
		return nil, err
	}
	if acc.State != chain.JobRunning {
		return acc, errAbandon{"job is " + acc.State.String() + " on chain"}
	}
	if acc.Node == nil || *acc.Node != d.Chain.Node() {
		return acc, errAbandon{"job is assigned to another node"}
	}
	return acc, nil
}

func txIntent(tx *chain.SignedTx) *journal.TxIntent {
	return &journal.TxIntent{Instruction: tx.Instruction, Signature: tx.Signature.String(), Raw: tx.Raw, LastValidBlockHeight: tx.LastValidBlockHeight}
}

func signedTx(t *journal.TxIntent) (*chain.SignedTx, error) {
	sig, err := solana.SignatureFromBase58(t.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: journaled signature %q: %v", journal.ErrCorrupt, t.Signature, err)
	}
	return &chain.SignedTx{Instruction: t.Instruction, Signature: sig, Raw: t.Raw, LastValidBlockHeight: t.LastValidBlockHeight}, nil
}

// submitIntent sends the journaled transaction of snap when it is for
// instruction, else signs a new one with sign, journals it, then sends it.
// A journaled one whose blockhash expired is rebuilt.
// step names the failpoints around it: <step>-before-intent,
// <step>-after-intent and <step>-after-landed. Before rebuilding an expired
// transaction, landed (when not nil) is asked whether the chain already
// shows its effect (a copy landed though its signature cannot be found: an
// RPC without transaction history); if so, errAlreadyLanded is returned.
func (d *Driver) submitIntent(ctx context.Context, job string, snap journal.Snapshot, instruction, step string, landed func() bool, sign func() (*chain.SignedTx, error)) (*chain.SignedTx, error) {
	var tx *chain.SignedTx
	if snap.Tx != nil && snap.Tx.Instruction == instruction {
		t, err := signedTx(snap.Tx)
		if err != nil {
			return nil, err
		}
		tx = t
		d.Log.Info().Str("job", job).Str("sig", snap.Tx.Signature).Msg("resending journaled " + instruction)
	}
	for {
		if tx == nil {
			t, err := sign()
			if err != nil {
				return nil, fmt.Errorf("sign %s: %w", instruction, err)
			}
			failpoint.Hit(step + "-before-intent")
			if err := d.intent(job, journal.Record{Intent: journal.IntentTx, Tx: txIntent(t)}); err != nil {
				return nil, err
			}
			failpoint.Hit(step + "-after-intent")
			tx = t
		}
		err := d.Chain.Submit(ctx, tx)
		if err == nil {
			failpoint.Hit(step + "-after-landed")
		}
		if errors.Is(err, chain.ErrBlockhashExpired) {
			if landed != nil && landed() {
				d.Log.Info().Str("job", job).Str("sig", tx.Signature.String()).Msg(instruction + " not found, but its effect is on chain")
				return tx, errAlreadyLanded
			}
			d.Log.Info().Str("job", job).Str("sig", tx.Signature.String()).Msg(instruction + " expired without landing; rebuilding")
			tx = nil
			continue
		}
		return tx, err
	}
}

func (d *Driver) claim(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	key := job.String()
	if snap.Tx == nil {
		acc, err := d.Chain.Job(ctx, job)
		if errors.Is(err, chain.ErrAccountNotFound) {
			return d.transition(key, Polled, EvLose, map[string]string{"reason": "job account not found"})
		}
		if err != nil {
			return err
		}
		if acc.Node != nil && *acc.Node == d.Chain.Node() && acc.State == chain.JobRunning {
			return d.transition(key, Polled, EvAssigned, nil)
		}
		if acc.State != chain.JobQueued {
			return d.transition(key, Polled, EvLose, map[string]string{"reason": "job is " + acc.State.String()})
		}
	}
	// ourClaim: the chain has the job running for this node (a claim of
	// ours landed, maybe one whose signature the RPC no longer finds).
	ourClaim := func() bool {
		_, err := d.ours(ctx, job)
		return err == nil
	}
	tx, err := d.submitIntent(ctx, key, snap, chain.IxWorkJob, "claim", ourClaim, func() (*chain.SignedTx, error) { return d.Chain.SignWorkJob(ctx, job) })
	var txErr *chain.TxError
	if errors.Is(err, errAlreadyLanded) || (errors.As(err, &txErr) && ourClaim()) {
		return d.transition(key, Polled, EvAssigned, map[string]string{"reason": "the chain has the job running for this node"})
	}
	if errors.As(err, &txErr) && (txErr.Program == chain.ErrJobNotInQueue || txErr.Program == chain.ErrJobNotQueued) {
		// Another node won the race: normal, not an error.
		d.Log.Info().Str("job", key).Msg("claim lost to another node")
		return d.transition(key, Polled, EvLose, map[string]string{"reason": txErr.Program.Name()})
	}
	if err != nil {
		return fmt.Errorf("claim %s: %w", key, err)
	}
	if err := d.transition(key, Polled, EvClaim, map[string]string{"claim_sig": tx.Signature.String()}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.ClaimAfterTransition)
	return nil
}
