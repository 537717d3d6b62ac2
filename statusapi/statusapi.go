// Package statusapi is the worker's local status API: a running daemon
// answers GET /v1/status on a unix socket in its data directory (mode 0600),
// and `hypernode-worker status` reads it. It carries no secrets.
package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/hypernode-sol/worker/journal"
)

// Status is the daemon's answer.
type Status struct {
	Node            string    `json:"node"`
	Market          string    `json:"market"`
	RPC             string    `json:"rpc"`
	BalanceLamports *uint64   `json:"balance_lamports,omitempty"`
	StartedAt       time.Time `json:"started_at"`
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

// Server serves the status API until Close.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen serves status() on a unix socket at path (replacing a stale socket
// file left by a crashed daemon).
func Listen(path string, status func(context.Context) (*Status, error)) (*Server, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := status(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sort.Slice(st.Jobs, func(a, b int) bool { return st.Jobs[a].Updated.Before(st.Jobs[b].Updated) })
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, path: path}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.srv.Close()
	os.Remove(s.path)
	return err
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
