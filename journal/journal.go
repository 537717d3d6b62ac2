// Package journal is the worker's only local state: an append-only log of job
// transitions and intents in a bbolt file, with a per-job snapshot kept in the
// same transaction as each append.
//
// The protocol it serves (DESIGN.md, "The crash-consistency protocol"): an
// intent is appended, durably, before any external effect; the transition is
// appended once the effect is confirmed. Records are never rewritten.
//
// Layout of the file (schema version SchemaVersion):
//
//	meta/schema   -> decimal schema version
//	log/<seq>     -> JSON Record; seq is a big-endian uint64 from 1
//	jobs/<job>    -> JSON Snapshot of the job after its last record
package journal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version of the file layout this package writes.
const SchemaVersion = 1

var (
	bucketMeta = []byte("meta")
	bucketLog  = []byte("log")
	bucketJobs = []byte("jobs")
	keySchema  = []byte("schema")
)

// Errors callers branch on.
var (
	// ErrLocked: another process holds the journal file (bbolt's flock).
	ErrLocked = errors.New("journal is locked by another process")
	// ErrCorrupt: the file is not a readable journal of a known schema.
	ErrCorrupt = errors.New("journal file is corrupt")
	// ErrNotFound: no record for the job.
	ErrNotFound = errors.New("job not in journal")
)

// Kind says what a record is.
type Kind string

// Record kinds.
const (
	KindTransition Kind = "transition"
	KindIntent     Kind = "intent"
	// KindProgress records facts learned inside a state without leaving it
	// (an operation's exit code while the job stays running).
	KindProgress Kind = "progress"
)

// Intent kinds: which external effect an intent announces.
const (
	IntentTx        = "tx"        // a signed chain transaction about to be sent
	IntentContainer = "container" // a container about to be created
	IntentOp        = "op"        // an operation's task about to be started
	IntentUpload    = "upload"    // content about to be uploaded
)

// TxIntent identifies a signed transaction so that it can be re-sent byte for
// byte or recognised as landed after a crash.
type TxIntent struct {
	Instruction          string `json:"instruction"`             // e.g. "work_job", "finish_job"
	Signature            string `json:"signature"`               // base58
	Raw                  []byte `json:"raw"`                     // signed wire bytes
	LastValidBlockHeight uint64 `json:"last_valid_block_height"` // blockhash expiry
}

// ContainerIntent identifies a job's container before it is created.
type ContainerIntent struct {
	ID       string    `json:"id"`
	Attempt  int       `json:"attempt"`
	Deadline time.Time `json:"deadline"` // absolute; survives restarts
	Image    string    `json:"image"`
}

// OpIntent announces that operation Index's task is about to start.
type OpIntent struct {
	Index int `json:"index"`
}

// UploadIntent names content by its locally computed CID before uploading.
type UploadIntent struct {
	What string `json:"what"` // "result", "log", "output"
	CID  string `json:"cid"`
}

// Record is one journal entry. Exactly one of the intent payloads is set for
// an intent; Event/From/To for a transition. Fields carry facts learned with
// the record (result CID, exit code, reason); never secrets.
type Record struct {
	Seq    uint64    `json:"seq"`
	Job    string    `json:"job"`
	Kind   Kind      `json:"kind"`
	At     time.Time `json:"at"`
	Event  string    `json:"event,omitempty"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	Intent string    `json:"intent,omitempty"`

	Tx        *TxIntent         `json:"tx,omitempty"`
	Container *ContainerIntent  `json:"container,omitempty"`
	Op        *OpIntent         `json:"op,omitempty"`
	Upload    *UploadIntent     `json:"upload,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
}

// Snapshot is a job's state after its last record: the state of its last
// transition, every field ever recorded (later values win), and its open
// intents, keyed by intent kind (an intent is open until the next transition).
type Snapshot struct {
	Job       string            `json:"job"`
	State     string            `json:"state"`
	LastSeq   uint64            `json:"last_seq"`
	Updated   time.Time         `json:"updated"`
	Fields    map[string]string `json:"fields,omitempty"`
	Tx        *TxIntent         `json:"tx,omitempty"`
	Container *ContainerIntent  `json:"container,omitempty"`
	Op        *OpIntent         `json:"op,omitempty"`
	Upload    *UploadIntent     `json:"upload,omitempty"`
}

// Options tunes Open.
type Options struct {
	// LockTimeout is how long Open waits for another process's lock (default 1s).
	LockTimeout time.Duration
	// ReadOnly opens without writing (replay); it still takes a shared lock.
	ReadOnly bool
	// NoSync disables fsync; only for benchmarks of the baseline.
	NoSync bool
}

// Journal is an open journal file. Safe for concurrent use.
type Journal struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the journal at path. It returns an error wrapping
// ErrLocked when another process holds it, and one wrapping ErrCorrupt when
// the file is not a journal of a known schema. A corrupt file is left as it
// is: never overwritten.
func Open(path string, opts Options) (*Journal, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("journal dir: %w", err)
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open journal %s: %w", path, err)
		}
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	j := &Journal{db: db, path: path}
	if err := j.checkSchema(opts.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	return j, nil
}

func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	// bbolt panics on some corrupt files instead of returning an error: turn
	// that into ErrCorrupt so that a bad file can never crash the daemon.
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly, NoSync: opts.NoSync})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is another hypernode-worker running on this data directory?)", ErrLocked, path)
		}
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrChecksum) {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	return db, nil
}

func (j *Journal) checkSchema(readOnly bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, j.path, r)
		}
	}()
	check := func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if tx.Bucket(bucketLog) != nil {
				return fmt.Errorf("%w: %s: log without schema version", ErrCorrupt, j.path)
			}
			if readOnly {
				return nil // empty journal
			}
			for _, b := range [][]byte{bucketMeta, bucketLog, bucketJobs} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil {
			return fmt.Errorf("%w: %s: schema version %q", ErrCorrupt, j.path, meta.Get(keySchema))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w: %s: schema version %d is newer than this worker's %d (upgrade the worker)", ErrCorrupt, j.path, v, SchemaVersion)
		}
		if tx.Bucket(bucketLog) == nil || tx.Bucket(bucketJobs) == nil {
			return fmt.Errorf("%w: %s: missing buckets", ErrCorrupt, j.path)
		}
		return nil
	}
	if readOnly {
		return j.db.View(check)
	}
	return j.db.Update(check)
}

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Close closes the file and releases its lock.
func (j *Journal) Close() error { return j.db.Close() }

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// Append writes rec durably (fsync before returning) and updates the job's
// snapshot in the same bbolt transaction. It assigns rec.Seq and, when zero,
// rec.At. It returns the stored record.
func (j *Journal) Append(rec Record) (Record, error) {
	if rec.Job == "" {
		return rec, errors.New("journal append: record without job")
	}
	if rec.Kind != KindTransition && rec.Kind != KindIntent && rec.Kind != KindProgress {
		return rec, fmt.Errorf("journal append: unknown record kind %q", rec.Kind)
	}
	if rec.At.IsZero() {
		rec.At = time.Now().UTC()
	}
	err := j.db.Update(func(tx *bolt.Tx) error {
		log, jobs := tx.Bucket(bucketLog), tx.Bucket(bucketJobs)
		seq, err := log.NextSequence()
		if err != nil {
			return err
		}
		rec.Seq = seq
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := log.Put(seqKey(seq), b); err != nil {
			return err
		}
		var snap Snapshot
		if old := jobs.Get([]byte(rec.Job)); old != nil {
			if err := json.Unmarshal(old, &snap); err != nil {
				return fmt.Errorf("%w: snapshot of %s: %v", ErrCorrupt, rec.Job, err)
			}
		}
		snap.apply(rec)
		sb, err := json.Marshal(snap)
		if err != nil {
			return err
		}
		return jobs.Put([]byte(rec.Job), sb)
	})
	if err != nil {
		return rec, fmt.Errorf("journal append %s %s: %w", rec.Job, rec.Kind, err)
	}
	return rec, nil
}

func (s *Snapshot) apply(rec Record) {
	s.Job = rec.Job
	s.LastSeq = rec.Seq
	s.Updated = rec.At
	if len(rec.Fields) > 0 && s.Fields == nil {
		s.Fields = make(map[string]string, len(rec.Fields))
	}
	for k, v := range rec.Fields {
		s.Fields[k] = v
	}
	switch rec.Kind {
	case KindTransition:
		s.State = rec.To
		// A transition closes the intents of the step it completes; the
		// container intent lives as long as the container.
		s.Tx, s.Op, s.Upload = nil, nil, nil
	case KindIntent:
		switch {
		case rec.Tx != nil:
			s.Tx = rec.Tx
		case rec.Container != nil:
			s.Container = rec.Container
		case rec.Op != nil:
			s.Op = rec.Op
		case rec.Upload != nil:
			s.Upload = rec.Upload
		}
	}
}

// Snapshot returns the job's snapshot, or an error wrapping ErrNotFound.
func (j *Journal) Snapshot(job string) (Snapshot, error) {
	var snap Snapshot
	err := j.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, job)
		}
		v := b.Get([]byte(job))
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, job)
		}
		if err := json.Unmarshal(v, &snap); err != nil {
			return fmt.Errorf("%w: snapshot of %s: %v", ErrCorrupt, job, err)
		}
		return nil
	})
	return snap, err
}

// Snapshots returns every job's snapshot, ordered by job key.
func (j *Journal) Snapshots() ([]Snapshot, error) {
	var out []Snapshot
	err := j.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var s Snapshot
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("%w: snapshot of %s: %v", ErrCorrupt, k, err)
			}
			out = append(out, s)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].Job < out[b].Job })
	return out, err
}

// Each calls fn for every record in sequence order; a non-nil error from fn
// stops the walk and is returned. A record that does not decode gives an
// error wrapping ErrCorrupt naming its sequence number.
func (j *Journal) Each(fn func(Record) error) error {
	return j.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec Record
			if len(k) != 8 {
				return fmt.Errorf("%w: log key %x is not a sequence number", ErrCorrupt, k)
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%w: record %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			if rec.Seq != binary.BigEndian.Uint64(k) {
				return fmt.Errorf("%w: record under key %d says seq %d", ErrCorrupt, binary.BigEndian.Uint64(k), rec.Seq)
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// Records returns the records of one job in sequence order.
func (j *Journal) Records(job string) ([]Record, error) {
	var out []Record
	err := j.Each(func(r Record) error {
		if r.Job == job {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
