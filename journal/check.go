package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Check opens the journal at path read-only and verifies all of it: bbolt's
// own consistency check (tx.Check: page references, freelist, key order),
// then every record (decodes, key equals its seq, names a job, has a known
// kind), every snapshot (decodes, names its key, equals the snapshot rebuilt
// from the job's records), and, from schema 2, the index (exactly the job's
// records, in order). It returns nil for a sound journal; an error wrapping
// ErrCorrupt naming the first bad key (log/<seq>, jobs/<job>,
// jobrecs/<job> or jobrecs/<job>/<seq>, or a bbolt page); ErrLocked while a read-write process
// holds the file; fs.ErrNotExist when there is no file. It never writes.
func Check(path string) error { return CheckWith(path, CheckVisitor{}) }

// CheckVisitor lets a caller's own checks share Check's one walk of the log.
// Either function may be nil.
type CheckVisitor struct {
	// Record is called with every record in sequence order as the walk
	// decodes it. A non-nil error stops the walk and is returned by
	// CheckWith as it is (not as ErrCorrupt).
	Record func(Record) error
	// Snapshots is called once the journal checked sound, with every job's
	// snapshot after its last record (what Snapshots returns), ordered by
	// job, rebuilt from the records the walk read.
	Snapshots func([]Snapshot)
}

// CheckWith is Check, handing what the walk reads to cv. bbolt's page check
// runs alongside the walk, in its own read transaction.
func CheckWith(path string, cv CheckVisitor) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("check journal: %w", err)
	}
	j, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer j.Close()
	defer func() {
		if r := recover(); r != nil {
			err = unreadable(path, r)
		}
	}()
	// The page check's transaction runs inside the walk's: bbolt loads the
	// freelist of a read-only file lazily in tx.Check without its meta lock,
	// and another transaction's begin or end reads it, so no other
	// transaction may begin or end while the page check runs (a race in
	// bbolt that -race finds).
	var visitErr, perr error
	var snaps []Snapshot
	werr := j.db.View(func(tx *bolt.Tx) (err error) {
		pages := make(chan error, 1)
		go func() {
			debug.SetPanicOnFault(true) // per goroutine: a damaged mapped page faults here too
			defer func() {
				if r := recover(); r != nil {
					pages <- errors.New(bboltUnreadable(r))
				}
			}()
			pages <- j.db.View(checkPages)
		}()
		defer func() { perr = <-pages }()
		snaps, err = j.check(tx, cv.Record, &visitErr)
		return err
	})
	if visitErr != nil {
		return visitErr
	}
	if perr != nil { // the page check's verdict first: a walk over damaged pages may fail anywhere
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, Printable(perr.Error()))
	}
	if werr != nil {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, Printable(werr.Error()))
	}
	if cv.Snapshots != nil {
		cv.Snapshots(snaps)
	}
	return nil
}

// checkPages is bbolt's own consistency check (page references, freelist,
// key order).
func checkPages(tx *bolt.Tx) error {
	var first error
	for err := range tx.Check() { // drained: bbolt's checker goroutine ends
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return errors.New("bbolt's consistency check: " + damageDetail(first))
	}
	return nil
}

// check is Check's walk of the records and derived data; its errors name
// the bad key and are wrapped by Check. visit's error goes to visitErr. It
// returns every job's snapshot after its last record, ordered by job.
func (j *Journal) check(tx *bolt.Tx, visit func(Record) error, visitErr *error) ([]Snapshot, error) {
	if j.schema == 0 {
		return nil, nil // an empty journal: nothing was ever appended
	}
	var tail []Record // after meta/derived
	log := tx.Bucket(bucketLog)
	c := log.Cursor()
	var last uint64
	if k, _ := c.Last(); len(k) == 8 {
		last = binary.BigEndian.Uint64(k)
	}
	// jobs/ and jobrecs/ cover the records up to derived (schema 3); the
	// later ones are folded by Open, in memory, and checked only as records.
	derived, err := readDerived(tx, j.schema, last)
	if err != nil {
		return nil, err
	}
	jobs := make(map[string]*checkJob, min(derived/8, 1<<20)) // a job's life is about ten records
	last = 0
	// The cursor and the decoding run in their own goroutine (decodeLog),
	// a chunk ahead of the checks here: two cores share the walk.
	done := make(chan struct{})
	defer close(done)
	for ch := range decodeLog(log.Cursor(), done) {
		if ch.err != nil {
			return nil, ch.err
		}
		for _, rec := range ch.recs {
			if err := checkLogged(rec, last); err != nil {
				return nil, err
			}
			last = rec.Seq
			if visit != nil {
				if err := visit(rec); err != nil {
					*visitErr = err
					return nil, err
				}
			}
			if rec.Seq > derived {
				tail = append(tail, rec)
				continue
			}
			jb := jobs[rec.Job]
			if jb == nil {
				jb = &checkJob{}
				jobs[rec.Job] = jb
			}
			jb.snap.apply(rec)
			jb.seqs = append(jb.seqs, rec.Seq)
		}
	}
	if log.Sequence() < last {
		return nil, fmt.Errorf("log: sequence %d is behind its last record %d", log.Sequence(), last)
	}
	if err := checkLogEnd(log.Sequence(), last); err != nil {
		return nil, err
	}

	// The stored snapshots are decoded and compared on two goroutines; the
	// error reported is that of the first bad key, as a sequential walk
	// would find it.
	type stored struct {
		k, v []byte // valid while tx is
		jb   *checkJob
	}
	var all []stored
	err = tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
		all = append(all, stored{k, v, jobs[string(k)]})
		return nil
	})
	if err != nil {
		return nil, err
	}
	compare := func(e stored) error {
		if e.v == nil {
			return fmt.Errorf("jobs/%s: a bucket, not a snapshot", e.k)
		}
		var s Snapshot
		if err := unmarshalSnapshot(e.v, &s); err != nil {
			return fmt.Errorf("jobs/%s: %v", e.k, err)
		}
		if s.Job != string(e.k) {
			return fmt.Errorf("jobs/%s: snapshot of job %q", e.k, s.Job)
		}
		if e.jb == nil {
			return fmt.Errorf("jobs/%s: snapshot of a job without records", e.k)
		}
		if !sameSnapshot(s, e.jb.snap) {
			return fmt.Errorf("jobs/%s: snapshot (last seq %d) disagrees with the job's records (last seq %d)", e.k, s.LastSeq, e.jb.snap.LastSeq)
		}
		return nil
	}
	firstBad := func(part []stored) error {
		for _, e := range part {
			if err := compare(e); err != nil {
				return err
			}
		}
		return nil
	}
	half := len(all) / 2
	second := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true) // per goroutine: a damaged mapped page faults here too
		defer func() {
			if r := recover(); r != nil {
				second <- errors.New(bboltUnreadable(r))
			}
		}()
		second <- firstBad(all[half:])
	}()
	if err := firstBad(all[:half]); err != nil {
		<-second
		return nil, err
	}
	if err := <-second; err != nil {
		return nil, err
	}
	seen := len(all)
	if seen != len(jobs) {
		for name := range jobs {
			if tx.Bucket(bucketJobs).Get([]byte(name)) == nil {
				return nil, fmt.Errorf("jobs/%s: no snapshot for a job with records", name)
			}
		}
	}
	if j.schema < 2 {
		return foldTail(jobs, tail), nil
	}

	idx := tx.Bucket(bucketJobRecs)
	indexed := 0
	var seqs []uint64
	err = idx.ForEach(func(name, v []byte) error {
		var err error
		if j.schema >= 4 {
			if v == nil {
				return fmt.Errorf("jobrecs/%s: a bucket, not a packed index", name)
			}
			if seqs, err = decodeIndex(v, seqs[:0]); err != nil {
				return fmt.Errorf("jobrecs/%s: %v", name, err)
			}
		} else if seqs, err = nestedIndex(idx, name, v); err != nil {
			return err
		}
		jb := jobs[string(name)]
		if jb == nil {
			return fmt.Errorf("jobrecs/%s: index of a job without records", name)
		}
		if err := sameIndex(name, seqs, jb.seqs); err != nil {
			return err
		}
		indexed++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if indexed != len(jobs) {
		for name := range jobs {
			if idx.Get([]byte(name)) == nil && idx.Bucket([]byte(name)) == nil {
				return nil, fmt.Errorf("jobrecs/%s: no index for a job with records", name)
			}
		}
	}
	return foldTail(jobs, tail), nil
}

// checkLogged checks a decoded log record against the one before it (prev,
// 0 for the first): a known kind, and the next sequence number. The log's
// records are numbered from 1 without a gap (nothing is ever deleted), so a
// gap is a lost record.
func checkLogged(rec Record, prev uint64) error {
	switch rec.Kind {
	case KindTransition, KindIntent, KindProgress:
	default:
		return fmt.Errorf("log/%d: unknown record kind %q", rec.Seq, Printable(string(rec.Kind)))
	}
	if rec.Seq != prev+1 {
		return fmt.Errorf("log/%d: missing (the record after %d is %d; records are never deleted)", prev+1, prev, rec.Seq)
	}
	return nil
}

// checkLogEnd checks the log bucket's sequence against its last record: a
// sequence past it means records lost from the end.
func checkLogEnd(seq, last uint64) error {
	if seq > last {
		return fmt.Errorf("log: records %d to %d are missing (the log's sequence is %d; records are never deleted)", last+1, seq, seq)
	}
	return nil
}

// sameIndex compares the index of job (got) with the job's records up to
// meta/derived (want), both ascending, and names the first difference.
func sameIndex(job []byte, got, want []uint64) error {
	i := 0
	for _, seq := range got {
		if i < len(want) && want[i] < seq {
			return fmt.Errorf("jobrecs/%s: record %d of the job is not indexed", job, want[i])
		}
		if i >= len(want) || want[i] != seq {
			return fmt.Errorf("jobrecs/%s/%d: not a record of the job", job, seq)
		}
		i++
	}
	if i != len(want) {
		return fmt.Errorf("jobrecs/%s: record %d of the job is not indexed", job, want[i])
	}
	return nil
}

// sameSnapshot says whether a and b hold the same values (times compared as
// instants).
func sameSnapshot(a, b Snapshot) bool {
	if a.Job != b.Job || a.State != b.State || a.LastSeq != b.LastSeq || !a.Updated.Equal(b.Updated) ||
		!maps.Equal(a.Fields, b.Fields) || (a.Op == nil) != (b.Op == nil) || (a.Op != nil && *a.Op != *b.Op) ||
		(a.Upload == nil) != (b.Upload == nil) || (a.Upload != nil && *a.Upload != *b.Upload) ||
		(a.Tx == nil) != (b.Tx == nil) || (a.Container == nil) != (b.Container == nil) {
		return false
	}
	if a.Tx != nil && (a.Tx.Instruction != b.Tx.Instruction || a.Tx.Signature != b.Tx.Signature ||
		!bytes.Equal(a.Tx.Raw, b.Tx.Raw) || a.Tx.LastValidBlockHeight != b.Tx.LastValidBlockHeight) {
		return false
	}
	if c, d := a.Container, b.Container; c != nil && (c.ID != d.ID || c.Attempt != d.Attempt || !c.Deadline.Equal(d.Deadline) ||
		c.Image != d.Image || !slices.Equal(c.GPUs, d.GPUs) || c.CPUs != d.CPUs || c.MemoryBytes != d.MemoryBytes) {
		return false
	}
	return true
}

// decodedChunk is a run of decoded log records, or the error that ended the
// walk.
type decodedChunk struct {
	recs []Record
	err  error
}

// decodeLog walks c from the first record, decoding, and sends the records
// in chunks; the channel closes after the last chunk or an error. Closing
// done stops it early. A bbolt panic (a damaged page) comes as an error.
// The caller must not use c's transaction until the channel is closed.
func decodeLog(c *bolt.Cursor, done <-chan struct{}) <-chan decodedChunk {
	const size = 512
	out := make(chan decodedChunk, 4)
	go func() {
		defer close(out)
		debug.SetPanicOnFault(true)
		send := func(ch decodedChunk) bool {
			select {
			case out <- ch:
				return true
			case <-done:
				return false
			}
		}
		defer func() {
			if r := recover(); r != nil {
				send(decodedChunk{err: errors.New(bboltUnreadable(r))})
			}
		}()
		recs := make([]Record, 0, size)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			rec, err := decodeRecord(k, v)
			if err != nil {
				send(decodedChunk{recs: recs})
				send(decodedChunk{err: err})
				return
			}
			if recs = append(recs, rec); len(recs) == size {
				if !send(decodedChunk{recs: recs}) {
					return
				}
				recs = make([]Record, 0, size)
			}
		}
		send(decodedChunk{recs: recs})
	}()
	return out
}

// foldTail applies the records after meta/derived to the jobs' snapshots
// (checked up to it) and returns every job's snapshot, ordered by job.
func foldTail(jobs map[string]*checkJob, tail []Record) []Snapshot {
	for _, rec := range tail {
		jb := jobs[rec.Job]
		if jb == nil {
			jb = &checkJob{}
			jobs[rec.Job] = jb
		}
		jb.snap.apply(rec)
	}
	out := make([]Snapshot, 0, len(jobs))
	for _, jb := range jobs {
		out = append(out, jb.snap)
	}
	slices.SortFunc(out, func(a, b Snapshot) int { return strings.Compare(a.Job, b.Job) })
	return out
}

// checkJob is what the check walk keeps of a job: its snapshot rebuilt from
// its records up to meta/derived, and their sequence numbers.
type checkJob struct {
	snap Snapshot
	seqs []uint64
}

// now is the clock of Quarantine's file names.
var now = time.Now

// Quarantine moves the file (or whatever is) at path aside to
// "<path>.corrupt-<UTC time as 20060102T150405Z>", adding "-1", "-2", … when
// that name is taken (an existing file is never overwritten), and fsyncs the
// directory so the move survives a crash. It returns the new path. It takes
// the journal's lock first: an error wraps ErrLocked while a process has the
// journal open, fs.ErrNotExist when there is nothing at path.
func Quarantine(path string) (string, error) {
	if _, err := os.Lstat(path); err != nil {
		return "", fmt.Errorf("quarantine journal: %w", err)
	}
	// O_NONBLOCK: a FIFO at path must not block the open.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("quarantine journal: %w", err)
	}
	defer f.Close()
	if err := lockFile(f, false, time.Second); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	base := path + ".corrupt-" + now().UTC().Format("20060102T150405Z")
	dst := base
	for n := 1; ; n++ {
		err := renameNoReplace(path, dst)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || n > 1000 {
			return "", fmt.Errorf("quarantine journal %s: %w", path, err)
		}
		dst = base + "-" + strconv.Itoa(n)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return dst, fmt.Errorf("quarantine journal: moved to %s: %w", dst, err)
	}
	return dst, nil
}

// renameNoReplace renames old to new, failing with fs.ErrExist when new
// exists. Where the file system lacks RENAME_NOREPLACE it checks first, and
// a file created at new in between would be replaced.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		if _, err := os.Lstat(newpath); err == nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
		}
		return os.Rename(oldpath, newpath)
	}
	return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Printable is s for a terminal: a byte that is not valid UTF-8 becomes
// \xNN and a rune that is not printable (a control character such as ESC or
// a newline) its Go escape, so that bytes read from a damaged or hostile
// journal (a key, a job name) never reach a terminal raw.
func Printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case !unicode.IsPrint(r) && r != ' ':
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// hexKey is a bbolt key in hex for an error, its first 16 bytes only when
// it is longer (a damaged page's "key" can be any length).
func hexKey(k []byte) string {
	if len(k) <= 16 {
		return fmt.Sprintf("%x", k)
	}
	return fmt.Sprintf("%x… (%d bytes)", k[:16], len(k))
}
