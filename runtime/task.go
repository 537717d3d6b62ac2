package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	cg1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/failpoint"
)

// Op is one operation: a process run in the container, to its exit.
type Op struct {
	// Argv is the command and its arguments; a job's string command arrives as
	// ["/bin/sh", "-c", command].
	Argv []string
	// Workdir is the absolute working directory in the container (WorkspaceDir when
	// empty).
	Workdir string
}

// Exit is how an operation's process ended.
type Exit struct {
	// Code is the exit status; 128+N when killed by signal N (137 for SIGKILL).
	Code int
	// ExitedAt is when the process exited, as the shim recorded it.
	ExitedAt time.Time
	// OOMKilled says the kernel OOM-killed a process of the container during the
	// operation (its memory cgroup's oom_kill counter, cgroup v1 or v2, read after the
	// exit). Best effort: false when the counter cannot be read, e.g. when the task
	// was deleted by someone else before RunOp collected it.
	OOMKilled bool
}

// Task statuses reported in State.TaskStatus (containerd's, lower case).
const (
	StatusNone    = ""        // no task
	StatusCreated = "created" // created, never started
	StatusRunning = "running"
	StatusPaused  = "paused"
	StatusStopped = "stopped" // exited, not yet deleted (killed, or RunOp did not finish it)
)

// State is what containerd knows of a container, for reconciliation after a crash.
type State struct {
	// Exists says the container exists; when it does not, the other fields are zero
	// (Op -1).
	Exists bool
	// TaskStatus is one of the Status* constants (or "unknown", "pausing").
	TaskStatus string
	// Op is the operation the current (or last) task belongs to (LabelOp); -1 when no
	// operation was ever prepared.
	Op int
	// OpStarted says Op's task was created (and so may have run).
	OpStarted bool
	// Exit is set once operation Op has exited: from the stopped task (TaskStatus
	// "stopped") or, after the task was deleted, from LabelOpExit (TaskStatus "").
	// OpStarted with no task and no Exit means the exit status is lost (ErrTaskLost).
	Exit *Exit
	// Labels are all the container's labels.
	Labels map[string]string
}

// RunOp runs operation n (from 0) of container id to its exit and returns how it
// exited. The operation is a task of the container, created from the container's spec
// with op's argv and working directory; its stdout and stderr are appended to logPath
// (absolute; created 0600 if absent, its directory 0700) by a log writer the shim owns
// (see RunLoggerIfInvoked), so the log survives the worker process; at most
// Config.LogLimitBytes of output are kept. When RunOp returns an Exit, the log is
// complete.
//
// Re-attach: when the container already holds the task of operation n (the worker
// restarted mid-operation), RunOp waits for it; a task that exited is reported at once;
// one created but never started is started. An operation is never started twice: if
// its task was created and vanished before its exit was recorded (host reboot), RunOp
// returns ErrTaskLost.
//
// Once the task has exited, its Exit is written to the container (LabelOpExit) before
// the task is deleted (which waits for the shim to drain the output into the log), so
// a crash before the caller records the Exit loses nothing: RunOp(n) again returns the
// same Exit without running anything.
//
// Cancelling ctx detaches: RunOp returns ctx.Err() and the operation keeps running (use
// Kill to stop it). Errors: ErrNotFound (no container), ErrBusy (another operation's
// task is running), ErrOpOrder (a later operation was already prepared), ErrTaskLost,
// ErrInvalid (bad op or path).
func (r *Runtime) RunOp(ctx context.Context, id string, n int, op Op, logPath string) (Exit, error) {
	if err := op.validate(); err != nil {
		return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
	}
	if n < 0 {
		return Exit{}, fmt.Errorf("run %s op %d: negative operation index: %w", id, n, ErrInvalid)
	}
	if !filepath.IsAbs(logPath) {
		return Exit{}, fmt.Errorf("run %s op %d: log path %q is not absolute: %w", id, n, logPath, ErrInvalid)
	}
	ctx = r.ctx(ctx)
	log := zerolog.Ctx(ctx).With().Str("container", id).Int("op", n).Logger()

	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return Exit{}, notFound("run "+id, err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return Exit{}, notFound("run "+id, err)
	}
	rec := readOpLabels(labels)
	cur := rec.op

	t, err := c.Task(ctx, nil)
	var st client.Status
	if err == nil {
		if st, err = t.Status(ctx); errdefs.IsNotFound(err) {
			// Loaded, then gone: a delete a crash cut short is finishing, and
			// containerd still lists the task. (A listed task that already
			// answers NotFound to the load is cleared by newTask when its
			// create is refused.)
			if err := clearStaleTask(ctx, r.client, id); err != nil {
				return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
			}
		}
	}
	switch {
	case err == nil:
		if cur == n {
			switch st.Status {
			case client.Stopped:
				return r.finish(ctx, c, t, n, exitOf(ctx, t, st))
			case client.Created:
				log.Info().Msg("starting a task created before a restart")
				stopNet, err := connect(ctx, labels, t)
				if err != nil {
					return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
				}
				defer stopNet()
				if _, err := c.SetLabels(ctx, map[string]string{LabelOpStarted: strconv.Itoa(n)}); err != nil {
					return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
				}
				return r.wait(ctx, c, t, n, true)
			default:
				log.Info().Str("status", string(st.Status)).Msg("re-attaching to a running operation")
				return r.wait(ctx, c, t, n, false)
			}
		}
		if cur > n {
			return Exit{}, fmt.Errorf("run %s op %d: operation %d already prepared: %w", id, n, cur, ErrOpOrder)
		}
		if st.Status != client.Stopped {
			return Exit{}, fmt.Errorf("run %s op %d: operation %d is %s: %w", id, n, cur, st.Status, ErrBusy)
		}
		// Operation cur < n exited and the caller moved on: its task only lingered
		// (a crash between recording its exit and deleting it, or a Kill).
		if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return Exit{}, fmt.Errorf("run %s op %d: delete task of op %d: %w", id, n, cur, err)
		}
	case !errdefs.IsNotFound(err):
		return Exit{}, fmt.Errorf("run %s op %d: load task: %w", id, n, err)
	case cur == n && rec.exit != nil:
		return *rec.exit, nil
	case cur == n && rec.started:
		return Exit{}, fmt.Errorf("run %s op %d: its task was started and is gone without an exit status: %w", id, n, ErrTaskLost)
	case cur > n:
		return Exit{}, fmt.Errorf("run %s op %d: operation %d already prepared: %w", id, n, cur, ErrOpOrder)
	}

	// Record which operation the next task is, then create it, then mark it started.
	if err := c.Update(ctx, withOp(n, op)); err != nil {
		return Exit{}, fmt.Errorf("run %s op %d: update spec: %w", id, n, err)
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return Exit{}, fmt.Errorf("run %s op %d: log directory: %w", id, n, err)
	}
	t, err = r.newTask(ctx, c, logPath)
	if err != nil {
		return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
	}
	stopNet, err := connect(ctx, labels, t)
	if err != nil {
		// The process never ran: its task goes, and a later RunOp creates it again.
		if _, derr := t.Delete(ctx, client.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			log.Warn().Err(derr).Msg("delete task whose network failed")
		}
		return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
	}
	defer stopNet()
	if _, err := c.SetLabels(ctx, map[string]string{LabelOpStarted: strconv.Itoa(n)}); err != nil {
		return Exit{}, fmt.Errorf("run %s op %d: %w", id, n, err)
	}
	return r.wait(ctx, c, t, n, true)
}

// newTask creates the task of c's current operation (not started), its output
// going to logPath. A failure that a stale task explains (containerd still lists
// the previous operation's task, or still removes its bundle, after a delete cut
// short by a crash) is cleared and retried for up to newTaskPatience. Errors:
// ErrCannotStart when runc refuses the spec; otherwise the last create error.
func (r *Runtime) newTask(ctx context.Context, c client.Container, logPath string) (client.Task, error) {
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(newTaskPatience)
	for {
		t, err := c.NewTask(ctx, logCreator(r.logger, logPath, r.logLimit))
		if err == nil {
			return t, nil
		}
		// runc's refusals reach us only as text through the shim's error:
		// this is the one place that reads it.
		if strings.Contains(err.Error(), "OCI runtime create failed") {
			return nil, fmt.Errorf("%w: %w", ErrCannotStart, err)
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			return nil, fmt.Errorf("create task: %w", err)
		}
		zerolog.Ctx(ctx).Info().Err(err).Str("container", c.ID()).Msg("task create failed: clearing a stale task and retrying")
		if cerr := clearStaleTask(ctx, r.client, c.ID()); cerr != nil {
			return nil, fmt.Errorf("create task: %w (then %w)", err, cerr)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, fmt.Errorf("create task: %w", err)
		}
		backoff = min(2*backoff, time.Second)
	}
}

// newTaskPatience bounds how long newTask retries a create that fails for a
// stale task's sake.
const newTaskPatience = 10 * time.Second

// clearStaleTask deletes the task containerd lists for container id when no live
// task answers for it. containerd 1.6 keeps a task in its list, with its shim
// running, when a Delete is cancelled (the caller died) after the shim removed the
// runc container: the task then answers NotFound to every lookup, yet blocks a new
// task ("already exists") and outlives the container as a stray shim. The
// daemon's own Delete, called by ID, still finds it and removes it. A missing task
// is not an error.
func clearStaleTask(ctx context.Context, c *client.Client, id string) error {
	_, err := c.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err == nil {
		zerolog.Ctx(ctx).Info().Str("container", id).Msg("removed a stale task left by an interrupted delete")
		return nil
	}
	if err = errgrpc.ToNative(err); errdefs.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("clear stale task of %s: %w", id, err)
}

// connect applies the container's egress policy (LabelEgress) to the network
// namespace of its created task t; the returned function undoes it once the
// operation has exited (or RunOp detaches).
func connect(ctx context.Context, labels map[string]string, t client.Task) (func(), error) {
	if labels[LabelEgress] != EgressAllow {
		return func() {}, nil
	}
	return attachEgress(ctx, t.Pid())
}

// wait optionally starts t, waits for its exit or for ctx, and finishes it.
func (r *Runtime) wait(ctx context.Context, c client.Container, t client.Task, n int, start bool) (Exit, error) {
	// The Wait call carries no deadline of its own: the daemon would end it with an
	// unclassified error a moment before ctx ends. ctx is watched here instead.
	wctx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	exitC, err := t.Wait(wctx)
	if err != nil {
		return Exit{}, fmt.Errorf("wait %s: %w", t.ID(), err)
	}
	if start {
		if err := t.Start(ctx); err != nil {
			return Exit{}, fmt.Errorf("start %s: %w", t.ID(), err)
		}
		failpoint.Hit(failpoint.OpAfterTaskStart)
	}
	select {
	case es := <-exitC:
		code, at, err := es.Result()
		if err != nil {
			return Exit{}, fmt.Errorf("wait %s: %w", t.ID(), err)
		}
		return r.finish(ctx, c, t, n, Exit{Code: int(code), ExitedAt: at, OOMKilled: oomKilled(ctx, t)})
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// finish records exit as operation n's (LabelOpExit), then deletes the stopped task,
// which waits for the shim to drain its output into the log. Both steps run even if
// ctx ends meanwhile, so the container is never left between them by a cancellation.
func (r *Runtime) finish(ctx context.Context, c client.Container, t client.Task, n int, exit Exit) (Exit, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := c.SetLabels(ctx, map[string]string{LabelOpExit: FormatExitLabel(n, exit)}); err != nil {
		return Exit{}, fmt.Errorf("record exit of %s op %d: %w", c.ID(), n, err)
	}
	if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return Exit{}, fmt.Errorf("delete exited task %s op %d: %w", c.ID(), n, err)
	}
	return exit, nil
}

// oomKilled reads the OOM-kill counter of t's memory cgroup, which outlives the exit
// until the task is deleted.
func oomKilled(ctx context.Context, t client.Task) bool {
	m, err := t.Metrics(ctx)
	if err != nil || m == nil || m.Data == nil {
		return false
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return false
	}
	switch s := v.(type) {
	case *cg1stats.Metrics:
		return s.GetMemoryOomControl().GetOomKill() > 0
	case *cg2stats.Metrics:
		return s.GetMemoryEvents().GetOomKill() > 0
	}
	return false
}

// exitOf is the Exit of a stopped task, with its OOM counter.
func exitOf(ctx context.Context, t client.Task, st client.Status) Exit {
	return Exit{Code: int(st.ExitStatus), ExitedAt: st.ExitTime, OOMKilled: oomKilled(ctx, t)}
}

func (op Op) validate() error {
	if len(op.Argv) == 0 || op.Argv[0] == "" {
		return fmt.Errorf("operation has no command: %w", ErrInvalid)
	}
	if op.Workdir != "" && !filepath.IsAbs(op.Workdir) {
		return fmt.Errorf("operation workdir %q is not absolute: %w", op.Workdir, ErrInvalid)
	}
	return nil
}

// withOp sets the container spec's process to op and labels the container with n.
func withOp(n int, op Op) client.UpdateContainerOpts {
	return func(_ context.Context, _ *client.Client, c *containers.Container) error {
		if c.Spec == nil {
			return fmt.Errorf("container %s has no spec: %w", c.ID, ErrInvalid)
		}
		var s oci.Spec
		if err := json.Unmarshal(c.Spec.GetValue(), &s); err != nil {
			return fmt.Errorf("container %s spec: %w", c.ID, err)
		}
		if s.Process == nil {
			return fmt.Errorf("container %s spec has no process: %w", c.ID, ErrInvalid)
		}
		s.Process.Args = slices.Clone(op.Argv)
		s.Process.Cwd = op.Workdir
		if s.Process.Cwd == "" {
			s.Process.Cwd = WorkspaceDir
		}
		spec, err := typeurl.MarshalAny(&s)
		if err != nil {
			return err
		}
		c.Spec = spec
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[LabelOp] = strconv.Itoa(n)
		delete(c.Labels, LabelOpStarted)
		delete(c.Labels, LabelOpExit)
		return nil
	}
}

// opRecord is what the container's labels say of its latest operation.
type opRecord struct {
	op      int   // LabelOp; -1 when absent or malformed
	started bool  // LabelOpStarted == LabelOp
	exit    *Exit // from LabelOpExit when it is about op
}

func readOpLabels(labels map[string]string) opRecord {
	op, err := strconv.Atoi(labels[LabelOp])
	if err != nil || op < 0 {
		return opRecord{op: -1}
	}
	rec := opRecord{op: op, started: labels[LabelOpStarted] == labels[LabelOp]}
	if v, ok := labels[LabelOpExit]; ok {
		if n, exit, err := ParseExitLabel(v); err == nil && n == op {
			rec.exit = &exit
		}
	}
	return rec
}

// FormatExitLabel is the LabelOpExit value for operation n's exit.
func FormatExitLabel(n int, e Exit) string {
	var at int64
	if !e.ExitedAt.IsZero() {
		at = e.ExitedAt.UnixNano()
	}
	oom := 0
	if e.OOMKilled {
		oom = 1
	}
	return fmt.Sprintf("%d/%d/%d/%d", n, e.Code, at, oom)
}

// ParseExitLabel parses a LabelOpExit value, "<op>/<code>/<exited at, Unix ns>/<0|1>",
// into the operation index and its Exit (ExitedAt is UTC; 0 means unknown). An error
// wraps ErrInvalid and says which field is wrong.
func ParseExitLabel(v string) (op int, exit Exit, err error) {
	f := strings.Split(v, "/")
	if len(f) != 4 {
		return 0, Exit{}, fmt.Errorf("exit label %q: want 4 fields op/code/time/oom: %w", v, ErrInvalid)
	}
	op, err = strconv.Atoi(f[0])
	if err != nil || op < 0 || f[0] != strconv.Itoa(op) {
		return 0, Exit{}, fmt.Errorf("exit label %q: op %q is not a non-negative integer: %w", v, f[0], ErrInvalid)
	}
	code, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil || f[1] != strconv.FormatUint(code, 10) {
		return 0, Exit{}, fmt.Errorf("exit label %q: code %q is not a 32-bit unsigned integer: %w", v, f[1], ErrInvalid)
	}
	at, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || at < 0 || f[2] != strconv.FormatInt(at, 10) {
		return 0, Exit{}, fmt.Errorf("exit label %q: time %q is not Unix nanoseconds: %w", v, f[2], ErrInvalid)
	}
	var oom bool
	switch f[3] {
	case "0":
	case "1":
		oom = true
	default:
		return 0, Exit{}, fmt.Errorf("exit label %q: oom %q is not 0 or 1: %w", v, f[3], ErrInvalid)
	}
	exit = Exit{Code: int(code), OOMKilled: oom}
	if at != 0 {
		exit.ExitedAt = time.Unix(0, at).UTC()
	}
	return op, exit, nil
}

// Kill sends SIGKILL to every process of container id's task and waits until the task
// has stopped (or ctx ends). No task, or a stopped one, is not an error; no container
// is ErrNotFound.
func (r *Runtime) Kill(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return notFound("kill "+id, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("kill %s: %w", id, err)
	}
	return killTask(ctx, t)
}

func killTask(ctx context.Context, t client.Task) error {
	st, err := t.Status(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("kill %s: %w", t.ID(), err)
	}
	if st.Status == client.Stopped {
		return nil
	}
	wctx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	exitC, err := t.Wait(wctx)
	if err != nil {
		return fmt.Errorf("kill %s: %w", t.ID(), err)
	}
	if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("kill %s: %w", t.ID(), err)
	}
	select {
	case es := <-exitC:
		if _, _, err := es.Result(); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("kill %s: wait: %w", t.ID(), err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill %s: %w", t.ID(), ctx.Err())
	}
}

// Remove kills container id's task, deletes it, and deletes the container with its
// snapshot. A container that does not exist is not an error. The workspace and log
// files are the caller's.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", id, err)
	}
	if t, err := c.Task(ctx, nil); err == nil {
		if err := killTask(ctx, t); err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
		if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove %s: delete task: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", id, err)
	} else if err := clearStaleTask(ctx, r.client, id); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: delete container: %w", id, err)
	}
	return nil
}

// Inspect reports what containerd knows of container id. A missing container is
// State{Exists: false} with a nil error.
func (r *Runtime) Inspect(ctx context.Context, id string) (State, error) {
	ctx = r.ctx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return State{Op: -1}, nil
		}
		return State{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return State{Op: -1}, nil
		}
		return State{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	rec := readOpLabels(labels)
	s := State{Exists: true, Labels: labels, Op: rec.op, OpStarted: rec.started, Exit: rec.exit}
	t, err := c.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return s, nil
		}
		return State{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return s, nil
		}
		return State{}, fmt.Errorf("inspect %s: task status: %w", id, err)
	}
	s.TaskStatus = string(st.Status)
	s.Exit = nil
	if st.Status == client.Stopped {
		e := exitOf(ctx, t, st)
		s.Exit = &e
	}
	return s, nil
}

// List returns the IDs of the containers labelled hypernode.managed=true in the
// runtime's namespace, sorted.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ctx = r.ctx(ctx)
	cs, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q==true", LabelManaged))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	slices.Sort(ids)
	return ids, nil
}
