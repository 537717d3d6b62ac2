package chain

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ErrUnavailable is wrapped when every attempt of an RPC call failed with a
// retryable fault (HTTP 429, 502, 503, 504, a JSON-RPC 429 reply, a
// connection error or an attempt timeout) until the attempts or the call's
// deadline ran out. The cause of the last attempt is wrapped too.
var ErrUnavailable = errors.New("RPC unavailable")

// AttemptError is the fault of one attempt, which the Transport retries: an
// HTTP status (429, 502, 503, 504; 0 for a connection error or timeout) and
// the delay the server asked for in Retry-After (0 when none).
type AttemptError struct {
	URL        string
	Status     int
	RetryAfter time.Duration
	Err        error // the connection error, or the reply's first bytes as text
}

func (e *AttemptError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: HTTP %d: %v", e.URL, e.Status, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.URL, e.Err)
}

func (e *AttemptError) Unwrap() error { return e.Err }

// retryable: every fault is, except a TLS certificate the client refuses
// (retrying cannot change it).
func (e *AttemptError) retryable() bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	return !errors.As(e.Err, &cv) && !errors.As(e.Err, &ua) && !errors.As(e.Err, &hn)
}

// Transport is an http.RoundTripper for JSON-RPC over HTTP that makes a
// public Solana RPC usable: a client-side rate limit, a deadline per attempt,
// retries of 429 (JSON or text body), 502/503/504, connection errors and
// attempt timeouts with exponential backoff and jitter (at least the
// Retry-After the server sent), and failover across several endpoint URLs:
// after a retryable fault the next attempt goes to the next URL, and the
// transport stays there. Requests are sent to the endpoint chosen here,
// whatever URL they name. The zero value is not usable; see NewTransport.
type Transport struct {
	// URLs are the RPC endpoints, tried in order (at least one).
	URLs []*url.URL
	// Base does the HTTP (default: a clone of http.DefaultTransport).
	Base http.RoundTripper
	// Limiter paces attempts across all URLs; nil means no limit.
	Limiter *rate.Limiter
	// AttemptTimeout bounds one attempt (default 10s).
	AttemptTimeout time.Duration
	// MaxAttempts bounds the attempts of one request (default 8).
	MaxAttempts int
	// BackoffBase is the first retry's delay before jitter (default 100ms);
	// it doubles per retry up to BackoffMax (default 5s). A Retry-After
	// longer than the backoff is honoured up to RetryAfterMax (default 30s).
	BackoffBase, BackoffMax, RetryAfterMax time.Duration
	// Sleep waits d or until ctx ends (default: a timer); tests replace it
	// to record the delays.
	Sleep func(ctx context.Context, d time.Duration) error

	current atomic.Int64 // index into URLs of the endpoint in use
	stats   struct {
		requests, attempts, retries, failovers, bytesOut, bytesIn atomic.Int64
	}
	rngMu sync.Mutex
	rng   *rand.Rand
}

// TransportStats counts what a Transport did since it was made.
type TransportStats struct {
	Requests  int64 // RoundTrip calls (RPC calls)
	Attempts  int64 // HTTP requests sent, retries included
	Retries   int64 // attempts after a retryable fault
	Failovers int64 // switches to the next URL
	BytesOut  int64 // request bodies sent, bytes
	BytesIn   int64 // response bodies received, bytes
}

// Stats returns the counters.
func (t *Transport) Stats() TransportStats {
	return TransportStats{
		Requests: t.stats.requests.Load(), Attempts: t.stats.attempts.Load(), Retries: t.stats.retries.Load(),
		Failovers: t.stats.failovers.Load(), BytesOut: t.stats.bytesOut.Load(), BytesIn: t.stats.bytesIn.Load(),
	}
}

// ParseRPCURLs splits a comma-separated list of http(s) RPC URLs. Errors
// name the bad entry.
func ParseRPCURLs(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("RPC URL %q is not an http(s) URL", s)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no RPC URL given")
	}
	return out, nil
}

// NewTransport returns a Transport over urls that allows perSecond
// attempts per second (burst the same, at least 1); perSecond <= 0 means no
// limit.
func NewTransport(urls []*url.URL, perSecond float64) *Transport {
	t := &Transport{URLs: urls}
	if perSecond > 0 {
		t.Limiter = rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond)))
	}
	return t
}

// Current is the endpoint the next attempt goes to.
func (t *Transport) Current() *url.URL {
	return t.URLs[int(t.current.Load())%len(t.URLs)]
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return defaultBase
}

var defaultBase = func() http.RoundTripper {
	b := http.DefaultTransport.(*http.Transport).Clone()
	b.MaxIdleConnsPerHost = 16
	return b
}()

func (t *Transport) sleep(ctx context.Context, d time.Duration) error {
	if t.Sleep != nil {
		return t.Sleep(ctx, d)
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// backoff is the delay before retry n (1-based): base·2^(n-1) capped at
// max, with equal jitter (half fixed, half random), and at least the
// server's Retry-After (capped at RetryAfterMax).
func (t *Transport) backoff(n int, retryAfter time.Duration) time.Duration {
	base, top, raMax := t.BackoffBase, t.BackoffMax, t.RetryAfterMax
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if top <= 0 {
		top = 5 * time.Second
	}
	if raMax <= 0 {
		raMax = 30 * time.Second
	}
	d := base
	for i := 1; i < n && d < top; i++ {
		d *= 2
	}
	d = min(d, top)
	t.rngMu.Lock()
	if t.rng == nil {
		t.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	half := d / 2
	d = half + time.Duration(t.rng.Int64N(int64(half)+1))
	t.rngMu.Unlock()
	return max(d, min(retryAfter, raMax))
}

// RoundTrip sends req (a JSON-RPC POST) with retries and failover. It
// returns the first reply that is not a retryable fault, or an error
// wrapping ErrUnavailable and the last fault. The caller's context bounds
// all attempts.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.stats.requests.Add(1)
	ctx := req.Context()
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		body = b
	}
	attempts := t.MaxAttempts
	if attempts <= 0 {
		attempts = 8
	}
	var last *AttemptError
	for n := 1; ; n++ {
		if t.Limiter != nil {
			if err := t.Limiter.Wait(ctx); err != nil {
				return nil, t.exhausted(ctx, n-1, last, err)
			}
		}
		idx := int(t.current.Load())
		resp, rerr := t.attempt(ctx, req, body, t.URLs[idx%len(t.URLs)])
		if rerr == nil {
			return resp, nil
		}
		last = rerr
		if ctx.Err() != nil || n >= attempts || !rerr.retryable() {
			return nil, t.exhausted(ctx, n, last, nil)
		}
		if len(t.URLs) > 1 && t.current.CompareAndSwap(int64(idx), int64((idx+1)%len(t.URLs))) {
			t.stats.failovers.Add(1)
		}
		if err := t.sleep(ctx, t.backoff(n, rerr.RetryAfter)); err != nil {
			return nil, t.exhausted(ctx, n, last, err)
		}
		t.stats.retries.Add(1)
	}
}

func (t *Transport) exhausted(ctx context.Context, attempts int, last *AttemptError, cause error) error {
	if last == nil {
		return fmt.Errorf("%w after %d attempts: %w", ErrUnavailable, attempts, cause)
	}
	if cause == nil && ctx.Err() != nil {
		cause = ctx.Err()
	}
	if cause != nil {
		return fmt.Errorf("%w after %d attempts (%w): %w", ErrUnavailable, attempts, cause, last)
	}
	return fmt.Errorf("%w after %d attempts: %w", ErrUnavailable, attempts, last)
}

// maxInspect is the largest reply body inspected for a JSON-RPC 429 error.
const maxInspect = 4096

// attempt sends one copy of req to endpoint. A retryable fault is returned
// as *AttemptError; any other reply is returned as is (its body buffered).
func (t *Transport) attempt(ctx context.Context, req *http.Request, body []byte, endpoint *url.URL) (*http.Response, *AttemptError) {
	t.stats.attempts.Add(1)
	timeout := t.AttemptTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := req.Clone(actx)
	r.URL = endpoint
	r.Host = endpoint.Host
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	t.stats.bytesOut.Add(int64(len(body)))
	resp, err := t.base().RoundTrip(r)
	if err != nil {
		return nil, &AttemptError{URL: hostOnly(endpoint), Err: err}
	}
	// The whole body is read here, under the attempt's deadline, so that a
	// reply that stalls midway is retried like any timeout.
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.stats.bytesIn.Add(int64(len(data)))
	if err != nil {
		return nil, &AttemptError{URL: hostOnly(endpoint), Status: resp.StatusCode, Err: fmt.Errorf("read reply: %w", err)}
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil, &AttemptError{URL: hostOnly(endpoint), Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After")), Err: errors.New(snippet(data))}
	}
	if resp.StatusCode == http.StatusOK && len(data) <= maxInspect && jsonRPCCode(data) == http.StatusTooManyRequests {
		return nil, &AttemptError{URL: hostOnly(endpoint), Status: http.StatusTooManyRequests, RetryAfter: retryAfter(resp.Header.Get("Retry-After")), Err: errors.New(snippet(data))}
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	return resp, nil
}

// hostOnly is scheme://host of u: what errors and logs may show of an RPC
// URL, whose path or query often carries an API key.
func hostOnly(u *url.URL) string { return u.Scheme + "://" + u.Host }

// jsonRPCCode returns the error code of a single JSON-RPC error reply, 0
// when data is not one.
func jsonRPCCode(data []byte) int {
	var reply struct {
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &reply) != nil || reply.Error == nil {
		return 0
	}
	return reply.Error.Code
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(h string) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, 3600)) * time.Second
	}
	if at, err := http.ParseTime(h); err == nil {
		return max(0, time.Until(at))
	}
	return 0
}

// snippet is the start of a reply body as text for an error message.
func snippet(b []byte) string {
	const n = 200
	s := strings.ToValidUTF8(string(b[:min(len(b), n)]), "?")
	if len(b) > n {
		s += "…"
	}
	return strings.TrimSpace(s)
}
