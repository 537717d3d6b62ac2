package statusapi

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/jobdef"
)

type sink struct{ bytes.Buffer }

// FuzzScrubStream: however a log is split into writes, what scrubStream sends
// holds no secret, and equals the input once every secret and every
// "[redacted]" marker is removed from both.
func FuzzScrubStream(f *testing.F) {
	f.Add([]byte("token=hn-secret-value\nmore hn-secret-value"), "hn-secret-value", "abcd", uint8(3))
	f.Add([]byte("aaaaaaaaab"), "aaab", "aaaa", uint8(1))
	f.Add([]byte("-----BEGIN KEY-----\nline2\n-----END"), "-----BEGIN KEY-----\nline2\n", "END-", uint8(7))
	f.Fuzz(func(t *testing.T, log []byte, s1, s2 string, step uint8) {
		for _, s := range []string{s1, s2} {
			if strings.ContainsAny(s, "[]") || len(s) > 64 {
				t.Skip()
			}
		}
		secrets := []jobdef.Secret{jobdef.Secret(s1), jobdef.Secret(s2)}
		var out sink
		st := newScrubStream(&out, secrets)
		n := int(step%16) + 1
		for i := 0; i < len(log); i += n {
			st.Write(log[i:min(i+n, len(log))])
		}
		st.Close()
		got := out.Bytes()
		strip := func(b []byte) []byte {
			b = bytes.ReplaceAll(b, []byte(jobdef.Redacted), nil)
			return b
		}
		for _, s := range []string{s1, s2} {
			if len(s) >= jobdef.MinScrubLen && bytes.Contains(got, []byte(s)) {
				t.Fatalf("secret %q in %q", s, got)
			}
		}
		// Scrubbing the whole log at once and the stream agree once the
		// markers are removed (adjacent secrets may be one marker or two).
		if want := strip(jobdef.Scrub(log, secrets)); !bytes.Equal(strip(got), want) {
			t.Fatalf("stream %q, one-shot %q", got, jobdef.Scrub(log, secrets))
		}
	})
}
