package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/statusapi"
	"github.com/hypernode-sol/worker/statusapi/metrics"
)

// serveAPI instruments the driver and the chain client for /metrics, then
// serves the local API on DATA_DIR/worker.sock and, when API_ADDR is set, the
// API and the dashboard on that loopback address.
func (w *worker) serveAPI(loop *fsm.Loop, driver *fsm.Driver, started time.Time) (*statusapi.Server, error) {
	health := w.healthSource(loop, started)
	var api *statusapi.Server
	m := metrics.New(metrics.Sources{Journal: w.journal, Health: health,
		EarnedLamports: func(ctx context.Context) (uint64, error) { return api.EarnedLamports(ctx) }})
	driver.Observer = m
	w.instrumentRPC(m)
	store := driver.Store
	api = statusapi.New(statusapi.Sources{
		Status:  func(ctx context.Context) (*statusapi.Status, error) { return w.status(ctx, loop, started) },
		Specs:   func(context.Context) (*hardware.Specs, error) { return w.specs, nil },
		Health:  health,
		Journal: w.journal,
		JobDir:  driver.JobDir,
		Secrets: func(ctx context.Context, job string) ([]jobdef.Secret, error) { return w.jobSecrets(ctx, store, job) },
		Prices:  w.jobPrices,
		Metrics: m.Handler(),
	})
	if err := api.ListenUnix(filepath.Join(w.cfg.DataDir, "worker.sock")); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if w.cfg.APIAddr != "" {
		addr, err := api.ListenTCP(w.cfg.APIAddr)
		if err != nil {
			api.Close()
			return nil, fmt.Errorf("API_ADDR %s: %w", w.cfg.APIAddr, err)
		}
		fmt.Fprintf(w.out, "🌐 Dashboard: http://%s/\n", addr)
	}
	return api, nil
}

// instrumentRPC routes the chain client's JSON-RPC attempts (each retry
// counted) through the metrics RoundTripper, under the client's retrying,
// failing-over transport.
func (w *worker) instrumentRPC(m *metrics.Metrics) {
	if w.rpcBase != nil {
		w.rpcBase.set(m.RoundTripper(w.rpcBase.base))
	}
}

// swappableTransport is an http.RoundTripper whose implementation can be
// replaced while requests are in flight (the metrics arrive after the chain
// client is built).
type swappableTransport struct {
	base http.RoundTripper
	cur  atomic.Pointer[http.RoundTripper]
}

func newSwappableTransport() *swappableTransport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	s := &swappableTransport{base: tr}
	s.set(tr)
	return s
}

func (s *swappableTransport) set(rt http.RoundTripper) { s.cur.Store(&rt) }

// RoundTrip implements http.RoundTripper.
func (s *swappableTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return (*s.cur.Load()).RoundTrip(r)
}

// healthSource samples health at most once a second (the dashboard and a
// scrape may ask together).
func (w *worker) healthSource(loop *fsm.Loop, started time.Time) func(context.Context) (*statusapi.Health, error) {
	var mu sync.Mutex
	var last *statusapi.Health
	// CPU is measured between successive answers (no 200 ms wait per
	// request); GPUs come from the health monitor's latest sample.
	host := &hardware.HostSampler{DiskPath: w.cfg.DataDir}
	return func(ctx context.Context) (*statusapi.Health, error) {
		mu.Lock()
		defer mu.Unlock()
		if last != nil && time.Since(last.At) < time.Second {
			return last, nil
		}
		h := &statusapi.Health{At: time.Now().UTC(), ActiveJobs: loop.Active(), UptimeSeconds: time.Since(started).Seconds(),
			GPUs: []statusapi.GPUHealth{}}
		s, err := host.Sample(ctx)
		if err != nil {
			h.Error = err.Error()
		} else {
			h.CPUPercent, h.RAMPercent, h.DiskFreeBytes = s.CPUPercent, s.RAMPercent, s.DiskFreeBytes
		}
		gpus := w.specs.GPUs
		if w.monitor != nil {
			if ok, reason := w.monitor.Gate(); !ok {
				h.Paused = reason
			}
			if last := w.monitor.Last(); last != nil {
				gpus = last.GPUs // with utilisation and VRAM in use where the tools report them
			}
		}
		for _, g := range gpus {
			h.GPUs = append(h.GPUs, statusapi.GPUHealth{Index: g.Index, Name: g.Name, MemoryTotalBytes: g.VRAMBytes,
				MemoryUsedBytes: g.VRAMUsedBytes, UtilizationPercent: g.UtilizationPct})
		}
		last = h
		return h, nil
	}
}

// jobSecrets reads the env values of a job's definition (fetched again by
// its journaled CID, verified), so that its streamed logs can be scrubbed.
// A job without a valid definition ran nothing and has no secrets.
func (w *worker) jobSecrets(ctx context.Context, store fsm.Store, job string) ([]jobdef.Secret, error) {
	snap, err := w.journal.Snapshot(job)
	if err != nil {
		return nil, err
	}
	cid := snap.Fields[fsm.FieldDefinition]
	if cid == "" {
		return nil, nil
	}
	b, err := store.Fetch(ctx, cid)
	if err != nil {
		return nil, fmt.Errorf("fetch definition %s: %w", cid, err)
	}
	def, err := jobdef.Parse(b)
	if err != nil {
		return nil, nil // rejected: nothing ran
	}
	return def.Secrets(), nil
}

// jobPrices reads the jobs' prices from their job accounts (one
// getMultipleAccounts per 100), or the market's job_price for a job whose
// account is gone.
func (w *worker) jobPrices(ctx context.Context, jobs []string) (map[string]statusapi.Price, error) {
	keys := make([]solana.PublicKey, 0, len(jobs))
	for _, job := range jobs {
		key, err := solana.PublicKeyFromBase58(job)
		if err != nil {
			return nil, fmt.Errorf("job %q is not a public key: %w", job, err)
		}
		keys = append(keys, key)
	}
	accs, err := w.chain.Jobs(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]statusapi.Price, len(jobs))
	var market *chain.Market
	for _, key := range keys {
		if acc, ok := accs[key]; ok {
			out[key.String()] = statusapi.Price{Lamports: acc.Price, Source: "job account"}
			continue
		}
		if market == nil {
			if market, err = w.chain.GetMarket(ctx); err != nil {
				return nil, err
			}
		}
		out[key.String()] = statusapi.Price{Lamports: market.JobPrice, Source: "market"}
	}
	return out, nil
}
