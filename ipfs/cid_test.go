package ipfs

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	ipld "github.com/ipfs/go-ipld-format"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// knownAnswers are CIDs from a real kubo 0.42.0 (`ipfs add -n -Q FILE`, fresh repo,
// default Import settings), and kubo's add "Size" where it was captured.
var knownAnswers = []struct {
	name    string
	data    func() []byte
	want    string
	dagSize uint64 // 0: not captured
	large   bool   // skipped under -short
}{
	{"empty", func() []byte { return nil }, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", 0, false},
	{"hello world newline", func() []byte { return []byte("hello world\n") }, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", 20, false},
	{"hello world", func() []byte { return []byte("hello world") }, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD", 19, false},
	{"zeros one full chunk", func() []byte { return make([]byte, ChunkSize) }, "QmRk1rduJvo5DfEYAaLobS2za9tDszk35hzaNSDCJ74DA7", 0, false},
	{"zeros 2 chunks + 1 byte", func() []byte { return make([]byte, 2*ChunkSize+1) }, "Qmf1pNpWHeRjfapTMNsWkyr5wUJpX2SXk5PPfRVBfKrxV7", 524473, false},
	{"pattern 1000000", func() []byte { return pattern(1000000) }, "QmNrbRPZ2Fqgp6kT2rhfq4iBuN5bGx3mTKHybrMCbvgVww", 0, false},
	{"zeros 174 chunks (one full node)", func() []byte { return make([]byte, MaxLinks*ChunkSize) }, "QmY4HSz1oVGdUzb8poVYPLsoqBZjH6LZrtgnme9wWn2Qko", 0, true},
	{"zeros 174 chunks + 1 byte (depth 2)", func() []byte { return make([]byte, MaxLinks*ChunkSize+1) }, "QmehMASWcBsX7VcEQqs6rpR5AHoBfKyBVEgmkJHjpPg8jq", 0, true},
	{"pattern 175 chunks + 5 bytes (depth 2)", func() []byte { return pattern(175*ChunkSize + 5) }, "QmVDQRs9Wk27KtdhHPim16QFkCCWJ1H5WiWVWqPUPwkiCw", 0, true},
}

func TestComputeCIDKnownAnswers(t *testing.T) {
	for _, tc := range knownAnswers {
		t.Run(tc.name, func(t *testing.T) {
			if tc.large && testing.Short() {
				t.Skip("large input; skipped under -short")
			}
			data := tc.data()
			c, n, err := ComputeCID(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != tc.want {
				t.Errorf("ComputeCID = %s, want %s (kubo)", c, tc.want)
			}
			if n != int64(len(data)) {
				t.Errorf("ComputeCID bytes = %d, want %d", n, len(data))
			}
			if c.Version() != 0 {
				t.Errorf("CID version %d, want 0", c.Version())
			}
			if tc.dagSize != 0 {
				nd, _, err := computeNode(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				if got := dagSize(nd); got != tc.dagSize {
					t.Errorf("DAG size = %d, want %d (kubo's add Size)", got, tc.dagSize)
				}
			}
			// Independent construction agrees too.
			if got := handBuiltCID(t, data); got != tc.want {
				t.Errorf("hand-built DAG CID = %s, want %s", got, tc.want)
			}
		})
	}
}

// handBuiltCID builds the balanced UnixFS DAG of data without the importer: chunks split
// here, leaves and internal nodes assembled from merkledag.ProtoNode and unixfs.FSNode.
// The tree has the least depth d with MaxLinks^d >= chunks, and each node's children are
// full subtrees of depth d-1 from the left, the last one possibly partial.
func handBuiltCID(t testing.TB, data []byte) string {
	t.Helper()
	var chunks [][]byte
	for off := 0; off < len(data); off += ChunkSize {
		chunks = append(chunks, data[off:min(off+ChunkSize, len(data))])
	}
	if len(chunks) == 0 {
		chunks = [][]byte{nil}
	}
	depth, capacity := 0, 1
	for capacity < len(chunks) {
		depth++
		capacity *= MaxLinks
	}
	nd, _ := handBuild(t, chunks, depth)
	return nd.Cid().String()
}

// handBuild returns the subtree of depth over chunks and its file size.
func handBuild(t testing.TB, chunks [][]byte, depth int) (ipld.Node, uint64) {
	t.Helper()
	if depth == 0 {
		fs := ft.NewFSNode(ft.TFile)
		fs.SetData(chunks[0])
		b, err := fs.GetBytes()
		if err != nil {
			t.Fatal(err)
		}
		return dag.NodeWithData(b), uint64(len(chunks[0]))
	}
	per := 1
	for range depth - 1 {
		per *= MaxLinks
	}
	fs := ft.NewFSNode(ft.TFile)
	nd := &dag.ProtoNode{}
	var total uint64
	for off := 0; off < len(chunks); off += per {
		child, size := handBuild(t, chunks[off:min(off+per, len(chunks))], depth-1)
		if err := nd.AddNodeLink("", child); err != nil {
			t.Fatal(err)
		}
		fs.AddBlockSize(size)
		total += size
	}
	b, err := fs.GetBytes()
	if err != nil {
		t.Fatal(err)
	}
	nd.SetData(b)
	return nd, total
}

func TestComputeCIDMatchesHandBuiltDAG(t *testing.T) {
	sizes := []int{1, 100, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 17, 10 * ChunkSize}
	if !testing.Short() {
		sizes = append(sizes, MaxLinks*ChunkSize-1, (MaxLinks+2)*ChunkSize+3)
	}
	for _, n := range sizes {
		data := pattern(n)
		c, got, err := ComputeCID(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if got != int64(n) {
			t.Errorf("size %d: bytes = %d", n, got)
		}
		if want := handBuiltCID(t, data); c.String() != want {
			t.Errorf("size %d: ComputeCID = %s, hand-built = %s", n, c, want)
		}
	}
}

func TestImportParametersAreKuboDefaults(t *testing.T) {
	if MaxLinks != helpers.DefaultLinksPerBlock {
		t.Errorf("MaxLinks = %d, boxo's DefaultLinksPerBlock = %d", MaxLinks, helpers.DefaultLinksPerBlock)
	}
	if ChunkSize != 256*1024 {
		t.Errorf("ChunkSize = %d", ChunkSize)
	}
}

// failingReader yields some bytes, then an error.
type failingReader struct {
	left int
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, f.err
	}
	n := min(len(p), f.left)
	clear(p[:n])
	f.left -= n
	return n, nil
}

func TestComputeCIDReaderError(t *testing.T) {
	boom := errors.New("disk on fire")
	for _, n := range []int{0, 10, ChunkSize + 10} {
		_, _, err := ComputeCID(&failingReader{left: n, err: boom})
		if !errors.Is(err, boom) {
			t.Errorf("after %d bytes: err = %v, want wrapping %v", n, err, boom)
		}
	}
}

// heapProbe is a reader of n zero bytes that records the live heap once, at probeAt.
type heapProbe struct {
	n, off, probeAt int64
	heap            uint64
}

func (h *heapProbe) Read(p []byte) (int, error) {
	if h.off >= h.n {
		return 0, io.EOF
	}
	k := int64(len(p))
	if k > h.n-h.off {
		k = h.n - h.off
	}
	if h.off < h.probeAt && h.off+k >= h.probeAt {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.heap = ms.HeapAlloc
	}
	clear(p[:k])
	h.off += k
	return int(k), nil
}

func TestComputeCIDStreamsInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 256 MiB; skipped under -short")
	}
	const n = 256 << 20
	probe := &heapProbe{n: n, probeAt: n - 4<<20}
	_, got, err := ComputeCID(probe)
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("bytes = %d, want %d", got, n)
	}
	// The DAG of 256 MiB is ~6 internal nodes of ≤174 links plus a chunk or two in flight.
	if probe.heap == 0 || probe.heap > 16<<20 {
		t.Errorf("live heap near the end of a 256 MiB stream = %d bytes, want (0, 16 MiB]", probe.heap)
	}
	t.Logf("live heap after %d MiB: %.1f MiB", probe.probeAt>>20, float64(probe.heap)/(1<<20))
}

func TestDigestRoundTrip(t *testing.T) {
	for _, tc := range knownAnswers[:6] {
		d, err := DigestFromCID(tc.want)
		if err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		if d.IsZero() {
			t.Errorf("%s: digest is zero", tc.want)
		}
		if got := CIDFromDigest(d); got != tc.want {
			t.Errorf("CIDFromDigest(DigestFromCID(%s)) = %s", tc.want, got)
		}
		// The digest is the sha2-256 of the root block: a [32]byte holds it.
		var raw [32]byte = d
		if raw != d {
			t.Error("Digest not assignable to [32]byte")
		}
	}
}

func TestDigestFromCIDKnownBytes(t *testing.T) {
	// sha2-256 of the dag-pb block of "hello world\n" (from `ipfs block get | sha256sum`
	// equivalently: the multihash of the CID), hex.
	d, err := DigestFromCID("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
	if err != nil {
		t.Fatal(err)
	}
	nd := dag.NodeWithData(ft.FilePBData([]byte("hello world\n"), 12))
	if want := nd.Cid().Hash()[2:]; !bytes.Equal(d[:], want) {
		t.Errorf("digest = %x, want %x", d, want)
	}
}

func TestDigestZeroIsNone(t *testing.T) {
	var d Digest
	if !d.IsZero() {
		t.Error("zero Digest: IsZero false")
	}
	if got := CIDFromDigest(d); got != "" {
		t.Errorf("CIDFromDigest(zero) = %q, want \"\"", got)
	}
	d[31] = 1
	if d.IsZero() {
		t.Error("non-zero Digest: IsZero true")
	}
	if got := CIDFromDigest(d); !strings.HasPrefix(got, "Qm") || len(got) != CIDLen {
		t.Errorf("CIDFromDigest = %q, want a 46-character Qm… CID", got)
	}
}

func TestDigestFromCIDRejects(t *testing.T) {
	tests := []struct {
		name, in, why string
	}{
		{"empty", "", "empty"},
		{"CIDv1 of the same content", "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby", "CIDv1"},
		{"CIDv1 raw", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", "CIDv1"},
		{"not base58 (0, O, I, l)", "Qm0000000000000000000000000000000000000000000O", "not base58"},
		{"path traversal", "../../etc/passwd", "not base58"},
		{"slash", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o/x", "not base58"},
		{"too short", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5", "45 characters, a CIDv0 has 46"},
		{"too long", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5oo", "47 characters, a CIDv0 has 46"},
		{"sha2-512 multihash", "8VxAkNuUDzKc3zqKzuaBh5q7TvawM2NJhp4GqtbtJVrmqXHRVV83ebDibFeZcCCZNjiU9xMZf87jarpzmp8jQSgmwY", "multihash prefix 0x13 0x40"},
		{"identity multihash", "1oui", "multihash prefix 0x00 0x02"},
		{"sha2-256 truncated to 20 bytes", "5udAk4pJjSXMxCAcbkC1Vf3UKAUhFn", "multihash prefix 0x12 0x14"},
		{"leading 1 (zero byte)", "1QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "multihash prefix 0x00 0x12"},
		{"all-zero digest (none)", "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51", "all-zero"},
		{"spaces", " QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "not base58"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DigestFromCID(tc.in)
			if !errors.Is(err, ErrInvalidCID) {
				t.Fatalf("DigestFromCID(%q) err = %v, want ErrInvalidCID", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
			if !d.IsZero() {
				t.Errorf("digest on error = %x, want zero", d)
			}
		})
	}
}
