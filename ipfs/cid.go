// Package ipfs moves job definitions and results between the worker and IPFS as CIDv0
// content: it computes the CID exactly as `ipfs add` does by default; fetches from
// gateways in order and verifies what they serve (the trustless CAR form, every block
// checked against its CID and the UnixFS DAG walked from the root, or the plain form
// whose CID is recomputed), skipping and reporting gateways that lie, fail or hang;
// uploads as streams through kubo's RPC API or Pinata, failing unless the service's CID
// is the one computed locally, retrying transient failures; and keeps a local content
// store with a gateway (plain and CAR) and a kubo-compatible add endpoint for the
// localnet.
//
// Every CID here is a CIDv0 ("Qm…", 46 base58 characters): dag-pb, sha2-256, UnixFS file
// nodes, fixed-size 262144-byte chunks, balanced layout, no raw leaves. The Markets program
// stores such a CID as the bare 32-byte sha2-256 digest (spec/markets-program.md "IPFS
// hashes"); Digest, DigestFromCID and CIDFromDigest convert between the two.
package ipfs

import (
	"context"
	"errors"
	"fmt"
	"io"

	chunker "github.com/ipfs/boxo/chunker"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/mr-tron/base58"
)

// Import parameters of `ipfs add` with kubo's defaults (Import.UnixFSChunker
// "size-262144", Import.UnixFSFileMaxLinks 174, Import.CidVersion 0, raw leaves off).
const (
	// ChunkSize is the fixed chunk size in bytes of kubo's default chunker.
	ChunkSize = 262144
	// MaxLinks is the most links one UnixFS file node holds in the balanced layout.
	MaxLinks = 174
)

// CIDLen is the length in characters of every CIDv0 string.
const CIDLen = 46

// ErrInvalidCID classifies every error about a malformed or unsupported CID string.
var ErrInvalidCID = errors.New("invalid CID")

// Digest is the 32-byte sha2-256 digest of a CIDv0's multihash, the form the Markets
// program stores in `ipfs_job` and `ipfs_result`. The zero Digest means "none".
type Digest [32]byte

// IsZero reports whether d is the all-zero digest, which the program uses for "none".
func (d Digest) IsZero() bool { return d == Digest{} }

// DigestFromCID decodes a CIDv0 string ("Qm…") to its 32-byte sha2-256 digest: base58
// decode, require the multihash prefix 0x12 0x20 and 34 bytes, drop the prefix. The error
// wraps ErrInvalidCID and names what is wrong (empty, CIDv1, not base58, another hash
// function or length, the all-zero digest that means none). The result is assignable to
// a [32]byte.
func DigestFromCID(s string) (Digest, error) {
	var d Digest
	if s == "" {
		return d, fmt.Errorf("%w: empty string", ErrInvalidCID)
	}
	raw, err := base58.Decode(s)
	if err != nil {
		return d, fmt.Errorf("%w: %s: %s", ErrInvalidCID, quoteCID(s), diagnoseNonV0(s, "not base58"))
	}
	if len(raw) != 34 || raw[0] != 0x12 || raw[1] != 0x20 {
		var why string
		if len(raw) >= 2 && (raw[0] != 0x12 || raw[1] != 0x20) {
			why = fmt.Sprintf("multihash prefix 0x%02x 0x%02x, want 0x12 0x20 (sha2-256, 32 bytes)", raw[0], raw[1])
		} else {
			why = fmt.Sprintf("decodes to %d bytes, want 34 (0x12 0x20 + 32-byte sha2-256 digest)", len(raw))
		}
		if len(s) != CIDLen {
			why = fmt.Sprintf("%d characters, a CIDv0 has %d; %s", len(s), CIDLen, why)
		}
		return d, fmt.Errorf("%w: %s: %s", ErrInvalidCID, quoteCID(s), diagnoseNonV0(s, why))
	}
	// base58 is bijective once leading zero bytes are ruled out (raw[0] is 0x12), but check
	// the canonical form anyway: two spellings must never name two files in the Store.
	if base58.Encode(raw) != s {
		return d, fmt.Errorf("%w: %s: not in canonical base58 form", ErrInvalidCID, quoteCID(s))
	}
	copy(d[:], raw[2:])
	if d.IsZero() {
		return Digest{}, fmt.Errorf("%w: %s: all-zero digest, which the Markets program reads as none", ErrInvalidCID, quoteCID(s))
	}
	return d, nil
}

// CIDFromDigest encodes a 32-byte sha2-256 digest as its CIDv0 string: prepend 0x12 0x20
// and base58-encode. The zero Digest means "none" and yields "".
func CIDFromDigest(d Digest) string {
	if d.IsZero() {
		return ""
	}
	var raw [34]byte
	raw[0], raw[1] = 0x12, 0x20
	copy(raw[2:], d[:])
	return base58.Encode(raw[:])
}

// checkCID validates s as a canonical CIDv0 string; the error wraps ErrInvalidCID.
func checkCID(s string) error {
	_, err := DigestFromCID(s)
	return err
}

// diagnoseNonV0 says what s is when it is a valid CID of another kind (CIDv1, a CIDv0 of
// another hash), falling back to why as the reason.
func diagnoseNonV0(s, why string) string {
	c, err := cid.Decode(s)
	if err != nil {
		return why
	}
	pre := c.Prefix()
	if c.Version() == 1 {
		return fmt.Sprintf("is a CIDv1 (codec 0x%x, multihash 0x%x); want a CIDv0 (\"Qm…\", dag-pb, sha2-256)", pre.Codec, pre.MhType)
	}
	return fmt.Sprintf("%s (multihash 0x%x, %d-byte digest)", why, pre.MhType, pre.MhLength)
}

// quoteCID quotes an untrusted CID string for an error message, cut to a sane length.
func quoteCID(s string) string {
	const maxShown = 64
	if len(s) > maxShown {
		return fmt.Sprintf("%q… (%d bytes)", s[:maxShown], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// ComputeCID reads r to EOF and returns the CIDv0 that `ipfs add` (kubo defaults) gives
// those bytes, and their length in bytes. It streams: blocks are hashed and discarded as
// soon as they are linked, so memory stays at a few chunks whatever the input size.
// Errors from r are returned wrapped.
func ComputeCID(r io.Reader) (cid.Cid, int64, error) {
	nd, n, err := computeNode(r)
	if err != nil {
		return cid.Undef, n, err
	}
	return nd.Cid(), n, nil
}

// computeCIDString is ComputeCID returning the CID as a string.
func computeCIDString(r io.Reader) (string, int64, error) {
	c, n, err := ComputeCID(r)
	if err != nil {
		return "", n, err
	}
	return c.String(), n, nil
}

// computeNode builds the UnixFS DAG of r with boxo's balanced importer over a DAG service
// that discards blocks, and returns the root node (whose Size is kubo's add "Size": the
// cumulative serialized size of the DAG) and the number of bytes read.
func computeNode(r io.Reader) (ipld.Node, int64, error) {
	cr := &countingReader{r: r}
	params := helpers.DagBuilderParams{
		Dagserv:    discardDAG{},
		Maxlinks:   MaxLinks,
		RawLeaves:  false,
		CidBuilder: dag.V0CidPrefix(),
	}
	db, err := params.New(chunker.NewSizeSplitter(cr, ChunkSize))
	if err != nil {
		return nil, cr.n, fmt.Errorf("ipfs: compute CID: %w", err)
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return nil, cr.n, fmt.Errorf("ipfs: compute CID after %d bytes: %w", cr.n, err)
	}
	return nd, cr.n, nil
}

// dagSize is the cumulative serialized DAG size of nd, the number kubo reports as "Size".
func dagSize(nd ipld.Node) uint64 {
	s, err := nd.Size()
	if err != nil {
		// ProtoNode.Size only fails when encoding fails, which the builder already did.
		return 0
	}
	return s
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// discardDAG is the DAG service the importer writes to: the balanced builder only ever
// Adds nodes (it keeps the links it needs in the parent nodes), so blocks are dropped.
type discardDAG struct{}

var _ ipld.DAGService = discardDAG{}

func (discardDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (discardDAG) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

func (discardDAG) Add(context.Context, ipld.Node) error        { return nil }
func (discardDAG) AddMany(context.Context, []ipld.Node) error  { return nil }
func (discardDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (discardDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }
