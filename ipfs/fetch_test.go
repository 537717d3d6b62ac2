package ipfs

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// localGateway is a Store holding data served by the gateway handler on 127.0.0.1.
func localGateway(t *testing.T, data ...[]byte) (url string, cids []string) {
	t.Helper()
	s := newTestStore(t)
	for _, d := range data {
		cids = append(cids, mustPut(t, s, d))
	}
	return serve(t, NewGatewayHandler(s)).URL, cids
}

// lyingGateway serves, for any CID, the given bytes.
func lyingGateway(t *testing.T, body []byte, hits *atomic.Int32) string {
	t.Helper()
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		w.Write(body)
	})).URL
}

// hangingGateway blocks every request until the client goes away or the test ends. With
// partial, it first sends headers and half a body.
func hangingGateway(t *testing.T, partial bool) string {
	t.Helper()
	release := make(chan struct{})
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if partial {
			w.Header().Set("Content-Length", "12")
			w.Write([]byte("hello "))
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	// Registered after serve's Close, so it runs first: handlers return, Close returns.
	t.Cleanup(func() { close(release) })
	return srv.URL
}

func TestFetchRoundTrip(t *testing.T) {
	small, big := []byte("hello world\n"), pattern(3*ChunkSize+5)
	gw, cids := localGateway(t, small, big)
	f := &Fetcher{Gateways: []string{gw}, PerGatewayTimeout: 10 * time.Second}
	for i, want := range [][]byte{small, big} {
		got, err := f.Fetch(context.Background(), cids[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Fetch(%s) returned %d bytes, want the %d stored", cids[i], len(got), len(want))
		}
	}
}

func TestFetchRejectsLyingGatewayAndUsesNext(t *testing.T) {
	honest, cids := localGateway(t, []byte("hello world\n"))
	var liarHits atomic.Int32
	liar := lyingGateway(t, []byte("hello world!"), &liarHits)

	f := &Fetcher{Gateways: []string{liar, honest}}
	got, err := f.Fetch(context.Background(), cids[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world\n" || liarHits.Load() != 1 {
		t.Errorf("Fetch = %q (liar asked %d times), want the honest bytes after asking the liar once", got, liarHits.Load())
	}

	// Only the liar: a MismatchError naming it, the CID wanted and the CID served.
	f.Gateways = []string{liar}
	_, err = f.Fetch(context.Background(), cids[0])
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a *MismatchError", err)
	}
	wantGot, _, _ := computeCIDString(strings.NewReader("hello world!"))
	if me.Gateway != liar || me.Want != cids[0] || me.Got != wantGot {
		t.Errorf("MismatchError = %+v, want {%s %s %s}", *me, liar, cids[0], wantGot)
	}
}

func TestFetchAbandonsHangingGateway(t *testing.T) {
	honest, cids := localGateway(t, []byte("hello world\n"))
	for _, partial := range []bool{false, true} {
		hang := hangingGateway(t, partial)
		f := &Fetcher{Gateways: []string{hang, honest}, PerGatewayTimeout: 200 * time.Millisecond}
		got, err := f.Fetch(context.Background(), cids[0])
		if err != nil || string(got) != "hello world\n" {
			t.Errorf("partial=%v: Fetch = %q, %v; want the honest bytes", partial, got, err)
		}
		f.Gateways = []string{hang}
		_, err = f.Fetch(context.Background(), cids[0])
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), hang) {
			t.Errorf("partial=%v: err = %v, want a deadline error naming %s", partial, err, hang)
		}
	}
}

func TestFetchRejectsOversize(t *testing.T) {
	data := pattern(5000)
	gw, cids := localGateway(t, data)
	chunked := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: flushed in pieces, so only the read limit can catch it.
		for off := 0; off < len(data); off += 1000 {
			w.Write(data[off : off+1000])
			w.(http.Flusher).Flush()
		}
	})).URL
	for _, g := range []string{gw, chunked} {
		f := &Fetcher{Gateways: []string{g}, MaxBytes: 4999}
		_, err := f.Fetch(context.Background(), cids[0])
		var tl *TooLargeError
		if !errors.As(err, &tl) || tl.Limit != 4999 || tl.Gateway != g || tl.CID != cids[0] {
			t.Errorf("%s: err = %v, want *TooLargeError{%s %s 4999}", g, err, g, cids[0])
		}
		f.MaxBytes = 5000 // exactly the size is fine
		if got, err := f.Fetch(context.Background(), cids[0]); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: at the limit: %v", g, err)
		}
	}
}

func TestFetchAllFailJoinsErrors(t *testing.T) {
	empty, _ := localGateway(t)
	liar := lyingGateway(t, []byte("nope"), nil)
	f := &Fetcher{Gateways: []string{empty, liar}}
	_, err := f.Fetch(context.Background(), helloCID)
	if err == nil {
		t.Fatal("Fetch succeeded")
	}
	var me *MismatchError
	var se *HTTPStatusError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &me) || !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("err = %v, want ErrNotFound (404) and a MismatchError joined", err)
	}
	for _, g := range f.Gateways {
		if !strings.Contains(err.Error(), g) {
			t.Errorf("error %q does not name gateway %s", err, g)
		}
	}
}

func TestFetchBadInputAsksNoGateway(t *testing.T) {
	var hits atomic.Int32
	liar := lyingGateway(t, nil, &hits)
	f := &Fetcher{Gateways: []string{liar}}
	for _, c := range []string{"", "../../etc/passwd", "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"} {
		if _, err := f.Fetch(context.Background(), c); !errors.Is(err, ErrInvalidCID) {
			t.Errorf("Fetch(%q) err = %v, want ErrInvalidCID", c, err)
		}
	}
	if _, err := (&Fetcher{}).Fetch(context.Background(), helloCID); !errors.Is(err, ErrNoGateways) {
		t.Errorf("no gateways: err = %v, want ErrNoGateways", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Fetch(ctx, helloCID); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v, want context.Canceled", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("gateway asked %d times, want 0", n)
	}
}

func TestFetchErrorsHideCredentials(t *testing.T) {
	empty, _ := localGateway(t)
	withCreds := strings.Replace(empty, "http://", "http://user:s3cr3t-token@", 1)
	f := &Fetcher{Gateways: []string{withCreds}}
	_, err := f.Fetch(context.Background(), helloCID)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-token") {
		t.Errorf("err = %v: must fail without showing the credentials", err)
	}
}

func TestParseGatewayList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		says string // error substring; "" = success
	}{
		{"", nil, ""},
		{"  ", nil, ""},
		{"https://ipfs.io", []string{"https://ipfs.io"}, ""},
		{" https://ipfs.io/ , http://127.0.0.1:8080 ", []string{"https://ipfs.io", "http://127.0.0.1:8080"}, ""},
		{"https://gw.example/prefix/", []string{"https://gw.example/prefix"}, ""},
		{"https://ipfs.io,", nil, "entry 2"},
		{"https://ipfs.io,,http://a", nil, "entry 2"},
		{"ftp://ipfs.io", nil, "scheme"},
		{"ipfs.io", nil, "scheme"},
		{"https://", nil, "no host"},
		{"https://u:p@ipfs.io", nil, "credentials"},
		{"https://ipfs.io/?token=x", nil, "query"},
		{"https://ipfs.io/#x", nil, "fragment"},
		{"https://ipfs.io/ipfs/", nil, "without /ipfs"},
		{"http://a, https://ipfs.io/ipfs", nil, "entry 2"},
		{"http://[::1", nil, "not a URL"},
	}
	for _, tc := range tests {
		got, err := ParseGatewayList(tc.in)
		if tc.says == "" {
			if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("ParseGatewayList(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseGatewayList(%q) err = %v, want one saying %q", tc.in, err, tc.says)
		}
		if err != nil && strings.Contains(err.Error(), ":p@") {
			t.Errorf("error %q shows credentials", err)
		}
	}
}
