package fsm

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/journal"
)

// verifyReference is Verify as it was before the Verifier: one closure
// over the whole walk, fmt.Sscanf for operation exit fields. The Verifier
// must report exactly what it reports. (It listed jobs without a snapshot
// in map order; here, as in CheckSnapshots, in job order.)
func verifyReference(recs []journal.Record, snaps []journal.Snapshot) []Problem {
	type jobState struct {
		state     State
		sigs      map[string]string
		upload    string
		container string
		attempt   int
		opsDone   map[int]string
		opStarted map[int]bool
	}
	jobs := map[string]*jobState{}
	var problems []Problem
	bad := func(r journal.Record, format string, args ...any) {
		problems = append(problems, Problem{r.Seq, r.Job, fmt.Sprintf(format, args...)})
	}
	for _, r := range recs {
		js := jobs[r.Job]
		if js == nil {
			js = &jobState{sigs: map[string]string{}, opsDone: map[int]string{}, opStarted: map[int]bool{}}
			jobs[r.Job] = js
		}
		cur := js.state
		switch r.Kind {
		case journal.KindTransition:
			if State(r.From) != cur {
				bad(r, "transition %s says from %q but the job was %q", r.Event, r.From, cur)
			}
			to, err := Next(cur, r.Event)
			if err != nil {
				bad(r, "%s", err.Error())
			} else if to != State(r.To) {
				bad(r, "event %s from %q leads to %q, record says %q", r.Event, cur, to, r.To)
			}
			js.state = State(r.To)
			checkSig := func(field, instruction string) {
				if sig := r.Fields[field]; sig != "" && js.sigs[sig] != instruction {
					bad(r, "%s names %s %s, which no %s intent journaled before it", r.Event, field, sig, instruction)
				}
			}
			switch r.Event {
			case EvClaim:
				if r.Fields["claim_sig"] == "" {
					bad(r, "claim without claim_sig")
				}
				checkSig("claim_sig", chain.IxWorkJob)
			case EvFinish, EvFail:
				checkSig("finish_sig", chain.IxFinishJob)
			case EvGiveBack:
				checkSig("quit_sig", chain.IxQuitJob)
			case EvUpload, EvReject, EvFailStart:
				if cid := r.Fields[FieldResultCID]; cid == "" || cid != js.upload {
					bad(r, "%s names result %q, the last upload intent was %q", r.Event, cid, js.upload)
				}
			case EvStart:
				if c := r.Fields["container"]; c == "" || c != js.container {
					bad(r, "start names container %q, the last container intent was %q", c, js.container)
				}
			}
		case journal.KindIntent, journal.KindProgress:
			if cur == None || cur.Terminal() {
				bad(r, "%s record in state %q", r.Kind, cur)
			}
			switch {
			case r.Tx != nil:
				js.sigs[r.Tx.Signature] = r.Tx.Instruction
			case r.Upload != nil:
				js.upload = r.Upload.CID
			case r.Container != nil:
				if r.Container.ID != ContainerID(r.Job, r.Container.Attempt) {
					bad(r, "container intent %q is not %s", r.Container.ID, ContainerID(r.Job, r.Container.Attempt))
				}
				if r.Container.Attempt <= js.attempt {
					bad(r, "container attempt %d after attempt %d", r.Container.Attempt, js.attempt)
				}
				js.container, js.attempt = r.Container.ID, r.Container.Attempt
				js.opsDone, js.opStarted = map[int]string{}, map[int]bool{}
			case r.Op != nil:
				k := r.Op.Index
				if js.opStarted[k] {
					bad(r, "operation %d started twice in attempt %d", k, js.attempt)
				}
				if k > 0 && js.opsDone[k-1] != "0" {
					bad(r, "operation %d started though operation %d ended %q", k, k-1, js.opsDone[k-1])
				}
				js.opStarted[k] = true
			}
			for f, v := range r.Fields {
				var k int
				if _, err := fmt.Sscanf(f, "op.%d.exit", &k); err == nil && strings.HasSuffix(f, ".exit") {
					js.opsDone[k] = v
				}
			}
		default:
			bad(r, "unknown record kind %q", r.Kind)
		}
	}
	seen := map[string]bool{}
	for _, s := range snaps {
		seen[s.Job] = true
		want := None
		if js := jobs[s.Job]; js != nil {
			want = js.state
		}
		if State(s.State) != want {
			problems = append(problems, Problem{s.LastSeq, s.Job, fmt.Sprintf("snapshot says %q, records replay to %q", s.State, want)})
		}
	}
	var missing []string
	for job := range jobs {
		if !seen[job] {
			missing = append(missing, job)
		}
	}
	slices.Sort(missing)
	for _, job := range missing {
		problems = append(problems, Problem{0, job, "records without a snapshot"})
	}
	return problems
}

// randomLife draws records for a few jobs: mostly what the driver writes,
// with wrong states, signatures, CIDs, containers, operation orders and
// kinds mixed in, so that every check of Verify fires now and then.
func randomLife(r *rand.Rand, n int) []journal.Record {
	jobs := []string{"A", "B", "C", "D"}
	state := map[string]State{}
	events := []string{EvPoll, EvClaim, EvAssigned, EvLose, EvFetch, EvReject, EvStart, EvUpload, EvFinish, EvFail, EvAbandon, EvGiveBack, EvFailStart, "bogus"}
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	var recs []journal.Record
	for range n {
		job := jobs[r.IntN(len(jobs))]
		rec := journal.Record{Job: job, Seq: uint64(len(recs) + 1)}
		switch r.IntN(10) {
		case 0, 1, 2, 3:
			rec.Kind = journal.KindTransition
			rec.Event = events[r.IntN(len(events))]
			rec.From = string(state[job])
			if r.IntN(10) == 0 {
				rec.From = pick("", "polled", "running")
			}
			to, err := Next(state[job], rec.Event)
			if err != nil || r.IntN(10) == 0 {
				to = State(pick("polled", "claimed", "finished", "running"))
			}
			rec.To = string(to)
			state[job] = to
			rec.Fields = map[string]string{}
			for range r.IntN(3) {
				rec.Fields[pick("claim_sig", "finish_sig", "quit_sig", FieldResultCID, "container", "reason")] =
					pick("", "S1", "S2", "Qm1", "Qm2", ContainerID(job, 1), ContainerID(job, 2), "hn-x-1")
			}
		case 4:
			rec.Kind = journal.KindIntent
			rec.Tx = &journal.TxIntent{Instruction: pick(chain.IxWorkJob, chain.IxFinishJob, chain.IxQuitJob), Signature: pick("S1", "S2", "S3")}
		case 5:
			rec.Kind = journal.KindIntent
			rec.Upload = &journal.UploadIntent{What: "result", CID: pick("Qm1", "Qm2")}
		case 6:
			rec.Kind = journal.KindIntent
			attempt := r.IntN(4)
			rec.Container = &journal.ContainerIntent{ID: ContainerID(job, attempt), Attempt: attempt}
			if r.IntN(5) == 0 {
				rec.Container.ID = pick("hn-"+job+"-x", "hn-"+job, ContainerID("other", attempt), "")
			}
		case 7:
			rec.Kind = journal.KindIntent
			rec.Op = &journal.OpIntent{Index: r.IntN(3)}
		case 8:
			rec.Kind = journal.Kind(pick(string(journal.KindProgress), string(journal.KindProgress), "weird"))
			rec.Fields = map[string]string{
				pick("op.0.exit", "op.1.exit", "op.2.exit", "op.01.exit", "op.-1.exit", "op. 1.exit", "op.1.exit.exit", "op.x.exit", "reason"): pick("0", "1", "137"),
			}
		case 9:
			rec.Kind = journal.KindProgress
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestVerifierMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	fired := map[string]bool{}
	for round := range 300 {
		recs := randomLife(r, 60)
		// Snapshots as the journal keeps them, then some that disagree or
		// are missing.
		last := map[string]journal.Snapshot{}
		for _, rec := range recs {
			s := last[rec.Job]
			s.Job, s.LastSeq = rec.Job, rec.Seq
			if rec.Kind == journal.KindTransition {
				s.State = rec.To
			}
			last[rec.Job] = s
		}
		var snaps []journal.Snapshot
		for _, job := range []string{"A", "B", "C", "D", "E"} {
			s, ok := last[job]
			if round%3 == 0 && r.IntN(3) == 0 {
				continue
			}
			if round%3 == 1 && r.IntN(3) == 0 {
				s.Job, s.State = job, "claimed"
				ok = true
			}
			if ok {
				snaps = append(snaps, s)
			}
		}
		want := verifyReference(recs, snaps)
		v := NewVerifier()
		for _, rec := range recs {
			v.Add(rec)
		}
		if v.Count() != len(recs) {
			t.Fatalf("count %d, want %d", v.Count(), len(recs))
		}
		v.CheckSnapshots(snaps)
		if got := v.Problems(); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d:\n got %v\nwant %v", round, got, want)
		}
		for _, p := range want {
			words := strings.Fields(p.Reason)
			fired[strings.Join(words[:min(2, len(words))], " ")] = true
		}
	}
	// The random lives reach every kind of problem.
	for _, reason := range []string{"transition claim", "illegal transition:", "event abandon", "claim names", "claim without",
		"finish names", "give_back names", "upload names", "start names", "container intent", "container attempt",
		"operation 1", "progress record", "unknown record", "snapshot says", "records without"} {
		found := false
		for k := range fired {
			if strings.HasPrefix(k, reason) || strings.HasPrefix(reason, k) {
				found = true
			}
		}
		if !found {
			t.Errorf("no random life produced a problem starting %q; got %v", reason, fired)
		}
	}
}

// TestVerifierFedByEach checks that Verify and a Verifier fed the same
// journal's records one by one agree, on a journal with problems.
func TestVerifierFedByEach(t *testing.T) {
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	recs := randomLife(rand.New(rand.NewPCG(3, 4)), 200)
	for _, rec := range recs {
		if rec.Kind == "weird" {
			continue // Append refuses a record of an unknown kind
		}
		rec.Seq = 0
		if _, err := j.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	problems, n, err := Verify(j)
	if err != nil || n == 0 || len(problems) == 0 {
		t.Fatalf("Verify: %d problems, %d records, %v", len(problems), n, err)
	}
	v := NewVerifier()
	var read []journal.Record
	if err := j.Each(func(r journal.Record) error { v.Add(r); read = append(read, r); return nil }); err != nil {
		t.Fatal(err)
	}
	snaps, err := j.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	v.CheckSnapshots(snaps)
	if !reflect.DeepEqual(v.Problems(), problems) || v.Count() != n {
		t.Fatalf("Verifier %v (%d records)\nVerify %v (%d)", v.Problems(), v.Count(), problems, n)
	}
	if want := verifyReference(read, snaps); !reflect.DeepEqual(problems, want) {
		t.Fatalf("Verify %v\nreference %v", problems, want)
	}
}

func TestOpExitField(t *testing.T) {
	for _, f := range []string{"op.0.exit", "op.12.exit", "op.007.exit", "op.-1.exit", "op.+2.exit", "op. 3.exit",
		"op.4.exit.exit", "op.5.exitx", "op.x.exit", "op..exit", "op.exit", "op.1_0.exit", "op.0x1.exit",
		"op.99999999999999999999.exit", "op.123456789012345678.exit", "op.1234567890123456789.exit", "xop.1.exit", "op.1.exi", ""} {
		var k int
		_, err := fmt.Sscanf(f, "op.%d.exit", &k)
		wantOK := err == nil && strings.HasSuffix(f, ".exit")
		got, ok := opExitField(f)
		if ok != wantOK || (ok && got != k) {
			t.Errorf("%q: got %d %v, fmt.Sscanf gives %d %v", f, got, ok, k, wantOK)
		}
	}
}

// BenchmarkVerifierAdd feeds a Verifier consistent lives of 1000 jobs (12
// records each), as replay --verify does.
//
//	go test ./fsm -run '^$' -bench VerifierAdd -benchmem
func BenchmarkVerifierAdd(b *testing.B) {
	var recs []journal.Record
	for i := range 1000 {
		job := fmt.Sprint("job", i)
		c := ContainerID(job, 1)
		recs = append(recs,
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvPoll, To: string(Polled)},
			journal.Record{Job: job, Kind: journal.KindIntent, Tx: &journal.TxIntent{Instruction: chain.IxWorkJob, Signature: "S1" + job}},
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvClaim, From: string(Polled), To: string(Claimed), Fields: map[string]string{"claim_sig": "S1" + job}},
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvFetch, From: string(Claimed), To: string(Fetched)},
			journal.Record{Job: job, Kind: journal.KindIntent, Container: &journal.ContainerIntent{ID: c, Attempt: 1}},
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvStart, From: string(Fetched), To: string(Running), Fields: map[string]string{"container": c}},
			journal.Record{Job: job, Kind: journal.KindIntent, Op: &journal.OpIntent{Index: 0}},
			journal.Record{Job: job, Kind: journal.KindProgress, Fields: map[string]string{"op.0.exit": "0"}},
			journal.Record{Job: job, Kind: journal.KindIntent, Upload: &journal.UploadIntent{What: "result", CID: "Qm" + job}},
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvUpload, From: string(Running), To: string(Uploaded), Fields: map[string]string{FieldResultCID: "Qm" + job}},
			journal.Record{Job: job, Kind: journal.KindIntent, Tx: &journal.TxIntent{Instruction: chain.IxFinishJob, Signature: "S2" + job}},
			journal.Record{Job: job, Kind: journal.KindTransition, Event: EvFinish, From: string(Uploaded), To: string(Finished), Fields: map[string]string{"finish_sig": "S2" + job}},
		)
	}
	b.Run("verifier", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v := NewVerifier()
			for _, r := range recs {
				v.Add(r)
			}
			if len(v.Problems()) != 0 {
				b.Fatalf("consistent lives gave problems: %v", v.Problems()[:1])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
	// The closure walk Verify was before (baseline).
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p := verifyReference(recs, nil); len(p) != 1000 { // every job lacks a snapshot
				b.Fatalf("%d problems", len(p))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
}
