package chain_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
)

// canned answers every request with one body, HTTP 200.
type canned []byte

func (b canned) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

func cannedClient(body []byte) *chain.Client {
	key := solana.PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)))
	c := chain.NewClient("http://127.0.0.1:1", key, chain.DefaultMarketsProgramID, chain.DefaultStakingProgramID,
		solana.PublicKey{1}, chain.WithWebSocket(""), chain.WithTransport(func(t *chain.Transport) {
			t.Base = canned(body)
			t.MaxAttempts = 2
			t.Sleep = func(ctx context.Context, _ time.Duration) error { return nil }
		}))
	return c
}

// typed reports whether err is one of the classes callers branch on.
func typed(err error) bool {
	var re *chain.RPCError
	var he *chain.HTTPError
	return err == nil || errors.Is(err, chain.ErrBadReply) || errors.Is(err, chain.ErrAccountData) ||
		errors.Is(err, chain.ErrAccountNotFound) || errors.Is(err, chain.ErrUnavailable) ||
		errors.As(err, &re) || errors.As(err, &he)
}

// readAll calls every read of the client on one canned reply.
func readAll(t *testing.T, body []byte) {
	c := cannedClient(body)
	ctx := context.Background()
	calls := map[string]func() error{
		"Balance":      func() error { _, err := c.Balance(ctx); return err },
		"GetMarket":    func() error { _, err := c.GetMarket(ctx); return err },
		"Job":          func() error { _, err := c.Job(ctx, solana.PublicKey{2}); return err },
		"Jobs":         func() error { _, err := c.Jobs(ctx, []solana.PublicKey{{2}, {3}}); return err },
		"AssignedJobs": func() error { _, err := c.AssignedJobs(ctx); return err },
		"Stake":        func() error { _, err := c.Stake(ctx); return err },
		"TxStatus":     func() error { _, err := c.TxStatus(ctx, solana.Signature{1}); return err },
		"SignWorkJob":  func() error { _, err := c.SignWorkJob(ctx, solana.PublicKey{2}); return err },
	}
	for name, call := range calls {
		if err := call(); !typed(err) {
			t.Errorf("%s on reply %q: untyped error %v (%T)", name, body, err, err)
		}
	}
}

func accountReply(data []byte, owner solana.PublicKey) []byte {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": map[string]any{
		"context": map[string]any{"slot": 1},
		"value": map[string]any{"data": []string{base64.StdEncoding.EncodeToString(data), "base64"}, "owner": owner.String(),
			"lamports": 1, "executable": false, "rentEpoch": 0, "space": len(data)}}})
	return b
}

func multipleReply(data []byte, owner solana.PublicKey) []byte {
	acc := map[string]any{"data": []string{base64.StdEncoding.EncodeToString(data), "base64"}, "owner": owner.String(), "lamports": 1, "executable": false, "rentEpoch": 0}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": map[string]any{
		"context": map[string]any{"slot": 1}, "value": []any{acc, nil, acc}}})
	return b
}

func programReply(data []byte, owner solana.PublicKey) []byte {
	acc := map[string]any{"data": []string{base64.StdEncoding.EncodeToString(data), "base64"}, "owner": owner.String(), "lamports": 1, "executable": false, "rentEpoch": 0}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": []any{map[string]any{"pubkey": solana.PublicKey{9}.String(), "account": acc}}})
	return b
}

func validJob() []byte {
	node := solana.PublicKey{5}
	j := &chain.Job{Market: solana.PublicKey{1}, Node: &node, State: chain.JobRunning}
	b, _ := j.Encode()
	return b
}

// FuzzRPCReply: any reply body to any read gives a typed error, never a panic.
func FuzzRPCReply(f *testing.F) {
	job := validJob()
	for _, seed := range [][]byte{
		accountReply(job, chain.DefaultMarketsProgramID),
		multipleReply(job, chain.DefaultMarketsProgramID),
		programReply(job, chain.DefaultMarketsProgramID),
		[]byte(`{"jsonrpc":"2.0","result":{"context":{"slot":1},"value":null},"id":1}`),
		[]byte(`{"jsonrpc":"2.0","result":{"context":{"slot":1},"value":[null]},"id":1}`),
		[]byte(`{"jsonrpc":"2.0","result":null,"id":1}`),
		[]byte(`{"jsonrpc":"2.0","error":{"code":-32002,"message":"x","data":{"err":{"InstructionError":[0,{"Custom":6001}]}}},"id":1}`),
		[]byte(`{"jsonrpc":"2.0","error":{"code":429,"message":"slow down"},"id":1}`),
		[]byte(`{"jsonrpc":"2.0","result":{"context":{"slot":1},"value":{"blockhash":"x","lastValidBlockHeight":-1}},"id":1}`),
		[]byte(`[]`), []byte(``), []byte(`null`), []byte(`{"jsonrpc":"2.0","result":{"value":{"data":["` + "////" + `","base64"]}},"id":1}`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) { readAll(t, body) })
}

// FuzzAccountReply: well-formed replies carrying hostile account data
// (wrong owner, wrong discriminator, truncated, absurd lengths) in
// getAccountInfo, getMultipleAccounts and getProgramAccounts.
func FuzzAccountReply(f *testing.F) {
	job := validJob()
	m := &chain.Market{QueueType: chain.QueueJobs, Queue: []solana.PublicKey{{2}}}
	market, _ := m.Encode()
	absurd := append([]byte(nil), market...)
	copy(absurd[122:126], []byte{0xff, 0xff, 0xff, 0x7f}) // queue length 2^31
	f.Add(job, true)
	f.Add(job, false)
	f.Add(job[:100], true)
	f.Add(market, true)
	f.Add(absurd, true)
	f.Add(append([]byte{0, 0, 0, 0, 0, 0, 0, 0}, job[8:]...), true)
	f.Fuzz(func(t *testing.T, data []byte, ours bool) {
		owner := solana.PublicKey{66}
		if ours {
			owner = chain.DefaultMarketsProgramID
		}
		for _, body := range [][]byte{accountReply(data, owner), multipleReply(data, owner), programReply(data, owner)} {
			readAll(t, body)
		}
		// A decodable job with our owner is returned; anything else is
		// ErrAccountData.
		c := cannedClient(accountReply(data, owner))
		j, err := c.Job(context.Background(), solana.PublicKey{2})
		if _, derr := chain.DecodeJob(data); ours && derr == nil {
			if err != nil || j == nil {
				t.Fatalf("valid job refused: %v", err)
			}
		} else if !errors.Is(err, chain.ErrAccountData) {
			t.Fatalf("job with owner %s and %d bytes: %v, want ErrAccountData", owner, len(data), fmt.Sprint(err))
		}
	})
}
