package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// fixture is a real journal holding jobs in several states, and a job
// directory tree for their logs.
type fixture struct {
	j    *journal.Journal
	dir  string
	t0   time.Time
	jobs map[string]string // name -> job key
}

var lifecycle = []struct{ event, from, to string }{
	{fsm.EvPoll, "", "polled"}, {fsm.EvClaim, "polled", "claimed"}, {fsm.EvFetch, "claimed", "fetched"},
	{fsm.EvStart, "fetched", "running"}, {fsm.EvUpload, "running", "uploaded"}, {fsm.EvFinish, "uploaded", "finished"},
}

func (f *fixture) advance(t *testing.T, job string, steps int, fields map[string]string) {
	t.Helper()
	snap, err := f.j.Snapshot(job)
	start := 0
	if err == nil {
		for i, s := range lifecycle {
			if s.to == snap.State {
				start = i + 1
			}
		}
	}
	for _, s := range lifecycle[start : start+steps] {
		f.t0 = f.t0.Add(time.Second)
		if s.event == fsm.EvClaim {
			if _, err := f.j.Append(journal.Record{Job: job, Kind: journal.KindIntent, Intent: journal.IntentTx, At: f.t0,
				Tx: &journal.TxIntent{Instruction: "work_job", Signature: "sig-" + job, Raw: []byte("SIGNED-BYTES"), LastValidBlockHeight: 9}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.j.Append(journal.Record{Job: job, Kind: journal.KindTransition, Event: s.event, From: s.from, To: s.to, At: f.t0, Fields: fields}); err != nil {
			t.Fatal(err)
		}
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	j, err := journal.Open(filepath.Join(dir, "journal.db"), journal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	f := &fixture{j: j, dir: dir, t0: time.Unix(1_700_000_000, 0).UTC(), jobs: map[string]string{
		"finished": "JobFinished1111", "failed": "JobFailed2222", "running": "JobRunning3333", "polled": "JobPolled4444"}}
	f.advance(t, f.jobs["finished"], 6, map[string]string{"status": "succeeded", "result_cid": "QmResult"})
	f.advance(t, f.jobs["failed"], 5, nil)
	f.t0 = f.t0.Add(time.Second)
	if _, err := j.Append(journal.Record{Job: f.jobs["failed"], Kind: journal.KindTransition, Event: fsm.EvFail, From: "uploaded", To: "failed", At: f.t0,
		Fields: map[string]string{"status": "failed", "error": "operation 1 exited with code 3"}}); err != nil {
		t.Fatal(err)
	}
	f.advance(t, f.jobs["running"], 4, nil)
	f.advance(t, f.jobs["polled"], 1, nil)
	return f
}

func (f *fixture) jobDir(job string) string { return filepath.Join(f.dir, "jobs", job) }

var prices = map[string]uint64{"JobFinished1111": 1_000_000, "JobFailed2222": 2_000_050}

func (f *fixture) sources() Sources {
	return Sources{
		Status: func(context.Context) (*Status, error) { return &Status{Node: "NodeKey", Slots: 1}, nil },
		Specs: func(context.Context) (*hardware.Specs, error) {
			return &hardware.Specs{CPU: hardware.CPU{Model: "Test CPU", Cores: 2, Threads: 4}, OS: "linux test"}, nil
		},
		Health: func(context.Context) (*Health, error) {
			return &Health{At: time.Now(), CPUPercent: 12.5, RAMPercent: 40, ActiveJobs: 1, GPUs: []GPUHealth{}}, nil
		},
		Journal: f.j,
		JobDir:  f.jobDir,
		Secrets: func(context.Context, string) ([]jobdef.Secret, error) { return []jobdef.Secret{"hn-secret-value"}, nil },
		Prices: func(_ context.Context, jobs []string) (map[string]Price, error) {
			out := map[string]Price{}
			for _, job := range jobs {
				if p, ok := prices[job]; ok {
					out[job] = Price{Lamports: p, Source: "job account"}
				}
			}
			return out, nil
		},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hypernode_test 1\n") }),
		LogPoll: 10 * time.Millisecond,
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, b)
		}
	}
	if strings.Contains(string(b), "SIGNED-BYTES") || strings.Contains(string(b), "U0lHTkVE") {
		t.Fatalf("%s serves a transaction's signed bytes", url)
	}
	return resp.StatusCode
}

func TestRoutes(t *testing.T) {
	f := newFixture(t)
	srv := New(f.sources())
	sock := filepath.Join(f.dir, "worker.sock")
	if err := srv.ListenUnix(sock); err != nil {
		t.Fatal(err)
	}
	addr, err := srv.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if info, err := os.Stat(sock); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", info, err)
	}
	for name, c := range map[string]struct {
		client *http.Client
		base   string
	}{"unix": {unixClient(sock), "http://worker"}, "tcp": {http.DefaultClient, "http://" + addr.String()}} {
		t.Run(name, func(t *testing.T) {
			var jobs []Job
			if code := getJSON(t, c.client, c.base+"/v1/jobs", &jobs); code != 200 || len(jobs) != 4 {
				t.Fatalf("jobs: %d %+v", code, jobs)
			}
			states := map[string]string{}
			for i, j := range jobs {
				states[j.Job] = j.State
				if i > 0 && jobs[i-1].Updated.After(j.Updated) {
					t.Errorf("jobs not ordered by update: %+v", jobs)
				}
			}
			for name, key := range f.jobs {
				if states[key] != name {
					t.Errorf("job %s state %q, want %q", key, states[key], name)
				}
			}
			var d JobDetail
			if code := getJSON(t, c.client, c.base+"/v1/jobs/"+f.jobs["finished"], &d); code != 200 {
				t.Fatalf("job: %d", code)
			}
			var events []string
			for _, r := range d.Records {
				if r.Kind == journal.KindTransition {
					events = append(events, r.From+">"+r.To)
				}
				if r.Tx != nil && r.Tx.Signature != "sig-"+f.jobs["finished"] {
					t.Errorf("tx intent %+v", r.Tx)
				}
			}
			if strings.Join(events, " ") != ">polled polled>claimed claimed>fetched fetched>running running>uploaded uploaded>finished" ||
				d.State != "finished" || d.ResultCID != "QmResult" || len(d.Records) != 7 {
				t.Errorf("job detail %+v, transitions %v", d, events)
			}
			if code := getJSON(t, c.client, c.base+"/v1/jobs/NoSuchJob", nil); code != 404 {
				t.Errorf("unknown job: HTTP %d", code)
			}
			var e Earnings
			if code := getJSON(t, c.client, c.base+"/v1/earnings", &e); code != 200 {
				t.Fatalf("earnings: %d", code)
			}
			// 99% of each price, the fee rounded down as the program does:
			// 1_000_000 - 10_000, 2_000_050 - 20_000.
			if e.TotalLamports != 990_000+1_980_050 || len(e.Jobs) != 2 || e.Jobs[0].Job != f.jobs["finished"] || e.Jobs[1].EarnedLamports != 1_980_050 ||
				e.Jobs[1].State != "failed" || e.Jobs[0].PriceSource != "job account" {
				t.Errorf("earnings %+v", e)
			}
			var h Health
			if code := getJSON(t, c.client, c.base+"/v1/health", &h); code != 200 || h.CPUPercent != 12.5 || h.ActiveJobs != 1 {
				t.Errorf("health %d %+v", code, h)
			}
			var sp hardware.Specs
			if code := getJSON(t, c.client, c.base+"/v1/specs", &sp); code != 200 || sp.CPU.Model != "Test CPU" {
				t.Errorf("specs %d %+v", code, sp)
			}
			var st Status
			if code := getJSON(t, c.client, c.base+"/v1/status", &st); code != 200 || st.Node != "NodeKey" {
				t.Errorf("status %d %+v", code, st)
			}
			resp, err := c.client.Get(c.base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), "hypernode_test 1") {
				t.Errorf("metrics: %s", b)
			}
			resp, err = c.client.Get(c.base + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `<canvas id="health-chart"`) {
				t.Errorf("dashboard: %d %.200s", resp.StatusCode, b)
			}
		})
	}
	// A page on another origin reaching 127.0.0.1 through a rebound DNS name
	// is refused.
	req, _ := http.NewRequest("GET", "http://"+addr.String()+"/v1/status", nil)
	req.Host = "attacker.example:80"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Host: HTTP %d, want 403", resp.StatusCode)
	}
}

func TestListenTCPRefusesNonLoopback(t *testing.T) {
	srv := New(Sources{})
	defer srv.Close()
	for _, addr := range []string{"0.0.0.0:9090", "192.168.1.10:9090", "example.com:9090", ":9090", "127.0.0.1", "127.0.0.1:99999", "[::]:9090"} {
		if _, err := srv.ListenTCP(addr); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("%q: %v, want ErrNotLoopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		if err := CheckLoopback(addr); err != nil {
			t.Errorf("%q: %v", addr, err)
		}
	}
}

// logReader collects a stream's frames.
type logReader struct {
	t   *testing.T
	c   *websocket.Conn
	all []LogMessage
}

// until reads frames until cond holds over all frames read, failing after 10 s.
func (r *logReader) until(cond func() bool) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !cond() {
		var m LogMessage
		if err := r.c.ReadJSON(&m); err != nil {
			r.t.Fatalf("read log stream: %v (got %+v)", err, r.all)
		}
		r.all = append(r.all, m)
	}
}

func (r *logReader) ended() bool { return len(r.all) > 0 && r.all[len(r.all)-1].End != "" }

func textOf(ms []LogMessage, op int) string {
	var b strings.Builder
	for _, m := range ms {
		if m.Op == op {
			b.WriteString(m.Text)
		}
	}
	return b.String()
}

func TestLogStreamFollowsScrubsAndEnds(t *testing.T) {
	f := newFixture(t)
	job := f.jobs["running"]
	logs := filepath.Join(f.jobDir(job), "logs")
	os.MkdirAll(logs, 0o700)
	op0 := filepath.Join(logs, "op-0.log")
	if err := os.WriteFile(op0, []byte("starting\ntoken=hn-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := New(f.sources())
	addr, err := srv.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	url := "ws://" + addr.String() + "/v1/jobs/" + job + "/logs"

	// Another origin may not open the stream.
	if _, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"http://attacker.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin dial: %v %v", resp, err)
	}
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &logReader{t: t, c: c}
	// The backlog arrives (the scrubber may hold back a secret's length
	// of bytes until more is written).
	r.until(func() bool { return strings.Contains(textOf(r.all, 0), "token=") })
	// A line appended after the stream began is streamed.
	fh, err := os.OpenFile(op0, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(fh, "live line 1\nsecret again hn-secret-value done\n")
	fh.Close()
	r.until(func() bool { return strings.Contains(textOf(r.all, 0), "live line 1") })
	// Operation 1 starts: operation 0's log is complete and sent in full.
	if err := os.WriteFile(filepath.Join(logs, "op-1.log"), []byte("second operation\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.until(func() bool { return strings.Contains(textOf(r.all, 1), "second operation") })
	// The job leaves running: the stream sends the rest and ends.
	f.advance(t, job, 1, nil)
	r.until(r.ended)
	all := r.all
	if last := all[len(all)-1]; last.End != "job uploaded" {
		t.Errorf("end %q", last.End)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after the end: %v, want a normal close", err)
	}
	want0 := "starting\ntoken=[redacted]\nlive line 1\nsecret again [redacted] done\n"
	if textOf(all, 0) != want0 || textOf(all, 1) != "second operation\n" {
		t.Errorf("op 0 %q\nop 1 %q", textOf(all, 0), textOf(all, 1))
	}
	for _, m := range all {
		if strings.Contains(m.Text, "hn-secret") {
			t.Fatalf("secret streamed: %q", m.Text)
		}
	}
}

func TestLogStreamOfEndedJobAndRefusals(t *testing.T) {
	f := newFixture(t)
	job := f.jobs["finished"]
	logs := filepath.Join(f.jobDir(job), "logs")
	os.MkdirAll(logs, 0o700)
	big := strings.Repeat("x", 100) + "\n"
	content := strings.Repeat(big, (MaxLogBacklog/len(big))+50) + "tail line\n"
	os.WriteFile(filepath.Join(logs, "op-0.log"), []byte(content), 0o600)
	src := f.sources()
	srv := New(src)
	addr, _ := srv.ListenTCP("127.0.0.1:0")
	t.Cleanup(func() { srv.Close() })
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr.String()+"/v1/jobs/"+job+"/logs", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &logReader{t: t, c: c}
	r.until(r.ended)
	all := r.all
	c.Close()
	text := textOf(all, 0)
	if all[len(all)-1].End != "job finished" || !strings.HasPrefix(text, "[… ") || !strings.HasSuffix(text, big+"tail line\n") || len(text) > MaxLogBacklog+200 {
		t.Errorf("ended job's stream: end %q, %d bytes, starts %.60q", all[len(all)-1].End, len(text), text)
	}
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr.String()+"/v1/jobs/Nope/logs", nil); err == nil || resp.StatusCode != 404 {
		t.Errorf("unknown job: %v", err)
	}
	// Without the secrets to scrub with, nothing is streamed.
	src.Secrets = func(context.Context, string) ([]jobdef.Secret, error) { return nil, errors.New("gateway down") }
	srv2 := New(src)
	addr2, _ := srv2.ListenTCP("127.0.0.1:0")
	t.Cleanup(func() { srv2.Close() })
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr2.String()+"/v1/jobs/"+job+"/logs", nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("no secrets: %v", err)
	}
}

func TestNodeShare(t *testing.T) {
	for price, want := range map[uint64]uint64{0: 0, 99: 99, 100: 99, 1_000_000: 990_000, 150: 149} {
		if got := NodeShare(price); got != want {
			t.Errorf("NodeShare(%d) = %d, want %d", price, got, want)
		}
	}
}

// Prices are read once per paid job; a job the source cannot price fails
// the request and is asked again the next time.
func TestEarningsReadsEachPriceOnce(t *testing.T) {
	f := newFixture(t)
	src := f.sources()
	var asked [][]string
	missing := true
	src.Prices = func(_ context.Context, jobs []string) (map[string]Price, error) {
		asked = append(asked, jobs)
		out := map[string]Price{}
		for _, job := range jobs {
			if job == f.jobs["failed"] && missing {
				continue
			}
			out[job] = Price{Lamports: prices[job], Source: "market"}
		}
		return out, nil
	}
	srv := New(src)
	if _, err := srv.EarnedLamports(context.Background()); err == nil || !strings.Contains(err.Error(), f.jobs["failed"]) {
		t.Fatalf("unpriced job: %v", err)
	}
	missing = false
	for range 2 {
		total, err := srv.EarnedLamports(context.Background())
		if err != nil || total != 990_000+1_980_050 {
			t.Fatalf("total %d %v", total, err)
		}
	}
	if len(asked) != 2 || len(asked[0]) != 2 || len(asked[1]) != 1 || asked[1][0] != f.jobs["failed"] {
		t.Errorf("prices asked %v; want both paid jobs, then only the one not priced", asked)
	}
}
