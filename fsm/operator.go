package fsm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/journal"
)

// cleanup removes an ended job's container (when a crash kept it) and its
// workspace; its scrubbed logs and result document stay in the job
// directory for the operator.
func (d *Driver) cleanup(ctx context.Context, snap journal.Snapshot) {
	if cid := snap.Fields[FieldDefinition]; cid != "" {
		d.forgetDefinition(cid)
	}
	if snap.Container != nil {
		if err := d.Runtime.Remove(ctx, snap.Container.ID); err != nil {
			d.Log.Warn().Err(err).Str("job", snap.Job).Msg("remove container (the reaper will retry)")
		}
	}
	if d.Models != nil {
		// A population not sealed by now (failed, abandoned, crashed) is
		// discarded; a sealed model the job used is released.
		if err := d.Models.Finish(snap.Job, false); err != nil {
			d.Log.Warn().Err(err).Str("job", snap.Job).Msg("model cache")
		}
	}
	if err := d.removeWorkspace(snap.Job); err != nil {
		d.Log.Warn().Err(err).Str("job", snap.Job).Msg("remove workspace")
	}
}

func (d *Driver) cleanupJob(ctx context.Context, job string) {
	if snap, err := d.Journal.Snapshot(job); err == nil {
		d.cleanup(ctx, snap)
	}
}

// limitError: the job broke a limit of Limits while an operation ran; the
// operation is stopped and the job fails with Error() as its reason.
type limitError interface {
	error
	limitBroken()
}

// errWorkspaceFull: the job wrote more than Limits.MaxWorkspaceBytes.
type errWorkspaceFull struct{ limit int64 }

func (e errWorkspaceFull) Error() string {
	return fmt.Sprintf("the job's workspace exceeded its %d-byte limit", e.limit)
}
func (errWorkspaceFull) limitBroken() {}

// errLogFull: an operation wrote Limits.MaxLogBytes of output or more.
type errLogFull struct{ limit int64 }

func (e errLogFull) Error() string {
	return fmt.Sprintf("its output reached the %d-byte log limit", e.limit)
}
func (errLogFull) limitBroken() {}

// workspaceBytes sums the sizes of the files under dir (symlinks not
// followed), stopping once the sum passes limit.
func workspaceBytes(dir string, limit int64) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		if total > limit {
			return filepath.SkipAll
		}
		return nil
	})
	return total
}

// overLimit says which limit, if any, operation n of job has broken: its log
// reached Limits.MaxLogBytes, its capped workspace is full, or the files in
// its workspace exceed Limits.MaxWorkspaceBytes.
func (d *Driver) overLimit(job string, n int) limitError {
	lim := d.limits()
	if info, err := os.Stat(d.logPath(job, n)); err == nil && info.Size() >= lim.MaxLogBytes {
		return errLogFull{lim.MaxLogBytes}
	}
	ws := d.workspace(job)
	if d.Workspaces != nil {
		if full, err := d.Workspaces.Full(ws); err == nil && full {
			return errWorkspaceFull{lim.MaxWorkspaceBytes}
		}
	}
	if workspaceBytes(ws, lim.MaxWorkspaceBytes) > lim.MaxWorkspaceBytes {
		return errWorkspaceFull{lim.MaxWorkspaceBytes}
	}
	return nil
}

// watch checks, every WatchInterval until stop is closed, the job account,
// the workspace's size and the size of operation n's log. It
// calls cancel and returns an errAbandon when the chain no longer has the
// job running for this node, or a limitError when the job broke a limit;
// nil otherwise.
func (d *Driver) watch(job solana.PublicKey, n int, stop <-chan struct{}, cancel context.CancelFunc) error {
	every := d.WatchInterval
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		ctx, c := context.WithTimeout(context.Background(), every)
		_, err := d.ours(ctx, job)
		c()
		var ab errAbandon
		if errors.As(err, &ab) {
			d.Log.Warn().Str("job", job.String()).Str("reason", ab.reason).Msg("job gone from us on chain while running; stopping it")
			cancel()
			return err
		}
		if over := d.overLimit(job.String(), n); over != nil {
			d.Log.Warn().Str("job", job.String()).Str("limit", over.Error()).Msg("job over a limit; stopping it")
			cancel()
			return over
		}
	}
}

// mountWorkspace gives the job's workspace its hard cap (Driver.Workspaces)
// when it has none yet. Without one (no free loop device, say) the job runs
// under the watcher's periodic size check alone.
func (d *Driver) mountWorkspace(job string) {
	if d.Workspaces == nil {
		return
	}
	lim := d.limits().MaxWorkspaceBytes
	if err := d.Workspaces.Mount(d.workspace(job), d.workspaceImage(job), lim); err != nil {
		d.Log.Warn().Err(err).Str("job", job).Msg("workspace cap unavailable; relying on the periodic size check")
	}
}

// removeWorkspace unmounts the job's workspace when capped and removes it
// with its filesystem image.
func (d *Driver) removeWorkspace(job string) error {
	ws := d.workspace(job)
	if d.Workspaces != nil {
		if err := d.Workspaces.Unmount(ws); err != nil {
			return fmt.Errorf("unmount workspace: %w", err)
		}
	}
	if err := os.RemoveAll(ws); err != nil {
		return err
	}
	if err := os.Remove(d.workspaceImage(job)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ErrTerminal is returned by operator actions on a job that has ended.
var ErrTerminal = errors.New("job has already ended")

// Abandon stops the job's container, removes it and marks the job
// abandoned with reason; nothing is sent to the chain (the job will time
// out there). For an operator who gives up on a job.
func (d *Driver) Abandon(ctx context.Context, job solana.PublicKey, reason string) error {
	snap, err := d.Journal.Snapshot(job.String())
	if err != nil {
		return err
	}
	if State(snap.State).Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrTerminal, job, snap.State)
	}
	if snap.Container != nil {
		if err := d.Runtime.Remove(ctx, snap.Container.ID); err != nil {
			return fmt.Errorf("remove container %s: %w", snap.Container.ID, err)
		}
	}
	if err := d.transition(job.String(), State(snap.State), EvAbandon, map[string]string{"reason": reason}); err != nil {
		return err
	}
	d.cleanupJob(ctx, job.String())
	return nil
}

// GiveBack stops the job's container and sends quit_job, so that the market
// queues the job for another node, then marks it abandoned. A job the chain
// no longer has running for this node is only marked abandoned; a job whose
// finish_job already landed is recorded as finished instead.
func (d *Driver) GiveBack(ctx context.Context, job solana.PublicKey) error {
	key := job.String()
	snap, err := d.Journal.Snapshot(key)
	if err != nil {
		return err
	}
	from := State(snap.State)
	if from.Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrTerminal, job, snap.State)
	}
	if from == Uploaded {
		// A finish that landed wins over giving back.
		if err := d.finish(ctx, job, snap); err == nil {
			return fmt.Errorf("%w: its finish_job landed: the job is finished", ErrTerminal)
		}
		if snap, err = d.Journal.Snapshot(key); err != nil {
			return err
		}
		if State(snap.State).Terminal() {
			return fmt.Errorf("%w: %s is %s", ErrTerminal, job, snap.State)
		}
	}
	if snap.Container != nil {
		if err := d.Runtime.Remove(ctx, snap.Container.ID); err != nil {
			return fmt.Errorf("remove container %s: %w", snap.Container.ID, err)
		}
	}
	if _, err := d.ours(ctx, job); err != nil {
		var ab errAbandon
		if errors.As(err, &ab) {
			return d.Abandon(ctx, job, ab.reason)
		}
		return err
	}
	tx, err := d.submitIntent(ctx, key, snap, chain.IxQuitJob, "quit", nil, func() (*chain.SignedTx, error) {
		return d.Chain.SignQuitJob(ctx, job)
	})
	var txErr *chain.TxError
	if errors.As(err, &txErr) {
		if _, oerr := d.ours(ctx, job); oerr != nil {
			return d.Abandon(ctx, job, "not ours on chain when giving it back")
		}
	}
	if err != nil {
		return fmt.Errorf("quit_job %s: %w", key, err)
	}
	if err := d.transition(key, State(snap.State), EvGiveBack, map[string]string{"reason": "given back with quit_job", "quit_sig": tx.Signature.String()}); err != nil {
		return err
	}
	d.cleanupJob(ctx, key)
	return nil
}

// Reconciliation is what a job's journal says next to what the outside
// world says: the chain, containerd and the pending transaction.
type Reconciliation struct {
	Job       string
	State     State  // journal
	Chain     string // the job account, from this node's point of view
	PendingTx string // the journaled transaction not yet known to have landed
	Container string
	Next      string // what resuming will do
}

// Lines renders the reconciliation for an operator.
func (r *Reconciliation) Lines() []string {
	return []string{
		"job:         " + r.Job,
		"journal:     " + string(r.State),
		"chain:       " + r.Chain,
		"pending tx:  " + r.PendingTx,
		"container:   " + r.Container,
		"next:        " + r.Next,
	}
}

// Reconcile compares job's journal with the chain (job account, signature
// status with history search) and containerd, and says what resuming will
// do. It changes nothing.
func (d *Driver) Reconcile(ctx context.Context, job solana.PublicKey) (*Reconciliation, error) {
	snap, err := d.Journal.Snapshot(job.String())
	if err != nil {
		return nil, err
	}
	r := &Reconciliation{Job: job.String(), State: State(snap.State), PendingTx: "none", Container: "none"}
	acc, err := d.Chain.Job(ctx, job)
	switch {
	case errors.Is(err, chain.ErrAccountNotFound):
		r.Chain = "job account not found"
	case err != nil:
		r.Chain = "unreadable: " + err.Error()
	default:
		who := "no node"
		if acc.Node != nil {
			who = "node " + acc.Node.String()
			if *acc.Node == d.Chain.Node() {
				who = "this node"
			}
		}
		r.Chain = fmt.Sprintf("%s, %s, started %s, timeout %ds", acc.State, who, time.Unix(acc.TimeStart, 0).UTC().Format(time.RFC3339), acc.Timeout)
	}
	if snap.Tx != nil {
		r.PendingTx = snap.Tx.Instruction + " " + snap.Tx.Signature + ": "
		sig, serr := solana.SignatureFromBase58(snap.Tx.Signature)
		st, err := d.Chain.TxStatus(ctx, sig)
		switch {
		case serr != nil:
			r.PendingTx += "unreadable signature"
		case err != nil:
			r.PendingTx += "status unknown: " + err.Error()
		case st.Found && st.Err != nil:
			r.PendingTx += "landed and failed: " + st.Err.Error()
		case st.Found:
			r.PendingTx += "landed"
		case st.BlockHeight > snap.Tx.LastValidBlockHeight:
			r.PendingTx += fmt.Sprintf("not found and its blockhash expired (height %d > %d): rebuilt unless the job account shows it landed", st.BlockHeight, snap.Tx.LastValidBlockHeight)
		default:
			r.PendingTx += fmt.Sprintf("not landed yet, valid until height %d (now %d): will be re-sent byte for byte", snap.Tx.LastValidBlockHeight, st.BlockHeight)
		}
	}
	if snap.Container != nil {
		cs, err := d.Runtime.Inspect(ctx, snap.Container.ID)
		switch {
		case err != nil:
			r.Container = snap.Container.ID + ": unknown: " + err.Error()
		case !cs.Exists:
			r.Container = snap.Container.ID + ": absent"
		default:
			desc := []string{snap.Container.ID}
			if cs.TaskStatus != "" {
				desc = append(desc, fmt.Sprintf("task %s (operation %d)", cs.TaskStatus, cs.Op))
			} else {
				desc = append(desc, "no task")
			}
			if cs.Exit != nil {
				desc = append(desc, fmt.Sprintf("operation %d exited %d", cs.Op, cs.Exit.Code))
			}
			desc = append(desc, "deadline "+snap.Container.Deadline.Format(time.RFC3339))
			r.Container = strings.Join(desc, ", ")
		}
	}
	r.Next = d.nextAction(snap, acc, err)
	return r, nil
}

func (d *Driver) nextAction(snap journal.Snapshot, acc *chain.Job, chainErr error) string {
	state := State(snap.State)
	if state.Terminal() {
		return "nothing: the job has ended"
	}
	if acc != nil && state != Polled && state != Uploaded && (acc.State != chain.JobRunning || acc.Node == nil || *acc.Node != d.Chain.Node()) {
		return "abandon: the chain no longer has the job running for this node (its container is stopped)"
	}
	switch state {
	case Polled:
		return "claim it (work_job), or record it lost"
	case Claimed:
		return "fetch and check the definition"
	case Fetched:
		return "create the container and start"
	case Running:
		if snap.Upload != nil {
			return "finish uploading the result " + snap.Upload.CID
		}
		if snap.Op != nil {
			return fmt.Sprintf("re-attach to operation %d (never started twice), then the rest", snap.Op.Index)
		}
		return "run the operations"
	case Uploaded:
		return "send finish_job with result " + snap.Fields[FieldResultCID]
	}
	return "?"
}

// ReapOptions tunes Reap.
type ReapOptions struct {
	// Grace is how long a container or job directory with no journal
	// record is left alone before it is removed (default 10 minutes).
	Grace time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Reaper removes what no live journal record owns: containers labelled as
// this node's whose job has ended (at once) or is unknown to the journal
// (after a grace period), and the workspaces of ended or unknown jobs.
type Reaper struct {
	Driver *Driver
	Opts   ReapOptions
	seen   map[string]time.Time // unowned container -> first seen
}

// Reap does one pass and returns what it removed.
func (r *Reaper) Reap(ctx context.Context) ([]string, error) {
	d := r.Driver
	now := time.Now
	if r.Opts.Now != nil {
		now = r.Opts.Now
	}
	grace := r.Opts.Grace
	if grace <= 0 {
		grace = 10 * time.Minute
	}
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	snaps, err := d.Journal.Snapshots()
	if err != nil {
		return nil, err
	}
	byJob := map[string]journal.Snapshot{}
	owner := map[string]journal.Snapshot{} // container ID -> its job
	for _, s := range snaps {
		byJob[s.Job] = s
		if s.Container != nil {
			owner[s.Container.ID] = s
		}
	}
	var removed []string
	ids, err := d.Runtime.List(ctx)
	if err != nil {
		return nil, err
	}
	node := d.Chain.Node().String()
	for _, id := range ids {
		cs, err := d.Runtime.Inspect(ctx, id)
		if err != nil || !cs.Exists || cs.Labels[LabelNode] != node {
			continue // another worker's, or gone
		}
		s, owned := owner[id]
		live := owned && !State(s.State).Terminal() && State(s.State) != Uploaded
		switch {
		case live:
			delete(r.seen, id)
			continue
		case !owned:
			first, ok := r.seen[id]
			if !ok {
				r.seen[id] = now()
				continue
			}
			if now().Sub(first) < grace {
				continue
			}
		}
		if err := d.Runtime.Remove(ctx, id); err != nil {
			d.Log.Warn().Err(err).Str("container", id).Msg("reap container")
			continue
		}
		delete(r.seen, id)
		d.Log.Info().Str("container", id).Msg("reaped a container no live job owns")
		removed = append(removed, "container "+id)
	}
	entries, err := os.ReadDir(filepath.Join(d.DataDir, "jobs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return removed, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		s, known := byJob[e.Name()]
		ws := d.workspace(e.Name())
		switch {
		case known && State(s.State).Terminal():
			if _, err := os.Stat(ws); err == nil {
				if err := d.removeWorkspace(e.Name()); err == nil {
					removed = append(removed, "workspace "+ws)
				}
			}
		case !known:
			info, err := e.Info()
			if err != nil || now().Sub(info.ModTime()) < grace {
				continue
			}
			dir := d.JobDir(e.Name())
			if d.Workspaces != nil {
				if err := d.Workspaces.Unmount(ws); err != nil {
					continue
				}
			}
			if err := os.RemoveAll(dir); err == nil {
				d.Log.Info().Str("dir", dir).Msg("reaped a job directory the journal does not know")
				removed = append(removed, "job directory "+dir)
			}
		}
	}
	return removed, nil
}
