// Package statusapi is the worker's local API: a running daemon serves it on
// a unix socket in its data directory (mode 0600) and, when configured, on a
// loopback TCP address, where its web dashboard is served at /.
// `hypernode-worker status` reads it. It carries no secrets: job logs are
// scrubbed of the job's env values on their way out.
//
// Routes (JSON unless said):
//
//	GET /v1/status          Status
//	GET /v1/specs           hardware.Specs
//	GET /v1/health          Health: a fresh sample
//	GET /v1/jobs            []Job from the journal's snapshots, newest update last
//	GET /v1/jobs/{id}       JobDetail: the job and its journal records (transitions, progress, intents without signed bytes)
//	GET /v1/jobs/{id}/logs  WebSocket: the job's operation logs, from the start, followed while the job runs (LogMessage frames)
//	GET /v1/earnings        Earnings: lamports paid per job and in total
//	GET /metrics            Prometheus exposition (Sources.Metrics)
//	GET /                   the dashboard (HTML, CSS, JS embedded in the binary)
package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hypernode-sol/worker/journal"
)

// Status is the daemon's answer.
type Status struct {
	// Running is true when a daemon answered; false for a status read from the
	// journal of a stopped worker, which has no node, market, RPC or start time.
	Running         bool      `json:"running"`
	Node            string    `json:"node,omitempty"`
	Market          string    `json:"market,omitempty"`
	RPC             string    `json:"rpc,omitempty"`
	BalanceLamports *uint64   `json:"balance_lamports,omitempty"`
	StartedAt       time.Time `json:"started_at,omitzero"`
	ActiveJobs      int       `json:"active_jobs"`
	Slots           int       `json:"slots"`
	Jobs            []Job     `json:"jobs"`
}

// Job is one journaled job as the status API shows it.
type Job struct {
	Job       string    `json:"job"`
	State     string    `json:"state"`
	Status    string    `json:"status,omitempty"` // result document status
	ResultCID string    `json:"result_cid,omitempty"`
	Error     string    `json:"error,omitempty"`
	Container string    `json:"container,omitempty"`
	Updated   time.Time `json:"updated"`
}

// JobFromSnapshot summarises a journal snapshot.
func JobFromSnapshot(s journal.Snapshot) Job {
	j := Job{Job: s.Job, State: s.State, Updated: s.Updated, Status: s.Fields["status"], ResultCID: s.Fields["result_cid"],
		Error: s.Fields["error"]}
	if s.Container != nil {
		j.Container = s.Container.ID
	}
	return j
}

// ErrNotRunning: no daemon answers on the socket.
var ErrNotRunning = errors.New("no worker is running on this data directory")

// Get asks the daemon listening at path for its status.
func Get(ctx context.Context, path string) (*Status, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://worker/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (%s: %v)", ErrNotRunning, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status API: HTTP %d", resp.StatusCode)
	}
	var st Status
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 16<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("status API reply: %w", err)
	}
	return &st, nil
}
