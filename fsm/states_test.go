package fsm

import (
	"errors"
	"fmt"
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
	tr := func(job, event, from, to string, fields ...string) journal.Record {
		r := journal.Record{Job: job, Kind: journal.KindTransition, Event: event, From: from, To: to, Fields: map[string]string{}}
		for i := 0; i+1 < len(fields); i += 2 {
			r.Fields[fields[i]] = fields[i+1]
		}
		return r
	}
	tx := func(job, instruction, sig string) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindIntent, Tx: &journal.TxIntent{Instruction: instruction, Signature: sig}}
	}
	op := func(job string, n int) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindIntent, Op: &journal.OpIntent{Index: n}}
	}
	exit := func(job string, n int, code string) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindProgress, Fields: map[string]string{fmt.Sprintf("op.%d.exit", n): code}}
	}
	cont := func(job string, attempt int) journal.Record {
		return journal.Record{Job: job, Kind: journal.KindIntent, Container: &journal.ContainerIntent{ID: ContainerID(job, attempt), Attempt: attempt}}
	}
	// A whole consistent life.
	add(tr("good", EvPoll, "", "polled"))
	add(tx("good", "work_job", "S1"))
	add(tr("good", EvClaim, "polled", "claimed", "claim_sig", "S1"))
	add(tr("good", EvFetch, "claimed", "fetched"))
	add(cont("good", 1))
	add(tr("good", EvStart, "fetched", "running", "container", ContainerID("good", 1)))
	add(op("good", 0))
	add(exit("good", 0, "0"))
	add(op("good", 1))
	add(exit("good", 1, "0"))
	add(journal.Record{Job: "good", Kind: journal.KindIntent, Upload: &journal.UploadIntent{What: "result", CID: "QmA"}})
	add(tr("good", EvUpload, "running", "uploaded", FieldResultCID, "QmA"))
	add(tx("good", "finish_job", "S2"))
	add(tr("good", EvFinish, "uploaded", "finished", "finish_sig", "S2"))
	if problems, n, err := Verify(j); err != nil || len(problems) != 0 || n != 14 {
		t.Fatalf("consistent journal: %v %d %v", problems, n, err)
	}
	add(tr("bad", EvPoll, "", "polled"))                                     // 15
	add(tr("bad", EvFinish, "polled", "finished"))                           // 16 illegal from polled
	add(journal.Record{Job: "bad", Kind: journal.KindProgress})              // 17 after terminal
	add(tr("lier", EvPoll, "", "polled"))                                    // 18
	add(tr("lier", EvClaim, "fetched", "claimed", "claim_sig", "S9"))        // 19 wrong From and unjournaled sig
	add(tr("ops", EvPoll, "", "polled"))                                     // 20
	add(tr("ops", EvAssigned, "polled", "claimed"))                          // 21
	add(tr("ops", EvFetch, "claimed", "fetched"))                            // 22
	add(cont("ops", 1))                                                      // 23
	add(tr("ops", EvStart, "fetched", "running", "container", "hn-other-1")) // 24 wrong container
	add(op("ops", 0))                                                        // 25
	add(exit("ops", 0, "3"))                                                 // 26
	add(op("ops", 1))                                                        // 27 after a failed op
	add(op("ops", 1))                                                        // 28 started twice
	add(tr("ops", EvUpload, "running", "uploaded", FieldResultCID, "QmZ"))   // 29 no upload intent
	add(tr("ops", EvFail, "uploaded", "failed", "finish_sig", "S7"))         // 30 unjournaled finish
	problems, _, err := Verify(j)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"record 16 (job bad): illegal transition",
		"record 17 (job bad): progress record in state",
		"record 19 (job lier): transition claim says from",
		"record 19 (job lier): claim names claim_sig S9",
		"record 24 (job ops): start names container",
		"record 27 (job ops): operation 1 started though operation 0 ended",
		"record 28 (job ops): operation 1 started twice",
		"record 28 (job ops): operation 1 started though",
		"record 29 (job ops): upload names result",
		"record 30 (job ops): fail names finish_sig S7",
	}
	if len(problems) != len(want) {
		t.Fatalf("problems:\n%v", problems)
	}
	for i, p := range problems {
		if !strings.HasPrefix(p.String(), want[i]) {
			t.Errorf("problem %d: %s, want prefix %s", i, p, want[i])
		}
	}
}
