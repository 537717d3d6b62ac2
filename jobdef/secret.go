package jobdef

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/rs/zerolog"
)

// Redacted is what a Secret prints as, and what Scrub puts in place of a
// secret value found in text.
const Redacted = "[redacted]"

// Secret is a job env value. Every way of printing or encoding it (fmt verbs
// including %v %+v %#v %s %q %x, String, GoString, encoding/json,
// encoding.TextMarshaler, zerolog) yields "[redacted]"; only Reveal returns
// the value, for the one place it must go: the container's environment.
type Secret string

// Reveal returns the value in clear. Call it only to hand the value to the
// container.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]".
func (Secret) String() string { return Redacted }

// GoString returns "[redacted]".
func (Secret) GoString() string { return Redacted }

// Format prints "[redacted]" for every verb and flag.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// MarshalJSON returns the JSON string "[redacted]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// MarshalZerologObject writes {"value":"[redacted]"} for zerolog's Object and
// EmbedObject.
func (Secret) MarshalZerologObject(e *zerolog.Event) { e.Str("value", Redacted) }

// MinScrubLen is the shortest secret value Scrub replaces. Shorter values
// ("1", "yes") would mangle ordinary log text while hiding next to nothing.
const MinScrubLen = 4

// Scrub returns text with every occurrence of every secret value of at least
// MinScrubLen bytes replaced by "[redacted]". Overlapping or adjacent
// occurrences become one "[redacted]". It only matches the values byte for
// byte: an encoded form (base64, JSON-escaped) is not found. text is not
// modified; when nothing matches, text itself is returned.
func Scrub(text []byte, secrets []Secret) []byte {
	needles := scrubNeedles(secrets)
	if len(needles) == 0 {
		return text
	}
	spans := coverage(text, needles, 0)
	if len(spans) == 0 {
		return text
	}
	return render(nil, text, spans)
}

// Scrubber returns a function that Scrubs text of d's env values. It holds
// its own copy of the values; d may change afterwards.
func Scrubber(d *Definition) func([]byte) []byte {
	secrets := d.Secrets()
	return func(b []byte) []byte { return Scrub(b, secrets) }
}

// Secrets returns the env values of d, ordered by key.
func (d *Definition) Secrets() []Secret {
	keys := make([]string, 0, len(d.Env))
	for k := range d.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Secret, len(keys))
	for i, k := range keys {
		out[i] = d.Env[k]
	}
	return out
}

// scrubNeedles returns the distinct values of at least MinScrubLen bytes.
func scrubNeedles(secrets []Secret) [][]byte {
	var out [][]byte
	for _, s := range secrets {
		if len(s) < MinScrubLen {
			continue
		}
		b := []byte(s)
		if !slices.ContainsFunc(out, func(o []byte) bool { return bytes.Equal(o, b) }) {
			out = append(out, b)
		}
	}
	return out
}

type span struct{ start, end int }

// coverage returns the merged byte ranges of text covered by an occurrence
// of any needle, plus [0, carry) when carry > 0.
func coverage(text []byte, needles [][]byte, carry int) []span {
	var spans []span
	if carry > 0 {
		spans = append(spans, span{0, min(carry, len(text))})
	}
	for _, n := range needles {
		for off := 0; off+len(n) <= len(text); {
			i := bytes.Index(text[off:], n)
			if i < 0 {
				break
			}
			spans = append(spans, span{off + i, off + i + len(n)})
			off += i + 1 // overlapping occurrences count too
		}
	}
	if len(spans) == 0 {
		return nil
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	merged := spans[:1]
	for _, s := range spans[1:] {
		last := &merged[len(merged)-1]
		if s.start <= last.end {
			last.end = max(last.end, s.end)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// render appends text to dst with each span replaced by Redacted.
func render(dst, text []byte, spans []span) []byte {
	prev := 0
	for _, s := range spans {
		dst = append(dst, text[prev:s.start]...)
		dst = append(dst, Redacted...)
		prev = s.end
	}
	return append(dst, text[prev:]...)
}

// ScrubWriter Scrubs a stream (a container's log) on its way to W. A secret
// split across two Writes is still caught: the writer holds back the last
// (longest secret - 1) bytes until more arrive or Close is called. It is not
// safe for concurrent use.
type ScrubWriter struct {
	w       io.Writer
	needles [][]byte
	keep    int // bytes held back: longest needle - 1
	pending []byte
	carry   int // leading bytes of pending known to be inside a secret
	out     []byte
	err     error
}

// NewScrubWriter returns a ScrubWriter writing to w.
func NewScrubWriter(w io.Writer, secrets []Secret) *ScrubWriter {
	sw := &ScrubWriter{w: w, needles: scrubNeedles(secrets)}
	for _, n := range sw.needles {
		sw.keep = max(sw.keep, len(n)-1)
	}
	return sw
}

// Write accepts p and writes whatever part of the stream can no longer be the
// start of a secret. It returns len(p) unless writing to W fails.
func (sw *ScrubWriter) Write(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if len(sw.needles) == 0 {
		n, err := sw.w.Write(p)
		sw.err = err
		return n, err
	}
	sw.pending = append(sw.pending, p...)
	cut := len(sw.pending) - sw.keep
	if cut <= 0 {
		return len(p), nil
	}
	// Every occurrence that starts before cut ends inside pending, so the
	// spans below are complete for the bytes that go out now.
	spans := coverage(sw.pending, sw.needles, sw.carry)
	carry := 0
	for _, s := range spans {
		if s.start < cut && s.end > cut {
			if s.start > 0 {
				cut = s.start // keep the whole secret for the next round
			} else {
				carry = s.end - cut // a run from the start: split it, remember the rest
			}
		}
	}
	var head []span
	for _, s := range spans {
		if s.start < cut {
			head = append(head, span{s.start, min(s.end, cut)})
		}
	}
	sw.out = render(sw.out[:0], sw.pending[:cut], head)
	sw.pending = append(sw.pending[:0], sw.pending[cut:]...)
	sw.carry = carry
	if _, err := sw.w.Write(sw.out); err != nil {
		sw.err = err
		return 0, err
	}
	return len(p), nil
}

// Close writes the held-back bytes, scrubbed. It does not close W.
func (sw *ScrubWriter) Close() error {
	if sw.err != nil {
		return sw.err
	}
	if len(sw.pending) == 0 {
		return nil
	}
	sw.out = render(sw.out[:0], sw.pending, coverage(sw.pending, sw.needles, sw.carry))
	sw.pending, sw.carry = sw.pending[:0], 0
	_, err := sw.w.Write(sw.out)
	sw.err = err
	return err
}
