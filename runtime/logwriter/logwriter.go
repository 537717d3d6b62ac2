// Package logwriter is the log writer of an operation's output: the process a
// containerd shim starts, through the "binary" logging protocol, with the task's
// stdout and stderr pipes as fds 3 and 4 and a readiness pipe as fd 5. It appends
// both streams to the log file, whole lines at a time, keeping at most a limit of
// bytes (see package runtime, which names the executable and the file).
//
// The writer is the worker's own executable (or a test binary), which the shim starts
// once per operation, on the path from an operation's task create to its process
// running: the shim waits for the writer to be ready. So the writer runs from this
// package's init, which Go runs before those of the worker's heavier packages
// (packages initialize in import-path order as their imports allow, and this one
// imports the standard library only): it is ready about a millisecond after exec,
// instead of after the ~10 ms that the gRPC, protobuf, containerd and Solana
// packages take to initialize. In any other process the init does nothing.
package logwriter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// Arguments of the log writer. The shim passes a binary URI's query as argument pairs
// in random order, so they are parsed as key/value pairs.
const (
	ArgLogPath  = "--hypernode-shim-log" // value: the log file, absolute
	ArgLogLimit = "--limit"              // value: bytes of output kept, decimal
)

// DefaultLimitBytes is the output kept when the limit argument is malformed.
const DefaultLimitBytes = 64 << 20

// maxPending bounds how much of an unterminated line a stream holds back before writing
// it anyway.
const maxPending = 64 << 10

func init() { RunIfInvoked() }

// RunIfInvoked runs the log writer and exits when this process was started by a
// containerd shim as one (exactly the two key/value arguments ArgLogPath and
// ArgLogLimit, and CONTAINER_ID in the environment); otherwise it returns at once.
// The package's init calls it.
//
// The writer appends stdout and stderr to the log file (mode 0600) whole lines at a
// time, so the two streams interleave only between lines (and '\r'-terminated progress
// updates); a line longer than 64 KiB may be split. Past the limit, output is counted
// and dropped, with one note in the log; the pipes are always drained, so a full disk
// or a vanished file never blocks or kills the operation.
func RunIfInvoked() {
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
	_, hasPath := m[ArgLogPath]
	_, hasLimit := m[ArgLogLimit]
	return m, hasPath && hasLimit
}

func runLogger(args map[string]string) int {
	// The shim sends SIGTERM when the task is deleted; the pipes reach EOF at the
	// same time, and draining them is exactly what must finish first.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	stdout := os.NewFile(3, "stdout")
	stderr := os.NewFile(4, "stderr")
	ready := os.NewFile(5, "ready")

	limit, err := strconv.ParseInt(args[ArgLogLimit], 10, 64)
	if err != nil || limit < 0 {
		limit = DefaultLimitBytes
	}
	var w io.Writer = io.Discard
	f, openErr := os.OpenFile(args[ArgLogPath], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
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
