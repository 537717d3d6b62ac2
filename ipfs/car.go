package ipfs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	chunker "github.com/ipfs/boxo/chunker"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
)

// CAR media types: what the Fetcher asks for (the trustless gateway form, IPIP-402), and
// what the gateway handler answers (blocks in the importer's order, leaves first).
const (
	carAccept      = "application/vnd.ipld.car; version=1; order=dfs; dups=y"
	carMediaType   = "application/vnd.ipld.car"
	carContentType = "application/vnd.ipld.car; version=1; order=unk; dups=n"
)

// Bounds on an untrusted CAR stream. kubo's blocks are at most 1 MiB (2 MiB with
// overhead leaves margin); the header holds a few roots.
const (
	carMaxSection = 2 << 20
	carMaxHeader  = 64 << 10
)

// ErrBadCAR classifies a CAR answer that is malformed or incomplete: unreadable framing, a
// block of another codec than dag-pb or raw, a missing block, or a root that is not a
// UnixFS file. (Blocks whose bytes do not hash to their CID are a *MismatchError.)
var ErrBadCAR = errors.New("bad CAR answer")

// carLimit is the most CAR bytes read for content of at most limit bytes: the content plus
// the DAG's framing (UnixFS/protobuf wrappers and CIDs, about 60 bytes per 256 KiB chunk,
// and the internal nodes), with generous margin.
func carLimit(limit int64) int64 { return limit + limit/16 + 1<<20 }

// readCAR reads a CAR stream (CARv1, or CARv2 read forward) that must hold the UnixFS file
// root and every block under it, verifies each block's bytes against its CID, then walks
// the DAG from root with boxo's UnixFS reader and returns the file's bytes. At most
// carLimit(limit) bytes are read, and content over limit bytes fails with *TooLargeError.
// gw names the gateway in errors.
func readCAR(ctx context.Context, r io.Reader, root cid.Cid, limit int64, gw string) ([]byte, error) {
	maxCAR := carLimit(limit)
	lr := &io.LimitedReader{R: r, N: maxCAR + 1}
	br, err := car.NewBlockReader(lr, car.WithTrustedCAR(true),
		car.MaxAllowedSectionSize(carMaxSection), car.MaxAllowedHeaderSize(carMaxHeader))
	if err != nil {
		return nil, fmt.Errorf("%w: gateway %s: header: %v", ErrBadCAR, gw, err)
	}
	hasRoot := false
	for _, c := range br.Roots {
		if c.Equals(root) {
			hasRoot = true
		}
	}
	if !hasRoot {
		got := "none"
		if len(br.Roots) > 0 {
			got = br.Roots[0].String()
		}
		return nil, &MismatchError{Gateway: gw, Want: root.String(), Got: shortUntrusted(got), Form: FormCAR}
	}
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if lr.N <= 0 {
			return nil, &TooLargeError{Gateway: gw, CID: root.String(), Limit: limit}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: gateway %s: block section: %v", ErrBadCAR, gw, err)
		}
		if err := verifyBlock(blk, root, gw); err != nil {
			return nil, err
		}
		if err := bs.Put(ctx, blk); err != nil {
			return nil, fmt.Errorf("ipfs: CAR from gateway %s: %w", gw, err)
		}
	}
	if lr.N <= 0 {
		return nil, &TooLargeError{Gateway: gw, CID: root.String(), Limit: limit}
	}
	dserv := dag.NewDAGService(blockservice.New(bs, nil))
	nd, err := dserv.Get(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway %s: root block %s: %v", ErrBadCAR, gw, root, err)
	}
	dr, err := uio.NewDagReader(ctx, nd, dserv)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway %s: root %s is not a UnixFS file: %v", ErrBadCAR, gw, root, err)
	}
	if dr.Size() > uint64(limit) {
		return nil, &TooLargeError{Gateway: gw, CID: root.String(), Limit: limit}
	}
	b, err := io.ReadAll(io.LimitReader(dr, limit+1))
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: gateway %s: walking the DAG of %s after %d bytes: %v", ErrBadCAR, gw, root, len(b), err)
	}
	if int64(len(b)) > limit {
		return nil, &TooLargeError{Gateway: gw, CID: root.String(), Limit: limit}
	}
	if uint64(len(b)) != dr.Size() {
		return nil, fmt.Errorf("%w: gateway %s: %s declares %d bytes, its blocks hold %d", ErrBadCAR, gw, root, dr.Size(), len(b))
	}
	return b, nil
}

// verifyBlock checks that blk's bytes hash to its CID and that its codec is one a UnixFS
// file is made of.
func verifyBlock(blk blocks.Block, root cid.Cid, gw string) error {
	c := blk.Cid()
	if codec := c.Prefix().Codec; codec != cid.DagProtobuf && codec != cid.Raw {
		return fmt.Errorf("%w: gateway %s: block %s has codec 0x%x, want dag-pb or raw", ErrBadCAR, gw, c, codec)
	}
	sum, err := c.Prefix().Sum(blk.RawData())
	if err != nil {
		return fmt.Errorf("%w: gateway %s: block %s: %v", ErrBadCAR, gw, c, err)
	}
	if !sum.Equals(c) {
		return &MismatchError{Gateway: gw, Want: root.String(), Got: sum.String(), Form: FormCAR, Block: c.String()}
	}
	return nil
}

// writeCAR streams the UnixFS DAG of r (rebuilt with the same importer ComputeCID uses) to
// w as a CARv1 whose header names root, and returns the root actually built. Blocks are
// written as they are made, leaves first, and never all held in memory. When the returned
// CID is not root, the stream holds no root block and a verifying reader rejects it.
func writeCAR(ctx context.Context, w io.Writer, root cid.Cid, r io.Reader) (cid.Cid, error) {
	return writeCARChunked(ctx, w, root, r, ChunkSize)
}

// writeCARChunked is writeCAR with chunks of chunkSize bytes.
func writeCARChunked(ctx context.Context, w io.Writer, root cid.Cid, r io.Reader, chunkSize int64) (cid.Cid, error) {
	sc, err := storage.NewWritable(w, []cid.Cid{root}, car.WriteAsCarV1(true))
	if err != nil {
		return cid.Undef, err
	}
	params := helpers.DagBuilderParams{
		Dagserv:    carDAG{ctx: ctx, sc: sc},
		Maxlinks:   MaxLinks,
		CidBuilder: dag.V0CidPrefix(),
	}
	db, err := params.New(chunker.NewSizeSplitter(r, chunkSize))
	if err != nil {
		return cid.Undef, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, err
	}
	return nd.Cid(), nil
}

// carDAG is the importer's DAG service when serving a CAR: each node added is written to
// the CAR stream at once.
type carDAG struct {
	discardDAG
	ctx context.Context
	sc  storage.WritableCar
}

func (d carDAG) Add(_ context.Context, nd ipld.Node) error {
	return d.sc.Put(d.ctx, nd.Cid().KeyString(), nd.RawData())
}

func (d carDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := d.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}
