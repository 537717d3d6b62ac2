package logwriter

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestLoggerArgs(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool
	}{
		{[]string{ArgLogPath, "/l", ArgLogLimit, "10"}, true},
		{[]string{ArgLogLimit, "10", ArgLogPath, "/l"}, true}, // the shim's map order is random
		{[]string{ArgLogPath, "/l"}, false},
		{[]string{"start", "--config", "x", "y"}, false},
		{[]string{ArgLogPath, "/l", ArgLogLimit}, false},
		{nil, false},
	}
	for _, tt := range tests {
		m, ok := loggerArgs(tt.args)
		if ok != tt.ok {
			t.Errorf("loggerArgs(%q) ok = %v, want %v", tt.args, ok, tt.ok)
		}
		if ok && (m[ArgLogPath] != "/l" || m[ArgLogLimit] != "10") {
			t.Errorf("loggerArgs(%q) = %v", tt.args, m)
		}
	}
}

func TestLogMergerLimit(t *testing.T) {
	tests := []struct {
		name   string
		limit  int64
		writes []string
		want   string
	}{
		{"under", 100, []string{"a\n", "b\n"}, "a\nb\n"},
		{"exactly", 4, []string{"a\n", "b\n"}, "a\nb\n"},
		{"split write", 3, []string{"a\n", "bc\n"}, "a\nb\n[hypernode: output limit of 3 bytes reached; 2 more bytes dropped]\n"},
		{"zero", 0, []string{"abc"}, "\n[hypernode: output limit of 0 bytes reached; 3 more bytes dropped]\n"},
		{"after the limit", 2, []string{"a\n", "b\n", "c\n"}, "a\n\n[hypernode: output limit of 2 bytes reached; 4 more bytes dropped]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			m := newLogMerger(&buf, tt.limit)
			for _, w := range tt.writes {
				m.write([]byte(w))
			}
			m.finish()
			if buf.String() != tt.want {
				t.Errorf("log = %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

// chunkReader returns its chunks one Read at a time, as a pipe would.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if n < len(c.chunks[0]) {
		c.chunks[0] = c.chunks[0][n:]
	} else {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// recorder keeps every Write separately.
type recorder struct {
	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestLogMergerWholeLines(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string // the writes
	}{
		{"lines split across reads", []string{"ab", "c\nde", "f\n"}, []string{"abc\n", "def\n"}},
		{"unterminated tail at EOF", []string{"a\nb"}, []string{"a\n", "b"}},
		{"carriage return ends a progress update", []string{"10%\r", "20%\r", "done\n"}, []string{"10%\r", "20%\r", "done\n"}},
		{"several lines in one read", []string{"a\nb\nc"}, []string{"a\nb\n", "c"}},
		{"long line written once it reaches the bound", []string{strings.Repeat("x", maxPending), "y\n"},
			[]string{strings.Repeat("x", maxPending), "y\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			m := newLogMerger(rec, 1<<30)
			m.copy(&chunkReader{chunks: slices.Clone(tt.chunks)})
			if !slices.Equal(rec.writes, tt.want) {
				t.Errorf("writes %q, want %q", rec.writes, tt.want)
			}
		})
	}
}

// TestLogMergerConcurrentStreams: two streams written at once through real pipes
// interleave only between whole lines.
func TestLogMergerConcurrentStreams(t *testing.T) {
	var buf bytes.Buffer
	m := newLogMerger(&buf, 1<<30)
	var want []string
	var wg sync.WaitGroup
	for _, name := range []string{"out", "err"} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for i := range 5000 {
			lines = append(lines, name+strings.Repeat("-", i%97)+"|")
		}
		want = append(want, lines...)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer w.Close()
			// Odd-sized writes, so lines straddle reads.
			data := []byte(strings.Join(lines, "\n") + "\n")
			for len(data) > 0 {
				n := min(len(data), 1000+len(data)%777)
				w.Write(data[:n])
				data = data[n:]
			}
		}()
		go func() {
			defer wg.Done()
			m.copy(r)
			r.Close()
		}()
	}
	wg.Wait()
	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("merged log has %d lines, want %d intact lines", len(got), len(want))
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestLogMergerWriterFails(t *testing.T) {
	f := &failingWriter{}
	m := newLogMerger(f, 1<<30)
	m.copy(&chunkReader{chunks: []string{"a\n", "b\n", "c\n"}})
	m.finish()
	if f.n != 1 {
		t.Errorf("%d writes to a failed writer, want 1 then drain only", f.n)
	}
	if m.dropped != 4 {
		t.Errorf("dropped %d bytes, want 4", m.dropped)
	}
}

// FuzzLogMerger: whatever a container writes, in whatever read sizes, one stream's log
// is its output up to the limit, in order, then at most one note.
func FuzzLogMerger(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), uint16(7), uint8(3))
	f.Add([]byte(strings.Repeat("x", 70000)+"\n"), uint16(65535), uint8(200))
	f.Add([]byte{}, uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, step uint8) {
		var chunks []string
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := min(len(rest), 1+(int(step)+i)%251)
			chunks = append(chunks, string(rest[:n]))
			rest = rest[n:]
		}
		var buf bytes.Buffer
		m := newLogMerger(&buf, int64(limit))
		m.copy(&chunkReader{chunks: chunks})
		m.finish()
		kept := data[:min(len(data), int(limit))]
		got := buf.Bytes()
		if !bytes.HasPrefix(got, kept) {
			t.Fatalf("log does not start with the first %d bytes of output", len(kept))
		}
		rest := got[len(kept):]
		if len(data) <= int(limit) {
			if len(rest) != 0 {
				t.Fatalf("%d extra bytes under the limit", len(rest))
			}
		} else if !bytes.HasPrefix(rest, []byte("\n[hypernode: output limit of ")) || m.dropped != int64(len(data)-len(kept)) {
			t.Fatalf("truncation note %q, dropped %d of %d", rest, m.dropped, len(data)-len(kept))
		}
	})
}
