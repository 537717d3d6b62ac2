package journal

import (
	"errors"
	"fmt"
	"runtime"
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
// group. A leader that follows a commit of several records first yields the
// processor while the appenders just released come back (gather, at most
// gatherMax), so that they join its commit instead of forming every other
// one alone.
// Append returns only after the fsync of the transaction holding its
// record, as before: "durable before the effect" holds record by record.

// pending is one Append waiting for its group's commit.
type pending struct {
	rec  Record   // as appended; once done, as stored
	prep prepared // rec encoded by its appender, without its seq
	err  error
	done bool          // rec/err are final; set before wake is signalled
	wake chan struct{} // committed, or given the lead (done false)
}

// group is the queue of appends waiting for a commit.
type group struct {
	mu      sync.Mutex
	queue   []*pending
	leading bool          // an appender is committing
	last    int           // records in the last commit
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
	prep, err := prepare(rec) // on the appender's goroutine, not the commit's
	if err != nil {
		return rec, fmt.Errorf("journal append %s %s: %w", rec.Job, rec.Kind, err)
	}
	p := &pending{rec: rec, prep: prep, wake: make(chan struct{}, 1)}
	g := &j.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.leading {
		g.mu.Unlock()
		<-p.wake
		if p.done {
			return p.rec, p.err
		}
		// Given the lead: the queue holds p.
	} else {
		g.leading = true
		g.mu.Unlock()
	}
	// The previous commit has just released its group: let those appenders
	// run, and join this commit with their next records (see gather).
	g.gather()
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.last = len(batch)
	g.mu.Unlock()

	j.commit(batch)

	// Release the group first, then hand the lead on: the released
	// appenders can then catch the next commit instead of the one after.
	for _, q := range batch {
		if q != p {
			q.wake <- struct{}{}
		}
	}
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
	return p.rec, p.err
}

// gather yields the processor while the appenders the last commit released
// come back, when that commit carried more than one record: until all of
// them have (the queue holds want), none has for gatherQuiet, or gatherMax
// has passed. Concurrent jobs' transitions often follow one another at once;
// those that do then join this commit rather than form the next one alone.
// It never sleeps on a timer, and costs a lone appender nothing. (A count of
// yields without growth is not enough: on two cores a yield often returns at
// once while the released appenders run on the other core.)
func (g *group) gather() {
	g.mu.Lock()
	last, n := g.last, len(g.queue)
	g.mu.Unlock()
	if last <= 1 {
		return
	}
	want := n + last // those waiting and, at most, all those released
	start := time.Now()
	grewAt := start
	for {
		runtime.Gosched()
		g.mu.Lock()
		grew := len(g.queue) > n
		n = len(g.queue)
		g.mu.Unlock()
		now := time.Now()
		if grew {
			grewAt = now
		}
		if n >= want || now.Sub(grewAt) > gatherQuiet || now.Sub(start) > gatherMax {
			return
		}
	}
}

// gatherQuiet and gatherMax bound gather: a few µs of an idle queue, and a
// fraction of one fsync (about 250 µs here) in all.
const (
	gatherQuiet = 20 * time.Microsecond
	gatherMax   = 200 * time.Microsecond
)

// commit writes batch in one transaction. When that transaction fails, each
// record is retried in its own, so that one bad record fails only its own
// Append.
func (j *Journal) commit(batch []*pending) {
	finish := func(p *pending, rec Record, err error) {
		if err != nil {
			err = fmt.Errorf("journal append %s %s: %w", p.rec.Job, p.rec.Kind, err)
		} else {
			p.rec = rec
		}
		p.err, p.done = err, true
	}
	if len(batch) > 1 {
		recs := make([]prepared, len(batch))
		for i, p := range batch {
			recs[i] = p.prep
		}
		if out, err := j.write(recs); err == nil {
			for i, p := range batch {
				finish(p, out[i], nil)
			}
			return
		}
	}
	for _, p := range batch {
		out, err := j.write([]prepared{p.prep})
		var r Record
		if err == nil {
			r = out[0]
		}
		finish(p, r, err)
	}
}

// write logs recs in one transaction with their derived data (see
// derived.go), all or none, and returns them as stored. When a due
// checkpoint fails (a damaged jobs/ or jobrecs/ entry of another job), the
// records are logged without it: the log is what must not stop.
func (j *Journal) write(recs []prepared) ([]Record, error) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	checkpoint := j.checkpointDue(len(recs))
	out, err := j.writeTx(recs, checkpoint)
	if err != nil && checkpoint && j.schema >= 3 {
		out, err = j.writeTx(recs, false)
	}
	return out, err
}

// writeTx is one attempt of write; the caller holds j.wmu.
func (j *Journal) writeTx(recs []prepared, checkpoint bool) ([]Record, error) {
	out := make([]Record, len(recs))
	err := j.commitDelta(func(tx *bolt.Tx) (*delta, error) {
		for i := range recs {
			r, err := j.logTx(tx, recs[i])
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return j.derive(tx, out, checkpoint)
	})
	if errors.Is(err, bolt.ErrIncompatibleValue) { // a bucket where a value belongs, or the reverse
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	j.group.commits.Add(1)
	return out, nil
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
	prep := make([]prepared, len(recs))
	for i := range recs {
		r := recs[i]
		if err := checkNew(&r); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		var err error
		if prep[i], err = prepare(r); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	out, err := j.write(prep)
	if err != nil {
		return nil, fmt.Errorf("journal append batch: %w", err)
	}
	return out, nil
}
