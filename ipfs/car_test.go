package ipfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"

	car "github.com/ipld/go-car/v2"
)

// getCAR asks the gateway at base for the CAR form of c and returns the body.
func getCAR(t *testing.T, base, c string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/ipfs/"+c, nil)
	req.Header.Set("Accept", carAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != carContentType {
		t.Fatalf("CAR of %s: HTTP %d, Content-Type %q", c, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchCARFromLocalGateway(t *testing.T) {
	data := [][]byte{nil, []byte("hello world\n"), pattern(ChunkSize), pattern(3*ChunkSize + 5)}
	gw, cids := localGateway(t, data...)
	f := &Fetcher{Gateways: []string{gw}, Form: FormCAR, PerGatewayTimeout: 10 * time.Second}
	for i, want := range data {
		got, err := f.Fetch(context.Background(), cids[i])
		if err != nil {
			t.Fatalf("%d bytes: %v", len(want), err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d bytes: Fetch returned %d other bytes", len(want), len(got))
		}
	}
	// The CAR holds the root and one block per chunk, every block matching its CID.
	body := getCAR(t, gw, cids[3])
	br, err := car.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || br.Roots[0].String() != cids[3] {
		t.Fatalf("roots %v, want [%s]", br.Roots, cids[3])
	}
	n := 0
	for ; ; n++ {
		if _, err := br.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err) // go-car verifies each block's hash
		}
	}
	if n != 5 {
		t.Errorf("CAR of 4 chunks holds %d blocks, want 5", n)
	}
}

// carOf builds a CAR with the given roots and blocks.
func carOf(t testing.TB, roots []cid.Cid, blks ...blocks.Block) []byte {
	t.Helper()
	var buf bytes.Buffer
	sc, err := storage.NewWritable(&buf, roots, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blks {
		if err := sc.Put(context.Background(), b.Cid().KeyString(), b.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestReadCARRejects(t *testing.T) {
	data := pattern(3*ChunkSize + 5)
	gw, cids := localGateway(t, data)
	root := cid.MustParse(cids[0])
	good := getCAR(t, gw, cids[0])
	ctx := context.Background()
	if got, err := readCAR(ctx, bytes.NewReader(good), root, 1<<20, "gw"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("good CAR: %d bytes, %v", len(got), err)
	}

	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40 // inside a leaf's bytes
	var mm *MismatchError
	if _, err := readCAR(ctx, bytes.NewReader(flipped), root, 1<<20, "gw"); !errors.As(err, &mm) || mm.Block == "" || mm.Form != FormCAR {
		t.Errorf("altered block: err = %v, want a block *MismatchError", err)
	}

	// Every block intact but the last leaf missing: the DAG walk fails.
	br, _ := car.NewBlockReader(bytes.NewReader(good))
	var blks []blocks.Block
	for {
		b, err := br.Next()
		if err != nil {
			break
		}
		blks = append(blks, b)
	}
	short := carOf(t, []cid.Cid{root}, append(blks[:2:2], blks[len(blks)-1])...)
	if _, err := readCAR(ctx, bytes.NewReader(short), root, 1<<20, "gw"); !errors.Is(err, ErrBadCAR) {
		t.Errorf("missing blocks: err = %v, want ErrBadCAR", err)
	}
	if _, err := readCAR(ctx, bytes.NewReader(good[:len(good)-100]), root, 1<<20, "gw"); !errors.Is(err, ErrBadCAR) {
		t.Errorf("truncated stream: err = %v, want ErrBadCAR", err)
	}

	// Another root.
	other := cid.MustParse(mustCID(t, []byte("other")))
	if _, err := readCAR(ctx, bytes.NewReader(carOf(t, []cid.Cid{other}, blks...)), root, 1<<20, "gw"); !errors.As(err, &mm) || mm.Got != other.String() {
		t.Errorf("other root: err = %v, want a root *MismatchError naming %s", err, other)
	}

	// A block of another codec (dag-cbor), correctly hashed.
	sum, _ := mh.Sum([]byte{0xa0}, mh.SHA2_256, -1)
	cbor, _ := blocks.NewBlockWithCid([]byte{0xa0}, cid.NewCidV1(cid.DagCBOR, sum))
	if _, err := readCAR(ctx, bytes.NewReader(carOf(t, []cid.Cid{root}, cbor)), root, 1<<20, "gw"); !errors.Is(err, ErrBadCAR) {
		t.Errorf("dag-cbor block: err = %v, want ErrBadCAR", err)
	}

	// Over the limit: the content, and the stream.
	var tl *TooLargeError
	if _, err := readCAR(ctx, bytes.NewReader(good), root, ChunkSize, "gw"); !errors.As(err, &tl) {
		t.Errorf("content over the limit: err = %v, want *TooLargeError", err)
	}
	var padding []blocks.Block // distinct raw blocks: 1.25 MiB of stream for 16 bytes of content
	for i := range 5 {
		b := pattern(ChunkSize)
		b[0] = byte(i)
		sum, _ := mh.Sum(b, mh.SHA2_256, -1)
		blk, _ := blocks.NewBlockWithCid(b, cid.NewCidV1(cid.Raw, sum))
		padding = append(padding, blk)
	}
	if _, err := readCAR(ctx, bytes.NewReader(carOf(t, []cid.Cid{root}, padding...)), root, 16, "gw"); !errors.As(err, &tl) {
		t.Errorf("stream over the limit: err = %v, want *TooLargeError", err)
	}
	if _, err := readCAR(ctx, bytes.NewReader([]byte("not a car")), root, 1<<20, "gw"); !errors.Is(err, ErrBadCAR) {
		t.Errorf("garbage: err = %v, want ErrBadCAR", err)
	}
}

// mustCID is the CIDv0 of b.
func mustCID(t testing.TB, b []byte) string {
	t.Helper()
	c, _, err := computeCIDString(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFetchForms: FormCAR never accepts a gateway's plain answer; FormAuto verifies a
// plain answer to its CAR request, and asks again plain when the CAR request is refused.
func TestFetchForms(t *testing.T) {
	want := []byte("hello world\n")
	c := mustCID(t, want)
	ctx := context.Background()

	plainOnly := fixedGatewayHits(t, want, "text/plain", nil)
	if _, err := (&Fetcher{Gateways: []string{plainOnly}, Form: FormCAR}).Fetch(ctx, c); err == nil {
		t.Error("FormCAR accepted a plain answer")
	}
	if got, err := (&Fetcher{Gateways: []string{plainOnly}}).Fetch(ctx, c); err != nil || !bytes.Equal(got, want) {
		t.Errorf("FormAuto, plain answer: %q, %v", got, err)
	}

	var carAsked, plainAsked atomic.Int32
	refusing := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "car" {
			carAsked.Add(1)
			http.Error(w, "no CAR here", http.StatusNotAcceptable)
			return
		}
		plainAsked.Add(1)
		w.Write(want)
	})).URL
	if got, err := (&Fetcher{Gateways: []string{refusing}}).Fetch(ctx, c); err != nil || !bytes.Equal(got, want) {
		t.Errorf("FormAuto, CAR refused: %q, %v", got, err)
	}
	if carAsked.Load() != 1 || plainAsked.Load() != 1 {
		t.Errorf("asked CAR %d and plain %d times, want 1 and 1", carAsked.Load(), plainAsked.Load())
	}
	if _, err := (&Fetcher{Gateways: []string{refusing}, Form: "tar"}).Fetch(ctx, c); err == nil {
		t.Error("unknown form accepted")
	}
}

// fixedGatewayHits answers every request with body and Content-Type ctype.
func fixedGatewayHits(t *testing.T, body []byte, ctype string, hits *atomic.Int32) string {
	t.Helper()
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		w.Header().Set("Content-Type", ctype)
		w.Write(body)
	})).URL
}

func TestGatewayCARRequests(t *testing.T) {
	gw, cids := localGateway(t, []byte("hello world\n"))
	for _, tc := range []struct {
		query, accept string
		status        int
		ctype         string
	}{
		{"?format=car", "", 200, carContentType},
		{"", "application/json, application/vnd.ipld.car;version=1", 200, carContentType},
		{"", "", 200, "application/octet-stream"},
		{"?format=tar", "", 400, ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, gw+"/ipfs/"+cids[0]+tc.query, nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype) {
			t.Errorf("%q Accept %q: HTTP %d %q, want %d %q", tc.query, tc.accept, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.ctype)
		}
	}
}
