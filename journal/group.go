package journal

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Appends that arrive while a commit is being written wait, and
// are then written together in the next bbolt transaction: one fsync for the
// whole group. There is no timer: a lone Append is committed at once, so a
// single job pays what it paid before, and concurrent jobs share fsyncs.
//
// The appender that finds no commit in progress leads: it takes every
// waiting record, commits them in one transaction, then hands the lead to
// the oldest record that arrived meanwhile (so that no appender waits
// behind a stream of other jobs' records) and wakes the members of its
// group. Append returns only after the fsync of the transaction holding its
// record, as before: "durable before the effect" holds record by record.

// pending is one Append waiting for its group's commit.
type pending struct {
	rec  Record
	err  error
	done bool          // rec/err are final; set before wake is signalled
	wake chan struct{} // committed, or given the lead (done false)
}

// group is the queue of appends waiting for a commit.
type group struct {
	mu      sync.Mutex
	queue   []*pending
	leading bool          // an appender is committing
	commits atomic.Uint64 // write transactions committed by Append (tests)
}

// Append writes rec durably (fsync before returning) and updates the job's
// snapshot in the same bbolt transaction. Concurrent Appends share a
// transaction (see group commit above); each still returns only after the
// fsync of the transaction holding its record. It assigns rec.Seq and, when
// zero, rec.At. It returns the stored record.
func (j *Journal) Append(rec Record) (Record, error) {
	if err := checkNew(&rec); err != nil {
		return rec, err
	}
	p := &pending{rec: rec, wake: make(chan struct{}, 1)}
	g := &j.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.leading {
		g.mu.Unlock()
		<-p.wake
		if p.done {
			return p.rec, p.err
		}
		g.mu.Lock() // given the lead: the queue holds p
	}
	g.leading = true
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()

	j.commit(batch)

	g.mu.Lock()
	var next *pending
	if len(g.queue) > 0 {
		next = g.queue[0]
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	if next != nil {
		next.wake <- struct{}{}
	}
	for _, q := range batch {
		if q != p {
			q.wake <- struct{}{}
		}
	}
	return p.rec, p.err
}

// commit writes batch in one transaction. When that transaction fails, each
// record is retried in its own, so that one bad record fails only its own
// Append.
func (j *Journal) commit(batch []*pending) {
	finish := func(p *pending, rec Record, err error) {
		if errors.Is(err, bolt.ErrIncompatibleValue) { // a bucket where a value belongs, or the reverse
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if err != nil {
			err = fmt.Errorf("journal append %s %s: %w", p.rec.Job, p.rec.Kind, err)
		} else {
			p.rec = rec
		}
		p.err, p.done = err, true
	}
	if len(batch) > 1 {
		out := make([]Record, len(batch))
		err := j.update(func(tx *bolt.Tx) error {
			for i, p := range batch {
				r, err := j.appendTx(tx, p.rec)
				if err != nil {
					return err
				}
				out[i] = r
			}
			return nil
		})
		if err == nil {
			j.group.commits.Add(1)
			for i, p := range batch {
				finish(p, out[i], nil)
			}
			return
		}
	}
	for _, p := range batch {
		var r Record
		err := j.update(func(tx *bolt.Tx) (err error) {
			r, err = j.appendTx(tx, p.rec)
			return err
		})
		if err == nil {
			j.group.commits.Add(1)
		}
		finish(p, r, err)
	}
}

// checkNew validates a record before it is appended and sets its time.
func checkNew(rec *Record) error {
	if rec.Job == "" {
		return errors.New("journal append: record without job")
	}
	if rec.Kind != KindTransition && rec.Kind != KindIntent && rec.Kind != KindProgress {
		return fmt.Errorf("journal append: unknown record kind %q", rec.Kind)
	}
	if rec.At.IsZero() {
		rec.At = time.Now().UTC()
	}
	return nil
}

// AppendBatch writes recs in one transaction, all or none, with one fsync
// (none when the journal was opened with Options.NoSync), and returns them
// as stored. It is for bulk writers (imports, benchmarks); the driver uses
// Append. An invalid record fails the whole batch before anything is
// written.
func (j *Journal) AppendBatch(recs []Record) ([]Record, error) {
	out := make([]Record, len(recs))
	for i := range recs {
		out[i] = recs[i]
		if err := checkNew(&out[i]); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	err := j.update(func(tx *bolt.Tx) error {
		for i := range out {
			r, err := j.appendTx(tx, out[i])
			if err != nil {
				return err
			}
			out[i] = r
		}
		return nil
	})
	if errors.Is(err, bolt.ErrIncompatibleValue) {
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("journal append batch: %w", err)
	}
	return out, nil
}
