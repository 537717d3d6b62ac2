package jobdef

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
)

// ResultVersion is the version of the result document this package writes.
const ResultVersion = 1

// Statuses of a result document.
const (
	StatusSucceeded = "succeeded" // every operation exited 0
	StatusFailed    = "failed"    // an operation exited non-zero (or could not start)
	StatusTimeout   = "timeout"   // the deadline passed; the job was killed
	StatusRejected  = "rejected"  // the definition failed validation; nothing ran
)

// MaxLogTail is the most bytes of an operation's log kept in OpResult.LogTail.
const MaxLogTail = 4 << 10

// MaxResultBytes bounds a result document ParseResult accepts.
const MaxResultBytes = 4 << 20

// Result is the result document (spec/job-definition.md) the worker stores
// on IPFS and names in finish_job. Every CID in it must be one whose bytes the
// worker uploaded.
type Result struct {
	Version    int        `json:"version"`     // ResultVersion
	Job        string     `json:"job"`         // job account pubkey, base58
	Node       string     `json:"node"`        // node pubkey, base58
	Status     string     `json:"status"`      // one of the Status* constants
	StartedAt  time.Time  `json:"started_at"`  // RFC 3339, UTC; for rejected, when the definition was checked
	FinishedAt time.Time  `json:"finished_at"` // RFC 3339, UTC
	Operations []OpResult `json:"operations"`  // one per operation that ran, in order
	Outputs    []Output   `json:"outputs"`     // files of the outputs directory
	Error      string     `json:"error,omitempty"`
}

// OpResult is what one operation did.
type OpResult struct {
	Index      int    `json:"index"`       // position in the definition's operations
	ExitCode   int    `json:"exit_code"`   // process exit status; 137 when killed at the deadline
	DurationMS int64  `json:"duration_ms"` // wall time, milliseconds
	Log        string `json:"log"`         // CID of the full (scrubbed) log, "" when empty
	LogTail    string `json:"log_tail"`    // last MaxLogTail bytes of the log, valid UTF-8
}

// Output is one file of the job's outputs directory.
type Output struct {
	Path string `json:"path"` // relative to the outputs directory, slash-separated
	CID  string `json:"cid"`
	Size int64  `json:"size"` // bytes
}

// Marshal returns the document as indented JSON ending in a newline. It is
// deterministic: times are written in UTC, absent lists as [], and HTML
// characters are not escaped, so equal results give equal bytes (and CIDs).
func (r *Result) Marshal() ([]byte, error) {
	c := *r
	c.StartedAt = r.StartedAt.UTC()
	c.FinishedAt = r.FinishedAt.UTC()
	if c.Operations == nil {
		c.Operations = []OpResult{}
	}
	if c.Outputs == nil {
		c.Outputs = []Output{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("encode result document: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseResult decodes a result document and checks it: version 1, known
// status, job and node set, error present unless succeeded, operations in
// index order, every CID parseable, sizes not negative, log tails at most
// MaxLogTail bytes. Unknown fields are an error. Errors wrap ErrInvalidResult.
func ParseResult(b []byte) (*Result, error) {
	if len(b) > MaxResultBytes {
		return nil, fmt.Errorf("%w: %d bytes; at most %d allowed", ErrInvalidResult, len(b), MaxResultBytes)
	}
	var r Result
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResult, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidResult)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// ErrInvalidResult classifies errors of ParseResult and Result.Validate.
var ErrInvalidResult = errors.New("invalid result document")

// Validate checks r as ParseResult does.
func (r *Result) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidResult}, args...)...)
	}
	if r.Version != ResultVersion {
		return bad("version %d; want %d", r.Version, ResultVersion)
	}
	switch r.Status {
	case StatusSucceeded, StatusFailed, StatusTimeout, StatusRejected:
	default:
		return bad("status %q; want succeeded, failed, timeout or rejected", r.Status)
	}
	if r.Job == "" || r.Node == "" {
		return bad("job and node are required")
	}
	if r.Status != StatusSucceeded && strings.TrimSpace(r.Error) == "" {
		return bad("status %s needs an error", r.Status)
	}
	if r.StartedAt.IsZero() || r.FinishedAt.IsZero() {
		return bad("started_at and finished_at are required")
	}
	if r.FinishedAt.Before(r.StartedAt) {
		return bad("finished_at is before started_at")
	}
	for i, op := range r.Operations {
		if op.Index != i {
			return bad("operations[%d].index is %d", i, op.Index)
		}
		if op.DurationMS < 0 {
			return bad("operations[%d].duration_ms is negative", i)
		}
		if op.Log != "" {
			if _, err := cid.Decode(op.Log); err != nil {
				return bad("operations[%d].log: not a CID: %w", i, err)
			}
		}
		if len(op.LogTail) > MaxLogTail {
			return bad("operations[%d].log_tail is %d bytes; at most %d allowed", i, len(op.LogTail), MaxLogTail)
		}
	}
	for i, o := range r.Outputs {
		if o.Path == "" || strings.HasPrefix(o.Path, "/") || strings.Contains("/"+o.Path+"/", "/../") {
			return bad("outputs[%d].path must be a relative path inside the outputs directory", i)
		}
		if _, err := cid.Decode(o.CID); err != nil {
			return bad("outputs[%d].cid: not a CID: %w", i, err)
		}
		if o.Size < 0 {
			return bad("outputs[%d].size is negative", i)
		}
	}
	return nil
}

// LogTail returns the last MaxLogTail bytes of log, starting at a rune
// boundary, with invalid UTF-8 replaced, ready for OpResult.LogTail. Scrub
// the log first: the tail is published.
func LogTail(log []byte) string {
	if len(log) > MaxLogTail {
		log = log[len(log)-MaxLogTail:]
		for i := 0; i < utf8.UTFMax && len(log) > 0 && !utf8.RuneStart(log[0]); i++ {
			log = log[1:]
		}
	}
	s := strings.ToValidUTF8(string(log), "\uFFFD")
	for len(s) > MaxLogTail { // replacement characters can grow it
		_, n := utf8.DecodeRuneInString(s)
		s = s[n:]
	}
	return s
}
