package journal

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RebuildVerifier lets a caller check the log during Rebuild's walk, before
// anything is written. Either function may be nil.
type RebuildVerifier struct {
	Record func(Record) // every record, in sequence order
	Done   func() error // after the walk: an error refuses the rebuild
}

// RebuildReport says what Rebuild rewrote.
type RebuildReport struct {
	Records    int // log records read
	Jobs       int // snapshots and index entries written, one of each per job
	FromSchema int // the file's schema before (SchemaVersion after)
}

// checkPagesOf runs bbolt's consistency check on the file at path, opened
// read-only; its error wraps ErrCorrupt (or ErrLocked, ErrNewerSchema).
func checkPagesOf(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := openBolt(path, Options{ReadOnly: true, LockTimeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = unreadable(path, r)
		}
	}()
	if err := db.View(checkPages); err != nil {
		return fmt.Errorf("%w: %s: cannot rebuild: %s", ErrCorrupt, path, Printable(err.Error()))
	}
	return nil
}

// Rebuild rewrites the journal's derived data (every snapshot in jobs/, the
// index in jobrecs/, meta/derived) from its log, in one bbolt transaction,
// and brings the file to SchemaVersion. It is the repair for a journal whose
// log is sound but whose derived data are damaged (what Check reports under
// jobs/, jobrecs/ or meta/derived): the log is the record of what happened,
// and nothing in it is changed or lost. The log is checked first, in full,
// and nothing is written unless it is sound: every record decodes, names a
// job, has a known kind and the next sequence number (a gap, a log sequence
// past the last record, or meta/derived past it is a lost record), and rv
// finds nothing wrong.
//
// It takes the journal's lock (ErrLocked while a worker has it open; also
// after a read-write Open of this file failed on damaged pages earlier in
// this process, since bbolt then keeps the file mapped). It refuses,
// leaving the file as it was, with an error wrapping ErrCorrupt when the
// file's page structure is damaged (bbolt's own check, run first), the log
// is not sound (naming log/<seq>), or the meta bucket or schema version is
// unreadable; with ErrNewerSchema for a newer worker's journal. Run Check
// afterwards.
func Rebuild(path string, rv RebuildVerifier) (rep RebuildReport, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("rebuild journal: %w", err)
	}
	// bbolt's own page check first, read-only: a read-write open of a file
	// whose pages are damaged can panic inside bbolt, which then leaks its
	// mapping and, with it, the file's lock for the rest of this process
	// (so that a Quarantine after a refused Rebuild would find the file
	// locked).
	if err := checkPagesOf(path); err != nil {
		return rep, err
	}
	db, err := openBolt(path, Options{LockTimeout: time.Second})
	if err != nil {
		return rep, err
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = unreadable(path, r)
		}
	}()
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		rep, err = rebuildTx(tx, rv)
		return err
	})
	if errors.Is(err, ErrNewerSchema) {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return rep, fmt.Errorf("%w: %s: cannot rebuild: %s", ErrCorrupt, path, Printable(err.Error()))
	}
	return rep, nil
}

// rebuildTx is Rebuild's transaction.
func rebuildTx(tx *bolt.Tx, rv RebuildVerifier) (RebuildReport, error) {
	var rep RebuildReport
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return rep, errors.New("no meta bucket")
	}
	v, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil || v < 1 {
		return rep, fmt.Errorf("schema version %q", meta.Get(keySchema))
	}
	if v > SchemaVersion {
		return rep, newerSchema(v)
	}
	rep.FromSchema = v
	log := tx.Bucket(bucketLog)
	if log == nil {
		return rep, errors.New("no log bucket")
	}
	snaps := map[string]*Snapshot{}
	seqs := map[string][]uint64{}
	var order []string // jobs by first record
	var last uint64
	c := log.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rec, err := decodeRecord(k, v)
		if err == nil {
			err = checkLogged(rec, last)
		}
		if err != nil {
			return rep, fmt.Errorf("%v (the log itself is damaged)", err)
		}
		if rv.Record != nil {
			rv.Record(rec)
		}
		s := snaps[rec.Job]
		if s == nil {
			s = &Snapshot{}
			snaps[rec.Job] = s
			order = append(order, rec.Job)
		}
		s.apply(rec)
		seqs[rec.Job] = append(seqs[rec.Job], rec.Seq)
		last = rec.Seq
		rep.Records++
	}
	if err := checkLogEnd(log.Sequence(), last); err != nil {
		return rep, fmt.Errorf("%v (the log itself is damaged)", err)
	}
	if d, err := strconv.ParseUint(string(meta.Get(keyDerived)), 10, 64); err == nil && d > last {
		return rep, fmt.Errorf("meta/derived %d is past the last record %d: records are missing from the log's end (the log itself is damaged)", d, last)
	}
	if rv.Done != nil {
		if err := rv.Done(); err != nil {
			return rep, err
		}
	}
	if log.Sequence() < last {
		if err := log.SetSequence(last); err != nil {
			return rep, err
		}
	}
	for _, name := range [][]byte{bucketJobs, bucketJobRecs} {
		if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return rep, fmt.Errorf("remove %s: %v", name, err)
		}
	}
	jobs, err := tx.CreateBucket(bucketJobs)
	if err != nil {
		return rep, err
	}
	idx, err := tx.CreateBucket(bucketJobRecs)
	if err != nil {
		return rep, err
	}
	for _, job := range order {
		if err := jobs.Put([]byte(job), marshalSnapshot(*snaps[job])); err != nil {
			return rep, err
		}
		packed, err := encodeIndex(nil, 0, seqs[job])
		if err != nil {
			return rep, err
		}
		if err := idx.Put([]byte(job), packed); err != nil {
			return rep, err
		}
	}
	rep.Jobs = len(order)
	if err := meta.Put(keyDerived, []byte(strconv.FormatUint(last, 10))); err != nil {
		return rep, err
	}
	return rep, meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
}
