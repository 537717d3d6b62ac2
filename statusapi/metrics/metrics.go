// Package metrics is the worker's Prometheus instrumentation: the series that
// GET /metrics exposes and the hooks that feed them — an fsm.Observer told of
// every journaled transition, and an http.RoundTripper wrapped around the
// Solana JSON-RPC client's transport.
//
// Series (all prefixed hypernode_):
//
//	jobs{state}                            gauge: journaled jobs per lifecycle state (read from the journal at scrape)
//	transitions_total{event}               counter: transitions journaled by this process
//	rpc_calls_total{method}                counter: JSON-RPC requests sent ("batch" for a batch)
//	rpc_errors_total{method,kind}          counter: kind transport (no reply), http (status not 200), rpc (an "error" member)
//	claim_latency_seconds                  histogram: from a job's poll to its claim (or assignment) in the journal
//	container_run_seconds                  histogram: a job's operations' run time (sum of op.N.ms) when it leaves running
//	earned_lamports_total                  counter: lamports paid to this node by finish_job, over the journal
//	active_jobs, uptime_seconds            gauges
//	health_cpu_percent, health_ram_percent, health_disk_free_bytes   gauges: the last health sample
//	gpus                                   gauge: GPUs detected
//	gpu_memory_total_bytes{gpu,name}, gpu_memory_used_bytes{gpu,name}, gpu_utilization_percent{gpu,name}
//
// The health and earnings series are read when scraped, through the Sources
// functions.
package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/statusapi"
)

// Sources are read at scrape time. Nil ones leave their series out.
type Sources struct {
	// Journal gives jobs by state, and the poll and operation records that
	// claim latency and container run time are measured from.
	Journal *journal.Journal
	// Health returns the current health sample (cached by the caller).
	Health func(context.Context) (*statusapi.Health, error)
	// EarnedLamports returns the lamports finish_job paid this node, over
	// the whole journal.
	EarnedLamports func(context.Context) (uint64, error)
}

// Metrics holds the worker's series in its own registry.
type Metrics struct {
	src          Sources
	reg          *prometheus.Registry
	transitions  *prometheus.CounterVec
	rpcCalls     *prometheus.CounterVec
	rpcErrors    *prometheus.CounterVec
	claimLatency prometheus.Histogram
	runTime      prometheus.Histogram
}

// States listed by the jobs gauge even when no job is in them.
var states = []fsm.State{fsm.Polled, fsm.Claimed, fsm.Fetched, fsm.Running, fsm.Uploaded, fsm.Finished, fsm.Failed, fsm.Abandoned, fsm.Lost}

// New registers the worker's series, plus the Go runtime and process
// collectors, in a fresh registry.
func New(src Sources) *Metrics {
	m := &Metrics{src: src, reg: prometheus.NewRegistry(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hypernode_transitions_total",
			Help: "Job transitions journaled by this process, by event."}, []string{"event"}),
		rpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hypernode_rpc_calls_total",
			Help: "Solana JSON-RPC requests sent, by method (batch for a batch request)."}, []string{"method"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hypernode_rpc_errors_total",
			Help: "Solana JSON-RPC requests that failed, by method and kind (transport, http, rpc)."}, []string{"method", "kind"}),
		claimLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hypernode_claim_latency_seconds",
			Help:    "Time from a job's poll to its claim or assignment, in seconds.",
			Buckets: []float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 120}}),
		runTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hypernode_container_run_seconds",
			Help:    "Run time of a job's operations in its container, in seconds.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}), // 1 s .. ~18 h
	}
	m.reg.MustRegister(m.transitions, m.rpcCalls, m.rpcErrors, m.claimLatency, m.runTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		scrapeCollector{m})
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry the series are in (tests, extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Transition implements fsm.Observer: it counts the event and, for a claim
// or assignment, observes the latency since the job's poll; for a job
// leaving running, the summed run time of its operations.
func (m *Metrics) Transition(rec journal.Record) {
	m.transitions.WithLabelValues(rec.Event).Inc()
	if m.src.Journal == nil {
		return
	}
	switch {
	case rec.Event == fsm.EvClaim || rec.Event == fsm.EvAssigned:
		recs, err := m.src.Journal.Records(rec.Job)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Kind == journal.KindTransition && r.Event == fsm.EvPoll {
				m.claimLatency.Observe(rec.At.Sub(r.At).Seconds())
				return
			}
		}
	case rec.From == string(fsm.Running):
		snap, err := m.src.Journal.Snapshot(rec.Job)
		if err != nil {
			return
		}
		if ms, ok := opMillis(snap.Fields); ok {
			m.runTime.Observe(float64(ms) / 1000)
		}
	}
}

// opMillis sums the op.N.ms fields (operation run times) of a job.
func opMillis(fields map[string]string) (int64, bool) {
	var sum int64
	found := false
	for k, v := range fields {
		if strings.HasPrefix(k, "op.") && strings.HasSuffix(k, ".ms") {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				sum += n
				found = true
			}
		}
	}
	return sum, found
}

// scrapeCollector reads the journal, health and earnings when scraped.
type scrapeCollector struct{ m *Metrics }

var (
	descJobs      = prometheus.NewDesc("hypernode_jobs", "Journaled jobs by lifecycle state.", []string{"state"}, nil)
	descEarned    = prometheus.NewDesc("hypernode_earned_lamports_total", "Lamports paid to this node by finish_job, over the journal (99% of each job's price).", nil, nil)
	descActive    = prometheus.NewDesc("hypernode_active_jobs", "Jobs being driven now.", nil, nil)
	descUptime    = prometheus.NewDesc("hypernode_uptime_seconds", "Seconds since the worker started.", nil, nil)
	descCPU       = prometheus.NewDesc("hypernode_health_cpu_percent", "Busy share of all CPU cores in the last health sample, 0..100.", nil, nil)
	descRAM       = prometheus.NewDesc("hypernode_health_ram_percent", "Memory in use in the last health sample, 0..100.", nil, nil)
	descDisk      = prometheus.NewDesc("hypernode_health_disk_free_bytes", "Free bytes on the data directory's filesystem.", nil, nil)
	descPaused    = prometheus.NewDesc("hypernode_claiming_paused", "1 while claiming is paused for a health reason.", nil, nil)
	descGPUs      = prometheus.NewDesc("hypernode_gpus", "GPUs detected.", nil, nil)
	descGPUTotal  = prometheus.NewDesc("hypernode_gpu_memory_total_bytes", "A GPU's memory.", []string{"gpu", "name"}, nil)
	descGPUUsed   = prometheus.NewDesc("hypernode_gpu_memory_used_bytes", "A GPU's memory in use.", []string{"gpu", "name"}, nil)
	descGPUUtil   = prometheus.NewDesc("hypernode_gpu_utilization_percent", "A GPU's utilisation, 0..100.", []string{"gpu", "name"}, nil)
	scrapeTimeout = 5 * time.Second
)

func (c scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descEarned, descActive, descUptime, descCPU, descRAM, descDisk, descPaused,
		descGPUs, descGPUTotal, descGPUUsed, descGPUUtil} {
		ch <- d
	}
}

func (c scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	src := c.m.src
	if src.Journal != nil {
		counts := map[string]int{}
		if snaps, err := src.Journal.Snapshots(); err == nil {
			for _, s := range snaps {
				counts[s.State]++
			}
			for _, s := range states {
				ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(counts[string(s)]), string(s))
			}
		} else {
			ch <- prometheus.NewInvalidMetric(descJobs, err)
		}
	}
	if src.EarnedLamports != nil {
		if v, err := src.EarnedLamports(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descEarned, prometheus.CounterValue, float64(v))
		} else {
			ch <- prometheus.NewInvalidMetric(descEarned, err)
		}
	}
	if src.Health != nil {
		h, err := src.Health(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descCPU, err)
			return
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		gauge(descActive, float64(h.ActiveJobs))
		gauge(descUptime, h.UptimeSeconds)
		gauge(descCPU, h.CPUPercent)
		gauge(descRAM, h.RAMPercent)
		gauge(descDisk, float64(h.DiskFreeBytes))
		paused := 0.0
		if h.Paused != "" {
			paused = 1
		}
		gauge(descPaused, paused)
		gauge(descGPUs, float64(len(h.GPUs)))
		for _, g := range h.GPUs {
			idx := strconv.Itoa(g.Index)
			gauge(descGPUTotal, float64(g.MemoryTotalBytes), idx, g.Name)
			if g.MemoryUsedBytes != nil {
				gauge(descGPUUsed, float64(*g.MemoryUsedBytes), idx, g.Name)
			}
			if g.UtilizationPercent != nil {
				gauge(descGPUUtil, *g.UtilizationPercent, idx, g.Name)
			}
		}
	}
}

// RoundTripper wraps next (http.DefaultTransport when nil) so that every
// JSON-RPC request through it is counted in rpc_calls_total by method, and
// every failure in rpc_errors_total. It reads the request body to find the
// method and the reply body to find a JSON-RPC error; both are handed on
// unchanged.
func (m *Metrics) RoundTripper(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &rpcCounter{m: m, next: next}
}

type rpcCounter struct {
	m    *Metrics
	next http.RoundTripper
}

// maxCountedReply bounds how much of a reply is read to look for an error;
// a larger reply is handed on unread and counted as a success.
const maxCountedReply = 64 << 20

func (c *rpcCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	method := "unknown"
	if req.Body != nil && req.Body != http.NoBody {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		method = MethodOf(body)
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.ContentLength = int64(len(body))
	}
	c.m.rpcCalls.WithLabelValues(method).Inc()
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		c.m.rpcErrors.WithLabelValues(method, "transport").Inc()
		return resp, err
	}
	if resp.StatusCode != http.StatusOK {
		c.m.rpcErrors.WithLabelValues(method, "http").Inc()
		return resp, nil
	}
	if resp.ContentLength > maxCountedReply {
		return resp, nil
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxCountedReply+1))
	rest := resp.Body
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(body), rest), rest}
	if rerr != nil {
		c.m.rpcErrors.WithLabelValues(method, "transport").Inc()
		return resp, nil // the client sees the same read error
	}
	if len(body) <= maxCountedReply && ReplyHasError(body) {
		c.m.rpcErrors.WithLabelValues(method, "rpc").Inc()
	}
	return resp, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

var methodName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// MethodOf returns the JSON-RPC method named by a request body: "batch" for
// an array, "unknown" for a body that is not a request or whose method is not
// a plain identifier (so that the label's values stay bounded).
func MethodOf(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		return "batch"
	}
	var r struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(body, &r) != nil || !methodName.MatchString(r.Method) {
		return "unknown"
	}
	return r.Method
}

// ReplyHasError reports whether a JSON-RPC reply (or any reply of a batch)
// carries a non-null "error" member, or is not JSON-RPC at all.
func ReplyHasError(body []byte) bool {
	type reply struct {
		Error json.RawMessage `json:"error"`
	}
	failed := func(r reply) bool { return len(r.Error) > 0 && !bytes.Equal(r.Error, []byte("null")) }
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var rs []reply
		if json.Unmarshal(body, &rs) != nil {
			return true
		}
		for _, r := range rs {
			if failed(r) {
				return true
			}
		}
		return false
	}
	var r reply
	if json.Unmarshal(body, &r) != nil {
		return true
	}
	return failed(r)
}
