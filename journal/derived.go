package journal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Derived data: the snapshots (jobs/) and the per-job index (jobrecs/) are
// functions of the log. From schema 3 an append writes only its log record
// (one bucket, as a bare bbolt put does); the derived data of the records
// appended since the last checkpoint live in memory (the overlay), and a
// checkpoint writes them into jobs/ and jobrecs/, with meta/derived set to the
// last sequence number they cover, in the same transaction as an append once
// checkpointEvery records are pending, and on Close. Durability is the log's:
// a crash loses only the overlay, which Open rebuilds from the log records
// after meta/derived (at most checkpointEvery of them). A read-only Open keeps
// that tail in memory; a read-write Open checkpoints it at once.
//
// Files of schema 1 and 2 have no meta/derived: their derived data cover the
// whole log. A read-write Open upgrades them to schema 4 (meta/derived = the
// last record). Schema 1 and 2 journals written by openSchema (test data) are
// checkpointed at every commit, as those schemas require.

// checkpointEvery is how many records the overlay holds before the next
// commit also checkpoints them (a variable for tests only).
var checkpointEvery = 2048

var keyDerived = []byte("derived")

// overlay holds the derived data of the records after derived.
type overlay struct {
	mu      sync.RWMutex
	derived uint64              // records ≤ derived are in jobs/ and jobrecs/
	last    uint64              // the last record published
	snaps   map[string]Snapshot // job → snapshot after its last record; never mutated once stored
	seqs    map[string][]uint64 // job → its records after derived, ascending
	pending int                 // records after derived
}

// delta is what one commit changes in the derived data.
type delta struct {
	snaps        map[string]Snapshot
	seqs         map[string][]uint64
	order        []string // jobs in first-touched order
	n            int
	last         uint64
	checkpointed bool
}

// Readers hold o.mu.RLock across their look at the overlay and their read
// of the file; a checkpoint holds o.mu.Lock from before its transaction
// commits until its delta is published. So a reader never sees the file's
// derived data ahead of the overlay's (it sees either the overlay before the
// checkpoint, or the file after it).

// publishLocked makes d visible to readers, after its transaction committed. The
// caller holds o.mu.
func (o *overlay) publishLocked(d *delta) {
	o.last = d.last
	if d.checkpointed {
		// Emptied in place: the maps keep their size for the next
		// checkpoint interval (readers look at them only under o.mu).
		clear(o.snaps)
		clear(o.seqs)
		o.pending, o.derived = 0, d.last
		return
	}
	for job, s := range d.snaps {
		o.snaps[job] = s
		o.seqs[job] = append(o.seqs[job], d.seqs[job]...)
	}
	o.pending += d.n
}

// commitDelta runs fn in a write transaction that logs or checkpoints, then
// publishes the delta fn returns. See the locking rule above.
func (j *Journal) commitDelta(fn func(tx *bolt.Tx) (*delta, error)) error {
	var d *delta
	locked := false
	err := j.update(func(tx *bolt.Tx) (err error) {
		if d, err = fn(tx); err != nil {
			return err
		}
		if d.checkpointed {
			j.ov.mu.Lock()
			locked = true
		}
		return nil
	})
	if !locked {
		j.ov.mu.Lock()
	}
	if err == nil {
		j.ov.publishLocked(d)
	}
	j.ov.mu.Unlock()
	return err
}

// derive folds recs (just logged in tx, in sequence order) into the derived
// data and, when checkpoint is set, writes the overlay and recs' derived data
// into jobs/ and jobrecs/ (and meta/derived from schema 3). The caller holds
// j.wmu and publishes the delta once tx commits. A job's stored snapshot that
// does not decode gives an error wrapping ErrCorrupt.
func (j *Journal) derive(tx *bolt.Tx, recs []Record, checkpoint bool) (*delta, error) {
	d := &delta{snaps: make(map[string]Snapshot, len(recs)), seqs: make(map[string][]uint64, len(recs)), n: len(recs), checkpointed: checkpoint, last: j.ov.last}
	jobs := tx.Bucket(bucketJobs)
	for _, rec := range recs {
		snap, ok := d.snaps[rec.Job]
		if !ok {
			d.order = append(d.order, rec.Job)
			if snap, ok = j.ov.snaps[rec.Job]; ok { // only the writer changes snaps
				snap.Fields = maps.Clone(snap.Fields) // a published snapshot is never changed
			} else if old := jobs.Get([]byte(rec.Job)); old != nil {
				if err := unmarshalSnapshot(old, &snap); err != nil {
					return nil, fmt.Errorf("%w: snapshot of %s: %s", ErrCorrupt, Printable(rec.Job), Printable(err.Error()))
				}
			}
		}
		snap.apply(rec) // on this delta's own copy
		d.snaps[rec.Job] = snap
		d.seqs[rec.Job] = append(d.seqs[rec.Job], rec.Seq)
		d.last = rec.Seq
	}
	if !checkpoint {
		return d, nil
	}
	write := func(job string, s Snapshot, seqs []uint64) error {
		b := marshalSnapshot(s)
		if j.schema < 3 {
			var err error
			if b, err = json.Marshal(s); err != nil {
				return err
			}
		}
		if err := jobs.Put([]byte(job), b); err != nil {
			return err
		}
		if j.schema < 2 {
			return nil
		}
		if j.schema >= 4 {
			return putIndex(tx.Bucket(bucketJobRecs), job, seqs)
		}
		idx, err := tx.Bucket(bucketJobRecs).CreateBucketIfNotExists([]byte(job))
		if errors.Is(err, bolt.ErrIncompatibleValue) {
			return fmt.Errorf("%w: jobrecs/%s is not a bucket", ErrCorrupt, job)
		}
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			if err := idx.Put(seqKey(seq), []byte{}); err != nil {
				return err
			}
		}
		return nil
	}
	for job, s := range j.ov.snaps {
		if _, again := d.snaps[job]; again {
			continue
		}
		if err := write(job, s, j.ov.seqs[job]); err != nil {
			return nil, err
		}
	}
	for _, job := range d.order {
		seqs := append(append([]uint64(nil), j.ov.seqs[job]...), d.seqs[job]...)
		if err := write(job, d.snaps[job], seqs); err != nil {
			return nil, err
		}
	}
	if j.schema >= 3 {
		if err := tx.Bucket(bucketMeta).Put(keyDerived, []byte(strconv.FormatUint(d.last, 10))); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// checkpointDue says whether a commit of n more records should checkpoint.
func (j *Journal) checkpointDue(n int) bool {
	return j.schema < 3 || j.ov.pending+n >= checkpointEvery
}

// readDerived returns meta/derived of a schema-3 file, checked against the
// log's last record last; files of older schemas cover the whole log.
func readDerived(tx *bolt.Tx, schema int, last uint64) (uint64, error) {
	if schema < 3 {
		return last, nil
	}
	v := tx.Bucket(bucketMeta).Get(keyDerived)
	if v == nil {
		return 0, fmt.Errorf("schema %d without meta/%s", schema, keyDerived)
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meta/%s %q is not a sequence number", keyDerived, v)
	}
	if n > last {
		return 0, fmt.Errorf("meta/%s %d is past the last record %d", keyDerived, n, last)
	}
	return n, nil
}

// loadTail folds the log records after the derived sequence into the
// overlay (tx is the Open transaction); with write set (read-write Open) it
// checkpoints them at once.
func (j *Journal) loadTail(tx *bolt.Tx, write bool) error {
	j.ov.snaps, j.ov.seqs = map[string]Snapshot{}, map[string][]uint64{}
	log := tx.Bucket(bucketLog)
	var last uint64
	if k, _ := log.Cursor().Last(); k != nil {
		last = binary.BigEndian.Uint64(k)
	}
	derived, err := readDerived(tx, j.schema, last)
	if err != nil {
		return err
	}
	j.ov.derived, j.ov.last = derived, derived
	if derived == last {
		return nil
	}
	var tail []Record
	c := log.Cursor()
	for k, v := c.Seek(seqKey(derived + 1)); k != nil; k, v = c.Next() {
		rec, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		tail = append(tail, rec)
	}
	d, err := j.derive(tx, tail, write)
	if err != nil {
		return err
	}
	j.ov.publishLocked(d) // Open: no reader yet
	return nil
}

// putIndex appends seqs (ascending, after those already indexed) to the
// job's packed index jobrecs/<job> (schema 4).
func putIndex(idx *bolt.Bucket, job string, seqs []uint64) error {
	key := []byte(job)
	old := idx.Get(key)
	if old == nil && idx.Bucket(key) != nil {
		return fmt.Errorf("%w: jobrecs/%s is a bucket, not a packed index", ErrCorrupt, job)
	}
	indexed, err := decodeIndex(old, nil)
	if err != nil {
		return fmt.Errorf("%w: jobrecs/%s: %v", ErrCorrupt, job, err)
	}
	var prev uint64
	if len(indexed) > 0 {
		prev = indexed[len(indexed)-1]
	}
	v := make([]byte, len(old), len(old)+2*len(seqs))
	copy(v, old)
	if v, err = encodeIndex(v, prev, seqs); err != nil {
		return fmt.Errorf("jobrecs/%s: %v", job, err)
	}
	return idx.Put(key, v)
}

// encodeIndex appends seqs to a packed index whose last sequence number is
// prev (0 for an empty one): each as a uvarint of its distance from the one
// before. seqs must ascend from above prev.
func encodeIndex(dst []byte, prev uint64, seqs []uint64) ([]byte, error) {
	for _, seq := range seqs {
		if seq <= prev {
			return dst, fmt.Errorf("record %d indexed after record %d", seq, prev)
		}
		dst = binary.AppendUvarint(dst, seq-prev)
		prev = seq
	}
	return dst, nil
}

// decodeIndex appends to out the sequence numbers of a packed index (schema
// 4): uvarints, the first record's sequence number, then each next record's
// distance from the one before, which is never 0. A truncated or overlong
// uvarint, a zero distance or a sequence number past 2^64-1 is an error.
func decodeIndex(v []byte, out []uint64) ([]uint64, error) {
	var prev uint64
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 {
			return out, fmt.Errorf("truncated or overlong uvarint after record %d", prev)
		}
		if d == 0 || prev+d < prev {
			return out, fmt.Errorf("sequence numbers not ascending after record %d", prev)
		}
		prev += d
		out = append(out, prev)
		v = v[n:]
	}
	return out, nil
}
