package jobdef

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addFileSeeds(f *testing.F, patterns ...string) {
	f.Helper()
	for _, p := range patterns {
		files, err := filepath.Glob(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzParse: Parse never panics; what it accepts re-validates and survives
// a Marshal/Parse round trip; what it rejects is a non-empty, bounded
// ValidationErrors.
func FuzzParse(f *testing.F) {
	addFileSeeds(f, filepath.Join(casesDir, "*.json"), filepath.Join(casesDir, "*.yaml"), "../testdata/jobs/*.json")
	for _, s := range []string{
		`{"framework":"pytorch","operations":[{"type":"run","command":["a","b"],"workdir":"/w"}],"timeout":"60","resources":{"gpus":"all","min_vram_gb":8}}`,
		`{"image":"x","operations":[{"type":"run","command":"y"}],"env":{"A":"b","A":"c"},"x-a":1}`,
		`{"framework":"ollama","operations":[{"type":"run","command":"y"}],"outputs":"/workspace/o","input":{"k":[1,2,{"z":null}]}}`,
		`{"operations":null}`, `[]`, `{`, `{"a":1e999}`, `{"timeout":-0.0}`,
		`{"image":"x","operations":[{"type":"run","command":"y"}],"env":{"K":"` + fuzzCanary + `","1X":"` + fuzzCanary + `"}}`,
		`{"framework":"nope","operations":[],"env":{"K":"` + fuzzCanary + `x\u0000"},"timeout":0}`,
		`{"env":{"K":"` + fuzzCanary + `",`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			if d != nil {
				t.Fatal("definition returned with an error")
			}
			// A value never reaches an error: the canary, when it appears once in the
			// input and as a value (not a key), must not appear in the error.
			if bytes.Count(b, []byte(fuzzCanary)) == 1 && bytes.Contains(b, []byte(`:"`+fuzzCanary)) && strings.Contains(err.Error(), fuzzCanary) {
				t.Fatalf("error reveals an env value: %v", err)
			}
			var es ValidationErrors
			if !errors.As(err, &es) || len(es) == 0 || len(es) > MaxReportedErrors+1 || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error of the wrong shape: %#v", err)
			}
			for _, e := range es {
				if e.Rule == "" {
					t.Fatalf("empty rule in %v", err)
				}
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("parsed definition does not re-validate: %v", err)
		}
		if d.ImageRef() == "" || len(d.EnvList()) != len(d.Env)+2 {
			t.Fatalf("accessors: image %q env %d", d.ImageRef(), len(d.EnvList()))
		}
		c1, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		d2, err := Parse(c1)
		if err != nil {
			t.Fatalf("Parse(Marshal(d)) = %v\n%s", err, c1)
		}
		c2, err := json.Marshal(d2)
		if err != nil {
			t.Fatal(err)
		}
		if string(c1) != string(c2) {
			t.Fatalf("round trip differs\n%s\n%s", c1, c2)
		}
	})
}

// fuzzCanary is an env value FuzzParse watches for in error texts.
const fuzzCanary = "canary-7f3a9c-secret"

// FuzzParseResult: ParseResult never panics, and what it accepts marshals
// to a document it accepts again, byte-identical after one more round.
func FuzzParseResult(f *testing.F) {
	if b, err := sampleResult().Marshal(); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"job":"j","node":"n","status":"succeeded","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z","operations":[],"outputs":[]}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResult(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("error not classified: %v", err)
			}
			return
		}
		m1, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseResult(m1)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, m1)
		}
		m2, _ := r2.Marshal()
		if string(m1) != string(m2) {
			t.Fatalf("not stable\n%s\n%s", m1, m2)
		}
	})
}

// FuzzScrub: no secret survives Scrub or a ScrubWriter fed in two parts.
func FuzzScrub(f *testing.F) {
	f.Add([]byte("token=abcdefgh and abcd"), "abcdefgh", "cdefxx", 5)
	f.Add([]byte("aaaaaaaaaa"), "aaaa", "aaaaa", 3)
	f.Fuzz(func(t *testing.T, text []byte, s1, s2 string, cut int) {
		secrets := []Secret{Secret(s1), Secret(s2)}
		// A leak is a secret inside a stretch of output between two
		// redactions (across one, text and "[redacted]" can form it).
		check := func(what string, out []byte) {
			for _, piece := range strings.Split(string(out), Redacted) {
				for _, s := range secrets {
					if len(s) >= MinScrubLen && strings.Contains(piece, string(s)) {
						t.Fatalf("%s leaks %q: %q", what, s, out)
					}
				}
			}
		}
		check("Scrub", Scrub(text, secrets))
		var buf writerBuf
		sw := NewScrubWriter(&buf, secrets)
		if cut < 0 {
			cut = -cut
		}
		if len(text) > 0 {
			cut %= len(text) + 1
		} else {
			cut = 0
		}
		_, _ = sw.Write(text[:cut])
		_, _ = sw.Write(text[cut:])
		_ = sw.Close()
		check("ScrubWriter", buf)
	})
}

type writerBuf []byte

func (w *writerBuf) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }
