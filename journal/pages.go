package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// This file checks the page structure of a bbolt file before bbolt reads it.
//
// bbolt trusts its data pages: they carry no checksum, and a flipped byte in a
// branch element, an element's offset or a page's overflow count makes bbolt
// read outside the file (a fault the runtime cannot recover from) or recurse
// forever on a page that refers to itself. Open therefore walks every page
// reachable from the meta page bbolt will use, under the same file lock, and
// refuses the file (ErrCorrupt) unless every page is in the file, of the
// expected type, referenced once, not on the freelist, and every element lies
// inside its page. It reads page headers and element tables, never decodes a
// record. The layout mirrors go.etcd.io/bbolt/internal/common (file format
// version 2); files are in the machine's byte order.

const (
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	pageElemSize     = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	metaSize         = 64 // magic, version, pageSize, flags u32; root bucket; freelist, pgid, txid, checksum u64

	pageBranch   = 0x01
	pageLeaf     = 0x02
	pageFreelist = 0x10
	leafBucket   = 0x01

	boltMagic   = 0xED0CDAED
	boltVersion = 2
	noFreelist  = ^uint64(0)
)

var ne = binary.NativeEndian

type boltMeta struct {
	pageSize                  uint32
	root, freelist, hwm, txid uint64
	valid                     bool
}

// parseMeta reads the meta at the start of b (the bytes after a page header).
func parseMeta(b []byte) boltMeta {
	if len(b) < metaSize {
		return boltMeta{}
	}
	m := boltMeta{
		pageSize: ne.Uint32(b[8:]),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		hwm:      ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:56])
	m.valid = ne.Uint32(b[0:]) == boltMagic && ne.Uint32(b[4:]) == boltVersion && ne.Uint64(b[56:]) == h.Sum64()
	return m
}

type pageWalker struct {
	f        *os.File
	size     int64 // file size, bytes
	pageSize uint64
	hwm      uint64 // high-water mark: pages [0, hwm) are in use or free
	data     []byte // the first hwm pages, mapped read-only
	seen     bitset // reachable pages
	freed    bitset // pages on the freelist
}

type bitset []uint64

func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }

// verifyPages checks the structure of the bbolt file f of size bytes (> 0).
// Its errors name what is wrong; the caller wraps them in ErrCorrupt.
func verifyPages(f *os.File, size int64) error {
	w := &pageWalker{f: f, size: size}
	m, err := w.meta()
	if err != nil {
		return err
	}
	w.hwm = m.hwm
	if m.hwm < 3 || m.hwm > uint64(size)/w.pageSize {
		return fmt.Errorf("high-water mark of %d pages does not fit a file of %d bytes (truncated?)", m.hwm, size)
	}
	// The file is locked and every read below is bounds-checked against
	// the hwm pages mapped, all of which lie in the file.
	w.data, err = unix.Mmap(int(f.Fd()), 0, int(m.hwm*w.pageSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %d pages: %v", m.hwm, err)
	}
	defer unix.Munmap(w.data)
	w.seen, w.freed = make(bitset, m.hwm/64+1), make(bitset, m.hwm/64+1)
	w.seen.set(0)
	w.seen.set(1)
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	return w.page(m.root, "root")
}

// meta picks the meta page as bbolt does: the page size from the first meta
// page that validates (probing the second at the offsets bbolt probes), then,
// of the two meta pages at that size, the one with the higher transaction id
// that validates.
func (w *pageWalker) meta() (boltMeta, error) {
	buf := make([]byte, 0x1000)
	readable := false
	if n, err := w.f.ReadAt(buf, 0); err == nil && n == len(buf) {
		readable = true
		if m := parseMeta(buf[pageHeaderSize:]); m.valid {
			w.pageSize = uint64(m.pageSize)
		}
	}
	for i := 0; w.pageSize == 0 && i <= 14; i++ {
		pos := int64(1024) << i
		if pos >= w.size-1024 {
			break
		}
		n, err := w.f.ReadAt(buf, pos)
		if (err == nil && n == len(buf)) || (errors.Is(err, io.EOF) && int64(n) == w.size-pos) {
			readable = true
			if m := parseMeta(buf[min(n, pageHeaderSize):n]); m.valid {
				w.pageSize = uint64(m.pageSize)
			}
		}
	}
	if w.pageSize == 0 {
		if !readable {
			return boltMeta{}, fmt.Errorf("no valid meta page in %d bytes", w.size)
		}
		w.pageSize = uint64(os.Getpagesize())
	}
	if w.pageSize < 1024 || w.pageSize > 1<<24 || w.pageSize&(w.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", w.pageSize)
	}
	var metas [2]boltMeta
	for i := range metas {
		b := make([]byte, pageHeaderSize+metaSize)
		if n, _ := w.f.ReadAt(b, int64(uint64(i)*w.pageSize)); n == len(b) {
			metas[i] = parseMeta(b[pageHeaderSize:])
		}
	}
	a, b := metas[0], metas[1]
	if b.txid > a.txid {
		a, b = b, a
	}
	switch {
	case a.valid:
		return a, nil
	case b.valid:
		return b, nil
	}
	return boltMeta{}, errors.New("both meta pages are invalid")
}

// read returns the page id with its overflow pages, checking that it lies
// below the high-water mark and inside the file and that its header names it.
func (w *pageWalker) read(id uint64, what string) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("%s page %d is outside pages 2..%d", what, id, w.hwm-1)
	}
	h := w.data[id*w.pageSize:]
	if got := ne.Uint64(h[0:]); got != id {
		return nil, fmt.Errorf("%s page %d says it is page %d", what, id, got)
	}
	overflow := uint64(ne.Uint32(h[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("%s page %d with %d overflow pages runs past the high-water mark %d", what, id, overflow, w.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if w.seen.has(p) {
			return nil, fmt.Errorf("page %d is referenced twice (by %s page %d)", p, what, id)
		}
		if w.freed.has(p) {
			return nil, fmt.Errorf("%s page %d is in use and on the freelist", what, p)
		}
		w.seen.set(p)
	}
	return w.data[id*w.pageSize : (id+overflow+1)*w.pageSize], nil
}

func (w *pageWalker) freelist(id uint64) error {
	buf, err := w.read(id, "freelist")
	if err != nil {
		return err
	}
	if flags := ne.Uint16(buf[8:]); flags != pageFreelist {
		return fmt.Errorf("freelist page %d has page flags %#x", id, flags)
	}
	idx, count := uint64(0), uint64(ne.Uint16(buf[10:]))
	if count == 0xFFFF {
		if len(buf) < pageHeaderSize+8 {
			return fmt.Errorf("freelist page %d: short", id)
		}
		idx, count = 1, ne.Uint64(buf[pageHeaderSize:])
	}
	if room := uint64(len(buf)-pageHeaderSize)/8 - idx; count > room {
		return fmt.Errorf("freelist page %d lists %d pages, room for %d", id, count, room)
	}
	for i := idx; i < idx+count; i++ {
		p := ne.Uint64(buf[pageHeaderSize+8*i:])
		if p < 2 || p >= w.hwm {
			return fmt.Errorf("freelist page %d frees page %d, outside pages 2..%d", id, p, w.hwm-1)
		}
		if w.freed.has(p) || w.seen.has(p) {
			return fmt.Errorf("freelist page %d frees page %d twice or frees a freelist page", id, p)
		}
		w.freed.set(p)
	}
	return nil
}

// page checks the tree rooted at page id, the root of bucket what.
func (w *pageWalker) page(id uint64, what string) error {
	buf, err := w.read(id, what)
	if err != nil {
		return err
	}
	flags := ne.Uint16(buf[8:])
	if flags != pageBranch && flags != pageLeaf {
		return fmt.Errorf("page %d of %s has page flags %#x, want a branch or leaf page", id, what, flags)
	}
	return w.elems(buf, flags, id, what)
}

// elems checks the element table of page id (0: an inline page) p of bucket.
func (w *pageWalker) elems(p []byte, flags uint16, id uint64, bucket string) error {
	where := func() string {
		if id == 0 {
			return "inline bucket " + bucket
		}
		return fmt.Sprintf("page %d of %s", id, bucket)
	}
	count := uint64(ne.Uint16(p[10:]))
	n := uint64(len(p))
	if pageHeaderSize+count*pageElemSize > n {
		return fmt.Errorf("%s: %d elements do not fit in %d bytes", where(), count, n)
	}
	if flags == pageBranch && count == 0 {
		return fmt.Errorf("%s: branch page without elements", where())
	}
	for i := uint64(0); i < count; i++ {
		off := pageHeaderSize + i*pageElemSize
		e := p[off : off+pageElemSize]
		if flags == pageBranch {
			pos, ksize, child := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:])), ne.Uint64(e[8:])
			if off+pos+ksize > n {
				return fmt.Errorf("%s: key of element %d lies outside the page", where(), i)
			}
			if ksize == 0 { // bbolt never stores an empty key, and asserts on one
				return fmt.Errorf("%s: element %d has an empty key", where(), i)
			}
			if err := w.page(child, bucket); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(e[0:]), uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		if off+pos+ksize+vsize > n {
			return fmt.Errorf("%s: key or value of element %d lies outside the page", where(), i)
		}
		if ksize == 0 { // bbolt never stores an empty key, and asserts on one
			return fmt.Errorf("%s: element %d has an empty key", where(), i)
		}
		if eflags&leafBucket == 0 {
			continue
		}
		key := p[off+pos : off+pos+ksize]
		v := p[off+pos+ksize : off+pos+ksize+vsize]
		name := fmt.Sprintf("%s/%q", bucket, key)
		if bucket == "root" {
			name = fmt.Sprintf("%q", key)
		}
		if len(v) < bucketHeaderSize {
			return fmt.Errorf("%s: bucket %s: header of %d bytes", where(), name, len(v))
		}
		if root := ne.Uint64(v[0:]); root != 0 {
			if err := w.page(root, name); err != nil {
				return err
			}
			continue
		}
		inline := v[bucketHeaderSize:]
		if len(inline) < pageHeaderSize {
			return fmt.Errorf("%s: inline bucket %s: %d bytes", where(), name, len(inline))
		}
		if f := ne.Uint16(inline[8:]); f != pageLeaf {
			return fmt.Errorf("%s: inline bucket %s has page flags %#x", where(), name, f)
		}
		if err := w.elems(inline, pageLeaf, 0, name); err != nil {
			return err
		}
	}
	return nil
}

// openFile is the bbolt Options.OpenFile hook: it refuses anything but a
// regular file, takes the lock bbolt would take (exclusive, or shared when
// readOnly; bbolt's own flock on the same descriptor then succeeds at once),
// waiting up to timeout, and checks the page structure under that lock.
func openFile(readOnly bool, timeout time.Duration) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, perm os.FileMode) (*os.File, error) {
		if fi, err := os.Stat(name); err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file (mode %s)", ErrCorrupt, name, fi.Mode())
		}
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		if err := lockFile(f, readOnly, timeout); err != nil {
			f.Close()
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("%w: %s is not a regular file (mode %s)", ErrCorrupt, name, fi.Mode())
		}
		if fi.Size() == 0 && readOnly {
			f.Close()
			return nil, fmt.Errorf("%w: %s is empty (zero length): a journal never initialised", ErrCorrupt, name)
		}
		if fi.Size() > 0 {
			if err := verifyPages(f, fi.Size()); err != nil {
				f.Close()
				return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
			}
		}
		return f, nil
	}
}

// lockFile takes flock on f, retrying every 50ms until timeout (0: forever).
func lockFile(f *os.File, shared bool, timeout time.Duration) error {
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	start := time.Now()
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("lock journal %s: %w", f.Name(), err)
		}
		if timeout > 0 && time.Since(start) > timeout {
			return fmt.Errorf("%w: %s (is another hypernode-worker running on this data directory?)", ErrLocked, f.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
