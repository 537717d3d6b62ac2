package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// env is one private containerd with the test image, shared by the subtests of
// TestContainerd (starting a daemon costs seconds).
type env struct {
	addr string
	r    *runtime.Runtime
	img  string
}

func TestContainerd(t *testing.T) {
	addr := runtimetest.StartContainerd(t)
	e := &env{addr: addr, r: newRuntime(t, addr)}
	e.img = runtimetest.TestImage(t, e.r)

	t.Run("TwoOpsInOrder", e.testTwoOpsInOrder)
	t.Run("LogComplete", e.testLogComplete)
	t.Run("LogLimit", e.testLogLimit)
	t.Run("NonZeroExit", e.testNonZeroExit)
	t.Run("ReattachFromNewRuntime", e.testReattach)
	t.Run("StartCreatedTaskAfterRestart", e.testStartCreated)
	t.Run("TaskLost", e.testTaskLost)
	t.Run("StaleTaskNextOp", e.testStaleTaskNextOp)
	t.Run("StaleTaskRemove", e.testStaleTaskRemove)
	t.Run("InterruptedDeleteSweep", e.testInterruptedDeleteSweep)
	t.Run("KillAtDeadline", e.testKillAtDeadline)
	t.Run("Remove", e.testRemove)
	t.Run("Hostile", e.testHostile)
	t.Run("OOMKilled", e.testOOM)
	t.Run("NonRootImageOwnsWorkspace", e.testNonRoot)
	t.Run("CreateIdempotent", e.testCreateIdempotent)
	t.Run("CreateRecovers", e.testCreateRecovers)
	t.Run("List", e.testList)
	t.Run("EnsureImage", e.testEnsureImage)
	t.Run("ImportConcurrentAndExisting", e.testImportConcurrentAndExisting)
	t.Run("PullFromLoopbackRegistry", e.testPull)
	t.Run("PullProgress", e.testPullProgress)
	t.Run("PullCredentials", e.testPullCredentials)
	t.Run("PruneLRU", e.testPrune)
}

func TestNewUnavailable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := runtime.New(ctx, runtime.Config{Address: sock})
	if !errors.Is(err, runtime.ErrUnavailable) {
		t.Fatalf("New on a dead socket = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), sock) {
		t.Errorf("error %q does not name the socket %s", err, sock)
	}
}

// TestNewChecksLogger: a log writer that does not answer as one is refused at New, not
// discovered when an operation's output has nowhere to go.
func TestNewChecksLogger(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "unused.sock")
	for _, logger := range []string{"/bin/true", "/bin/cat", "bin/true", "/no/such/writer", t.TempDir()} {
		_, err := runtime.New(context.Background(), runtime.Config{Address: sock, Logger: logger})
		if !errors.Is(err, runtime.ErrInvalid) {
			t.Errorf("New with log writer %s = %v, want ErrInvalid", logger, err)
		}
	}
	// The test binary itself answers (TestMain calls RunLoggerIfInvoked): New gets
	// past the check and fails only on the missing daemon.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := runtime.New(ctx, runtime.Config{Address: sock, Logger: exe}); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("New with the test binary as log writer = %v, want ErrUnavailable", err)
	}
}

func newRuntime(t *testing.T, addr string) *runtime.Runtime {
	t.Helper()
	r, err := runtime.New(ctxT(t), runtime.Config{Address: addr})
	if err != nil {
		t.Fatalf("runtime.New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// ctxT is a context bounded by the test's deadline (or two minutes).
func ctxT(t *testing.T) context.Context {
	d := time.Now().Add(2 * time.Minute)
	if td, ok := t.Deadline(); ok && td.Before(d) {
		d = td.Add(-5 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// container creates a container of the test image for a fresh job, with a fresh
// workspace, removed on cleanup.
func (e *env) container(t *testing.T, mutate func(*runtime.ContainerSpec)) runtime.ContainerSpec {
	t.Helper()
	job := runtimetest.UniqueJob(t)
	s := runtime.ContainerSpec{
		ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1,
		Image:       e.img,
		Workspace:   t.TempDir(),
		Env:         []string{"HYPERNODE_TEST=1", "SECRET_TOKEN=do-not-log"},
		MemoryBytes: 128 << 20,
		PidsLimit:   64,
	}
	if mutate != nil {
		mutate(&s)
	}
	if err := e.r.Create(ctxT(t), s); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := e.r.Remove(context.Background(), s.ID); err != nil {
			t.Errorf("Remove %s: %v", s.ID, err)
		}
	})
	return s
}

func sh(cmd string) runtime.Op { return runtime.Op{Argv: []string{"/bin/sh", "-c", cmd}} }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *env) testTwoOpsInOrder(t *testing.T) {
	s := e.container(t, nil)
	ctx := ctxT(t)
	logPath := filepath.Join(t.TempDir(), "logs", "job.log")
	ops := []runtime.Op{
		sh("echo out-one; echo err-one >&2; echo carried > /workspace/a; echo $HYPERNODE_TEST"),
		{Argv: []string{"/bin/sh", "-c", "cat /workspace/a; pwd; echo run >> /workspace/runs"}, Workdir: "/tmp"},
	}
	for n, op := range ops {
		exit, err := e.r.RunOp(ctx, s.ID, n, op, logPath)
		if err != nil {
			t.Fatalf("RunOp %d: %v", n, err)
		}
		if exit.Code != 0 || exit.ExitedAt.IsZero() || exit.OOMKilled {
			t.Fatalf("RunOp %d exit = %+v, want code 0 with a time", n, exit)
		}
		st, err := e.r.Inspect(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		// The exited task is deleted; its exit stays on the container.
		if st.TaskStatus != runtime.StatusNone || st.Op != n || !st.OpStarted || st.Exit == nil ||
			st.Exit.Code != 0 || !st.Exit.ExitedAt.Equal(exit.ExitedAt) {
			t.Errorf("after op %d: Inspect = %+v, want no task and exit %+v", n, st, exit)
		}
	}
	want := []string{"out-one", "err-one", "1", "carried", "/tmp"}
	got := strings.Fields(readFile(t, logPath))
	for _, w := range want {
		if !contains(got, w) {
			t.Errorf("log %q lacks line %q", got, w)
		}
	}
	if i, j := index(got, "out-one"), index(got, "carried"); i > j {
		t.Errorf("log %q: op 1 output before op 0's", got)
	}

	// Asking again for the last operation returns its exit without running it again.
	exit, err := e.r.RunOp(ctx, s.ID, 1, ops[1], logPath)
	if err != nil || exit.Code != 0 {
		t.Fatalf("RunOp 1 again = %+v, %v", exit, err)
	}
	if runs := readFile(t, filepath.Join(s.Workspace, "runs")); runs != "run\n" {
		t.Errorf("op 1 ran %d times, want once", strings.Count(runs, "run"))
	}
	// An older operation is refused.
	if _, err := e.r.RunOp(ctx, s.ID, 0, ops[0], logPath); !errors.Is(err, runtime.ErrOpOrder) {
		t.Errorf("RunOp 0 after 1 = %v, want ErrOpOrder", err)
	}
	// The env value never reaches an error or the log unless the job prints it.
	if strings.Contains(readFile(t, logPath), "do-not-log") {
		t.Error("log holds an env secret the job did not print")
	}
}

// testLogComplete: both streams of every operation are in the log, whole lines, by the
// time RunOp returns (containerd 1.6's own file logging loses stderr's tail).
func (e *env) testLogComplete(t *testing.T) {
	s := e.container(t, nil)
	ctx := ctxT(t)
	const lines = 2000
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; printf 'no newline at end' >&2`, lines)
	for n := 0; n < 4; n++ {
		logPath := filepath.Join(t.TempDir(), "op.log")
		exit, err := e.r.RunOp(ctx, s.ID, n, sh(script), logPath)
		if err != nil || exit.Code != 0 {
			t.Fatalf("RunOp %d = %+v, %v", n, exit, err)
		}
		seen := map[string]int{}
		for _, l := range strings.Split(readFile(t, logPath), "\n") {
			seen[l]++
		}
		for i := 0; i < lines; i++ {
			for _, l := range []string{fmt.Sprintf("out %d", i), fmt.Sprintf("err %d", i)} {
				if seen[l] != 1 {
					t.Fatalf("op %d: line %q appears %d times in the log, want once", n, l, seen[l])
				}
			}
		}
		if seen["no newline at end"] != 1 {
			t.Fatalf("op %d: the unterminated last line is missing", n)
		}
		if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("log file mode: %v, %v; want 0600", fi.Mode(), err)
		}
	}
}

func (e *env) testLogLimit(t *testing.T) {
	r, err := runtime.New(ctxT(t), runtime.Config{Address: e.addr, LogLimitBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := e.container(t, nil)
	logPath := filepath.Join(t.TempDir(), "op.log")
	// 100 000 bytes of output: the operation must not block or die once the log is full.
	exit, err := r.RunOp(ctxT(t), s.ID, 0, sh("head -c 100000 /dev/zero | tr '\\0' x; echo; echo done-ok > /workspace/done"), logPath)
	if err != nil || exit.Code != 0 {
		t.Fatalf("RunOp = %+v, %v", exit, err)
	}
	log := readFile(t, logPath)
	if !strings.HasPrefix(log, strings.Repeat("x", 1000)+"\n[hypernode: output limit of 1000 bytes reached; 99001 more bytes dropped]") {
		t.Errorf("log (%d bytes) starts %q", len(log), log[:min(len(log), 80)])
	}
	if len(log) > 1100 {
		t.Errorf("log holds %d bytes, limit 1000", len(log))
	}
	if got := readFile(t, filepath.Join(s.Workspace, "done")); got != "done-ok\n" {
		t.Errorf("the operation did not finish past the limit: %q", got)
	}
}

func (e *env) testNonZeroExit(t *testing.T) {
	s := e.container(t, nil)
	ctx := ctxT(t)
	logPath := filepath.Join(t.TempDir(), "op.log")
	exit, err := e.r.RunOp(ctx, s.ID, 0, sh("echo failing; exit 3"), logPath)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 3 {
		t.Errorf("exit code %d, want 3", exit.Code)
	}
	// A command that does not exist fails at task creation with an error, and the
	// container stays usable for the next operation.
	if _, err := e.r.RunOp(ctx, s.ID, 1, runtime.Op{Argv: []string{"/no/such/binary"}}, logPath); !errors.Is(err, runtime.ErrCannotStart) {
		t.Errorf("RunOp of a missing binary = %v, want ErrCannotStart", err)
	}
	exit, err = e.r.RunOp(ctx, s.ID, 2, sh("exit 0"), logPath)
	if err != nil || exit.Code != 0 {
		t.Errorf("RunOp after a failed create = %+v, %v", exit, err)
	}
	for _, bad := range []runtime.Op{{}, {Argv: []string{""}}, {Argv: []string{"true"}, Workdir: "rel"}} {
		if _, err := e.r.RunOp(ctx, s.ID, 3, bad, logPath); !errors.Is(err, runtime.ErrInvalid) {
			t.Errorf("RunOp(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := e.r.RunOp(ctx, "hn-nosuch-1", 0, sh("true"), logPath); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("RunOp on a missing container = %v, want ErrNotFound", err)
	}
}

// fifo makes a named pipe and opens it read-write (so neither side blocks on open and
// reads honour deadlines).
func fifo(t *testing.T, path string) *os.File {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// awaitLine reads one line from f within d.
func awaitLine(t *testing.T, f *os.File, d time.Duration) string {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		t.Fatalf("waiting for the container to signal on %s: %v", f.Name(), err)
	}
	return strings.TrimSpace(line)
}

func (e *env) testReattach(t *testing.T) {
	r1, err := runtime.New(ctxT(t), runtime.Config{Address: e.addr})
	if err != nil {
		t.Fatal(err)
	}
	s := e.container(t, nil)
	ready := fifo(t, filepath.Join(s.Workspace, "ready"))
	release := fifo(t, filepath.Join(s.Workspace, "go"))
	logPath := filepath.Join(t.TempDir(), "op.log")
	op := sh("echo started >> /workspace/count; echo ready > /workspace/ready; read x < /workspace/go; echo finished; exit 7")

	// The worker "dies" once the operation is ready: its context ends and its
	// connection closes mid-operation.
	if err := runUntilReady(t, r1, s.ID, op, logPath, ready); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunOp after detach = %v, want context.Canceled", err)
	}
	r1.Close()

	r2 := newRuntime(t, e.addr)
	ctx := ctxT(t)
	st, err := r2.Inspect(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || st.TaskStatus != runtime.StatusRunning || st.Op != 0 || !st.OpStarted || st.Exit != nil {
		t.Fatalf("Inspect from a new Runtime = %+v, want op 0 running", st)
	}
	type result struct {
		exit runtime.Exit
		err  error
	}
	resC := make(chan result, 1)
	go func() {
		exit, err := r2.RunOp(ctx, s.ID, 0, op, logPath)
		resC <- result{exit, err}
	}()
	if _, err := release.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	res := <-resC
	if res.err != nil || res.exit.Code != 7 {
		t.Fatalf("re-attached RunOp = %+v, %v; want exit 7", res.exit, res.err)
	}
	if got := readFile(t, filepath.Join(s.Workspace, "count")); got != "started\n" {
		t.Errorf("the operation started %d times, want once", strings.Count(got, "started"))
	}
	if log := readFile(t, logPath); !strings.Contains(log, "finished") {
		t.Errorf("log %q lacks the output written after re-attach", log)
	}
}

// rawClient is a containerd client in the runtime's namespace, to play the parts a
// crash or a stranger would.
func (e *env) rawClient(t *testing.T) (*client.Client, context.Context) {
	t.Helper()
	c, err := client.New(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(ctxT(t), e.r.Namespace())
}

func (e *env) testStartCreated(t *testing.T) {
	s := e.container(t, nil)
	c, ctx := e.rawClient(t)
	// A worker that died between creating operation 0's task and starting it.
	ctr, err := c.LoadContainer(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{runtime.LabelOp: "0"}); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "op.log")
	if _, err := ctr.NewTask(ctx, cio.LogFile(logPath)); err != nil {
		t.Fatal(err)
	}
	st, err := e.r.Inspect(ctx, s.ID)
	if err != nil || st.TaskStatus != runtime.StatusCreated {
		t.Fatalf("Inspect = %+v, %v; want created", st, err)
	}
	// The image's default command (/bin/sh with no stdin) exits 0 at once.
	exit, err := e.r.RunOp(ctx, s.ID, 0, sh("exit 9"), logPath)
	if err != nil || exit.Code != 0 {
		t.Fatalf("RunOp on a created task = %+v, %v; want the created task started (exit 0)", exit, err)
	}
}

func (e *env) testTaskLost(t *testing.T) {
	s := e.container(t, nil)
	ready := fifo(t, filepath.Join(s.Workspace, "ready"))
	logPath := filepath.Join(t.TempDir(), "op.log")
	op := sh("echo once >> /workspace/runs; echo ready > /workspace/ready; exec sleep 600")
	runUntilReady(t, e.r, s.ID, op, logPath, ready)

	// The running task vanishes behind the worker's back, as in a host reboot.
	c, cctx := e.rawClient(t)
	ctr, err := c.LoadContainer(cctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(cctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := task.Wait(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(cctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exitC
	if _, err := task.Delete(cctx); err != nil {
		t.Fatal(err)
	}

	ctx := ctxT(t)
	st, err := e.r.Inspect(ctx, s.ID)
	if err != nil || st.TaskStatus != runtime.StatusNone || st.Op != 0 || !st.OpStarted || st.Exit != nil {
		t.Errorf("Inspect = %+v, %v; want op 0 started, no task, no exit", st, err)
	}
	if _, err := e.r.RunOp(ctx, s.ID, 0, op, logPath); !errors.Is(err, runtime.ErrTaskLost) {
		t.Errorf("RunOp of a lost op = %v, want ErrTaskLost", err)
	}
	if got := readFile(t, filepath.Join(s.Workspace, "runs")); got != "once\n" {
		t.Errorf("the operation ran %d times, want once", strings.Count(got, "once"))
	}
	// The next operation still runs.
	if exit, err := e.r.RunOp(ctx, s.ID, 1, sh("exit 0"), logPath); err != nil || exit.Code != 0 {
		t.Errorf("RunOp 1 after a lost op 0 = %+v, %v", exit, err)
	}
}

func (e *env) testKillAtDeadline(t *testing.T) {
	s := e.container(t, nil)
	ready := fifo(t, filepath.Join(s.Workspace, "ready"))
	logPath := filepath.Join(t.TempDir(), "op.log")
	op := sh("echo ready > /workspace/ready; exec sleep 600")

	runUntilReady(t, e.r, s.ID, op, logPath, ready)

	// Waiting again, now with a deadline the operation will not meet.
	dctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	if _, err := e.r.RunOp(dctx, s.ID, 0, op, logPath); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RunOp past its deadline = %v, want DeadlineExceeded", err)
	}
	ctx := ctxT(t)
	if st, _ := e.r.Inspect(ctx, s.ID); st.TaskStatus != runtime.StatusRunning {
		t.Fatalf("after the deadline the task is %q: detaching must not kill", st.TaskStatus)
	}
	if err := e.r.Kill(ctx, s.ID); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	st, err := e.r.Inspect(ctx, s.ID)
	if err != nil || st.TaskStatus != runtime.StatusStopped || st.Exit == nil || st.Exit.Code != 137 {
		t.Fatalf("after Kill: Inspect = %+v, %v; want stopped with 137", st, err)
	}
	exit, err := e.r.RunOp(ctx, s.ID, 0, op, logPath)
	if err != nil || exit.Code != 137 {
		t.Errorf("RunOp after Kill = %+v, %v; want 137", exit, err)
	}
	if st, err := e.r.Inspect(ctx, s.ID); err != nil || st.TaskStatus != runtime.StatusNone || st.Exit == nil || st.Exit.Code != 137 {
		t.Errorf("after RunOp collected the kill: Inspect = %+v, %v; want no task, exit 137", st, err)
	}
	if err := e.r.Kill(ctx, s.ID); err != nil {
		t.Errorf("Kill of a stopped task: %v", err)
	}
	if err := e.r.Kill(ctx, "hn-nosuch-1"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Kill of a missing container = %v, want ErrNotFound", err)
	}
}

func (e *env) testRemove(t *testing.T) {
	ctx := ctxT(t)
	job := runtimetest.UniqueJob(t)
	s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: e.img, Workspace: t.TempDir()}
	if err := e.r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	ready := fifo(t, filepath.Join(s.Workspace, "ready"))
	go e.r.RunOp(ctx, s.ID, 0, sh("echo ready > /workspace/ready; exec sleep 600"), filepath.Join(t.TempDir(), "op.log"))
	awaitLine(t, ready, time.Minute)

	c, cctx := e.rawClient(t)
	sn := c.SnapshotService(e.r.Snapshotter())
	if _, err := sn.Stat(cctx, s.ID); err != nil {
		t.Fatalf("snapshot %s before Remove: %v", s.ID, err)
	}
	if err := e.r.Remove(ctx, s.ID); err != nil {
		t.Fatalf("Remove of a running container: %v", err)
	}
	st, err := e.r.Inspect(ctx, s.ID)
	if err != nil || st.Exists {
		t.Errorf("after Remove: Inspect = %+v, %v", st, err)
	}
	if _, err := sn.Stat(cctx, s.ID); !errdefs.IsNotFound(err) {
		t.Errorf("snapshot after Remove: %v, want not found", err)
	}
	if err := e.r.Remove(ctx, s.ID); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Workspace, "ready")); err != nil {
		t.Errorf("Remove touched the workspace: %v", err)
	}
}

func (e *env) testHostile(t *testing.T) {
	s := e.container(t, func(s *runtime.ContainerSpec) { s.MemoryBytes = 96 << 20; s.PidsLimit = 50 })
	ctx := ctxT(t)
	dir := t.TempDir()
	n := 0
	// run runs one check as the next operation and returns its exit code and output.
	run := func(cmd string) (int, string) {
		t.Helper()
		logPath := filepath.Join(dir, strconv.Itoa(n)+".log")
		exit, err := e.r.RunOp(ctx, s.ID, n, sh(cmd), logPath)
		n++
		if err != nil {
			t.Fatalf("RunOp %q: %v", cmd, err)
		}
		return exit.Code, readFile(t, logPath)
	}

	t.Run("read-only root", func(t *testing.T) {
		for _, path := range []string{"/x", "/bin/x", "/etc/passwd"} {
			code, out := run("echo pwned > " + path)
			if code == 0 || !strings.Contains(out, "Read-only file system") {
				t.Errorf("write to %s: exit %d, %q; want a read-only error", path, code, out)
			}
		}
	})
	t.Run("no capabilities", func(t *testing.T) {
		code, out := run("grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, ":")
			fields[k] = strings.TrimSpace(v)
		}
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if fields[k] != "0000000000000000" {
				t.Errorf("%s = %q, want all zero", k, fields[k])
			}
		}
		if fields["NoNewPrivs"] != "1" {
			t.Errorf("NoNewPrivs = %q, want 1", fields["NoNewPrivs"])
		}
		if fields["Seccomp"] != "2" {
			t.Errorf("Seccomp = %q, want 2 (filter)", fields["Seccomp"])
		}
		// Root without capabilities cannot mount, chown others' files, or mknod.
		if code, out := run("mount -t tmpfs none /tmp"); code == 0 {
			t.Errorf("mount succeeded: %s", out)
		}
		if code, out := run("mknod /tmp/sda b 8 0"); code == 0 {
			t.Errorf("mknod succeeded: %s", out)
		}
	})
	t.Run("own pid namespace", func(t *testing.T) {
		code, out := run("ps -o pid,comm")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")[1:]
		if len(lines) == 0 || len(lines) > 2 {
			t.Errorf("ps sees %d processes, want only its own (1 or 2):\n%s", len(lines), out)
		}
		for _, l := range lines {
			if f := strings.Fields(l); len(f) != 2 || (f[1] != "sh" && f[1] != "ps") {
				t.Errorf("ps sees a foreign process: %q", l)
			}
		}
	})
	t.Run("network has only lo", func(t *testing.T) {
		code, out := run("tail -n +3 /proc/net/dev | cut -d: -f1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		if ifaces := strings.Fields(out); len(ifaces) != 1 || ifaces[0] != "lo" {
			t.Errorf("interfaces %v, want [lo]", ifaces)
		}
		// busybox's nc: Debian's static wget crashes before connecting, which
		// would pass for a blocked connection.
		if code, out := run("echo | nc -w 2 1.1.1.1 80 || echo | nc -w 2 10.0.2.2 80"); code == 0 || strings.Count(out, "Network is unreachable") != 2 {
			t.Errorf("egress: exit %d, %q; want both unreachable", code, out)
		}
	})
	t.Run("hostname", func(t *testing.T) {
		if _, out := run("hostname"); strings.TrimSpace(out) != runtime.Hostname {
			t.Errorf("hostname %q, want %q", out, runtime.Hostname)
		}
	})
	t.Run("limits", func(t *testing.T) {
		_, out := run("df -k /tmp | tail -n 1")
		if f := strings.Fields(out); len(f) < 2 || f[1] != strconv.Itoa(runtime.DefaultTmpBytes/1024) {
			t.Errorf("/tmp size %q, want %d KiB", out, runtime.DefaultTmpBytes/1024)
		}
		// The cgroup filesystem is not mounted inside: read the limits from the host,
		// through the cgroup of the running operation's process (cgroup v1 or v2).
		ready := fifo(t, filepath.Join(s.Workspace, "ready"+strconv.Itoa(n)))
		release := fifo(t, filepath.Join(s.Workspace, "go"+strconv.Itoa(n)))
		op := sh(fmt.Sprintf("echo ready > /workspace/ready%d; read x < /workspace/go%d", n, n))
		done := make(chan error, 1)
		go func() {
			_, err := e.r.RunOp(ctx, s.ID, n, op, filepath.Join(dir, "limits.log"))
			done <- err
		}()
		defer func() {
			release.WriteString("go\n")
			if err := <-done; err != nil {
				t.Error(err)
			}
			n++
		}()
		awaitLine(t, ready, time.Minute)
		c, cctx := e.rawClient(t)
		ctr, err := c.LoadContainer(cctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		task, err := ctr.Task(cctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		mem, pids := hostCgroupLimits(t, int(task.Pid()))
		if mem != strconv.Itoa(96<<20) {
			t.Errorf("memory limit = %q, want %d", mem, 96<<20)
		}
		if pids != "50" {
			t.Errorf("pids limit = %q, want 50", pids)
		}
	})
	t.Run("workspace and tmp writable, nothing else of the host", func(t *testing.T) {
		code, out := run("echo ok > /workspace/w && echo ok > /tmp/t && cat /workspace/w /tmp/t")
		if code != 0 || out != "ok\nok\n" {
			t.Errorf("exit %d, %q", code, out)
		}
		if got := readFile(t, filepath.Join(s.Workspace, "w")); got != "ok\n" {
			t.Errorf("workspace file on the host = %q", got)
		}
		// Every bind mount in the container is the rootfs or the workspace: no other
		// host directory appears in mountinfo.
		_, out = run("cat /proc/self/mountinfo")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			root, point := f[3], f[4]
			if root != "/" && point != "/workspace" && !strings.HasPrefix(point, "/sys/fs/cgroup") &&
				!strings.HasPrefix(point, "/proc/") && point != "/dev/null" {
				t.Errorf("host path %s mounted at %s", root, point)
			}
		}
	})
}

// hostCgroupLimits reads the memory and pids limits of process pid's cgroups from the
// host: cgroup v1 (memory.limit_in_bytes, pids.max per controller) or v2 (memory.max,
// pids.max in the unified hierarchy).
func hostCgroupLimits(t *testing.T, pid int) (memory, pids string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	_, err = os.Stat("/sys/fs/cgroup/cgroup.controllers")
	unified := err == nil
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case unified && f[0] == "0" && f[1] == "":
			base := filepath.Join("/sys/fs/cgroup", f[2])
			return read(filepath.Join(base, "memory.max")), read(filepath.Join(base, "pids.max"))
		case !unified && f[1] == "memory":
			memory = read(filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes"))
		case !unified && f[1] == "pids":
			pids = read(filepath.Join("/sys/fs/cgroup/pids", f[2], "pids.max"))
		}
	}
	return memory, pids
}

func (e *env) testOOM(t *testing.T) {
	if swaps, err := os.ReadFile("/proc/swaps"); err == nil && strings.Count(string(swaps), "\n") > 1 {
		t.Skip("the host has swap: a memory-limited process may swap instead of being OOM-killed")
	}
	s := e.container(t, func(s *runtime.ContainerSpec) { s.MemoryBytes = 32 << 20 })
	exit, err := e.r.RunOp(ctxT(t), s.ID, 0, sh("dd if=/dev/zero of=/dev/null bs=128M count=1"), filepath.Join(t.TempDir(), "op.log"))
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 137 || !exit.OOMKilled {
		t.Errorf("exit %+v, want 137 with OOMKilled", exit)
	}
	// An operation within its limit is not reported as OOM-killed.
	exit, err = e.r.RunOp(ctxT(t), s.ID, 1, sh("dd if=/dev/zero of=/dev/null bs=1M count=1"), filepath.Join(t.TempDir(), "op.log"))
	if err != nil || exit.Code != 0 || exit.OOMKilled {
		t.Errorf("small op exit %+v, %v", exit, err)
	}
}

// testNonRoot: an image that runs as a non-root user gets the workspace, files the
// worker put there included, and nothing else of the host.
func (e *env) testNonRoot(t *testing.T) {
	img := runtimetest.TestImageNonRoot(t, e.r)
	ws := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ws, "output"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "input.json"), []byte(`{"prompt":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := e.container(t, func(s *runtime.ContainerSpec) { s.Image = img; s.Workspace = ws })
	logPath := filepath.Join(t.TempDir(), "op.log")
	// touch's complaint goes to stdout: the log orders lines of one stream only.
	exit, err := e.r.RunOp(ctxT(t), s.ID, 0,
		sh("id -u; cat /workspace/input.json >> /workspace/output/r.json && echo ok > /workspace/new && echo w > /tmp/t && (touch /x 2>&1 || true)"), logPath)
	if err != nil || exit.Code != 0 {
		t.Fatalf("RunOp = %+v, %v\n%s", exit, err, readFile(t, logPath))
	}
	log := readFile(t, logPath)
	if !strings.HasPrefix(log, "65534\n") || !strings.Contains(log, "Read-only file system") {
		t.Errorf("log %q: want uid 65534 and a read-only root", log)
	}
	if got := readFile(t, filepath.Join(ws, "output", "r.json")); got != `{"prompt":"x"}` {
		t.Errorf("output %q", got)
	}
	fi, err := os.Stat(filepath.Join(ws, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("file made in the container is owned by %d:%d, want 65534:65534", st.Uid, st.Gid)
	}
}

func (e *env) testCreateIdempotent(t *testing.T) {
	s := e.container(t, nil)
	ctx := ctxT(t)
	if err := e.r.Create(ctx, s); err != nil {
		t.Errorf("second Create with the same image: %v, want nil", err)
	}
	c, cctx := e.rawClient(t)
	img, err := c.GetImage(cctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	const other = "hypernode.local/other:latest"
	if _, err := c.ImageService().Create(cctx, images.Image{Name: other, Target: img.Target()}); err != nil && !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	s2 := s
	s2.Image = other
	if err := e.r.Create(ctx, s2); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("Create with another image = %v, want ErrExists", err)
	}
	s3 := s
	s3.ID, s3.Job = runtime.ContainerID(s.Job, 2), s.Job
	s3.Attempt = 2
	s3.Image = "hypernode.local/absent:latest"
	if err := e.r.Create(ctx, s3); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Create with an absent image = %v, want ErrNotFound", err)
	}
	s4 := s
	s4.ID, s4.Attempt = runtime.ContainerID(s.Job, 3), 3
	s4.Workspace = filepath.Join(t.TempDir(), "missing")
	if err := e.r.Create(ctx, s4); !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("Create with a missing workspace = %v, want ErrInvalid", err)
	}
}

// testCreateRecovers: Create succeeds where a crash inside an earlier create left
// the container's snapshot without its container, and where the image is not yet
// unpacked for the runtime's snapshotter; the container then runs an operation.
func (e *env) testCreateRecovers(t *testing.T) {
	ctx := ctxT(t)
	c, cctx := e.rawClient(t)
	job := runtimetest.UniqueJob(t)
	s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: e.img, Workspace: t.TempDir()}
	sn := c.SnapshotService(e.r.Snapshotter())
	if _, err := sn.Prepare(cctx, s.ID, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Remove(context.Background(), s.ID) })
	if err := e.r.Create(ctx, s); err != nil {
		t.Fatalf("Create over a stale snapshot: %v", err)
	}
	t.Cleanup(func() { e.r.Remove(context.Background(), s.ID) })
	if st, err := e.r.Inspect(ctx, s.ID); err != nil || !st.Exists {
		t.Fatalf("Inspect after Create = %+v, %v", st, err)
	}
	exit, err := e.r.RunOp(ctx, s.ID, 0, sh("test -x /bin/sh"), filepath.Join(t.TempDir(), "op.log"))
	if err != nil || exit.Code != 0 {
		t.Errorf("RunOp in a container created over a stale snapshot = %+v, %v: its root filesystem is not the image's", exit, err)
	}

	// Another snapshotter of the same daemon has never unpacked the image.
	other := "native"
	if e.r.Snapshotter() == other {
		other = "overlayfs"
	}
	r2, err := runtime.New(ctx, runtime.Config{Address: e.addr, Namespace: e.r.Namespace(), Snapshotter: other})
	if err != nil {
		t.Skipf("no second snapshotter: %v", err)
	}
	t.Cleanup(func() { r2.Close() })
	s2 := s
	s2.ID, s2.Attempt = runtime.ContainerID(job, 2), 2
	if err := r2.Create(ctx, s2); err != nil {
		t.Fatalf("Create with an image not unpacked for %s: %v", other, err)
	}
	t.Cleanup(func() { r2.Remove(context.Background(), s2.ID) })
	exit, err = r2.RunOp(ctx, s2.ID, 0, sh("test -x /bin/sh"), filepath.Join(t.TempDir(), "op2.log"))
	if err != nil || exit.Code != 0 {
		t.Errorf("RunOp with the %s snapshotter = %+v, %v", other, exit, err)
	}

	// The image's unpacked layers go behind the runtime's back (it remembers
	// having unpacked them): EnsureImage does not notice, Create unpacks again.
	if err := r2.EnsureImage(ctx, e.img); err != nil {
		t.Fatal(err)
	}
	if err := r2.Remove(ctx, s2.ID); err != nil {
		t.Fatal(err)
	}
	sn2 := c.SnapshotService(other)
	var layers []string
	if err := sn2.Walk(cctx, func(_ context.Context, info snapshots.Info) error {
		layers = append(layers, info.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for len(layers) > 0 { // children first: retry what still has one
		var left []string
		for _, l := range layers {
			if err := sn2.Remove(cctx, l); err != nil && !errdefs.IsNotFound(err) {
				left = append(left, l)
			}
		}
		if len(left) == len(layers) {
			t.Fatalf("cannot remove the %s snapshots %v", other, left)
		}
		layers = left
	}
	if err := r2.EnsureImage(ctx, e.img); err != nil {
		t.Fatal(err)
	}
	s3 := s
	s3.ID, s3.Attempt = runtime.ContainerID(job, 3), 3
	if err := r2.Create(ctx, s3); err != nil {
		t.Fatalf("Create after the image's snapshots were removed: %v", err)
	}
	t.Cleanup(func() { r2.Remove(context.Background(), s3.ID) })
	exit, err = r2.RunOp(ctx, s3.ID, 0, sh("test -x /bin/sh"), filepath.Join(t.TempDir(), "op3.log"))
	if err != nil || exit.Code != 0 {
		t.Errorf("RunOp after unpacking again = %+v, %v", exit, err)
	}
}

func (e *env) testList(t *testing.T) {
	ctx := ctxT(t)
	a := e.container(t, nil)
	c, cctx := e.rawClient(t)
	img, err := c.GetImage(cctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	stranger := "stranger-" + runtimetest.UniqueJob(t)
	if _, err := c.NewContainer(cctx, stranger, client.WithImage(img), client.WithNewSpec()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.LoadContainer(cctx, stranger); ctrDelete(c, cctx, stranger) })
	ids, err := e.r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(ids, a.ID) {
		t.Errorf("List = %v lacks %s", ids, a.ID)
	}
	if contains(ids, stranger) {
		t.Errorf("List = %v holds the unlabelled %s", ids, stranger)
	}
	st, err := e.r.Inspect(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Labels[runtime.LabelJob] != a.Job || st.Labels[runtime.LabelAttempt] != "1" || st.Labels[runtime.LabelManaged] != "true" {
		t.Errorf("labels %v", st.Labels)
	}
	if st.Op != -1 || st.TaskStatus != runtime.StatusNone {
		t.Errorf("fresh container: Inspect = %+v, want op -1 and no task", st)
	}
}

func ctrDelete(c *client.Client, ctx context.Context, id string) {
	if ctr, err := c.LoadContainer(ctx, id); err == nil {
		ctr.Delete(ctx)
	}
}

func (e *env) testEnsureImage(t *testing.T) {
	ctx := ctxT(t)
	if err := e.r.EnsureImage(ctx, e.img); err != nil {
		t.Errorf("EnsureImage of a present image: %v", err)
	}
	// The use is recorded to the minute: an older record is renewed, a recent one
	// left as it is (no metadata write on every job's start).
	lastUsed := func() time.Time {
		t.Helper()
		imgs, err := e.r.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range imgs {
			if u.Name == e.img {
				return u.LastUsed
			}
		}
		t.Fatalf("%s not in Images: %+v", e.img, imgs)
		return time.Time{}
	}
	for _, tt := range []struct {
		age   time.Duration
		renew bool
	}{{2 * time.Hour, true}, {61 * time.Second, true}, {20 * time.Second, false}, {-time.Hour, true}} {
		set := time.Now().Add(-tt.age).UTC()
		if err := e.r.SetImageLastUsed(ctx, e.img, set); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		if err := e.r.EnsureImage(ctx, e.img); err != nil {
			t.Fatal(err)
		}
		got := lastUsed()
		if renewed := !got.Equal(set); renewed != tt.renew || (renewed && got.Before(before.Add(-time.Second))) {
			t.Errorf("last used %v ago: after EnsureImage it is %v (set %v), want renewed = %v", tt.age, got, set, tt.renew)
		}
	}
	if err := e.r.EnsureImage(ctx, "Not A Ref"); !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("EnsureImage of a malformed ref = %v, want ErrInvalid", err)
	}
	// Nothing listens on this loopback port: the pull fails, over plain HTTP.
	err := e.r.EnsureImage(ctx, "127.0.0.1:1/nothing/here:latest")
	if err == nil {
		t.Fatal("EnsureImage from a dead registry succeeded")
	}
	if !regexp.MustCompile(`http://127\.0\.0\.1:1/`).MatchString(err.Error()) {
		t.Errorf("error %q: want a plain-HTTP attempt on loopback", err)
	}
}

// testPull pushes the test image to a registry on 127.0.0.1 (plain HTTP) and has a
// Runtime in another namespace pull it with EnsureImage, then run it.
func (e *env) testPull(t *testing.T) {
	host := runtimetest.StartRegistry(t)
	ref := host + "/hypernode/test:latest"
	ctx := ctxT(t)
	for _, args := range [][]string{
		{"images", "tag", "--force", e.img, ref},
		{"images", "push", "--plain-http", ref},
	} {
		cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", e.addr, "--namespace", e.r.Namespace()}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ctr %v: %v\n%s", args, err, out)
		}
	}
	r, err := runtime.New(ctx, runtime.Config{Address: e.addr, Namespace: "hn-pull-" + runtimetest.UniqueJob(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.EnsureImage(ctx, ref); err != nil {
		t.Fatalf("EnsureImage(%s): %v", ref, err)
	}
	// Present now: a second call needs no registry.
	if err := r.EnsureImage(ctx, ref); err != nil {
		t.Fatalf("second EnsureImage: %v", err)
	}
	job := runtimetest.UniqueJob(t)
	s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: ref, Workspace: t.TempDir()}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	defer r.Remove(context.Background(), s.ID)
	logPath := filepath.Join(t.TempDir(), "op.log")
	if exit, err := r.RunOp(ctx, s.ID, 0, sh("echo pulled"), logPath); err != nil || exit.Code != 0 {
		t.Fatalf("RunOp in the pulled image = %+v, %v", exit, err)
	}
	if got := readFile(t, logPath); got != "pulled\n" {
		t.Errorf("log %q", got)
	}
}

func contains(list []string, s string) bool { return index(list, s) >= 0 }

func index(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// runUntilReady runs operation 0 of container id until it writes its "ready"
// line to the ready FIFO, then detaches, as a worker that dies mid-operation
// does (the task goes on running). It returns RunOp's error.
func runUntilReady(t *testing.T, r *runtime.Runtime, id string, op runtime.Op, logPath string, ready *os.File) error {
	t.Helper()
	ctx, detach := context.WithCancel(ctxT(t))
	errC := make(chan error, 1)
	go func() {
		_, err := r.RunOp(ctx, id, 0, op, logPath)
		errC <- err
	}()
	if got := awaitLine(t, ready, time.Minute); got != "ready" {
		t.Fatalf("container said %q", got)
	}
	detach()
	return <-errC
}
