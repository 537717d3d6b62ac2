// Package journal is the worker's only local state: an append-only log of job
// transitions and intents in a bbolt file, with a per-job snapshot and index
// derived from it (see derived.go: written at checkpoints, rebuilt from the
// log's tail on Open).
//
// The protocol it serves (DESIGN.md, "The crash-consistency protocol"): an
// intent is appended, durably, before any external effect; the transition is
// appended once the effect is confirmed. Records are never rewritten.
//
// Layout of the file (schema version SchemaVersion):
//
//	meta/schema         -> decimal schema version
//	meta/derived        -> decimal seq: jobs/ and jobrecs/ cover log/1..derived (from schema 3)
//	log/<seq>           -> Record (codec.go: binary from schema 3, JSON before; both read); seq is a big-endian uint64 from 1
//	jobs/<job>          -> Snapshot of the job after its last record ≤ derived (codec.go: binary from schema 3, JSON before)
//	jobrecs/<job>       -> the job's index into log, packed (schema 4; see decodeIndex): its records' seqs as
//	                       uvarints, the first seq then each one's distance from the one before
//
// Schema 1 had no jobrecs; schemas 2 and 3 kept the index as a nested bucket
// per job (jobrecs/<job>/<seq> -> empty), one bbolt key per record; schemas 1
// and 2 had no meta/derived and wrote the snapshot and index with every
// record. Opening an older file read-write upgrades it in one bbolt
// transaction (an interrupted upgrade leaves it as it was); opening it
// read-only leaves it as it is and reads it in its own layout (on schema 1,
// Records scans the log).
//
// Open checks the file's page structure before bbolt reads it (see pages.go),
// so that a damaged file gives ErrCorrupt instead of a crash; Check decodes and
// cross-checks every record, snapshot and index entry.
package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version of the file layout this package writes.
// Versions 1 (no per-job index), 2 (derived data written with every record)
// and 3 (the index a bucket per job) are read, and upgraded on a read-write
// Open.
const SchemaVersion = 4

var (
	bucketMeta    = []byte("meta")
	bucketLog     = []byte("log")
	bucketJobs    = []byte("jobs")
	bucketJobRecs = []byte("jobrecs")
	keySchema     = []byte("schema")
)

// Errors callers branch on.
var (
	// ErrLocked: another process holds the journal file (bbolt's flock).
	ErrLocked = errors.New("journal is locked by another process")
	// ErrCorrupt: the file is not a readable journal of a known schema.
	ErrCorrupt = errors.New("journal file is corrupt")
	// ErrNewerSchema: the file is a journal of a schema newer than
	// SchemaVersion, written by a newer worker. It is not ErrCorrupt: the
	// file is sound for that worker, and must not be quarantined.
	ErrNewerSchema = errors.New("journal written by a newer worker")
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
	// GPUs are the GPUs assigned to the container (hardware GPU IDs: UUID,
	// else "<vendor>:<index>"); empty for none. Absent in journals written
	// before parallel jobs.
	GPUs []string `json:"gpus,omitempty"`
	// CPUs and MemoryBytes are the share of the host given to the container
	// (0: not recorded, the runtime defaults).
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
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
	db       *bolt.DB
	path     string
	schema   int // of the file as opened (after any upgrade); 0: empty read-only file
	upgraded int // the schema the file had when Open upgraded it; 0: not upgraded
	readOnly bool
	group    group
	// wmu serialises the writers (the group's leader, AppendBatch, Close)
	// from the start of a write transaction to the publication of its
	// derived data.
	wmu sync.Mutex
	ov  overlay
}

// Open opens or creates the journal at path. It returns an error wrapping
// ErrLocked when another process holds it, and one wrapping ErrCorrupt when
// the file is not a journal of a known schema or its bbolt page structure is
// damaged (a directory or other non-regular file at path is also ErrCorrupt).
// A corrupt file is left as it is: never overwritten. A zero-length file is
// a journal never initialised and, read-write, is initialised.
//
// A read-write Open of a schema-1 file upgrades it to SchemaVersion in one
// transaction before returning; a record that does not decode fails the
// upgrade with ErrCorrupt and leaves the file at schema 1.
//
// Open reads every page header and element table of the file once (no record
// is decoded): about the cost of reading the file.
func Open(path string, opts Options) (*Journal, error) {
	return openSchema(path, opts, SchemaVersion)
}

// openSchema is Open creating, or upgrading to, schema target. Only the
// schema-1 generator of testdata uses a target other than SchemaVersion.
func openSchema(path string, opts Options, target int) (*Journal, error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open journal %s: %w", path, err)
		}
	} else if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("journal dir: %w", err)
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	j := &Journal{db: db, path: path, readOnly: opts.ReadOnly}
	j.ov.snaps, j.ov.seqs = map[string]Snapshot{}, map[string][]uint64{}
	if err := j.checkSchema(opts.ReadOnly, target); err != nil {
		db.Close()
		return nil, err
	}
	return j, nil
}

func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	// bbolt panics on some corrupt files instead of returning an error: turn
	// that into ErrCorrupt so that a bad file can never crash the daemon.
	// bbolt's own cleanup does not run then: the file is closed here, but
	// bbolt's mapping of it stays, and keeps the file's lock held until this
	// process exits (Rebuild checks the pages read-only first for that
	// reason).
	var opened *os.File
	open := openFile(opts.ReadOnly, opts.LockTimeout)
	defer func() {
		if r := recover(); r != nil {
			if opened != nil {
				opened.Close()
			}
			db, err = nil, unreadable(path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  opts.LockTimeout,
		ReadOnly: opts.ReadOnly,
		NoSync:   opts.NoSync,
		// The freelist is rebuilt on open (from the page walk bbolt does
		// anyway) instead of written by every commit: one page less per
		// fsync.
		NoFreelistSync: !opts.ReadOnly,
		FreelistType:   bolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := open(name, flag, perm)
			opened = f
			return f, err
		},
	})
	if err != nil {
		if errors.Is(err, ErrLocked) || errors.Is(err, ErrCorrupt) {
			return nil, err
		}
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

func (j *Journal) checkSchema(readOnly bool, target int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = unreadable(j.path, r)
		}
	}()
	check := func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if k, _ := tx.Cursor().First(); k != nil {
				return fmt.Errorf("%w: %s: %q without schema version", ErrCorrupt, j.path, k)
			}
			if readOnly {
				j.schema = 0
				return nil // empty journal
			}
			buckets := [][]byte{bucketMeta, bucketLog, bucketJobs}
			if target >= 2 {
				buckets = append(buckets, bucketJobRecs)
			}
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			j.schema = target
			if target >= 3 {
				if err := tx.Bucket(bucketMeta).Put(keyDerived, []byte("0")); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(target)))
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil || v < 1 {
			return fmt.Errorf("%w: %s: schema version %q", ErrCorrupt, j.path, meta.Get(keySchema))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%s: %w", j.path, newerSchema(v))
		}
		log := tx.Bucket(bucketLog)
		for _, b := range [][]byte{bucketLog, bucketJobs} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: %s: no bucket %s", ErrCorrupt, j.path, b)
			}
		}
		var last uint64
		if k, _ := log.Cursor().Last(); k != nil {
			if len(k) != 8 {
				return fmt.Errorf("%w: %s: log key %s is not a sequence number", ErrCorrupt, j.path, hexKey(k))
			}
			if last = binary.BigEndian.Uint64(k); log.Sequence() < last {
				// The next Append would overwrite record last.
				return fmt.Errorf("%w: %s: log sequence %d is behind its last record %d", ErrCorrupt, j.path, log.Sequence(), last)
			}
		}
		if v >= 2 && tx.Bucket(bucketJobRecs) == nil {
			return fmt.Errorf("%w: %s: schema %d without bucket %s", ErrCorrupt, j.path, v, bucketJobRecs)
		}
		j.schema = v
		if !readOnly && v < target {
			j.upgraded = v
		}
		if v == 1 && target >= 2 && !readOnly {
			if err := upgradeV1(tx); err != nil {
				return fmt.Errorf("%w: %s: upgrade from schema 1: %v", ErrCorrupt, j.path, err)
			}
			j.schema = 2
		}
		if j.schema == 2 && target >= 3 && !readOnly {
			// Schema 2 wrote the derived data with every record.
			if err := tx.Bucket(bucketMeta).Put(keyDerived, []byte(strconv.FormatUint(last, 10))); err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Put(keySchema, []byte("3")); err != nil {
				return err
			}
			j.schema = 3
		}
		if j.schema == 3 && target >= 4 && !readOnly {
			if err := upgradeV3(tx); err != nil {
				return fmt.Errorf("%w: %s: upgrade from schema 3: %v", ErrCorrupt, j.path, err)
			}
			j.schema = 4
		}
		if err := j.loadTail(tx, !readOnly); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, j.path, err)
		}
		return nil
	}
	if readOnly {
		return j.db.View(check)
	}
	return j.db.Update(check)
}

// upgradeHook, when set (by tests), is called after each record indexed by
// upgradeV1 with the number indexed so far.
var upgradeHook func(indexed int)

// upgradeV1 builds jobrecs from the log and sets schema 2, in tx.
func upgradeV1(tx *bolt.Tx) error {
	if tx.Bucket(bucketJobRecs) != nil {
		if err := tx.DeleteBucket(bucketJobRecs); err != nil {
			return err
		}
	}
	idx, err := tx.CreateBucket(bucketJobRecs)
	if err != nil {
		return err
	}
	perJob := map[string]*bolt.Bucket{}
	c := tx.Bucket(bucketLog).Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rec, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		b := perJob[rec.Job]
		if b == nil {
			if b, err = idx.CreateBucketIfNotExists([]byte(rec.Job)); err != nil {
				return fmt.Errorf("index of job %q: %v", rec.Job, err)
			}
			perJob[rec.Job] = b
		}
		if err := b.Put(k, []byte{}); err != nil {
			return err
		}
		if n++; upgradeHook != nil {
			upgradeHook(n)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
}

// newerSchema is the error for a file of schema v > SchemaVersion.
func newerSchema(v int) error {
	return fmt.Errorf("%w: schema version %d is newer than this worker's %d: run the newer worker again, or restore the copy of the journal kept from before it upgraded the file (if no newer worker ever ran on this data directory, the version is damaged: move the file aside by hand)", ErrNewerSchema, v, SchemaVersion)
}

// upgradeV3 rewrites the index of schema 2 and 3 (a bucket per job, a key
// per record) as one packed value per job (schema 4) and sets schema 4, in
// tx. The index covers the same records before and after.
func upgradeV3(tx *bolt.Tx) error {
	old := tx.Bucket(bucketJobRecs)
	type entry struct {
		job []byte
		idx []byte
	}
	var packed []entry
	err := old.ForEach(func(job, v []byte) error {
		seqs, err := nestedIndex(old, job, v)
		if err != nil {
			return err
		}
		enc, err := encodeIndex(nil, 0, seqs)
		if err != nil {
			return fmt.Errorf("jobrecs/%s: %v", job, err)
		}
		packed = append(packed, entry{bytes.Clone(job), enc})
		return nil
	})
	if err != nil {
		return err
	}
	if err := tx.DeleteBucket(bucketJobRecs); err != nil {
		return err
	}
	idx, err := tx.CreateBucket(bucketJobRecs)
	if err != nil {
		return err
	}
	idx.FillPercent = 0.9 // written in key order
	for _, e := range packed {
		if err := idx.Put(e.job, e.idx); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, []byte("4"))
}

// nestedIndex reads the schema-2/3 index of one job: jobrecs/<job> must be
// a bucket (v nil) of 8-byte sequence numbers with empty values. Its errors
// name the bad key and are not yet wrapped in ErrCorrupt.
func nestedIndex(idx *bolt.Bucket, job, v []byte) ([]uint64, error) {
	b := idx.Bucket(job)
	if v != nil || b == nil {
		return nil, fmt.Errorf("jobrecs/%s: a value, not a bucket", job)
	}
	var seqs []uint64
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) != 0 {
			return nil, fmt.Errorf("jobrecs/%s/%s: not a sequence number with an empty value", job, hexKey(k))
		}
		seqs = append(seqs, binary.BigEndian.Uint64(k))
	}
	return seqs, nil
}

// readIndex returns the indexed records of job (none when the job has no
// index), in the file's layout: a packed value from schema 4, a nested
// bucket before. Its errors name the bad key and are not yet wrapped in
// ErrCorrupt.
func (j *Journal) readIndex(idx *bolt.Bucket, job []byte) ([]uint64, error) {
	if j.schema >= 4 {
		v := idx.Get(job)
		if v == nil {
			if idx.Bucket(job) != nil {
				return nil, fmt.Errorf("jobrecs/%s: a bucket, not a packed index", job)
			}
			return nil, nil
		}
		seqs, err := decodeIndex(v, nil)
		if err != nil {
			return nil, fmt.Errorf("jobrecs/%s: %v", job, err)
		}
		return seqs, nil
	}
	v := idx.Get(job)
	if v == nil && idx.Bucket(job) == nil {
		return nil, nil
	}
	return nestedIndex(idx, job, v)
}

// decodeRecord decodes the log entry k -> v, checking that the key is a
// sequence number equal to the record's and that the record names a job.
// Its errors name the key and are not yet wrapped in ErrCorrupt.
func decodeRecord(k, v []byte) (Record, error) {
	var rec Record
	if len(k) != 8 {
		return rec, fmt.Errorf("log key %s is not a sequence number", hexKey(k))
	}
	seq := binary.BigEndian.Uint64(k)
	if v == nil {
		return rec, fmt.Errorf("log/%d is a bucket, not a record", seq)
	}
	if err := unmarshalRecord(v, &rec); err != nil {
		return rec, fmt.Errorf("record %d: %v", seq, err)
	}
	if rec.Seq != seq {
		return rec, fmt.Errorf("record under key %d says seq %d", seq, rec.Seq)
	}
	if rec.Job == "" {
		return rec, fmt.Errorf("record %d has no job", seq)
	}
	return rec, nil
}

// UpgradedFrom is the schema version the file had when this read-write Open
// upgraded it to Schema, or 0 when it was not upgraded (it was already at
// SchemaVersion, or is new).
func (j *Journal) UpgradedFrom() int { return j.upgraded }

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Schema is the file's schema version as opened: SchemaVersion, 1 for a
// schema-1 file opened read-only, 0 for an empty file opened read-only.
func (j *Journal) Schema() int { return j.schema }

// Close checkpoints the derived data of the records appended since the last
// checkpoint (read-write), then closes the file and releases its lock. A
// failed checkpoint loses nothing (the next Open rebuilds it from the log);
// its error is returned after the file is closed.
func (j *Journal) Close() error {
	var cerr error
	if !j.readOnly {
		j.wmu.Lock()
		if j.ov.pending > 0 {
			cerr = j.commitDelta(func(tx *bolt.Tx) (*delta, error) { return j.derive(tx, nil, true) })
		}
		j.wmu.Unlock()
	}
	if err := j.db.Close(); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("journal checkpoint at close: %w", cerr)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// logTx writes rec under the log's next sequence number in tx and returns
// it as stored (as a later decode will read it). The derived data are the
// caller's (derive).
func (j *Journal) logTx(tx *bolt.Tx, rec prepared) (Record, error) {
	log := tx.Bucket(bucketLog)
	// Keys only ever grow: a split leaf is never written to again, so fill
	// it (bbolt's default half-fills pages for random inserts).
	log.FillPercent = logFillPercent
	seq, err := log.NextSequence()
	if err != nil {
		return Record{}, err
	}
	b, stored := rec.withSeq(seq)
	if err := log.Put(seqKey(seq), b); err != nil {
		return Record{}, err
	}
	return stored, nil
}

// logFillPercent is how full the log bucket's pages are split.
const logFillPercent = 0.95

// storeRecord encodes rec for the log (the binary format of codec.go) and
// returns the record as its encoding decodes (see normalizeRecord): what
// the derived data are built from is what a later read will see.
func storeRecord(rec Record) ([]byte, Record, error) {
	b := marshalRecord(rec)
	var stored Record
	if err := unmarshalRecord(b, &stored); err != nil {
		return nil, rec, fmt.Errorf("record does not survive its encoding: %w", err)
	}
	return b, stored, nil
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
	j.ov.mu.RLock()
	defer j.ov.mu.RUnlock()
	if snap, ok := j.ov.snaps[job]; ok {
		snap.Fields = maps.Clone(snap.Fields) // the stored one is never changed
		return snap, nil
	}
	var snap Snapshot
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, job)
		}
		v := b.Get([]byte(job))
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, job)
		}
		if err := unmarshalSnapshot(v, &snap); err != nil {
			return fmt.Errorf("%w: snapshot of %s: %s", ErrCorrupt, Printable(job), Printable(err.Error()))
		}
		return nil
	})
	return snap, err
}

// Snapshots returns every job's snapshot, ordered by job key.
func (j *Journal) Snapshots() ([]Snapshot, error) {
	j.ov.mu.RLock()
	defer j.ov.mu.RUnlock()
	recent := j.ov.snaps
	out := make([]Snapshot, 0, len(recent))
	for _, s := range recent {
		s.Fields = maps.Clone(s.Fields)
		out = append(out, s)
	}
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if _, ok := recent[string(k)]; ok {
				return nil
			}
			var s Snapshot
			if err := unmarshalSnapshot(v, &s); err != nil {
				return fmt.Errorf("%w: snapshot of %s: %s", ErrCorrupt, Printable(string(k)), Printable(err.Error()))
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
	var fnPanic *any // a panic of fn's own is fn's caller's, not ErrCorrupt
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			rec, err := decodeRecord(k, v)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			if err := callFn(fn, rec, &fnPanic); err != nil || fnPanic != nil {
				return err
			}
		}
		return nil
	})
	if fnPanic != nil {
		panic(*fnPanic)
	}
	return err
}

func callFn(fn func(Record) error, rec Record, fnPanic **any) error {
	done := false
	defer func() {
		if !done {
			r := recover()
			*fnPanic = &r
		}
	}()
	err := fn(rec)
	done = true
	return err
}

// view and update run fn in a bbolt transaction, turning a panic of bbolt's
// (an assertion on a damaged page that Open's page check let through) into
// an error wrapping ErrCorrupt. bbolt rolls the transaction back as the
// panic leaves it.
func (j *Journal) view(fn func(*bolt.Tx) error) (err error) {
	defer j.recoverCorrupt(&err)
	return j.db.View(fn)
}

func (j *Journal) update(fn func(*bolt.Tx) error) (err error) {
	defer j.recoverCorrupt(&err)
	return j.db.Update(fn)
}

func (j *Journal) recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = unreadable(j.path, r)
	}
}

// unreadable is the error for a file bbolt could not read: r is what bbolt
// panicked with on a damaged page (recovered: the process did not crash).
// It wraps ErrCorrupt: "journal file is corrupt: <path>: bbolt could not
// read it: <bbolt's detail>".
func unreadable(path string, r any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, bboltUnreadable(r))
}

// bboltUnreadable is "bbolt could not read it: <detail>" for what bbolt
// panicked with.
func bboltUnreadable(r any) string { return "bbolt could not read it: " + damageDetail(r) }

// damageDetail says what bbolt found wrong in a damaged file, from what it
// panicked with or what its consistency check reported (which names a
// panic of its own checker as "panic: ..."). The detail (page, key, type)
// is kept; the words of the mechanism ("panic", "runtime error",
// "assertion failed") are dropped, since they read as a crash of the
// worker when it is the file that is damaged.
func damageDetail(r any) string {
	detail := fmt.Sprint(r) // an error's Error()
	for {
		trimmed := detail
		for _, p := range []string{"panic: ", "runtime error: ", "assertion failed: "} {
			trimmed = strings.TrimPrefix(trimmed, p)
		}
		if trimmed == detail {
			break
		}
		detail = trimmed
	}
	return detail
}

// Records returns the records of one job in sequence order (none, and no
// error, for a job not in the journal). From schema 2 it reads the job's
// index and only the job's records; on a schema-1 file opened read-only it
// scans the whole log. An index entry without its record, or naming another
// job's record, gives an error wrapping ErrCorrupt.
func (j *Journal) Records(job string) ([]Record, error) {
	if j.schema < 2 {
		return j.scanRecords(job)
	}
	j.ov.mu.RLock()
	defer j.ov.mu.RUnlock()
	recent := j.ov.seqs[job]
	var out []Record
	err := j.view(func(tx *bolt.Tx) error {
		seqs, err := j.readIndex(tx.Bucket(bucketJobRecs), []byte(job))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		seqs = append(seqs, recent...)
		log := tx.Bucket(bucketLog)
		for _, seq := range seqs {
			k := seqKey(seq)
			v := log.Get(k)
			if v == nil {
				return fmt.Errorf("%w: jobrecs/%s/%d: no such record in the log", ErrCorrupt, job, seq)
			}
			rec, err := decodeRecord(k, v)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			if rec.Job != job {
				return fmt.Errorf("%w: jobrecs/%s/%d: record is of job %s", ErrCorrupt, job, rec.Seq, rec.Job)
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// scanRecords is Records by a walk of the whole log (schema 1).
func (j *Journal) scanRecords(job string) ([]Record, error) {
	var out []Record
	err := j.Each(func(r Record) error {
		if r.Job == job {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
