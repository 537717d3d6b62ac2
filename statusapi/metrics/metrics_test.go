package metrics

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/statusapi"
)

// A JSON-RPC server: getBalance answers, getAccountInfo fails with a
// JSON-RPC error, sendTransaction gets HTTP 429.
func rpcServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		switch req.Method {
		case "getBalance":
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":{"context":{"slot":1},"value":42}}`)
		case "getAccountInfo":
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"error":{"code":-32602,"message":"bad"}}`)
		default:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRoundTripperCounts(t *testing.T) {
	m := New(Sources{})
	srv := rpcServer(t)
	c := &http.Client{Transport: m.RoundTripper(nil)}
	call := func(body string) string {
		resp, err := c.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for range 3 {
		if out := call(`{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["x"]}`); !strings.Contains(out, `"value":42`) {
			t.Fatalf("reply not handed on: %q", out)
		}
	}
	call(`{"jsonrpc":"2.0","id":2,"method":"getAccountInfo"}`)
	call(`{"jsonrpc":"2.0","id":3,"method":"sendTransaction"}`)
	call(`{"jsonrpc":"2.0","id":4,"method":"evil\"label{}"}`)
	// Nothing listens there: a transport error.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	if _, err := c.Post(dead.URL, "application/json", strings.NewReader(`{"method":"getSlot"}`)); err == nil {
		t.Fatal("post to a closed server succeeded")
	}
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.rpcCalls.WithLabelValues("getBalance")), 3, "getBalance calls"},
		{testutil.ToFloat64(m.rpcErrors.WithLabelValues("getBalance", "rpc")), 0, "getBalance errors"},
		{testutil.ToFloat64(m.rpcErrors.WithLabelValues("getAccountInfo", "rpc")), 1, "getAccountInfo rpc errors"},
		{testutil.ToFloat64(m.rpcErrors.WithLabelValues("sendTransaction", "http")), 1, "sendTransaction http errors"},
		{testutil.ToFloat64(m.rpcCalls.WithLabelValues("unknown")), 1, "unknown-method calls"},
		{testutil.ToFloat64(m.rpcErrors.WithLabelValues("getSlot", "transport")), 1, "getSlot transport errors"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestTransitionsAndScrape(t *testing.T) {
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	m := New(Sources{Journal: j,
		EarnedLamports: func(context.Context) (uint64, error) { return 990_000, nil },
		Health: func(context.Context) (*statusapi.Health, error) {
			used, util := uint64(1<<30), 37.5
			return &statusapi.Health{CPUPercent: 12, RAMPercent: 34, DiskFreeBytes: 5 << 30, ActiveJobs: 1, UptimeSeconds: 60,
				GPUs: []statusapi.GPUHealth{{Index: 0, Name: "RTX 3080", MemoryTotalBytes: 10 << 30, MemoryUsedBytes: &used, UtilizationPercent: &util}}}, nil
		}})
	t0 := time.Unix(1_700_000_000, 0).UTC()
	var _ fsm.Observer = m
	appendT := func(at time.Time, event, from, to string, fields map[string]string) {
		rec, err := j.Append(journal.Record{Job: "J", Kind: journal.KindTransition, Event: event, From: from, To: to, At: at, Fields: fields})
		if err != nil {
			t.Fatal(err)
		}
		m.Transition(rec)
	}
	appendT(t0, fsm.EvPoll, "", "polled", nil)
	appendT(t0.Add(2500*time.Millisecond), fsm.EvClaim, "polled", "claimed", nil)
	appendT(t0.Add(3*time.Second), fsm.EvFetch, "claimed", "fetched", nil)
	appendT(t0.Add(4*time.Second), fsm.EvStart, "fetched", "running", nil)
	if _, err := j.Append(journal.Record{Job: "J", Kind: journal.KindProgress, Fields: map[string]string{"op.0.ms": "1500", "op.0.exit": "0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(journal.Record{Job: "J", Kind: journal.KindProgress, Fields: map[string]string{"op.1.ms": "700", "op.1.exit": "0"}}); err != nil {
		t.Fatal(err)
	}
	appendT(t0.Add(9*time.Second), fsm.EvUpload, "running", "uploaded", nil)

	if got := testutil.ToFloat64(m.transitions.WithLabelValues(fsm.EvClaim)); got != 1 {
		t.Errorf("claim transitions %v", got)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`hypernode_claim_latency_seconds_sum 2.5`,
		`hypernode_claim_latency_seconds_count 1`,
		`hypernode_container_run_seconds_sum 2.2`,
		`hypernode_jobs{state="uploaded"} 1`,
		`hypernode_jobs{state="running"} 0`,
		`hypernode_transitions_total{event="upload"} 1`,
		`hypernode_earned_lamports_total 990000`,
		`hypernode_health_cpu_percent 12`,
		`hypernode_health_disk_free_bytes 5.36870912e+09`,
		`hypernode_active_jobs 1`,
		`hypernode_gpus 1`,
		`hypernode_gpu_utilization_percent{gpu="0",name="RTX 3080"} 37.5`,
		`hypernode_gpu_memory_used_bytes{gpu="0",name="RTX 3080"} 1.073741824e+09`,
		`hypernode_claiming_paused 0`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestMethodOfAndReplyHasError(t *testing.T) {
	for body, want := range map[string]string{
		`{"method":"getSlot"}`:    "getSlot",
		` [{"method":"getSlot"}]`: "batch",
		`{"method":"a b"}`:        "unknown",
		`not json`:                "unknown",
		`{"method":"` + strings.Repeat("x", 80) + `"}`: "unknown",
	} {
		if got := MethodOf([]byte(body)); got != want {
			t.Errorf("MethodOf(%s) = %q, want %q", body, got, want)
		}
	}
	for body, want := range map[string]bool{
		`{"result":1}`:                        false,
		`{"result":1,"error":null}`:           false,
		`{"error":{"code":1}}`:                true,
		`[{"result":1},{"error":{"code":1}}]`: true,
		`[{"result":1}]`:                      false,
		`<html>`:                              true,
	} {
		if got := ReplyHasError([]byte(body)); got != want {
			t.Errorf("ReplyHasError(%s) = %v", body, got)
		}
	}
}

func FuzzMethodOf(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"getBalance"}`))
	f.Add([]byte(`[{"method":"x"}]`))
	f.Add([]byte(`{"error":{"code":-1},"result":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := MethodOf(b)
		if m != "batch" && m != "unknown" && !methodName.MatchString(m) {
			t.Fatalf("label %q", m)
		}
		// A reply that is not JSON is an error, never a panic.
		if !json.Valid(b) && !ReplyHasError(b) {
			t.Fatalf("invalid JSON %q counted as a good reply", b)
		}
	})
}
