package ipfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNotFound is returned (wrapped) when a CID is not in the Store, and matched by
// errors.Is on a gateway's 404 (see HTTPStatusError).
var ErrNotFound = errors.New("CID not found")

// tempPrefix starts the names of the Store's temporary files. No CIDv0 starts with '.'.
const tempPrefix = ".put-"

// Store is a local content store: one file per CIDv0, named by the CID, holding the bytes
// the CID was computed over. It backs the localnet's gateway and add endpoint. Files are
// written atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves
// either the whole file or none (plus, at worst, a stray ".put-*" temp file). CID strings
// are validated before they become file names, so no path can escape the directory.
// A Store is safe for concurrent use.
type Store struct {
	dir string
}

// NewStore opens (creating it with mode 0700 when missing) the store directory dir.
func NewStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("ipfs: store: empty directory path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipfs: store: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ipfs: store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("ipfs: store: %s is not a directory", dir)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Put streams r into the store while computing its CIDv0, and returns the CID and the
// content length in bytes. The content is fsynced and renamed to <dir>/<cid> before Put
// returns, so a returned CID is durable. Putting content that is already there is harmless.
func (s *Store) Put(r io.Reader) (cid string, size int64, err error) {
	c, n, _, err := s.put(r)
	return c, n, err
}

// put is Put also returning kubo's add "Size" (cumulative DAG size in bytes).
func (s *Store) put(r io.Reader) (string, int64, uint64, error) {
	st, err := s.stage(r)
	if err != nil {
		return "", 0, 0, err
	}
	if err := st.commit(); err != nil {
		return "", 0, 0, err
	}
	return st.cid, st.size, st.dagSize, nil
}

// staged is content written and fsynced to a temporary file in the store, not yet
// visible under its CID: commit publishes it, abort removes it.
type staged struct {
	store   *Store
	tmp     string
	cid     string
	size    int64  // content bytes
	dagSize uint64 // kubo's add "Size"
}

// stage streams r to a temporary file while computing its CID, and fsyncs it.
func (s *Store) stage(r io.Reader) (*staged, error) {
	tmp, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("ipfs: store put: %w", err)
	}
	st := &staged{store: s, tmp: tmp.Name()}
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			st.abort()
		}
	}()
	nd, n, err := computeNode(io.TeeReader(r, tmp))
	if err != nil {
		return nil, fmt.Errorf("ipfs: store put: %w", err)
	}
	st.cid, st.size, st.dagSize = nd.Cid().String(), n, dagSize(nd)
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("ipfs: store put %s: fsync: %w", st.cid, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("ipfs: store put %s: close: %w", st.cid, err)
	}
	ok = true
	return st, nil
}

// commit renames the staged file to <dir>/<cid> and makes the rename durable.
func (st *staged) commit() error {
	if err := os.Rename(st.tmp, st.store.path(st.cid)); err != nil {
		st.abort()
		return fmt.Errorf("ipfs: store put %s: %w", st.cid, err)
	}
	if err := syncDir(st.store.dir); err != nil {
		return fmt.Errorf("ipfs: store put %s: fsync directory: %w", st.cid, err)
	}
	return nil
}

// abort removes the staged file; it is a no-op after commit.
func (st *staged) abort() { _ = os.Remove(st.tmp) }

// Open opens the content of cid for reading and returns it with its length in bytes.
// The error wraps ErrInvalidCID for a malformed CID and ErrNotFound when it is absent.
func (s *Store) Open(cid string) (io.ReadCloser, int64, error) {
	f, n, err := s.open(cid)
	if err != nil {
		return nil, 0, err
	}
	return f, n, nil
}

// open is Open returning the *os.File (seekable, for http.ServeContent).
func (s *Store) open(cid string) (*os.File, int64, error) {
	if err := checkCID(cid); err != nil {
		return nil, 0, fmt.Errorf("ipfs: store open: %w", err)
	}
	f, err := os.Open(s.path(cid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("ipfs: store open %s: %w", cid, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ipfs: store open %s: %w", cid, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("ipfs: store open %s: %w", cid, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, fmt.Errorf("ipfs: store open %s: not a regular file", cid)
	}
	return f, fi.Size(), nil
}

// Has reports whether cid is a valid CIDv0 whose content is in the store.
func (s *Store) Has(cid string) bool {
	if checkCID(cid) != nil {
		return false
	}
	fi, err := os.Stat(s.path(cid))
	return err == nil && fi.Mode().IsRegular()
}

// path is the file of a CID already validated by checkCID (base58 only: no '/' or '.').
func (s *Store) path(cid string) string { return filepath.Join(s.dir, cid) }

// syncDir fsyncs a directory so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
