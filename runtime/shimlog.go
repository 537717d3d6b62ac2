package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/hypernode-sol/worker/runtime/logwriter"
)

// The operation's output reaches its log file through containerd's "binary" logging
// protocol: the shim starts a log writer (package logwriter, inside the worker's own
// executable: see RunLoggerIfInvoked) with the task's stdout and stderr pipes as fds 3
// and 4 and a readiness pipe as fd 5. The writer is a child of the shim, so it outlives
// the worker, and the shim waits for it to exit when the task is deleted, so the log is
// complete once RunOp returns.
//
// containerd's own "file" scheme is not used: its shim closes the shared file when
// stdout ends even if stderr still has data, losing the end of stderr (seen in about one
// run in ten with containerd 1.6.20), and it bounds nothing.

// logCreator is the IO of a task whose output the log writer binary appends to path,
// keeping at most limit bytes.
func logCreator(binary, path string, limit int64) cio.Creator {
	return cio.BinaryIO(binary, map[string]string{
		logwriter.ArgLogPath:  path,
		logwriter.ArgLogLimit: strconv.FormatInt(limit, 10),
	})
}

// RunLoggerIfInvoked must be the first call in the main function of the executable
// named by Config.Logger (the worker itself by default) and in TestMain of tests that
// run containers. When the process was started by a containerd shim as the log
// writer, it copies the task's output to the log file and exits; otherwise it returns
// at once. The writer itself is package logwriter, whose init (which this package
// imports) usually runs it before this call is reached; see logwriter.RunIfInvoked
// for what it writes.
func RunLoggerIfInvoked() { logwriter.RunIfInvoked() }

// checkLogger runs binary once as the shim would, with "ok\n" on its stdout pipe, and
// fails unless that line reaches the log: a binary whose main does not call
// RunLoggerIfInvoked would otherwise leave every operation writing to a pipe nobody
// reads.
func checkLogger(binary string) error {
	dir, err := os.MkdirTemp("", "hn-logcheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "check.log")

	var parent, child []*os.File
	defer func() {
		for _, f := range append(parent, child...) {
			f.Close()
		}
	}()
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		parent, child = append(parent, r, w), append(child, r, w)
	}
	// fds 3, 4: the read ends of stdout and stderr; fd 5: the write end of readiness.
	outR, outW, errR, errW, readyR, readyW := child[0], child[1], child[2], child[3], child[4], child[5]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, logwriter.ArgLogPath, logPath, logwriter.ArgLogLimit, "1024")
	cmd.Env = []string{"CONTAINER_ID=hypernode-log-writer-check", "CONTAINER_NAMESPACE=check"}
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("log writer %s: %w: %w", binary, ErrInvalid, err)
	}
	outR.Close()
	errR.Close()
	readyW.Close()
	_, _ = io.Copy(io.Discard, readyR) // the writer closes fd 5 when ready
	_, _ = outW.Write([]byte("ok\n"))
	outW.Close()
	errW.Close()
	waitErr := cmd.Wait()
	if got, _ := os.ReadFile(logPath); string(got) != "ok\n" || waitErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("%s does not act as the operation log writer (its main must call runtime.RunLoggerIfInvoked first; exit: %v; output: %q): %w",
			binary, waitErr, msg, ErrInvalid)
	}
	return nil
}
