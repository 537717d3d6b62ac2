package main

// An RPC node without transaction history, in front of a localnet: most
// RPC providers keep signature statuses only for the slots of their status
// cache, whatever searchTransactionHistory asks.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"testing"
)

// startNoHistoryRPC starts, on 127.0.0.1, a reverse proxy to the localnet at
// target (JSON-RPC, IPFS gateway and upload API alike) that removes
// searchTransactionHistory from getSignatureStatuses requests, so a
// transaction older than the localnet's status cache (300 slots, 2 minutes)
// has a null status, as on an RPC node without history. It is closed on
// cleanup; its URL is returned.
func startNoHistoryRPC(tb testing.TB, target string) string {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/" {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = withoutHistorySearch(body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// withoutHistorySearch rewrites a getSignatureStatuses request without its
// searchTransactionHistory option; any other body is returned as is.
func withoutHistorySearch(body []byte) []byte {
	var req struct {
		JSONRPC string            `json:"jsonrpc"`
		ID      json.RawMessage   `json:"id"`
		Method  string            `json:"method"`
		Params  []json.RawMessage `json:"params"`
	}
	if json.Unmarshal(body, &req) != nil || req.Method != "getSignatureStatuses" || len(req.Params) < 2 {
		return body
	}
	var opts map[string]json.RawMessage
	if json.Unmarshal(req.Params[1], &opts) != nil {
		return body
	}
	delete(opts, "searchTransactionHistory")
	p, err := json.Marshal(opts)
	if err != nil {
		return body
	}
	req.Params[1] = p
	out, err := json.Marshal(req)
	if err != nil {
		return body
	}
	return out
}

func TestWithoutHistorySearch(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"drops the option",
			`{"jsonrpc":"2.0","id":18446744073709551615,"method":"getSignatureStatuses","params":[["sig"],{"searchTransactionHistory":true}]}`,
			`{"jsonrpc":"2.0","id":18446744073709551615,"method":"getSignatureStatuses","params":[["sig"],{}]}`},
		{"keeps other options",
			`{"jsonrpc":"2.0","id":1,"method":"getSignatureStatuses","params":[["sig"],{"searchTransactionHistory":true,"x":1}]}`,
			`{"jsonrpc":"2.0","id":1,"method":"getSignatureStatuses","params":[["sig"],{"x":1}]}`},
		{"no options", `{"jsonrpc":"2.0","id":1,"method":"getSignatureStatuses","params":[["sig"]]}`,
			`{"jsonrpc":"2.0","id":1,"method":"getSignatureStatuses","params":[["sig"]]}`},
		{"other method", `{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["k",{"searchTransactionHistory":true}]}`,
			`{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["k",{"searchTransactionHistory":true}]}`},
		{"not JSON", `nope`, `nope`},
		{"batch", `[{"method":"getSignatureStatuses"}]`, `[{"method":"getSignatureStatuses"}]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := string(withoutHistorySearch([]byte(c.in))); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
