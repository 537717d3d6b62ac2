package ipfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/ipfs/kubotest"
)

// testDefinition is a job definition as the SDK pins it (small JSON).
var testDefinition = []byte(`{"version":"0.1","type":"container","meta":{"trigger":"cli"},"ops":[{"type":"container/run","id":"hello","args":{"image":"busybox","cmd":["echo","hello"]}}]}`)

// TestKuboRoundTrip uploads a definition and results (a file over one DAG level) to a real
// kubo with Uploader, and fetches each back through kubo's gateway with Fetcher in both
// forms; Uploader fails on any CID other than the locally computed one, and Fetcher
// verifies what it gets.
func TestKuboRoundTrip(t *testing.T) {
	node := kubotest.Start(t)
	up := &Uploader{APIURL: node.API}
	ctx := context.Background()

	result := filepath.Join(t.TempDir(), "result.bin")
	resultData := pattern((MaxLinks+1)*ChunkSize + 5) // two levels of links
	if err := os.WriteFile(result, resultData, 0o600); err != nil {
		t.Fatal(err)
	}
	defCID, n, err := up.AddBytes(ctx, "definition.json", testDefinition)
	if err != nil || n != int64(len(testDefinition)) {
		t.Fatalf("AddBytes(definition) = %s, %d, %v", defCID, n, err)
	}
	resCID, n, err := up.AddFile(ctx, result)
	if err != nil || n != int64(len(resultData)) {
		t.Fatalf("AddFile(result) = %s, %d, %v", resCID, n, err)
	}
	emptyCID, _, err := up.AddBytes(ctx, "empty", nil)
	if err != nil {
		t.Fatalf("AddBytes(empty): %v", err)
	}
	for _, form := range []FetchForm{FormCAR, FormPlain, FormAuto} {
		f := &Fetcher{Gateways: []string{node.Gateway}, MaxBytes: 64 << 20, PerGatewayTimeout: time.Minute, Form: form}
		for _, tc := range []struct {
			cid  string
			want []byte
		}{{defCID, testDefinition}, {resCID, resultData}, {emptyCID, nil}} {
			got, err := f.Fetch(ctx, tc.cid)
			if err != nil {
				t.Fatalf("form %q: fetch %s: %v", form, tc.cid, err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("form %q: %s: got %d bytes, want the %d uploaded", form, tc.cid, len(got), len(tc.want))
			}
		}
	}
}

// TestKuboAgreesWithComputeCID adds content of sizes around the chunk and link boundaries
// to kubo; Add fails unless kubo's CID is the one ComputeCID gives.
func TestKuboAgreesWithComputeCID(t *testing.T) {
	node := kubotest.Start(t)
	up := &Uploader{APIURL: node.API}
	for _, data := range [][]byte{
		[]byte("hello world\n"), make([]byte, ChunkSize), pattern(2*ChunkSize + 1), pattern(1000000),
	} {
		if _, _, err := up.Add(context.Background(), "content.bin", bytes.NewReader(data)); err != nil {
			t.Fatalf("%d bytes: %v", len(data), err)
		}
	}
}

// TestKuboPinataRoundTrip pins a file and a JSON document through the Pinata-compatible
// endpoint in front of kubo, then fetches them from kubo's gateway.
func TestKuboPinataRoundTrip(t *testing.T) {
	node := kubotest.Start(t)
	const jwt = "eyJhbGciOiJIUzI1NiJ9.test-pinata-jwt.c2lnbmF0dXJl"
	p := &Pinata{APIURL: kubotest.Pinata(t, node.API, jwt), JWT: Secret(jwt)}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "out.bin")
	data := pattern(3*ChunkSize + 7)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	fileCID, _, err := p.AddFile(ctx, path)
	if err != nil {
		t.Fatalf("AddFile: %v", err)
	}
	jsonCID, _, err := p.AddJSON(ctx, "definition.json", []byte("{\n  \"a\": [1, 2],\n  \"b\": \"x\"\n}\n"))
	if err != nil {
		t.Fatalf("AddJSON: %v", err)
	}
	f := &Fetcher{Gateways: []string{node.Gateway}, Form: FormCAR, PerGatewayTimeout: time.Minute}
	if got, err := f.Fetch(ctx, fileCID); err != nil || !bytes.Equal(got, data) {
		t.Errorf("fetch pinned file: %d bytes, %v", len(got), err)
	}
	if got, err := f.Fetch(ctx, jsonCID); err != nil || string(got) != `{"a":[1,2],"b":"x"}` {
		t.Errorf("fetch pinned JSON: %q, %v", got, err)
	}

	bad := &Pinata{APIURL: p.APIURL, JWT: Secret("wrong-" + jwt), Retry: NoRetry}
	_, _, err = bad.AddBytes(ctx, "x", []byte("x"))
	if !errors.Is(err, ErrPinataAuth) {
		t.Errorf("wrong JWT: err = %v, want ErrPinataAuth", err)
	}
	if err != nil && strings.Contains(err.Error(), jwt) {
		t.Errorf("error reveals the JWT: %v", err)
	}
}

// kuboCAR fetches the CAR of cid from kubo's gateway.
func kuboCAR(t *testing.T, gateway, cid string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, gateway+"/ipfs/"+cid+"?format=car", nil)
	req.Header.Set("Accept", carAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("kubo CAR of %s: HTTP %d, %v", cid, resp.StatusCode, err)
	}
	return b
}

// fixedGateway answers every request with body and Content-Type ctype, counting hits.
func fixedGateway(t *testing.T, body []byte, ctype string, hits *atomic.Int32) string {
	t.Helper()
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", ctype)
		w.Write(body)
	})).URL
}

// logBuffer is a zerolog target safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKuboLyingGatewaysSkipped puts gateways that lie in front of kubo's: one serving
// altered plain bytes, one serving kubo's CAR with a byte of a block altered, one serving
// the CAR of other content. Each is rejected as a *MismatchError, reported in the log,
// and kubo's gateway serves the content.
func TestKuboLyingGatewaysSkipped(t *testing.T) {
	node := kubotest.Start(t)
	ctx := context.Background()
	data := pattern(2*ChunkSize + 100)
	cid, _, err := (&Uploader{APIURL: node.API}).AddBytes(ctx, "data", data)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := (&Uploader{APIURL: node.API}).AddBytes(ctx, "other", []byte("other content"))
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(data)
	altered[ChunkSize+1] ^= 1
	goodCAR := kuboCAR(t, node.Gateway, cid)
	badBlockCAR := bytes.Clone(goodCAR)
	badBlockCAR[len(badBlockCAR)-10] ^= 1 // inside the last block's bytes
	otherCAR := kuboCAR(t, node.Gateway, other)

	var hits [3]atomic.Int32
	liars := []string{
		fixedGateway(t, altered, "application/octet-stream", &hits[0]),
		fixedGateway(t, badBlockCAR, carContentType, &hits[1]),
		fixedGateway(t, otherCAR, carContentType, &hits[2]),
	}
	var logs logBuffer
	log := zerolog.New(&logs)
	f := &Fetcher{Gateways: append(liars, node.Gateway), PerGatewayTimeout: time.Minute, Log: &log}
	got, err := f.Fetch(ctx, cid)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("Fetch returned bytes other than the content")
	}
	for i := range hits {
		if hits[i].Load() == 0 {
			t.Errorf("liar %d was not asked", i)
		}
		if !strings.Contains(logs.String(), liars[i]) {
			t.Errorf("log does not report liar %d (%s):\n%s", i, liars[i], logs.String())
		}
	}

	// Without kubo, the error lists each liar with its *MismatchError.
	f = &Fetcher{Gateways: liars, PerGatewayTimeout: time.Minute}
	_, err = f.Fetch(ctx, cid)
	var fe *FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want *FetchError", err)
	}
	if len(fe.Gateways) != 3 || len(fe.Lying()) != 3 {
		t.Fatalf("FetchError lists %d gateways, %d lying; want 3 and 3: %v", len(fe.Gateways), len(fe.Lying()), err)
	}
	wants := []struct {
		form  FetchForm
		block bool
	}{{FormPlain, false}, {FormCAR, true}, {FormCAR, false}}
	for i, g := range fe.Gateways {
		var mm *MismatchError
		if !errors.As(g, &mm) || mm.Want != cid || mm.Form != wants[i].form || (mm.Block != "") != wants[i].block {
			t.Errorf("gateway %d: %v (%#v); want a %s mismatch (block %v)", i, g, mm, wants[i].form, wants[i].block)
		}
	}
	if mm := new(MismatchError); errors.As(fe.Gateways[2], &mm) && mm.Got != other {
		t.Errorf("root mismatch names %s, want the other CAR's root %s", mm.Got, other)
	}
}

// TestKuboHangingGatewayAbandoned puts gateways that hang (before the headers, and in the
// middle of the body) in front of kubo's: each is abandoned at its deadline with
// context.DeadlineExceeded and kubo's gateway serves the content.
func TestKuboHangingGatewayAbandoned(t *testing.T) {
	node := kubotest.Start(t)
	ctx := context.Background()
	cid, _, err := (&Uploader{APIURL: node.API}).AddBytes(ctx, "def.json", testDefinition)
	if err != nil {
		t.Fatal(err)
	}
	hangs := []string{hangingGateway(t, false), hangingGateway(t, true)}
	f := &Fetcher{Gateways: append(hangs, node.Gateway), PerGatewayTimeout: 200 * time.Millisecond}
	got, err := f.Fetch(ctx, cid)
	if err != nil || !bytes.Equal(got, testDefinition) {
		t.Fatalf("Fetch = %q, %v", got, err)
	}
	f.Gateways = hangs
	_, err = f.Fetch(ctx, cid)
	var fe *FetchError
	if !errors.As(err, &fe) || len(fe.Gateways) != 2 {
		t.Fatalf("err = %v, want a *FetchError of 2 gateways", err)
	}
	for i, g := range fe.Gateways {
		if !errors.Is(g, context.DeadlineExceeded) {
			t.Errorf("hanging gateway %d: %v, want its deadline", i, g)
		}
	}
}
