package jobdef

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

const secretValue = "hf_SuperSecretToken123"

func TestSecretNeverPrinted(t *testing.T) {
	d, err := Parse(def(fw, opOK, `"env":{"HF_TOKEN":"`+secretValue+`","SHORT":"ab"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d.Env["HF_TOKEN"].Reveal() != secretValue {
		t.Fatalf("Reveal = %q", d.Env["HF_TOKEN"].Reveal())
	}
	var logBuf bytes.Buffer
	logger := zerolog.New(&logBuf)
	logger.Info().Interface("def", d).Interface("defv", *d).Object("tok", d.Env["HF_TOKEN"]).
		Stringer("s", d.Env["HF_TOKEN"]).Interface("env", d.Env).Msg("x")
	js, _ := json.Marshal(d)
	jsv, _ := json.Marshal(*d)
	text, _ := d.Env["HF_TOKEN"].MarshalText()
	outputs := map[string]string{
		"fmt on pointer":   fmt.Sprintf("%v %+v %#v %s %q", d, d, d, d, d),
		"fmt on value":     fmt.Sprintf("%v %+v %#v %s", *d, *d, *d, *d),
		"fmt on env":       fmt.Sprintf("%v %+v %#v %s %q %x", d.Env, d.Env, d.Env, d.Env, d.Env, d.Env),
		"fmt on secret":    fmt.Sprintf("%v %+v %#v %s %q %x %X %10.3s %T", d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"], d.Env["HF_TOKEN"]),
		"fmt on secrets":   fmt.Sprint(d.Secrets()),
		"json pointer":     string(js),
		"json value":       string(jsv),
		"MarshalText":      string(text),
		"zerolog":          logBuf.String(),
		"String":           d.String(),
		"fmt on operation": fmt.Sprintf("%+v", d.Operations),
	}
	for name, out := range outputs {
		if strings.Contains(out, secretValue) || strings.Contains(out, "SuperSecret") {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if name != "fmt on operation" && name != "String" && !strings.Contains(out, Redacted) {
			t.Errorf("%s does not show %s: %s", name, Redacted, out)
		}
	}
	// The clear values go to the container, and only there.
	if env := strings.Join(d.EnvList(), " "); !strings.Contains(env, "HF_TOKEN="+secretValue) {
		t.Errorf("EnvList lacks the clear value: %s", env)
	}
}

func TestParseErrorsNeverEchoSecrets(t *testing.T) {
	const s = "TOPSECRETVALUE"
	docs := map[string]string{
		"value too long":       `{"framework":"pytorch",` + opOK + `,"env":{"A":"` + s + strings.Repeat("x", MaxEnvValueBytes) + `"}}`,
		"value with NUL":       `{"framework":"pytorch",` + opOK + `,"env":{"A":"` + s + `\u0000"}}`,
		"value not a string":   `{"framework":"pytorch",` + opOK + `,"env":{"A":["` + s + `"]}}`,
		"control char inside":  `{"framework":"pytorch",` + opOK + `,"env":{"A":"` + s + "\x01" + `"}}`,
		"unquoted value":       `{"framework":"pytorch",` + opOK + `,"env":{"A":` + s + `}}`,
		"bad key and value":    `{"framework":"pytorch",` + opOK + `,"env":{"1A":"` + s + `"}}`,
		"reserved key":         `{"framework":"pytorch",` + opOK + `,"env":{"HYPERNODE_X":"` + s + `"}}`,
		"truncated in value":   `{"framework":"pytorch",` + opOK + `,"env":{"A":"` + s,
		"unknown field beside": `{"framework":"pytorch",` + opOK + `,"env":{"A":"` + s + `"},"bogus":1}`,
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), "TOPSECRET") || strings.Contains(err.Error(), "'T'") {
				t.Errorf("error echoes the value: %v", err)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	secrets := []Secret{"hunter22", "abc", "token-xyz", "xyz-more"}
	tests := []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"pw=hunter22!", "pw=[redacted]!"},
		{"hunter22hunter22", "[redacted]"},
		{"short abc stays", "short abc stays"}, // below MinScrubLen
		{"overlap token-xyz-more end", "overlap [redacted] end"},
		{"a hunter2 b", "a hunter2 b"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := string(Scrub([]byte(tt.in), secrets)); got != tt.want {
			t.Errorf("Scrub(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	d, err := Parse(def(fw, opOK, `"env":{"T":"`+secretValue+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	scrub := Scrubber(d)
	if got := string(scrub([]byte("log: " + secretValue + "\n"))); got != "log: [redacted]\n" {
		t.Errorf("Scrubber = %q", got)
	}
}

// TestScrubWriterMatchesScrub: however a stream is cut into writes, the
// ScrubWriter's output hides every secret occurrence, and equals Scrub of
// the whole text whenever Scrub's output has no two adjacent redactions.
func TestScrubWriterMatchesScrub(t *testing.T) {
	secrets := []Secret{"s3cr3t-value", "abcdabcd", "zzzz"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"s3cr3t-value", "abcd", "zz", "z", " ", "x", "\n", "s3cr3t", "-value", "abcdabcdabcd"}
	for iter := range 2000 {
		var text strings.Builder
		for range rng.IntN(40) {
			text.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		in := []byte(text.String())
		var out bytes.Buffer
		sw := NewScrubWriter(&out, secrets)
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 9))
			if _, err := sw.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		for _, s := range secrets {
			if strings.Contains(got, string(s)) {
				t.Fatalf("iter %d: %q leaks %q in %q", iter, in, s, got)
			}
		}
		// Collapsing runs of redactions makes the stream and the whole-text
		// results comparable (a run split across writes may be redacted twice).
		collapse := func(s string) string {
			for strings.Contains(s, Redacted+Redacted) {
				s = strings.ReplaceAll(s, Redacted+Redacted, Redacted)
			}
			return s
		}
		if want := collapse(string(Scrub(in, secrets))); collapse(got) != want {
			t.Fatalf("iter %d: stream %q\n got %q\nwant %q", iter, in, got, want)
		}
	}
}

func TestScrubWriterNoSecrets(t *testing.T) {
	var out bytes.Buffer
	sw := NewScrubWriter(&out, []Secret{"ab"}) // too short to scrub
	if _, err := sw.Write([]byte("ab cd")); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ab cd" {
		t.Errorf("got %q", out.String())
	}
}
