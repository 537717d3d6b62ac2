package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// The operation's output reaches its log file through containerd's "binary" logging
// protocol: the shim starts a log writer (this package, inside the worker's own
// executable: see RunLoggerIfInvoked) with the task's stdout and stderr pipes as fds 3
// and 4 and a readiness pipe as fd 5. The writer is a child of the shim, so it outlives
// the worker, and the shim waits for it to exit when the task is deleted, so the log is
// complete once RunOp returns.
//
// containerd's own "file" scheme is not used: its shim closes the shared file when
// stdout ends even if stderr still has data, losing the end of stderr (seen in about one
// run in ten with containerd 1.6.20), and it bounds nothing.

// Arguments of the log writer. The shim passes a binary URI's query as argument pairs
// in random order, so they are parsed as key/value pairs.
const (
	argLogPath  = "--hypernode-shim-log" // value: the log file, absolute
	argLogLimit = "--limit"              // value: bytes of output kept, decimal
)

// maxPending bounds how much of an unterminated line a stream holds back before writing
// it anyway.
const maxPending = 64 << 10

// logCreator is the IO of a task whose output the log writer binary appends to path,
// keeping at most limit bytes.
func logCreator(binary, path string, limit int64) cio.Creator {
	return cio.BinaryIO(binary, map[string]string{
		argLogPath:  path,
		argLogLimit: strconv.FormatInt(limit, 10),
	})
}

// RunLoggerIfInvoked must be the first call in the main function of the executable
// named by Config.Logger (the worker itself by default) and in TestMain of tests that
// run containers. When the process was started by a containerd shim as this package's
// log writer, it copies the task's output to the log file and exits; otherwise it
// returns at once.
//
// The writer appends stdout and stderr to the log file (mode 0600) whole lines at a
// time, so the two streams interleave only between lines (and '\r'-terminated progress
// updates); a line longer than 64 KiB may be split. Past the limit, output is counted
// and dropped, with one note in the log; the pipes are always drained, so a full disk
// or a vanished file never blocks or kills the operation.
func RunLoggerIfInvoked() {
	args, ok := loggerArgs(os.Args[1:])
	if !ok || os.Getenv("CONTAINER_ID") == "" {
		return
	}
	os.Exit(runLogger(args))
}

// loggerArgs parses the writer's key/value arguments; ok is false unless they are
// exactly those of a log writer.
func loggerArgs(args []string) (map[string]string, bool) {
	if len(args) != 4 {
		return nil, false
	}
	m := map[string]string{}
	for i := 0; i < len(args); i += 2 {
		m[args[i]] = args[i+1]
	}
	_, hasPath := m[argLogPath]
	_, hasLimit := m[argLogLimit]
	return m, hasPath && hasLimit
}

func runLogger(args map[string]string) int {
	// The shim sends SIGTERM when the task is deleted; the pipes reach EOF at the
	// same time, and draining them is exactly what must finish first.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	stdout := os.NewFile(3, "stdout")
	stderr := os.NewFile(4, "stderr")
	ready := os.NewFile(5, "ready")

	limit, err := strconv.ParseInt(args[argLogLimit], 10, 64)
	if err != nil || limit < 0 {
		limit = DefaultLogLimitBytes
	}
	var w io.Writer = io.Discard
	f, openErr := os.OpenFile(args[argLogPath], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if openErr == nil {
		w = f
	}
	// Readiness: the shim waits for this pipe to close before starting the task.
	if ready != nil {
		ready.Close()
	}
	m := newLogMerger(w, limit)
	var wg sync.WaitGroup
	for _, r := range []*os.File{stdout, stderr} {
		if r == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.copy(r)
		}()
	}
	wg.Wait()
	m.finish()
	if openErr != nil {
		return 1
	}
	_ = f.Sync()
	if f.Close() != nil {
		return 1
	}
	return 0
}

// logMerger writes several streams to one writer, whole lines at a time, keeping at
// most limit bytes of output.
type logMerger struct {
	mu        sync.Mutex
	w         io.Writer
	limit     int64
	written   int64 // output bytes written
	dropped   int64 // output bytes dropped past the limit
	truncated bool
	failed    bool // the writer failed: drain only
}

func newLogMerger(w io.Writer, limit int64) *logMerger {
	return &logMerger{w: w, limit: limit}
}

// copy reads r to EOF (or error), writing complete lines as they arrive and an
// unterminated tail at the end.
func (m *logMerger) copy(r io.Reader) {
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			// Only the new bytes are searched: a line fed one byte at a time costs
			// linear time, not quadratic.
			cut := 0
			if i := bytes.LastIndexAny(buf[:n], "\n\r"); i >= 0 {
				cut = len(pending) + i + 1
			}
			pending = append(pending, buf[:n]...)
			if cut == 0 && len(pending) >= maxPending {
				cut = len(pending)
			}
			if cut > 0 {
				m.write(pending[:cut])
				pending = append(pending[:0], pending[cut:]...)
			}
		}
		if err != nil {
			break
		}
	}
	if len(pending) > 0 {
		m.write(pending)
	}
}

func (m *logMerger) write(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.truncated || m.failed {
		m.dropped += int64(len(p))
		return
	}
	keep := p
	if room := m.limit - m.written; int64(len(p)) > room {
		keep = p[:room]
		m.dropped += int64(len(p)) - room
		m.truncated = true
	}
	if len(keep) > 0 {
		if _, err := m.w.Write(keep); err != nil {
			m.failed = true
		}
		m.written += int64(len(keep))
	}
}

// finish notes dropped output at the end of the log.
func (m *logMerger) finish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.truncated && !m.failed {
		fmt.Fprintf(m.w, "\n[hypernode: output limit of %d bytes reached; %d more bytes dropped]\n", m.limit, m.dropped)
	}
}

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
	cmd := exec.CommandContext(ctx, binary, argLogPath, logPath, argLogLimit, "1024")
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
