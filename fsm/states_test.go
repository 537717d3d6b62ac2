package fsm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/journal"
)

func TestTable(t *testing.T) {
	legal := []struct {
		from  State
		event string
		to    State
	}{
		{None, EvPoll, Polled}, {Polled, EvClaim, Claimed}, {Polled, EvAssigned, Claimed}, {Polled, EvLose, Lost},
		{Claimed, EvFetch, Fetched}, {Claimed, EvReject, Uploaded}, {Fetched, EvStart, Running},
		{Running, EvUpload, Uploaded}, {Uploaded, EvFinish, Finished}, {Uploaded, EvFail, Failed},
		{Running, EvAbandon, Abandoned}, {Polled, EvAbandon, Abandoned},
	}
	for _, c := range legal {
		if got, err := Next(c.from, c.event); err != nil || got != c.to {
			t.Errorf("%s --%s--> %s: got %s, %v", c.from, c.event, c.to, got, err)
		}
	}
	illegal := []struct {
		from  State
		event string
	}{
		{Polled, EvFetch}, {Claimed, EvClaim}, {Running, EvFinish}, {Finished, EvAbandon}, {Lost, EvClaim},
		{Failed, EvPoll}, {Uploaded, EvStart}, {None, EvClaim}, {Polled, "bogus"},
	}
	for _, c := range illegal {
		if _, err := Next(c.from, c.event); !errors.Is(err, ErrIllegal) {
			t.Errorf("%s --%s--> allowed (%v)", c.from, c.event, err)
		}
	}
}

func TestVerifyFindsIllegalRecords(t *testing.T) {
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	add := func(r journal.Record) {
		if _, err := j.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	tr := func(job, event, from, to string) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindTransition, Event: event, From: from, To: to}
	}
	add(tr("good", EvPoll, "", "polled"))
	add(tr("good", EvClaim, "polled", "claimed"))
	if problems, n, err := Verify(j); err != nil || len(problems) != 0 || n != 2 {
		t.Fatalf("consistent journal: %v %d %v", problems, n, err)
	}
	add(tr("bad", EvPoll, "", "polled"))
	add(tr("bad", EvFinish, "polled", "finished"))              // illegal from polled
	add(tr("good", EvStart, "claimed", "running"))              // start needs fetched
	add(journal.Record{Job: "bad", Kind: journal.KindProgress}) // after terminal
	add(tr("lier", EvPoll, "", "polled"))
	add(tr("lier", EvClaim, "fetched", "claimed")) // wrong From
	problems, _, err := Verify(j)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"record 4 (job bad)", "record 5 (job good)", "record 6 (job bad)", "record 8 (job lier)"}
	if len(problems) != len(want) {
		t.Fatalf("problems %v", problems)
	}
	for i, p := range problems {
		if !strings.HasPrefix(p.String(), want[i]) {
			t.Errorf("problem %d: %s, want prefix %s", i, p, want[i])
		}
	}
}
