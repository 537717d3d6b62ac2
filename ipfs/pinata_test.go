package ipfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/ipfs/kubotest"
)

const testJWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.dGVzdC1zaWduYXR1cmU"

// localPinata is the Pinata-compatible test endpoint in front of this package's gateway
// handler (a kubo-compatible add), and that handler's URL for fetching.
func localPinata(t *testing.T) (api, gateway string) {
	t.Helper()
	gateway = serve(t, NewGatewayHandler(newTestStore(t))).URL
	return kubotest.Pinata(t, gateway, testJWT), gateway
}

func TestPinataRoundTrip(t *testing.T) {
	api, gw := localPinata(t)
	p := &Pinata{APIURL: api, JWT: testJWT}
	ctx := context.Background()
	data := pattern(2*ChunkSize + 3)
	path := filepath.Join(t.TempDir(), "out.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c1, n, err := p.AddFile(ctx, path)
	if err != nil || n != int64(len(data)) || c1 != mustCID(t, data) {
		t.Fatalf("AddFile = %s, %d, %v", c1, n, err)
	}
	c2, _, err := p.AddBytes(ctx, "def.json", testDefinition)
	if err != nil || c2 != mustCID(t, testDefinition) {
		t.Fatalf("AddBytes = %s, %v", c2, err)
	}
	c3, n, err := p.AddJSON(ctx, "doc.json", []byte("{\n \"k\": [1, {\"x\": null}]\n}"))
	want := []byte(`{"k":[1,{"x":null}]}`)
	if err != nil || c3 != mustCID(t, want) || n != int64(len(want)) {
		t.Fatalf("AddJSON = %s, %d, %v", c3, n, err)
	}
	f := &Fetcher{Gateways: []string{gw}, Form: FormCAR}
	for c, w := range map[string][]byte{c1: data, c2: testDefinition, c3: want} {
		if got, err := f.Fetch(ctx, c); err != nil || !bytes.Equal(got, w) {
			t.Errorf("fetch %s: %d bytes, %v", c, len(got), err)
		}
	}
	if _, _, err := p.AddJSON(ctx, "x", []byte("{not json")); err == nil {
		t.Error("AddJSON accepted a document that is not JSON")
	}
}

// TestPinataNeverRevealsJWT: a wrong JWT is ErrPinataAuth; a server echoing the
// Authorization header in its errors or answers does not get it into an error or a log;
// the Secret prints redacted every way.
func TestPinataNeverRevealsJWT(t *testing.T) {
	api, _ := localPinata(t)
	ctx := context.Background()
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	_, _, err := (&Pinata{APIURL: api, JWT: "wrong", Retry: NoRetry, Log: &log}).AddBytes(ctx, "x", []byte("x"))
	var se *HTTPStatusError
	if !errors.Is(err, ErrPinataAuth) || !errors.As(err, &se) || se.StatusCode != 401 {
		t.Errorf("wrong JWT: err = %v, want ErrPinataAuth with HTTP 401", err)
	}

	for _, status := range []int{401, 500, 200} {
		echo := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"reason":"echo","details":"you sent %s"},"IpfsHash":%q}`, r.Header.Get("Authorization"), r.Header.Get("Authorization"))
		})).URL
		p := &Pinata{APIURL: echo, JWT: testJWT, Retry: Retry{Attempts: 2, Initial: time.Millisecond}, Log: &log}
		_, _, err := p.AddBytes(ctx, "x", []byte("x"))
		if err == nil {
			t.Fatalf("HTTP %d echo: no error", status)
		}
		_, _, jerr := p.AddJSON(ctx, "x", []byte(`{}`))
		for _, e := range []error{err, jerr} {
			if strings.Contains(e.Error(), testJWT) {
				t.Errorf("HTTP %d: error reveals the JWT: %v", status, e)
			}
		}
	}
	if strings.Contains(logs.String(), testJWT) {
		t.Errorf("log reveals the JWT:\n%s", logs.String())
	}
	s := Secret(testJWT)
	j, _ := json.Marshal(struct{ S Secret }{s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s), string(j),
		fmt.Sprintf("%+v", Pinata{JWT: s})} {
		if strings.Contains(out, testJWT) || strings.Contains(out, fmt.Sprintf("%x", testJWT)) {
			t.Errorf("Secret printed as %s", out)
		}
	}
	if s.Reveal() != testJWT {
		t.Error("Reveal lost the value")
	}
}

func TestPinataMismatchAndBadAnswers(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, answer string
		mismatch     bool
	}{
		{"other CID", `{"IpfsHash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","PinSize":20}`, true},
		{"no hash", `{"PinSize":20}`, false},
		{"not JSON", `<html>`, false},
	} {
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, tc.answer)
		})).URL
		_, _, err := (&Pinata{APIURL: srv, JWT: testJWT}).AddBytes(ctx, "x", []byte("different"))
		var me *UploadMismatchError
		if err == nil || errors.As(err, &me) != tc.mismatch {
			t.Errorf("%s: err = %v, want mismatch %v", tc.name, err, tc.mismatch)
		}
	}
	if _, _, err := (&Pinata{APIURL: "ftp://x", JWT: testJWT}).AddBytes(ctx, "x", nil); err == nil {
		t.Error("ftp API URL accepted")
	}
	if _, _, err := (&Pinata{APIURL: "http://127.0.0.1:1"}).AddBytes(ctx, "x", nil); err == nil {
		t.Error("empty JWT accepted")
	}
}

// flakyAdd fails the first n add requests with status, then hands them to next.
func flakyAdd(t *testing.T, n int32, status int, next http.Handler, hits *atomic.Int32) string {
	t.Helper()
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= n {
			io.Copy(io.Discard, r.Body)
			writeKuboError(w, status, 0, "try again")
			return
		}
		next.ServeHTTP(w, r)
	})).URL
}

func TestUploadRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	fast := Retry{Attempts: 4, Initial: time.Millisecond}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, pattern(ChunkSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fails  int32
		status int
		ok     bool
		hits   int32
	}{
		{2, 503, true, 3},  // retried until it works
		{9, 502, false, 4}, // tries spent
		{1, 400, false, 1}, // not transient
		{1, 429, true, 2},
	} {
		var hits atomic.Int32
		api := flakyAdd(t, tc.fails, tc.status, NewGatewayHandler(newTestStore(t)), &hits)
		c, _, err := (&Uploader{APIURL: api, Retry: fast}).AddFile(ctx, path)
		if (err == nil) != tc.ok || hits.Load() != tc.hits {
			t.Errorf("%d × HTTP %d: CID %q, err %v after %d requests; want ok %v after %d", tc.fails, tc.status, c, err, hits.Load(), tc.ok, tc.hits)
		}
	}
	// A refused connection is transient too; ctx ending stops the retries.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, _, err := (&Uploader{APIURL: "http://127.0.0.1:1", Retry: Retry{Attempts: 1000, Initial: time.Millisecond, Max: 5 * time.Millisecond}}).AddBytes(cctx, "x", []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "tries") {
		t.Errorf("refused until ctx ends: err = %v, want retries stopped by the deadline", err)
	}
	// A mismatch is never retried.
	var hits atomic.Int32
	liar := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"Name":"x","Hash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","Size":"1"}`+"\n")
	})).URL
	var me *UploadMismatchError
	if _, _, err := (&Uploader{APIURL: liar, Retry: fast}).AddFile(ctx, path); !errors.As(err, &me) || hits.Load() != 1 {
		t.Errorf("mismatch: err = %v after %d requests, want *UploadMismatchError after 1", err, hits.Load())
	}
}
