package chain_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"golang.org/x/time/rate"

	"github.com/hypernode-sol/worker/chain"
)

// scripted is an RPC whose n-th request (from 0) gets replies[n]; later
// requests get the last one.
type scripted struct {
	mu      sync.Mutex
	n       int
	replies []func(w http.ResponseWriter)
	srv     *httptest.Server
}

func newScripted(t *testing.T, replies ...func(w http.ResponseWriter)) *scripted {
	s := &scripted{replies: replies}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		f := s.replies[min(s.n, len(s.replies)-1)]
		s.n++
		s.mu.Unlock()
		f(w)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scripted) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func status(code int, body, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

var balanceOK = status(200, `{"jsonrpc":"2.0","result":{"context":{"slot":7},"value":4242},"id":1}`, "")

// recorder replaces the Transport's sleep: it records the delays asked and
// does not wait.
type recorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func clientOf(t *testing.T, urls string, tune func(*chain.Transport)) *chain.Client {
	t.Helper()
	key, _ := solana.NewRandomPrivateKey()
	c := chain.NewClient(urls, key, chain.DefaultMarketsProgramID, chain.DefaultStakingProgramID, solana.PublicKey{}, chain.WithWebSocket(""),
		chain.WithTransport(tune))
	if c.Transport == nil {
		t.Fatalf("NewClient(%q) made no Transport", urls)
	}
	return c
}

func TestTransportRetriesFaults(t *testing.T) {
	cases := []struct {
		name      string
		first     func(w http.ResponseWriter)
		wantDelay time.Duration // least delay before the retry
	}{
		{"429 JSON body", status(429, `{"jsonrpc":"2.0","error":{"code":429,"message":"Too many requests"},"id":null}`, ""), 0},
		{"429 text body", status(429, "Too Many Requests", ""), 0},
		{"429 JSON-RPC error under HTTP 200", status(200, `{"jsonrpc":"2.0","error":{"code":429,"message":"rate limited"},"id":1}`, ""), 0},
		{"503 with Retry-After", status(503, "unavailable", "2"), 2 * time.Second},
		{"502", status(502, "<html>bad gateway</html>", ""), 0},
		{"504 with Retry-After date", status(504, "timeout", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)), 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScripted(t, tc.first, balanceOK)
			var rec recorder
			c := clientOf(t, s.srv.URL, func(tr *chain.Transport) { tr.Sleep = rec.sleep })
			bal, err := c.BalanceOf(context.Background(), solana.PublicKey{})
			if err != nil || bal != 4242 {
				t.Fatalf("balance %d, %v; want 4242 after one retry", bal, err)
			}
			if s.requests() != 2 || len(rec.delays) != 1 {
				t.Fatalf("%d requests, delays %v; want 2 requests and one backoff", s.requests(), rec.delays)
			}
			if rec.delays[0] < tc.wantDelay || rec.delays[0] < 50*time.Millisecond {
				t.Errorf("backoff %v, want at least %v (and half the 100ms base)", rec.delays[0], tc.wantDelay)
			}
			if st := c.Transport.Stats(); st.Requests != 1 || st.Attempts != 2 || st.Retries != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestTransportBackoffGrowsWithJitter(t *testing.T) {
	s := newScripted(t, status(503, "busy", ""))
	var rec recorder
	c := clientOf(t, s.srv.URL, func(tr *chain.Transport) { tr.Sleep = rec.sleep; tr.MaxAttempts = 7 })
	_, err := c.Balance(context.Background())
	if !errors.Is(err, chain.ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
	var ae *chain.AttemptError
	if !errors.As(err, &ae) || ae.Status != 503 {
		t.Fatalf("err %v does not carry the last attempt's 503", err)
	}
	if s.requests() != 7 || len(rec.delays) != 6 {
		t.Fatalf("%d requests, %d delays; want 7 and 6", s.requests(), len(rec.delays))
	}
	base := 100 * time.Millisecond
	for i, d := range rec.delays {
		full := min(base<<i, 5*time.Second)
		if d < full/2 || d > full {
			t.Errorf("delay %d = %v, want in [%v, %v]", i+1, d, full/2, full)
		}
	}
}

func TestTransportFailover(t *testing.T) {
	// The first URL refuses connections (a closed server), the second answers.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	s := newScripted(t, balanceOK)
	var rec recorder
	c := clientOf(t, deadURL+","+s.srv.URL+"/path?api-key=secret", func(tr *chain.Transport) { tr.Sleep = rec.sleep })
	for i := 0; i < 3; i++ {
		if bal, err := c.Balance(context.Background()); err != nil || bal != 4242 {
			t.Fatalf("call %d: %d, %v", i, bal, err)
		}
	}
	st := c.Transport.Stats()
	if st.Failovers != 1 || st.Attempts != 4 || s.requests() != 3 {
		t.Fatalf("stats %+v, %d requests to the second URL; want one failover, then it stays there", st, s.requests())
	}
	if got := c.Transport.Current().String(); !strings.HasPrefix(got, s.srv.URL) {
		t.Errorf("current URL %s", got)
	}
}

func TestTransportAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select { // the first attempt stalls until the client gives up on it
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		balanceOK(w)
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	var rec recorder
	c := clientOf(t, srv.URL, func(tr *chain.Transport) { tr.Sleep = rec.sleep; tr.AttemptTimeout = 100 * time.Millisecond })
	if bal, err := c.Balance(context.Background()); err != nil || bal != 4242 {
		t.Fatalf("balance %d, %v; want the second attempt's answer", bal, err)
	}
	if n.Load() != 2 {
		t.Fatalf("%d attempts, want 2", n.Load())
	}
}

func TestTransportDoesNotRetryRefusals(t *testing.T) {
	cases := []struct {
		name  string
		reply func(w http.ResponseWriter)
		check func(t *testing.T, err error)
	}{
		{"JSON-RPC error", status(200, `{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid param: WrongSize"},"id":1}`, ""), func(t *testing.T, err error) {
			var re *chain.RPCError
			if !errors.As(err, &re) || re.Code != -32602 || re.Method != "getBalance" {
				t.Fatalf("err %v (%T), want *RPCError -32602 of getBalance", err, err)
			}
		}},
		{"HTTP 401", status(401, "unauthorized", ""), func(t *testing.T, err error) {
			var he *chain.HTTPError
			if !errors.As(err, &he) || he.Status != 401 {
				t.Fatalf("err %v (%T), want *HTTPError 401", err, err)
			}
		}},
		{"garbage", status(200, `{"jsonrpc":"2.0","result":{"value":"lots"},"id":1}`, ""), func(t *testing.T, err error) {
			if !errors.Is(err, chain.ErrBadReply) {
				t.Fatalf("err %v, want ErrBadReply", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScripted(t, tc.reply)
			c := clientOf(t, s.srv.URL, func(tr *chain.Transport) { tr.Sleep = (&recorder{}).sleep })
			_, err := c.Balance(context.Background())
			tc.check(t, err)
			if s.requests() != 1 {
				t.Errorf("%d requests, want 1 (not retried)", s.requests())
			}
		})
	}
}

func TestTransportRateLimit(t *testing.T) {
	s := newScripted(t, balanceOK)
	c := clientOf(t, s.srv.URL, func(tr *chain.Transport) { tr.Limiter = rate.NewLimiter(rate.Limit(0.001), 1) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Balance(ctx); err != nil {
		t.Fatal(err)
	}
	// The burst is spent: the next token comes in 1000 s, past the deadline.
	_, err := c.Balance(ctx)
	if !errors.Is(err, chain.ErrUnavailable) || s.requests() != 1 {
		t.Fatalf("second call: %v after %d requests; want refused by the limiter before sending", err, s.requests())
	}
}

func TestParseRPCURLs(t *testing.T) {
	urls, err := chain.ParseRPCURLs(" https://a.example/x?api-key=k , http://127.0.0.1:8899,")
	if err != nil || len(urls) != 2 || urls[0].Host != "a.example" || urls[1].Port() != "8899" {
		t.Fatalf("%v %v", urls, err)
	}
	for _, bad := range []string{"", " , ", "ftp://x", "a.example", "https://"} {
		if _, err := chain.ParseRPCURLs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestErrorsHideTheURLPath(t *testing.T) {
	s := newScripted(t, status(503, "busy", ""))
	c := clientOf(t, s.srv.URL+"/v1/secret-token?api-key=hunter2", func(tr *chain.Transport) { tr.Sleep = (&recorder{}).sleep; tr.MaxAttempts = 2 })
	_, err := c.Balance(context.Background())
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("error %v shows the URL's path or query", err)
	}
	u, _ := url.Parse(s.srv.URL)
	if !strings.Contains(err.Error(), u.Host) {
		t.Errorf("error %v does not name the host", err)
	}
}

func TestPriorityPrice(t *testing.T) {
	cases := []struct {
		want, cap uint64
		units     uint32
		price     uint64
	}{
		{1000, 0, 200_000, 1000},           // no cap
		{1000, 1000, 200_000, 1000},        // fee 200 lamports, under the cap
		{1_000_000, 1000, 200_000, 5000},   // fee would be 200 000: lowered to 1 000 lamports
		{7, 1, 300_000, 3},                 // ceil(300000·3/1e6) = 1 ≤ 1
		{1_000_000, 0, 1_400_000, 1000000}, // no cap
	}
	for _, tc := range cases {
		got := chain.PriorityPrice(tc.want, tc.cap, tc.units)
		if got != tc.price {
			t.Errorf("PriorityPrice(%d, cap %d, %d units) = %d, want %d", tc.want, tc.cap, tc.units, got, tc.price)
		}
		if tc.cap > 0 && chain.PriorityFeeLamports(tc.units, got) > tc.cap {
			t.Errorf("fee %d over cap %d", chain.PriorityFeeLamports(tc.units, got), tc.cap)
		}
	}
	if f := chain.PriorityFeeLamports(200_000, 1); f != 1 {
		t.Errorf("ceil(0.2) = %d, want 1", f)
	}
}
