package statusapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// LogMessage is one WebSocket text frame of a job's log stream (JSON).
type LogMessage struct {
	Op   int    `json:"op"`             // the operation whose log this is, from 0
	Text string `json:"text,omitempty"` // log bytes as written, secrets replaced by [redacted]
	// End is set on the last frame only: why the stream ends ("job uploaded",
	// "job finished", "server closing").
	End string `json:"end,omitempty"`
}

// MaxLogBacklog is how much of a log file already written is sent when a
// stream starts; past it the stream starts at the first line after the cut.
const MaxLogBacklog = 1 << 20

func logFile(jobDir string, n int) string {
	return filepath.Join(jobDir, "logs", fmt.Sprintf("op-%d.log", n))
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 32 << 10} // default CheckOrigin: same origin only

// live reports whether a job in state s may still write logs.
func live(s fsm.State) bool {
	return s == fsm.Polled || s == fsm.Claimed || s == fsm.Fetched || s == fsm.Running
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	if s.src.Journal == nil || s.src.JobDir == nil || s.src.Secrets == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	id := r.PathValue("id")
	if _, err := s.src.Journal.Snapshot(id); errors.Is(err, journal.ErrNotFound) {
		apiError(w, http.StatusNotFound, fmt.Errorf("job %q: %w", id, err))
		return
	} else if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	secrets, err := s.src.Secrets(ctx, id)
	cancel()
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, fmt.Errorf("cannot scrub the job's logs: %w", err))
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer conn.Close()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { // the client's frames are read only to notice it leave
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				cancel()
				return
			}
		}
	}()
	t := &tailer{conn: conn, dir: s.src.JobDir(id), secrets: secrets, buf: make([]byte, 32<<10)}
	poll := s.src.LogPoll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	end, err := t.follow(ctx, s.done, poll, func() (fsm.State, error) {
		snap, err := s.src.Journal.Snapshot(id)
		return fsm.State(snap.State), err
	})
	if err != nil {
		return // the client left, or a write failed
	}
	t.send(LogMessage{Op: t.op, End: end})
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, end), time.Now().Add(time.Second))
}

// tailer follows a job's op-N.log files in order, sending what is appended
// through a ScrubWriter.
type tailer struct {
	conn     *websocket.Conn
	dir      string
	secrets  []jobdef.Secret
	buf      []byte
	op       int
	f        *os.File
	sw       *scrubStream
	lastPing time.Time
}

func (t *tailer) send(m LogMessage) error {
	t.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return t.conn.WriteJSON(m)
}

// Write sends scrubbed bytes of the current operation.
func (t *tailer) Write(p []byte) (int, error) {
	if err := t.send(LogMessage{Op: t.op, Text: string(p)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// open opens the current operation's log when it exists, skipping a
// backlog over MaxLogBacklog to the next line.
func (t *tailer) open() (bool, error) {
	f, err := os.Open(logFile(t.dir, t.op))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	t.f, t.sw = f, newScrubStream(t, t.secrets)
	if info, err := f.Stat(); err == nil && info.Size() > MaxLogBacklog {
		cut := info.Size() - MaxLogBacklog
		br := bufio.NewReader(io.NewSectionReader(f, cut, MaxLogBacklog))
		line, _ := br.ReadBytes('\n')
		skipped := cut + int64(len(line))
		if _, err := f.Seek(skipped, io.SeekStart); err != nil {
			return false, err
		}
		if _, err := t.Write(fmt.Appendf(nil, "[… %d bytes before this line not shown …]\n", skipped)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// drain sends what the open file holds now.
func (t *tailer) drain() error {
	for {
		n, err := t.f.Read(t.buf)
		if n > 0 {
			if _, werr := t.sw.Write(t.buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// finish drains and closes the current file and moves to the next operation.
func (t *tailer) finish() error {
	err := t.drain()
	if err == nil {
		err = t.sw.Close()
	}
	t.f.Close()
	t.f, t.sw = nil, nil
	t.op++
	return err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// follow sends the logs until the job stops writing them (its state is no
// longer live) and everything is sent, returning why it ended; or until ctx
// ends or done closes.
func (t *tailer) follow(ctx context.Context, done <-chan struct{}, poll time.Duration, state func() (fsm.State, error)) (string, error) {
	defer func() {
		if t.f != nil {
			t.f.Close()
		}
	}()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		// Read the state first: once it is not live, every log is complete
		// on disk and one more pass sends the rest.
		st, err := state()
		if err != nil {
			return "", err
		}
		for {
			if t.f == nil {
				ok, err := t.open()
				if err != nil {
					return "", err
				}
				if !ok {
					break
				}
			}
			// The driver starts operation n+1 only after n exited: when its
			// log exists, n's is complete.
			if !live(st) || exists(logFile(t.dir, t.op+1)) {
				if err := t.finish(); err != nil {
					return "", err
				}
				continue
			}
			if err := t.drain(); err != nil {
				return "", err
			}
			break
		}
		if !live(st) {
			return "job " + string(st), nil
		}
		if time.Since(t.lastPing) > 20*time.Second {
			t.lastPing = time.Now()
			if err := t.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
				return "", err
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-done:
			return "server closing", nil
		case <-tick.C:
		}
	}
}

// scrubStream scrubs a log on its way to out, as jobdef.ScrubWriter does, but
// holds back only bytes that could begin a secret (not a secret's length of
// every write), so that a live log's last line is sent at once.
type scrubStream struct {
	out     io.Writer
	secrets []jobdef.Secret
	needles [][]byte
	pending []byte
}

func newScrubStream(out io.Writer, secrets []jobdef.Secret) *scrubStream {
	s := &scrubStream{out: out, secrets: secrets}
	for _, sec := range secrets {
		if len(sec) >= jobdef.MinScrubLen {
			s.needles = append(s.needles, []byte(sec.Reveal()))
		}
	}
	return s
}

// Write sends everything written so far except a tail that is the start of
// a secret, scrubbed.
func (s *scrubStream) Write(p []byte) (int, error) {
	s.pending = append(s.pending, p...)
	cut := safeCut(s.pending, s.needles)
	if cut == 0 {
		return len(p), nil
	}
	if err := s.flush(s.pending[:cut]); err != nil {
		return 0, err
	}
	s.pending = append(s.pending[:0], s.pending[cut:]...)
	return len(p), nil
}

// Close sends what is held back.
func (s *scrubStream) Close() error {
	err := s.flush(s.pending)
	s.pending = s.pending[:0]
	return err
}

func (s *scrubStream) flush(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := s.out.Write(jobdef.Scrub(b, s.secrets))
	return err
}

// safeCut returns the largest n such that no occurrence of a needle, nor a
// needle's prefix running to the end of b, crosses position n: b[:n] can be
// scrubbed on its own without showing any part of a secret.
func safeCut(b []byte, needles [][]byte) int {
	cut := len(b)
	for moved := true; moved; {
		moved = false
		for _, n := range needles {
			for k := max(0, cut-len(n)+1); k < cut; k++ {
				if bytes.HasPrefix(n, b[k:min(k+len(n), len(b))]) {
					cut, moved = k, true
					break
				}
			}
		}
	}
	return cut
}
