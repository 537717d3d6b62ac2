package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"

	"github.com/hypernode-sol/worker/runtime"
)

// exitedOp0 plays a worker that ran operation 0 of a fresh container to its exit
// and recorded the exit (LabelOpExit), as finish does, but has not deleted the
// task yet. It returns the stopped task and the log path.
func (e *env) exitedOp0(t *testing.T) (runtime.ContainerSpec, client.Task, string) {
	t.Helper()
	s := e.container(t, nil)
	c, ctx := e.rawClient(t)
	ctr, err := c.LoadContainer(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{runtime.LabelOp: "0", runtime.LabelOpStarted: "0"}); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "op.log")
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	es := <-exitC
	code, at, err := es.Result()
	if err != nil {
		t.Fatal(err)
	}
	exit := runtime.Exit{Code: int(code), ExitedAt: at}
	if _, err := ctr.SetLabels(ctx, map[string]string{runtime.LabelOpExit: runtime.FormatExitLabel(0, exit)}); err != nil {
		t.Fatal(err)
	}
	return s, task, logPath
}

// shimPIDs are the containerd-shim-runc-v2 processes serving container id.
func shimPIDs(t *testing.T, id string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) == 0 || !strings.HasSuffix(string(args[0]), "containerd-shim-runc-v2") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-id" && string(args[i+1]) == id {
				pids = append(pids, filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return pids
}

// staleTask leaves container id in the state a cancelled task Delete leaves
// behind on containerd 1.6: the shim deleted the runc container, but the daemon,
// its request cancelled, never removed the task from its list. It asks the shim
// itself (over its ttrpc socket, as the daemon would) to delete the task.
func (e *env) staleTask(t *testing.T, id string) {
	t.Helper()
	bundle := filepath.Join(filepath.Dir(e.addr), "state", "io.containerd.runtime.v2.task", e.r.Namespace(), id)
	addr, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		t.Fatalf("shim address: %v", err)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(strings.TrimSpace(string(addr)), "unix://"))
	if err != nil {
		t.Fatalf("dial shim: %v", err)
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := taskapi.NewTTRPCTaskClient(tc).Delete(ctx, &taskapi.DeleteRequest{ID: id}); err != nil {
		t.Fatalf("shim delete: %v", err)
	}
	// The daemon now answers NotFound for the task, yet its shim runs on.
	c, cctx := e.rawClient(t)
	ctr, err := c.LoadContainer(cctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if task, err := ctr.Task(cctx, nil); err == nil {
		_, err = task.Status(cctx)
		if !errdefs.IsNotFound(err) {
			t.Fatalf("task status after the shim deleted it = %v, want NotFound", err)
		}
	} else if !errdefs.IsNotFound(err) {
		t.Fatalf("load task after the shim deleted it = %v, want NotFound", err)
	}
	if len(shimPIDs(t, id)) == 0 {
		t.Fatal("the shim exited: the stale task was not made")
	}
}

// testStaleTaskNextOp: a worker killed while deleting operation 0's exited task
// leaves a task containerd lists but cannot find; the next operation must still
// be created (containerd says "already exists" to a plain create), run once, and
// leave no shim behind.
func (e *env) testStaleTaskNextOp(t *testing.T) {
	s, _, logPath := e.exitedOp0(t)
	e.staleTask(t, s.ID)
	ctx := ctxT(t)
	st, err := e.r.Inspect(ctx, s.ID)
	if err != nil || st.TaskStatus != runtime.StatusNone || st.Op != 0 || st.Exit == nil {
		t.Fatalf("Inspect = %+v, %v; want no task and op 0's exit", st, err)
	}
	exit, err := e.r.RunOp(ctx, s.ID, 1, sh("echo once >> /workspace/runs"), logPath)
	if err != nil || exit.Code != 0 {
		t.Fatalf("RunOp 1 over a stale task = %+v, %v", exit, err)
	}
	if got := readFile(t, filepath.Join(s.Workspace, "runs")); got != "once\n" {
		t.Errorf("op 1 ran %d times, want once", strings.Count(got, "once"))
	}
	if err := e.r.Remove(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if pids := shimPIDs(t, s.ID); len(pids) > 0 {
		t.Errorf("shims %v still serve the removed container", pids)
	}
}

// testStaleTaskRemove: removing a container whose task is stale removes the task
// and stops its shim (containerd deletes the container and would leave the shim).
func (e *env) testStaleTaskRemove(t *testing.T) {
	s, _, _ := e.exitedOp0(t)
	e.staleTask(t, s.ID)
	if err := e.r.Remove(ctxT(t), s.ID); err != nil {
		t.Fatal(err)
	}
	if pids := shimPIDs(t, s.ID); len(pids) > 0 {
		t.Errorf("shims %v still serve the removed container", pids)
	}
	if st, err := e.r.Inspect(ctxT(t), s.ID); err != nil || st.Exists {
		t.Errorf("Inspect after Remove = %+v, %v; want no container", st, err)
	}
}

// testInterruptedDeleteSweep cancels operation 0's task Delete after 0 to 20 ms
// (a worker killed at that instant), then runs operation 1. Depending on the
// instant, containerd is left with nothing, a stale listed task, or a bundle it
// is still removing; operation 1 must run in every case.
func (e *env) testInterruptedDeleteSweep(t *testing.T) {
	interrupted, runs := 0, 0
	for d := time.Duration(0); d <= 20*time.Millisecond; d += 500 * time.Microsecond {
		runs++
		s, task, logPath := e.exitedOp0(t)
		_, ctx := e.rawClient(t)
		dctx, cancel := context.WithTimeout(ctx, d)
		if _, err := task.Delete(dctx); errors.Is(err, context.DeadlineExceeded) || errdefs.IsDeadlineExceeded(err) {
			interrupted++
		}
		cancel()
		exit, err := e.r.RunOp(ctxT(t), s.ID, 1, sh("echo once >> /workspace/runs"), logPath)
		if err != nil || exit.Code != 0 {
			t.Errorf("delete cancelled after %v: RunOp 1 = %+v, %v", d, exit, err)
			continue
		}
		if got := readFile(t, filepath.Join(s.Workspace, "runs")); got != "once\n" {
			t.Errorf("delete cancelled after %v: op 1 ran %d times, want once", d, strings.Count(got, "once"))
		}
	}
	t.Logf("%d of %d deletes were cut short", interrupted, runs)
}
