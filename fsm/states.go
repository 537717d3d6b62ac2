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

	lfsm "github.com/looplab/fsm"

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
func (s State) Terminal() bool {
	return s == Finished || s == Failed || s == Abandoned || s == Lost
}

// Events of the lifecycle.
const (
	EvPoll     = "poll"     // none → polled: the job was seen
	EvClaim    = "claim"    // polled → claimed: our work_job landed
	EvAssigned = "assigned" // polled → claimed: the chain assigned it to us
	EvLose     = "lose"     // polled → lost: another node has it
	EvFetch    = "fetch"    // claimed → fetched: definition fetched, verified, valid
	EvReject   = "reject"   // claimed → uploaded: invalid definition, rejected result uploaded
	EvStart    = "start"    // fetched → running: container created
	EvUpload   = "upload"   // running → uploaded: operations ended, result uploaded
	EvFinish   = "finish"   // uploaded → finished: finish_job landed (succeeded)
	EvFail     = "fail"     // uploaded → failed: finish_job landed (not succeeded)
	EvAbandon  = "abandon"  // any live state → abandoned
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
	{Name: EvUpload, Src: []string{string(Running)}, Dst: string(Uploaded)},
	{Name: EvFinish, Src: []string{string(Uploaded)}, Dst: string(Finished)},
	{Name: EvFail, Src: []string{string(Uploaded)}, Dst: string(Failed)},
	{Name: EvAbandon, Src: nonTerminal, Dst: string(Abandoned)},
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
func Next(s State, event string) (State, error) {
	return NewMachine(s).Fire(event)
}

// Problem is one inconsistency found by Verify.
type Problem struct {
	Seq    uint64
	Job    string
	Reason string
}

func (p Problem) String() string {
	return fmt.Sprintf("record %d (job %s): %s", p.Seq, p.Job, p.Reason)
}

// Verify walks the whole journal and checks its invariants: every transition
// is legal from the job's state at that point and names it as From; no
// intent or progress follows a terminal state; every job's snapshot agrees
// with the replayed state. It returns the problems found (empty when the
// journal is consistent) and the number of records read; an error means the
// journal could not be read at all.
func Verify(j *journal.Journal) ([]Problem, int, error) {
	state := map[string]State{}
	var problems []Problem
	n := 0
	err := j.Each(func(r journal.Record) error {
		n++
		cur := state[r.Job]
		switch r.Kind {
		case journal.KindTransition:
			if State(r.From) != cur {
				problems = append(problems, Problem{r.Seq, r.Job, fmt.Sprintf("transition %s says from %q but the job was %q", r.Event, r.From, cur)})
			}
			to, err := Next(cur, r.Event)
			if err != nil {
				problems = append(problems, Problem{r.Seq, r.Job, err.Error()})
				state[r.Job] = State(r.To)
				return nil
			}
			if to != State(r.To) {
				problems = append(problems, Problem{r.Seq, r.Job, fmt.Sprintf("event %s from %q leads to %q, record says %q", r.Event, cur, to, r.To)})
			}
			state[r.Job] = State(r.To)
		case journal.KindIntent, journal.KindProgress:
			if cur == None || cur.Terminal() {
				problems = append(problems, Problem{r.Seq, r.Job, fmt.Sprintf("%s record in state %q", r.Kind, cur)})
			}
		default:
			problems = append(problems, Problem{r.Seq, r.Job, fmt.Sprintf("unknown record kind %q", r.Kind)})
		}
		return nil
	})
	if err != nil {
		return problems, n, err
	}
	snaps, err := j.Snapshots()
	if err != nil {
		return problems, n, err
	}
	for _, s := range snaps {
		if want := state[s.Job]; State(s.State) != want {
			problems = append(problems, Problem{s.LastSeq, s.Job, fmt.Sprintf("snapshot says %q, records replay to %q", s.State, want)})
		}
		delete(state, s.Job)
	}
	for job := range state {
		problems = append(problems, Problem{0, job, "records without a snapshot"})
	}
	return problems, n, nil
}
