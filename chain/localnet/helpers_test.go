package localnet

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"
)

// testCtx bounds a test's RPC calls.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startLocalnet starts a localnet on a fresh DataDir (or cfg.DataDir when
// set) and closes it when the test ends.
func startLocalnet(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.SlotInterval == 0 {
		cfg.SlotInterval = 10 * time.Millisecond
	}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newRPC(t *testing.T, s *Server) *rpc.Client {
	t.Helper()
	cl := rpc.New(s.URL())
	t.Cleanup(func() { cl.Close() })
	return cl
}

func newKey(t *testing.T) solana.PrivateKey {
	t.Helper()
	k, err := solana.NewRandomPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fund airdrops lamports to k and checks the airdrop landed.
func fund(t *testing.T, cl *rpc.Client, k solana.PublicKey, lamports uint64) {
	t.Helper()
	ctx := testCtx(t)
	sig, err := cl.RequestAirdrop(ctx, k, lamports, rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("airdrop: %v", err)
	}
	st, err := cl.GetSignatureStatuses(ctx, false, sig)
	if err != nil || st.Value[0] == nil || st.Value[0].Err != nil {
		t.Fatalf("airdrop %s status: %v %+v", sig, err, st)
	}
}

func balance(t *testing.T, cl *rpc.Client, k solana.PublicKey) uint64 {
	t.Helper()
	b, err := cl.GetBalance(testCtx(t), k, rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("balance of %s: %v", k, err)
	}
	return b.Value
}

var (
	lastHashMu sync.Mutex
	lastHash   = map[*rpc.Client]solana.Hash{}
)

// freshBlockhash returns a blockhash this client has not used yet, waiting
// for the next block when needed: two equal messages under one blockhash
// are one transaction (the second is AlreadyProcessed), as on Solana.
func freshBlockhash(t *testing.T, cl *rpc.Client) solana.Hash {
	t.Helper()
	ctx := testCtx(t)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		bh, err := cl.GetLatestBlockhash(ctx, rpc.CommitmentFinalized)
		if err != nil {
			t.Fatalf("blockhash: %v", err)
		}
		lastHashMu.Lock()
		fresh := lastHash[cl] != bh.Value.Blockhash
		if fresh {
			lastHash[cl] = bh.Value.Blockhash
		}
		lastHashMu.Unlock()
		if fresh {
			return bh.Value.Blockhash
		}
		select {
		case <-ctx.Done():
			t.Fatal("no new block")
		case <-tick.C:
		}
	}
}

// buildTx signs a transaction of ixs paid by the first signer, under a
// blockhash not used before by cl.
func buildTx(t *testing.T, cl *rpc.Client, signers []solana.PrivateKey, ixs ...solana.Instruction) *solana.Transaction {
	t.Helper()
	return buildTxWith(t, freshBlockhash(t, cl), signers, ixs...)
}

func buildTxWith(t *testing.T, bh solana.Hash, signers []solana.PrivateKey, ixs ...solana.Instruction) *solana.Transaction {
	t.Helper()
	tx, err := NewSignedTransaction(bh, signers, ixs...)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// send sends with preflight and returns the signature or the RPC error.
func send(t *testing.T, cl *rpc.Client, signers []solana.PrivateKey, ixs ...solana.Instruction) (solana.Signature, error) {
	t.Helper()
	return cl.SendTransaction(testCtx(t), buildTx(t, cl, signers, ixs...))
}

func mustSend(t *testing.T, cl *rpc.Client, signers []solana.PrivateKey, ixs ...solana.Instruction) solana.Signature {
	t.Helper()
	sig, err := send(t, cl, signers, ixs...)
	if err != nil {
		t.Fatalf("send: %v", describeRPCError(err))
	}
	return sig
}

// rpcErr extracts the JSON-RPC error solana-go returns.
func rpcErr(t *testing.T, err error) *jsonrpc.RPCError {
	t.Helper()
	var re *jsonrpc.RPCError
	if !errors.As(err, &re) {
		t.Fatalf("want a JSON-RPC error, got %T %v", err, err)
	}
	return re
}

func describeRPCError(err error) string {
	var re *jsonrpc.RPCError
	if errors.As(err, &re) {
		b, _ := json.Marshal(re)
		return string(b)
	}
	return err.Error()
}

// customCode returns N of a preflight failure's
// {"InstructionError":[i,{"Custom":N}]}, or -1.
func customCode(t *testing.T, err error) int64 {
	t.Helper()
	re := rpcErr(t, err)
	if re.Code != codePreflightFailure {
		t.Fatalf("want -32002, got %d %s", re.Code, re.Message)
	}
	return customCodeOf(re.Data)
}

func customCodeOf(data any) int64 {
	m, ok := data.(map[string]any)
	if !ok {
		return -1
	}
	e, ok := m["err"]
	if !ok {
		e = data
	}
	em, ok := e.(map[string]any)
	if !ok {
		return -1
	}
	ie, ok := em["InstructionError"].([]any)
	if !ok || len(ie) != 2 {
		return -1
	}
	c, ok := ie[1].(map[string]any)
	if !ok {
		return -1
	}
	switch n := c["Custom"].(type) {
	case json.Number:
		v, _ := n.Int64()
		return v
	case float64:
		return int64(n)
	}
	return -1
}
