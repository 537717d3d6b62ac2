package ipfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func FuzzDigestFromCID(f *testing.F) {
	for _, tc := range knownAnswers {
		f.Add(tc.want)
	}
	for _, s := range []string{
		"", "Qm", "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51", "../../etc/passwd",
		"bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby", "1oui", "111111",
		"8VxAkNuUDzKc3zqKzuaBh5q7TvawM2NJhp4GqtbtJVrmqXHRVV83ebDibFeZcCCZNjiU9xMZf87jarpzmp8jQSgmwY",
		"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\x00", "Qm\u00e9",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := DigestFromCID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCID) {
				t.Fatalf("error %v does not wrap ErrInvalidCID", err)
			}
			if !d.IsZero() {
				t.Fatalf("non-zero digest %x with error", d)
			}
			return
		}
		if d.IsZero() {
			t.Fatal("zero digest accepted")
		}
		if got := CIDFromDigest(d); got != s {
			t.Fatalf("CIDFromDigest(DigestFromCID(%q)) = %q", s, got)
		}
		if len(s) != CIDLen || !strings.HasPrefix(s, "Qm") || strings.ContainsAny(s, "./\\\x00") {
			t.Fatalf("accepted %q, which is no CIDv0 file name", s)
		}
	})
}

// fuzzStore is a Store on tmpfs when there is one: fuzzing fsyncs on every add.
func fuzzStore(f *testing.F) *Store {
	dir := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "ipfs-fuzz-")
		if err == nil {
			dir = d
			f.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	if dir == "" {
		dir = f.TempDir()
	}
	s, err := NewStore(dir)
	if err != nil {
		f.Fatal(err)
	}
	return s
}

func FuzzGatewayPath(f *testing.F) {
	s := fuzzStore(f)
	h := NewGatewayHandler(s)
	stored := mustPut(f, s, []byte("hello world\n"))
	for _, p := range []string{
		"/ipfs/" + stored, "/ipfs/" + stored + "/", "/ipfs/../secret", "/ipfs/..", "/ipfs/",
		"/ipfs//" + stored, "/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", "/api/v0/add", "/",
		"/ipfs/" + tempPrefix + "1", "/ipfs/\x00",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := parseGatewayPath(p)
		if err == nil {
			if checkCID(c) != nil || strings.ContainsAny(c, "/.") || "/ipfs/"+c != p {
				t.Fatalf("parseGatewayPath(%q) = %q", p, c)
			}
		}
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, &http.Request{Method: method, URL: &url.URL{Path: p}, Header: http.Header{}})
			switch {
			case p == "/ipfs/"+stored:
				if rec.Code != 200 {
					t.Fatalf("%s %q = %d, want 200", method, p, rec.Code)
				}
			case p == addPath:
				if rec.Code != 405 {
					t.Fatalf("%s %q = %d, want 405", method, p, rec.Code)
				}
			case rec.Code != 400 && rec.Code != 404:
				t.Fatalf("%s %q = %d, want 400 or 404", method, p, rec.Code)
			case err == nil && rec.Code != 404:
				t.Fatalf("%s %q (a valid absent CID) = %d, want 404", method, p, rec.Code)
			}
		}
	})
}

func FuzzAddMultipart(f *testing.F) {
	s := fuzzStore(f)
	h := NewGatewayHandler(s, WithMaxUploadBytes(1<<20))
	good := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%20b\"\r\nContent-Type: application/octet-stream\r\n\r\nhello world\n\r\n--B--\r\n"
	two := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../b\"\r\n\r\ny\r\n--B--\r\n"
	for _, seed := range []struct{ boundary, query, body string }{
		{"B", "cid-version=0&pin=true", good},
		{"B", "", two},
		{"B", "only-hash=true", good},
		{"B", "cid-version=1", good},
		{"B", "", good[:40]},
		{"B", "", "--B--\r\n"},
		{"B", "", strings.Replace(good, "application/octet-stream", "application/x-directory", 1)},
		{"", "", good},
		{"B", "", "--B\r\n\r\n\r\n--B--\r\n"},
	} {
		f.Add(seed.boundary, seed.query, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, boundary, query string, body []byte) {
		req := &http.Request{
			Method: http.MethodPost,
			URL:    &url.URL{Path: addPath, RawQuery: query},
			Header: http.Header{"Content-Type": {"multipart/form-data; boundary=" + boundary}},
			Body:   io.NopCloser(bytes.NewReader(body)),
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
		case 400, 413:
			var ke kuboError
			if err := json.Unmarshal(rec.Body.Bytes(), &ke); err != nil || ke.Type != "error" || ke.Message == "" {
				t.Fatalf("status %d with body %q, want kubo's error JSON", rec.Code, rec.Body.Bytes())
			}
			return
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
		q, _ := url.ParseQuery(query)
		args, _ := parseAddArgs(q)
		onlyHash := args.onlyHash
		sc := bufio.NewScanner(rec.Body)
		lines := 0
		for sc.Scan() {
			lines++
			var ev addEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("answer line %q: %v", sc.Bytes(), err)
			}
			if checkCID(ev.Hash) != nil || ev.Name == "" || ev.Size == "" {
				t.Fatalf("answer line %+v", ev)
			}
			if onlyHash {
				continue
			}
			rc, _, err := s.Open(ev.Hash)
			if err != nil {
				t.Fatalf("answered %s but: %v", ev.Hash, err)
			}
			got, _, err := ComputeCID(rc)
			rc.Close()
			if err != nil || got.String() != ev.Hash {
				t.Fatalf("stored content of %s hashes to %s (%v)", ev.Hash, got, err)
			}
		}
		if lines == 0 {
			t.Fatal("200 with no answer line")
		}
	})
}

func FuzzParseAddResponse(f *testing.F) {
	for _, name := range []string{"kubo-0.42.0-add-one.jsonl", "kubo-0.42.0-add-two.jsonl", "kubo-0.42.0-add-progress.jsonl", "kubo-0.42.0-add-error.json"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("{\n"))
	f.Add([]byte(`{"Hash":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseAddResponse(bytes.NewReader(b))
		if err == nil && ev.Hash == "" {
			t.Fatal("success without a Hash")
		}
	})
}

func FuzzParseGatewayList(f *testing.F) {
	for _, s := range []string{
		"https://ipfs.io", " https://ipfs.io/ , http://127.0.0.1:8080 ", "https://ipfs.io,", "ftp://x",
		"https://u:p@x", "https://x/ipfs/", "https://x/p%2Fq", "http://[::1]:8080/a/", "https://x?#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ParseGatewayList(s)
		if err != nil {
			return
		}
		for _, gw := range out {
			u, perr := url.Parse(gw)
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || strings.HasSuffix(gw, "/") {
				t.Fatalf("ParseGatewayList(%q) gave %q", s, gw)
			}
		}
		again, err := ParseGatewayList(strings.Join(out, ","))
		if len(out) > 0 && (err != nil || !slices.Equal(again, out)) {
			t.Fatalf("not idempotent: %q → %q → %q, %v", s, out, again, err)
		}
	})
}

// FuzzReadCAR feeds arbitrary bytes to the CAR verifier as a gateway's answer for a fixed
// root: it must never panic, must return exactly the root's content when it accepts, and
// must classify every refusal.
func FuzzReadCAR(f *testing.F) {
	// Small chunks keep the inputs small: a root over 12 leaves of 100 bytes. The
	// verifier walks any UnixFS DAG, whatever its chunking.
	data := pattern(1150)
	placeholder := cid.MustParse("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
	root, err := writeCARChunked(context.Background(), io.Discard, placeholder, bytes.NewReader(data), 100)
	if err != nil {
		f.Fatal(err)
	}
	var good bytes.Buffer
	if _, err := writeCARChunked(context.Background(), &good, root, bytes.NewReader(data), 100); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:len(good.Bytes())/2])
	flipped := bytes.Clone(good.Bytes())
	flipped[len(flipped)-3] ^= 1
	f.Add(flipped)
	f.Add([]byte{})
	f.Add([]byte("\x11\xa2eroots\x80gversion\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readCAR(context.Background(), bytes.NewReader(b), root, 1<<20, "fuzz")
		if err == nil {
			if !bytes.Equal(got, data) {
				t.Fatalf("accepted %d bytes that are not the root's content", len(got))
			}
			return
		}
		var mm *MismatchError
		var tl *TooLargeError
		if !errors.Is(err, ErrBadCAR) && !errors.As(err, &mm) && !errors.As(err, &tl) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

// FuzzPinataAnswer feeds arbitrary answers to Pinata's answer and error parsers.
func FuzzPinataAnswer(f *testing.F) {
	for _, s := range []string{
		`{"IpfsHash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","PinSize":20,"Timestamp":"2024-01-01T00:00:00Z"}`,
		`{"error":{"reason":"INVALID_CREDENTIALS","details":"Invalid/expired credentials"}}`,
		`{"error":"bad"}`, `{"IpfsHash":1}`, `[]`, `null`, ``, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parsePinataAnswer(bytes.NewReader(b))
		if err == nil && h == "" {
			t.Fatal("accepted an answer without IpfsHash")
		}
		msg := pinataErrorMessage(bytes.NewReader(b))
		if len(msg) > 300 || strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 }) {
			t.Fatalf("error message %q is not a short one-line string", msg)
		}
	})
}
