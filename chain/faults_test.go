package chain_test

// Each localnet fault, injected on purpose: the client survives it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
)

// faultyMarket is newMarket with faults set once the client is funded.
func faultyMarket(t *testing.T, f localnet.Faults, opts ...chain.Option) (*localnet.Server, *chain.Client) {
	t.Helper()
	node, _ := solana.NewRandomPrivateKey()
	dir := t.TempDir()
	srv, err := localnet.Start(context.Background(), localnet.Config{DataDir: dir, SlotInterval: 50 * time.Millisecond,
		StakedNodes: []solana.PublicKey{node.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := chain.NewClient(srv.URL(), node, srv.MarketsProgram(), srv.StakingProgram(), srv.Market(),
		append([]chain.Option{chain.WithTransport(func(tr *chain.Transport) { tr.BackoffBase = 5 * time.Millisecond; tr.MaxAttempts = 20 })}, opts...)...)
	t.Cleanup(c.Close)
	c.PollInterval, c.ResendInterval, c.WSRetry = 20*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.RequestAirdrop(ctx, solana.LAMPORTS_PER_SOL); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// cycle lists and unlists the node n times: 2n transactions, each confirmed.
func cycle(t *testing.T, c *chain.Client, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if err := c.ListNode(ctx); err != nil {
			t.Fatalf("list_node %d: %v", i, err)
		}
		if m, err := c.GetMarket(ctx); err != nil || len(m.Queue) != 1 || m.Queue[0] != c.Node() {
			t.Fatalf("after list_node %d: market %+v, %v", i, m, err)
		}
		if err := c.UnlistNode(ctx); err != nil {
			t.Fatalf("unlist_node %d: %v", i, err)
		}
	}
}

// landedOnce checks from the ledger that list_node landed exactly n times
// for the node, none failed.
func landedOnce(t *testing.T, srv *localnet.Server, c *chain.Client, n int) {
	t.Helper()
	if err := srv.SetFaults(localnet.Faults{}); err != nil {
		t.Fatal(err)
	}
	counts, err := localnet.CountInstructions(context.Background(), srv.URL(), srv.MarketsProgram(), c.Node())
	if err != nil {
		t.Fatal(err)
	}
	for _, ix := range []string{chain.IxListNode, chain.IxUnlistNode} {
		if got := counts[ix]; got.Succeeded != n || got.Failed != 0 {
			t.Errorf("%s landed %d times (%d failed), want %d", ix, got.Succeeded, got.Failed, n)
		}
	}
}

func TestFault429(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{Seed: 4, Rate429: 0.3})
	cycle(t, c, 3)
	if n := srv.FaultCounts().TooMany; n == 0 {
		t.Fatal("no 429 was injected")
	}
	if st := c.Transport.Stats(); st.Retries < srv.FaultCounts().TooMany {
		t.Errorf("%d retries for %d 429s", st.Retries, srv.FaultCounts().TooMany)
	}
	landedOnce(t, srv, c, 3)
}

func TestFault503RetryAfter(t *testing.T) {
	var mu sync.Mutex
	var delays []time.Duration
	srv, c := faultyMarket(t, localnet.Faults{Seed: 5, Rate503: 0.2, RetryAfterSeconds: 1},
		chain.WithTransport(func(tr *chain.Transport) {
			tr.Sleep = func(ctx context.Context, d time.Duration) error { // record, wait briefly
				mu.Lock()
				delays = append(delays, d)
				mu.Unlock()
				return nil
			}
		}))
	cycle(t, c, 2)
	mu.Lock()
	defer mu.Unlock()
	if srv.FaultCounts().Unavailable == 0 || len(delays) == 0 {
		t.Fatalf("no 503 was injected (%d delays)", len(delays))
	}
	for _, d := range delays {
		if d < time.Second {
			t.Errorf("backoff %v ignores Retry-After: 1", d)
		}
	}
	landedOnce(t, srv, c, 2)
}

func TestFaultLatencyAndDeadline(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{LatencyMS: 300},
		chain.WithTransport(func(tr *chain.Transport) { tr.AttemptTimeout = 100 * time.Millisecond; tr.MaxAttempts = 3 }))
	// Every attempt outlives its deadline: a typed error, not a hang.
	_, err := c.GetMarket(context.Background())
	var ae *chain.AttemptError
	if !errors.Is(err, chain.ErrUnavailable) || !errors.As(err, &ae) {
		t.Fatalf("err %v, want ErrUnavailable after attempt timeouts", err)
	}
	// Slow but within the deadline: fine.
	if err := srv.SetFaults(localnet.Faults{LatencyMS: 30}); err != nil {
		t.Fatal(err)
	}
	cycle(t, c, 1)
}

func TestFaultDroppedTransactions(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{Seed: 7, DropRate: 0.5})
	cycle(t, c, 4)
	if srv.FaultCounts().Dropped == 0 {
		t.Fatal("no transaction was dropped")
	}
	landedOnce(t, srv, c, 4)
}

func TestFaultLandedButReplyError(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{Seed: 8, ReplyErrorRate: 1})
	cycle(t, c, 2)
	if srv.FaultCounts().ReplyErrors < 4 {
		t.Fatalf("%d reply errors injected, want every send's", srv.FaultCounts().ReplyErrors)
	}
	landedOnce(t, srv, c, 2)
}

func TestFaultFastExpiry(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{Seed: 9, ExpiryBlocks: 4, DropRate: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ix, err := chain.NewListNodeInstruction(c.Program, c.Staking, c.Market, c.Node())
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Sign(ctx, chain.IxListNode, ix)
	if err != nil {
		t.Fatal(err)
	}
	// Every copy is dropped: the blockhash expires 4 blocks later.
	if err := c.Submit(ctx, tx); !errors.Is(err, chain.ErrBlockhashExpired) {
		t.Fatalf("submit: %v, want ErrBlockhashExpired", err)
	}
	// Rebuilt with a fresh blockhash, it lands while blockhashes still expire fast.
	if err := srv.SetFaults(localnet.Faults{Seed: 9, ExpiryBlocks: 4, DropRate: 0.3}); err != nil {
		t.Fatal(err)
	}
	for {
		tx, err := c.Sign(ctx, chain.IxListNode, ix)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Submit(ctx, tx)
		if err == nil {
			break
		}
		if !errors.Is(err, chain.ErrBlockhashExpired) {
			t.Fatalf("rebuilt list_node: %v", err)
		}
	}
	landedListOnce(t, srv, c)
}

func landedListOnce(t *testing.T, srv *localnet.Server, c *chain.Client) {
	t.Helper()
	srv.SetFaults(localnet.Faults{})
	counts, err := localnet.CountInstructions(context.Background(), srv.URL(), srv.MarketsProgram(), c.Node())
	if err != nil {
		t.Fatal(err)
	}
	if got := counts[chain.IxListNode]; got.Succeeded != 1 {
		t.Errorf("list_node landed %d times, want 1", got.Succeeded)
	}
}

// TestFaultNoWebSocket: push goes away (connections dropped, upgrades
// refused); the market watch says so, and transactions confirm by polling.
func TestFaultNoWebSocket(t *testing.T) {
	srv, c := faultyMarket(t, localnet.Faults{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := c.WatchMarket(ctx)
	defer w.Stop()
	waitLive := func(want bool) {
		t.Helper()
		for w.Live() != want {
			select {
			case <-w.C():
			case <-ctx.Done():
				t.Fatalf("market watch never became live=%v", want)
			}
		}
	}
	waitLive(true)
	// A market change is pushed.
	if err := c.ListNode(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C():
	case <-ctx.Done():
		t.Fatal("no push after list_node")
	}
	if err := srv.SetFaults(localnet.Faults{RefuseWebSocket: true}); err != nil {
		t.Fatal(err)
	}
	waitLive(false)
	if err := c.UnlistNode(ctx); err != nil {
		t.Fatalf("unlist_node without push: %v", err)
	}
	// Push comes back when the RPC allows it again.
	if err := srv.SetFaults(localnet.Faults{}); err != nil {
		t.Fatal(err)
	}
	waitLive(true)
}

// TestFaultRestart: the localnet stops and starts again on the same state
// while a call is being retried.
func TestFaultRestart(t *testing.T) {
	node, _ := solana.NewRandomPrivateKey()
	dir := t.TempDir()
	cfg := localnet.Config{DataDir: dir, SlotInterval: 50 * time.Millisecond, StakedNodes: []solana.PublicKey{node.PublicKey()}}
	srv, err := localnet.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = srv.URL()[len("http://"):]
	var mu sync.Mutex
	restarted := 0
	c := chain.NewClient(srv.URL(), node, srv.MarketsProgram(), srv.StakingProgram(), srv.Market(), chain.WithWebSocket(""),
		chain.WithTransport(func(tr *chain.Transport) {
			tr.Sleep = func(ctx context.Context, d time.Duration) error {
				// The first backoff is spent starting the server again.
				mu.Lock()
				defer mu.Unlock()
				if restarted == 0 {
					s2, err := localnet.Start(context.Background(), cfg)
					if err != nil {
						return err
					}
					srv = s2
					restarted++
				}
				return nil
			}
		}))
	defer c.Close()
	c.PollInterval = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.RequestAirdrop(ctx, solana.LAMPORTS_PER_SOL); err != nil {
		t.Fatal(err)
	}
	if err := c.ListNode(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := c.GetMarket(ctx) // refused, retried, answered by the restarted server
	if err != nil {
		t.Fatalf("read the market across a restart: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	if restarted != 1 || len(m.Queue) != 1 || m.Queue[0] != c.Node() {
		t.Fatalf("restarted %d times; market queue %v, want the node listed before the restart", restarted, m.Queue)
	}
	if err := c.UnlistNode(ctx); err != nil {
		t.Fatalf("unlist_node after the restart: %v", err)
	}
}

// TestFaultAdminEndpoint sets faults over HTTP from loopback.
func TestFaultAdminEndpoint(t *testing.T) {
	srv, _ := faultyMarket(t, localnet.Faults{})
	body, _ := json.Marshal(localnet.Faults{Seed: 3, Rate429: 0.1, DropRate: 0.05, ExpiryBlocks: 20})
	resp, err := http.Post(srv.URL()+"/admin/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /admin/faults: %s", resp.Status)
	}
	if f := srv.Faults(); f.Rate429 != 0.1 || f.DropRate != 0.05 || f.ExpiryBlocks != 20 || f.Seed != 3 {
		t.Fatalf("faults now %+v", f)
	}
	for _, bad := range []string{`{"rate_429":2}`, `{"nope":1}`, `{"expiry_blocks":151}`, `not json`} {
		resp, err := http.Post(srv.URL()+"/admin/faults", "application/json", bytes.NewReader([]byte(bad)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: %s, want 400", bad, resp.Status)
		}
	}
	if f := srv.Faults(); f.Rate429 != 0.1 {
		t.Errorf("a refused POST changed the faults: %+v", f)
	}
}

// TestPriorityFeeCharged: the priority fee is ceil(units·price/1e6)
// lamports on top of the base fee, lowered to the cap.
func TestPriorityFeeCharged(t *testing.T) {
	cases := []struct {
		price, cap uint64
		fee        uint64
	}{
		{0, 0, chain.FeePerSignature},
		{1000, 0, chain.FeePerSignature + 200},          // 200 000 units · 1 000 µL
		{1_000_000, 1234, chain.FeePerSignature + 1234}, // capped: price 6 170 µL → 1 234 lamports
	}
	for _, tc := range cases {
		_, c := faultyMarket(t, localnet.Faults{}, chain.WithPriorityFee(tc.price, tc.cap))
		ctx := context.Background()
		before, err := c.Balance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := chain.NewListNodeInstruction(c.Program, c.Staking, c.Market, c.Node())
		if err != nil {
			t.Fatal(err)
		}
		tx, err := c.Sign(ctx, chain.IxListNode, ix)
		if err != nil {
			t.Fatal(err)
		}
		// getFeeForMessage quotes the same fee.
		var decoded solana.Transaction
		if err := decoded.UnmarshalWithDecoder(bin.NewBinDecoder(tx.Raw)); err != nil {
			t.Fatal(err)
		}
		msg, _ := decoded.Message.MarshalBinary()
		quote, err := c.RPC.GetFeeForMessage(ctx, base64.StdEncoding.EncodeToString(msg), rpc.CommitmentConfirmed)
		if err != nil || quote.Value == nil || *quote.Value != tc.fee {
			t.Errorf("price %d cap %d: getFeeForMessage %+v, %v; want %d", tc.price, tc.cap, quote, err, tc.fee)
		}
		if err := c.Submit(ctx, tx); err != nil {
			t.Fatal(err)
		}
		after, err := c.Balance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if before-after != tc.fee {
			t.Errorf("price %d cap %d: paid %d lamports, want %d", tc.price, tc.cap, before-after, tc.fee)
		}
	}
}
