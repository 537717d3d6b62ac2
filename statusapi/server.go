package statusapi

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// Health is one health sample as the API shows it.
type Health struct {
	At            time.Time `json:"at"`
	CPUPercent    float64   `json:"cpu_percent"`     // all cores, 0..100
	RAMPercent    float64   `json:"ram_percent"`     // 0..100
	DiskFreeBytes uint64    `json:"disk_free_bytes"` // on the data directory's filesystem
	ActiveJobs    int       `json:"active_jobs"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// Paused says why claiming is paused; empty while claiming.
	Paused string      `json:"paused,omitempty"`
	GPUs   []GPUHealth `json:"gpus"`
	Error  string      `json:"error,omitempty"` // why a part of the sample is missing
}

// GPUHealth is one GPU in a health sample; nil fields were not measured.
type GPUHealth struct {
	Index              int      `json:"index"`
	Name               string   `json:"name"`
	MemoryTotalBytes   uint64   `json:"memory_total_bytes"`
	MemoryUsedBytes    *uint64  `json:"memory_used_bytes,omitempty"`
	UtilizationPercent *float64 `json:"utilization_percent,omitempty"`
}

// Sources are what the API reads. A route whose source is nil answers 404.
type Sources struct {
	Status func(context.Context) (*Status, error)
	Specs  func(context.Context) (*hardware.Specs, error)
	Health func(context.Context) (*Health, error)
	// Journal backs /v1/jobs, /v1/jobs/{id}, the log stream's end and
	// /v1/earnings.
	Journal *journal.Journal
	// JobDir is where a job's files are: its logs are JobDir(job)/logs/op-N.log.
	JobDir func(job string) string
	// Secrets returns the env values of a job's definition, scrubbed from
	// streamed logs. An error refuses the stream (logs are never sent
	// unscrubbed).
	Secrets func(ctx context.Context, job string) ([]jobdef.Secret, error)
	// Prices returns what each of jobs pays, for /v1/earnings; a job left
	// out of the map fails the request (it is asked again next time).
	Prices func(ctx context.Context, jobs []string) (map[string]Price, error)
	// Metrics serves /metrics.
	Metrics http.Handler
	// LogPoll is how often a followed log file is checked for growth
	// (default 250ms).
	LogPoll time.Duration
}

// Server serves the API on its listeners until Close.
type Server struct {
	src     Sources
	handler http.Handler
	earn    *earnings

	mu    sync.Mutex
	srvs  []*http.Server
	paths []string // unix sockets to remove on Close
	done  chan struct{}
}

// ErrNotLoopback: a TCP address that is not on a loopback interface.
var ErrNotLoopback = errors.New("API address is not a loopback address")

//go:embed dashboard
var dashboardFS embed.FS

// New returns a server of src with no listener yet.
func New(src Sources) *Server {
	s := &Server{src: src, done: make(chan struct{})}
	if src.Journal != nil && src.Prices != nil {
		s.earn = &earnings{journal: src.Journal, prices: src.Prices, cache: map[string]Price{}}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/specs", s.specs)
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /v1/jobs", s.jobs)
	mux.HandleFunc("GET /v1/jobs/{id}", s.job)
	mux.HandleFunc("GET /v1/jobs/{id}/logs", s.logs)
	mux.HandleFunc("GET /v1/earnings", s.earnings)
	if src.Metrics != nil {
		mux.Handle("GET /metrics", src.Metrics)
	}
	static, _ := fs.Sub(dashboardFS, "dashboard")
	mux.Handle("GET /", http.FileServerFS(static))
	s.handler = mux
	return s
}

// Handler is the API's handler (tests, other listeners).
func (s *Server) Handler() http.Handler { return s.handler }

// Listen serves status() on a unix socket at path (replacing a stale socket
// file left by a crashed daemon). It is New(Sources{Status: status}) and
// ListenUnix.
func Listen(path string, status func(context.Context) (*Status, error)) (*Server, error) {
	s := New(Sources{Status: status})
	if err := s.ListenUnix(path); err != nil {
		return nil, err
	}
	return s, nil
}

// ListenUnix serves the API on a unix socket at path, mode 0600, replacing a
// stale socket file left by a crashed daemon.
func (s *Server) ListenUnix(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	s.paths = append(s.paths, path)
	s.mu.Unlock()
	s.serve(ln, s.handler)
	return nil
}

// CheckLoopback parses addr (host:port, host an IP literal or "localhost")
// and returns an error wrapping ErrNotLoopback unless the host is a loopback
// address. Port 0 picks a free port.
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q is not host:port", ErrNotLoopback, addr)
	}
	if _, err := netip.ParseAddrPort(net.JoinHostPort("127.0.0.1", port)); err != nil {
		return fmt.Errorf("%w: %q has no valid port", ErrNotLoopback, addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q (use 127.0.0.1:PORT)", ErrNotLoopback, addr)
	}
	return nil
}

// ListenTCP serves the API and the dashboard on addr, which must be a
// loopback address (ErrNotLoopback otherwise). Requests whose Host header is
// not a loopback name are refused (DNS rebinding). It returns the address
// listened on.
func (s *Server) ListenTCP(addr string) (net.Addr, error) {
	if err := CheckLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.serve(ln, loopbackHost(s.handler))
	return ln.Addr(), nil
}

// loopbackHost refuses requests whose Host is not localhost or a loopback IP,
// so that a web page on another origin cannot reach the API by rebinding a
// DNS name to 127.0.0.1.
func loopbackHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			http.Error(w, "forbidden host", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.srvs = append(s.srvs, srv)
	s.mu.Unlock()
	go srv.Serve(ln)
}

// Close stops serving (ending log streams) and removes the unix sockets.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	var errs []error
	for _, srv := range s.srvs {
		errs = append(errs, srv.Close())
	}
	for _, p := range s.paths {
		os.Remove(p)
	}
	s.srvs, s.paths = nil, nil
	return errors.Join(errs...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// reqCtx bounds a request's work.
func reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 5*time.Second)
}

var errNoSource = errors.New("not served by this worker")

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.src.Status == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	ctx, cancel := reqCtx(r)
	defer cancel()
	st, err := s.src.Status(ctx)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	sort.SliceStable(st.Jobs, func(a, b int) bool { return st.Jobs[a].Updated.Before(st.Jobs[b].Updated) })
	writeJSON(w, st)
}

func (s *Server) specs(w http.ResponseWriter, r *http.Request) {
	if s.src.Specs == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	ctx, cancel := reqCtx(r)
	defer cancel()
	sp, err := s.src.Specs(ctx)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, sp)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.src.Health == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	ctx, cancel := reqCtx(r)
	defer cancel()
	h, err := s.src.Health(ctx)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, h)
}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request) {
	if s.src.Journal == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	snaps, err := s.src.Journal.Snapshots()
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	jobs := make([]Job, 0, len(snaps))
	for _, sn := range snaps {
		jobs = append(jobs, JobFromSnapshot(sn))
	}
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].Updated.Before(jobs[b].Updated) })
	writeJSON(w, jobs)
}

// JobDetail is one job with its journal records.
type JobDetail struct {
	Job
	Fields  map[string]string `json:"fields,omitempty"`
	Records []Record          `json:"records"`
	// Logs are the operation log files present, in operation order
	// ("op-0.log", …).
	Logs []string `json:"logs"`
}

// Record is a journal record as the API shows it: a transaction intent
// without its signed bytes.
type Record struct {
	Seq       uint64                   `json:"seq"`
	Kind      journal.Kind             `json:"kind"`
	At        time.Time                `json:"at"`
	Event     string                   `json:"event,omitempty"`
	From      string                   `json:"from,omitempty"`
	To        string                   `json:"to,omitempty"`
	Intent    string                   `json:"intent,omitempty"`
	Tx        *TxIntent                `json:"tx,omitempty"`
	Container *journal.ContainerIntent `json:"container,omitempty"`
	Op        *journal.OpIntent        `json:"op,omitempty"`
	Upload    *journal.UploadIntent    `json:"upload,omitempty"`
	Fields    map[string]string        `json:"fields,omitempty"`
}

// TxIntent is a journaled transaction: which instruction and its signature.
type TxIntent struct {
	Instruction          string `json:"instruction"`
	Signature            string `json:"signature"`
	LastValidBlockHeight uint64 `json:"last_valid_block_height"`
}

func recordOf(r journal.Record) Record {
	out := Record{Seq: r.Seq, Kind: r.Kind, At: r.At, Event: r.Event, From: r.From, To: r.To, Intent: r.Intent,
		Container: r.Container, Op: r.Op, Upload: r.Upload, Fields: r.Fields}
	if r.Tx != nil {
		out.Tx = &TxIntent{Instruction: r.Tx.Instruction, Signature: r.Tx.Signature, LastValidBlockHeight: r.Tx.LastValidBlockHeight}
	}
	return out
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	if s.src.Journal == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	id := r.PathValue("id")
	snap, err := s.src.Journal.Snapshot(id)
	if errors.Is(err, journal.ErrNotFound) {
		apiError(w, http.StatusNotFound, fmt.Errorf("job %q: %w", id, err))
		return
	}
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	recs, err := s.src.Journal.Records(id)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	d := JobDetail{Job: JobFromSnapshot(snap), Fields: snap.Fields, Records: make([]Record, 0, len(recs)), Logs: []string{}}
	for _, rec := range recs {
		d.Records = append(d.Records, recordOf(rec))
	}
	if s.src.JobDir != nil {
		for n := 0; ; n++ {
			if _, err := os.Stat(logFile(s.src.JobDir(id), n)); err != nil {
				break
			}
			d.Logs = append(d.Logs, fmt.Sprintf("op-%d.log", n))
		}
	}
	writeJSON(w, d)
}

func (s *Server) earnings(w http.ResponseWriter, r *http.Request) {
	if s.earn == nil {
		apiError(w, http.StatusNotFound, errNoSource)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	e, err := s.earn.compute(ctx)
	if err != nil {
		apiError(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, e)
}

// EarnedLamports is the total of /v1/earnings (for the metrics counter).
// It is an error when the server has no Journal or Prices source.
func (s *Server) EarnedLamports(ctx context.Context) (uint64, error) {
	if s.earn == nil {
		return 0, errNoSource
	}
	e, err := s.earn.compute(ctx)
	if err != nil {
		return 0, err
	}
	return e.TotalLamports, nil
}
