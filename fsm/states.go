// Package fsm is the job lifecycle: its states and events, the legal
// transition table (validated with looplab/fsm), the verification of a
// journal against that table, and the driver that performs each step's
// external effect through the Chain, Store and Runtime interfaces defined here.
//
// The driver follows the crash-consistency protocol of DESIGN.md: decide,
// journal the intent durably, act, journal the transition.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	lfsm "github.com/looplab/fsm"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/journal"
)

// State is a job's lifecycle state.
type State string

// States of DESIGN.md. Finished, Failed, Abandoned and Lost are terminal.
const (
	None      State = "" // before the first record
	Polled    State = "polled"
	Claimed   State = "claimed"
	Fetched   State = "fetched"
	Running   State = "running"
	Uploaded  State = "uploaded"
	Finished  State = "finished"  // finish_job landed with a succeeded result
	Failed    State = "failed"    // finish_job landed with a failed/timeout/rejected result
	Abandoned State = "abandoned" // timed out, stopped or taken away on chain
	Lost      State = "lost"      // another node won the claim
)

// Terminal reports whether nothing more will happen to a job in state s.
// Known says whether s is a state of the lifecycle (None included).
func (s State) Known() bool {
	switch s {
	case None, Polled, Claimed, Fetched, Running, Uploaded, Finished, Failed, Abandoned, Lost:
		return true
	}
	return false
}

func (s State) Terminal() bool {
	return s == Finished || s == Failed || s == Abandoned || s == Lost
}

// Events of the lifecycle.
const (
	EvPoll      = "poll"       // none → polled: the job was seen
	EvClaim     = "claim"      // polled → claimed: our work_job landed
	EvAssigned  = "assigned"   // polled → claimed: the chain assigned it to us
	EvLose      = "lose"       // polled → lost: another node has it
	EvFetch     = "fetch"      // claimed → fetched: definition fetched, verified, valid
	EvReject    = "reject"     // claimed → uploaded: invalid definition, rejected result uploaded
	EvStart     = "start"      // fetched → running: container created
	EvUpload    = "upload"     // running → uploaded: operations ended, result uploaded
	EvFinish    = "finish"     // uploaded → finished: finish_job landed (succeeded)
	EvFail      = "fail"       // uploaded → failed: finish_job landed (not succeeded)
	EvAbandon   = "abandon"    // any live state → abandoned
	EvGiveBack  = "give_back"  // a claimed state → abandoned: quit_job landed
	EvFailStart = "fail_start" // fetched → uploaded: the job could not start (image unavailable), failed result uploaded
)

var nonTerminal = []string{string(Polled), string(Claimed), string(Fetched), string(Running), string(Uploaded)}

// Table is the legal transition table.
var Table = lfsm.Events{
	{Name: EvPoll, Src: []string{string(None)}, Dst: string(Polled)},
	{Name: EvClaim, Src: []string{string(Polled)}, Dst: string(Claimed)},
	{Name: EvAssigned, Src: []string{string(Polled)}, Dst: string(Claimed)},
	{Name: EvLose, Src: []string{string(Polled)}, Dst: string(Lost)},
	{Name: EvFetch, Src: []string{string(Claimed)}, Dst: string(Fetched)},
	{Name: EvReject, Src: []string{string(Claimed)}, Dst: string(Uploaded)},
	{Name: EvStart, Src: []string{string(Fetched)}, Dst: string(Running)},
	{Name: EvFailStart, Src: []string{string(Fetched)}, Dst: string(Uploaded)},
	{Name: EvUpload, Src: []string{string(Running)}, Dst: string(Uploaded)},
	{Name: EvFinish, Src: []string{string(Uploaded)}, Dst: string(Finished)},
	{Name: EvFail, Src: []string{string(Uploaded)}, Dst: string(Failed)},
	{Name: EvAbandon, Src: nonTerminal, Dst: string(Abandoned)},
	{Name: EvGiveBack, Src: nonTerminal[1:], Dst: string(Abandoned)},
}

// ErrIllegal is wrapped by every illegal-transition error.
var ErrIllegal = errors.New("illegal transition")

// Machine validates one job's transitions. It is rebuilt from the journal
// with SetState; the journal, not the Machine, is the source of truth.
type Machine struct{ m *lfsm.FSM }

// NewMachine returns a machine in state s.
func NewMachine(s State) *Machine {
	return &Machine{m: lfsm.NewFSM(string(s), Table, nil)}
}

// State is the machine's current state.
func (m *Machine) State() State { return State(m.m.Current()) }

// SetState moves the machine to s without validation (rebuild from journal).
func (m *Machine) SetState(s State) { m.m.SetState(string(s)) }

// Fire applies event and returns the new state, or an error wrapping
// ErrIllegal when the table has no such transition from the current state.
func (m *Machine) Fire(event string) (State, error) {
	from := m.State()
	if err := m.m.Event(context.Background(), event); err != nil {
		var noTransition lfsm.NoTransitionError
		if errors.As(err, &noTransition) {
			return m.State(), nil
		}
		return from, fmt.Errorf("%w: %s from %q", ErrIllegal, event, from)
	}
	return m.State(), nil
}

// Next returns the state event leads to from s, or an error wrapping
// ErrIllegal.
// It reads a table built once from Table (the same transitions a Machine
// fires), so that verifying a long journal does not build a machine per
// record.
func Next(s State, event string) (State, error) {
	if to, ok := nextTable()[transitionKey{s, event}]; ok {
		return to, nil
	}
	return s, fmt.Errorf("%w: %s from %q", ErrIllegal, event, s)
}

type transitionKey struct {
	from  State
	event string
}

var nextTable = sync.OnceValue(func() map[transitionKey]State {
	m := map[transitionKey]State{}
	for _, e := range Table {
		for _, src := range e.Src {
			m[transitionKey{State(src), e.Name}] = State(e.Dst)
		}
	}
	return m
})

// Problem is one inconsistency found by Verify.
type Problem struct {
	Seq    uint64
	Job    string
	Reason string
}

func (p Problem) String() string {
	return fmt.Sprintf("record %d (job %s): %s", p.Seq, p.Job, p.Reason)
}

// Verify walks the whole journal and checks its invariants:
//   - every transition is legal from the job's state at that point and
//     names that state as From;
//   - no intent or progress record follows a terminal state;
//   - a claim names the signature of a journaled work_job intent, a finish
//     or fail one of a journaled finish_job intent, a give-back one of a
//     quit_job intent (intent before effect);
//   - an upload or reject names the CID of the result upload intent before it;
//   - a start names the container of the last container intent, whose ID is
//     hn-<job>-<attempt> with attempts increasing;
//   - operation n is started only after operation n-1 ended with exit 0, and
//     no operation is started twice within one attempt;
//   - every job's snapshot agrees with the replayed state.
//
// It returns the problems found (empty when the journal is consistent) and
// the number of records read; an error means the journal could not be read.
// It is a Verifier fed by j.Each, then given j.Snapshots.
func Verify(j *journal.Journal) ([]Problem, int, error) {
	v := NewVerifier()
	err := j.Each(func(r journal.Record) error {
		v.Add(r)
		return nil
	})
	if err != nil {
		return v.Problems(), v.Count(), err
	}
	snaps, err := j.Snapshots()
	if err != nil {
		return v.Problems(), v.Count(), err
	}
	v.CheckSnapshots(snaps)
	return v.Problems(), v.Count(), nil
}

// Verifier checks Verify's invariants over records fed to it one at a time
// in sequence order (Add), so that a caller that walks the log anyway need
// not walk it again; CheckSnapshots then compares the jobs' snapshots with
// the replayed states. A Verifier is not safe for concurrent use.
//
// Add allocates only for a job's first record, its first tx intent and
// operation, and for a problem found.
type Verifier struct {
	jobs     map[string]*verifyJob
	problems []Problem
	n        int
}

// verifyJob is what Verify knows of one job after its records so far.
type verifyJob struct {
	state     State
	sigs      map[string]string // journaled tx signature -> instruction; nil until the first
	upload    string            // CID of the last upload intent
	container string
	attempt   int
	opsDone   map[int]string // op -> exit code, this attempt; nil until the first
	opStarted map[int]bool   // nil until the first
}

// NewVerifier returns a Verifier that has seen no record.
func NewVerifier() *Verifier {
	return &Verifier{jobs: map[string]*verifyJob{}}
}

// Count is the number of records added.
func (v *Verifier) Count() int { return v.n }

// Problems returns the problems found so far, in the order found: those of
// records in sequence order, then those of CheckSnapshots. It is nil when
// there are none.
func (v *Verifier) Problems() []Problem { return v.problems }

// State is the state the records added so far replay job to (None for a
// job without records).
func (v *Verifier) State(job string) State {
	if js := v.jobs[job]; js != nil {
		return js.state
	}
	return None
}

func (v *Verifier) bad(r *journal.Record, format string, args ...any) {
	v.problems = append(v.problems, Problem{r.Seq, r.Job, fmt.Sprintf(format, args...)})
}

// Add checks record r against the records added before it.
func (v *Verifier) Add(r journal.Record) {
	v.n++
	js := v.jobs[r.Job]
	if js == nil {
		js = &verifyJob{}
		v.jobs[r.Job] = js
	}
	cur := js.state
	switch r.Kind {
	case journal.KindTransition:
		v.transition(&r, js, cur)
	case journal.KindIntent, journal.KindProgress:
		if cur == None || cur.Terminal() {
			v.bad(&r, "%s record in state %q", r.Kind, cur)
		}
		switch {
		case r.Tx != nil:
			if js.sigs == nil {
				js.sigs = map[string]string{}
			}
			js.sigs[r.Tx.Signature] = r.Tx.Instruction
		case r.Upload != nil:
			js.upload = r.Upload.CID
		case r.Container != nil:
			if !isContainerID(r.Container.ID, r.Job, r.Container.Attempt) {
				v.bad(&r, "container intent %q is not %s", r.Container.ID, ContainerID(r.Job, r.Container.Attempt))
			}
			if r.Container.Attempt <= js.attempt {
				v.bad(&r, "container attempt %d after attempt %d", r.Container.Attempt, js.attempt)
			}
			js.container, js.attempt = r.Container.ID, r.Container.Attempt
			js.opsDone, js.opStarted = nil, nil
		case r.Op != nil:
			k := r.Op.Index
			if js.opStarted[k] {
				v.bad(&r, "operation %d started twice in attempt %d", k, js.attempt)
			}
			if k > 0 && js.opsDone[k-1] != "0" {
				v.bad(&r, "operation %d started though operation %d ended %q", k, k-1, js.opsDone[k-1])
			}
			if js.opStarted == nil {
				js.opStarted = map[int]bool{}
			}
			js.opStarted[k] = true
		}
		for f, val := range r.Fields {
			if k, ok := opExitField(f); ok {
				if js.opsDone == nil {
					js.opsDone = map[int]string{}
				}
				js.opsDone[k] = val
			}
		}
	default:
		v.bad(&r, "unknown record kind %q", r.Kind)
	}
}

func (v *Verifier) transition(r *journal.Record, js *verifyJob, cur State) {
	if State(r.From) != cur {
		v.bad(r, "transition %s says from %q but the job was %q", r.Event, r.From, cur)
	}
	to, err := Next(cur, r.Event)
	if err != nil {
		v.bad(r, "%s", err.Error())
	} else if to != State(r.To) {
		v.bad(r, "event %s from %q leads to %q, record says %q", r.Event, cur, to, r.To)
	}
	js.state = State(r.To)
	checkSig := func(field, instruction string) {
		if sig := r.Fields[field]; sig != "" && js.sigs[sig] != instruction {
			v.bad(r, "%s names %s %s, which no %s intent journaled before it", r.Event, field, sig, instruction)
		}
	}
	switch r.Event {
	case EvClaim:
		if r.Fields["claim_sig"] == "" {
			v.bad(r, "claim without claim_sig")
		}
		checkSig("claim_sig", chain.IxWorkJob)
	case EvFinish, EvFail:
		checkSig("finish_sig", chain.IxFinishJob)
	case EvGiveBack:
		checkSig("quit_sig", chain.IxQuitJob)
	case EvUpload, EvReject, EvFailStart:
		if cid := r.Fields[FieldResultCID]; cid == "" || cid != js.upload {
			v.bad(r, "%s names result %q, the last upload intent was %q", r.Event, cid, js.upload)
		}
	case EvStart:
		if c := r.Fields["container"]; c == "" || c != js.container {
			v.bad(r, "start names container %q, the last container intent was %q", c, js.container)
		}
	}
}

// CheckSnapshots compares every job's snapshot (journal.Snapshots) with the
// state its added records replay to, and reports jobs with records but no
// snapshot (in job order). Call it once, after the last Add.
func (v *Verifier) CheckSnapshots(snaps []journal.Snapshot) {
	seen := make(map[string]bool, len(snaps))
	for _, s := range snaps {
		seen[s.Job] = true
		if want := v.State(s.Job); State(s.State) != want {
			v.problems = append(v.problems, Problem{s.LastSeq, s.Job, fmt.Sprintf("snapshot says %q, records replay to %q", s.State, want)})
		}
	}
	var missing []string
	for job := range v.jobs {
		if !seen[job] {
			missing = append(missing, job)
		}
	}
	slices.Sort(missing)
	for _, job := range missing {
		v.problems = append(v.problems, Problem{0, job, "records without a snapshot"})
	}
}

// isContainerID reports whether id == ContainerID(job, attempt), without
// building the string.
func isContainerID(id, job string, attempt int) bool {
	rest, ok := strings.CutPrefix(id, "hn-")
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, job)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, "-")
	if !ok {
		return false
	}
	var buf [24]byte
	return string(strconv.AppendInt(buf[:0], int64(attempt), 10)) == rest
}

// opExitField parses a field name "op.<n>.exit" (an operation's exit code) the way
// fmt.Sscanf(f, "op.%d.exit", &n) does, with HasSuffix(f, ".exit"): names
// of the canonical form are parsed here, any other name that might match
// goes to fmt.Sscanf.
func opExitField(f string) (int, bool) {
	if !strings.HasPrefix(f, "op.") || !strings.HasSuffix(f, ".exit") {
		return 0, false
	}
	digits := f[len("op."):]
	i := 0
	for i < len(digits) && digits[i] >= '0' && digits[i] <= '9' {
		i++
	}
	if i > 0 && i <= 18 && digits[i:] == ".exit" {
		k, err := strconv.Atoi(digits[:i])
		return k, err == nil
	}
	var k int
	if _, err := fmt.Sscanf(f, "op.%d.exit", &k); err == nil {
		return k, true
	}
	return 0, false
}
