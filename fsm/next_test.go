package fsm

import (
	"errors"
	"testing"
)

// TestNextAgreesWithMachine: the lookup table Next reads gives, for every
// state and event, what a looplab machine built from Table fires.
func TestNextAgreesWithMachine(t *testing.T) {
	states := []State{None, Polled, Claimed, Fetched, Running, Uploaded, Finished, Failed, Abandoned, Lost}
	events := map[string]bool{"nonsense": true}
	for _, e := range Table {
		events[e.Name] = true
	}
	legal := 0
	for _, s := range states {
		for ev := range events {
			want, werr := NewMachine(s).Fire(ev)
			got, gerr := Next(s, ev)
			if got != want || (werr == nil) != (gerr == nil) || (gerr != nil && !errors.Is(gerr, ErrIllegal)) {
				t.Errorf("%q --%s-->: Next %q %v, machine %q %v", s, ev, got, gerr, want, werr)
			}
			if gerr == nil {
				legal++
			}
		}
	}
	if legal < len(Table) {
		t.Errorf("%d legal transitions, Table has %d events", legal, len(Table))
	}
}
