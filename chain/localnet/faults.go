package localnet

// Faults on demand: what a public Solana RPC does to its clients, produced
// deterministically (from a seed) so that tests can show a client survives
// each one. Set them with Config.Faults, Server.SetFaults or the loopback
// admin endpoint POST /admin/faults (GET reads them back).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Faults says which faults the server injects. Rates are fractions in
// [0, 1] drawn per request from a generator seeded with Seed, so a run with
// the same requests in the same order meets the same faults.
type Faults struct {
	// Seed seeds the draws (0 is a seed like any other).
	Seed uint64 `json:"seed"`
	// LatencyMS delays every JSON-RPC reply over HTTP, milliseconds.
	LatencyMS int `json:"latency_ms,omitempty"`
	// Rate429 answers that fraction of HTTP JSON-RPC requests with 429 Too
	// Many Requests, unprocessed; the body alternates between a JSON-RPC
	// error (code 429) and plain text, as providers do.
	Rate429 float64 `json:"rate_429,omitempty"`
	// Rate503 answers that fraction with 503 Service Unavailable, unprocessed.
	Rate503 float64 `json:"rate_503,omitempty"`
	// RetryAfterSeconds, when > 0, is sent as Retry-After with 429 and 503.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
	// DropRate: that fraction of sendTransaction requests is accepted (the
	// signature is returned) but the transaction never lands.
	DropRate float64 `json:"drop_rate,omitempty"`
	// ReplyErrorRate: that fraction of sendTransaction requests lands, but
	// the reply is a JSON-RPC internal error.
	ReplyErrorRate float64 `json:"reply_error_rate,omitempty"`
	// ExpiryBlocks, when > 0, is how many blocks a blockhash stays valid
	// (Solana: 150): getLatestBlockhash's lastValidBlockHeight and the
	// check of sent transactions both follow it.
	ExpiryBlocks uint64 `json:"expiry_blocks,omitempty"`
	// RefuseWebSocket refuses WebSocket upgrades (HTTP 503) and drops the
	// connections open when it is set, as an RPC without push does.
	RefuseWebSocket bool `json:"refuse_websocket,omitempty"`
}

// ErrFaults is wrapped by an invalid Faults value.
var ErrFaults = errors.New("invalid faults")

// Validate checks the ranges.
func (f Faults) Validate() error {
	for name, r := range map[string]float64{"rate_429": f.Rate429, "rate_503": f.Rate503, "drop_rate": f.DropRate, "reply_error_rate": f.ReplyErrorRate} {
		if !(r >= 0 && r <= 1) {
			return fmt.Errorf("%w: %s %v is not a fraction in [0, 1]", ErrFaults, name, r)
		}
	}
	if f.LatencyMS < 0 || f.LatencyMS > 60_000 {
		return fmt.Errorf("%w: latency_ms %d is not in [0, 60000]", ErrFaults, f.LatencyMS)
	}
	if f.RetryAfterSeconds < 0 || f.RetryAfterSeconds > 3600 {
		return fmt.Errorf("%w: retry_after_seconds %d is not in [0, 3600]", ErrFaults, f.RetryAfterSeconds)
	}
	if f.ExpiryBlocks > maxProcessingAge {
		return fmt.Errorf("%w: expiry_blocks %d is more than Solana's %d", ErrFaults, f.ExpiryBlocks, maxProcessingAge)
	}
	return nil
}

// FaultCounts is how many times each fault was injected.
type FaultCounts struct {
	TooMany     int64 `json:"429"`
	Unavailable int64 `json:"503"`
	Dropped     int64 `json:"dropped"`
	ReplyErrors int64 `json:"reply_errors"`
}

// FaultReport is the admin endpoint's answer: the faults in force and how
// many were injected since the start, and the traffic the port carried.
type FaultReport struct {
	Faults   Faults      `json:"faults"`
	Injected FaultCounts `json:"injected"`
	Traffic  Traffic     `json:"traffic"`
}

// faults is the server's fault state.
type faults struct {
	mu     sync.Mutex
	f      Faults
	rng    *rand.Rand
	counts FaultCounts
}

func (fs *faults) get() Faults {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.f
}

func (fs *faults) set(f Faults) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.f = f
	fs.rng = rand.New(rand.NewPCG(f.Seed, 0x68797065726e6f64))
}

// draw reports whether an event of rate happens now.
func (fs *faults) draw(rate float64, count *int64) bool {
	if rate <= 0 {
		return false
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.rng == nil || fs.rng.Float64() >= rate {
		return false
	}
	*count++
	return true
}

// SetFaults replaces the faults injected from now on (and the draws'
// seed). Errors wrap ErrFaults.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.faults.set(f)
	s.bank.setExpiry(f.ExpiryBlocks)
	if f.RefuseWebSocket {
		s.hub.dropConns()
	}
	return nil
}

// Faults returns the faults injected now.
func (s *Server) Faults() Faults { return s.faults.get() }

// FaultCounts returns how many faults were injected since the start.
func (s *Server) FaultCounts() FaultCounts {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.counts
}

// Traffic is what the server's port carried since the start: bytes read
// and written on every connection (HTTP and WebSocket, headers included)
// and HTTP requests served.
type Traffic struct {
	Requests int64 `json:"requests"`
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// Traffic returns the counters.
func (s *Server) Traffic() Traffic {
	return Traffic{Requests: s.traffic.requests.Load(), BytesIn: s.traffic.in.Load(), BytesOut: s.traffic.out.Load()}
}

type trafficCounters struct{ requests, in, out atomic.Int64 }

// countingListener counts the bytes of every accepted connection.
type countingListener struct {
	net.Listener
	t *trafficCounters
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, t: l.t}, nil
}

type countingConn struct {
	net.Conn
	t *trafficCounters
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.in.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.t.out.Add(int64(n))
	return n, err
}

// withFaults wraps the JSON-RPC handler: it counts requests, refuses
// WebSocket upgrades when asked, and adds latency, 429s and 503s to POSTs.
func (s *Server) withFaults(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.traffic.requests.Add(1)
		f := s.faults.get()
		if r.Method == http.MethodGet && isWebsocketUpgrade(r) {
			if f.RefuseWebSocket {
				http.Error(w, "websocket disabled (injected fault)", http.StatusServiceUnavailable)
				return
			}
			next(w, r)
			return
		}
		if r.Method != http.MethodPost {
			next(w, r)
			return
		}
		if f.LatencyMS > 0 {
			t := time.NewTimer(time.Duration(f.LatencyMS) * time.Millisecond)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		fs := &s.faults
		if f.RetryAfterSeconds > 0 && (f.Rate429 > 0 || f.Rate503 > 0) {
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfterSeconds))
		}
		switch {
		case fs.draw(f.Rate429, &fs.counts.TooMany):
			if fs.draw(0.5, new(int64)) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"jsonrpc":"2.0","error":{"code":429,"message":"Too many requests for a specific RPC call, contact your app developer or support@rpcpool.com."},"id":null}`)
				return
			}
			http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
			return
		case fs.draw(f.Rate503, &fs.counts.Unavailable):
			http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Del("Retry-After")
		next(w, r)
	}
}

// faultySend wraps sendTransaction with the drop and land-but-reply-error
// faults.
func (s *Server) faultySend(send methodFunc) methodFunc {
	return func(params json.RawMessage) (any, *rpcError) {
		f := s.faults.get()
		fs := &s.faults
		if f.DropRate > 0 {
			var encoded string
			var cfg struct {
				Encoding string `json:"encoding"`
			}
			if positional(params, 1, &encoded, &cfg) == nil {
				if w, e := decodeWire(encoded, cfg.Encoding); e == nil && w.verifySignatures() && fs.draw(f.DropRate, &fs.counts.Dropped) {
					return w.signature().String(), nil
				}
			}
		}
		out, e := send(params)
		if e == nil && fs.draw(f.ReplyErrorRate, &fs.counts.ReplyErrors) {
			return nil, &rpcError{Code: codeInternal, Message: "Internal error (injected fault: the transaction landed)"}
		}
		return out, e
	}
}

// adminFaults serves /admin/faults to loopback clients only: POST a Faults
// object to replace the faults; GET or POST answer a FaultReport.
func (s *Server) adminFaults(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var f Faults
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.SetFaults(f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.log.Info().Interface("faults", f).Msg("faults set")
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(FaultReport{Faults: s.Faults(), Injected: s.FaultCounts(), Traffic: s.Traffic()})
}
