package localnet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"

	"github.com/hypernode-sol/worker/chain"
)

// fuzzServer is a localnet whose clock does not tick during fuzzing.
func fuzzServer(f *testing.F) *Server {
	f.Helper()
	s, err := Start(context.Background(), Config{DataDir: f.TempDir(), SlotInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	return s
}

// seedTransactions are real signed transactions against s: a transfer, a
// create_job and a multi-instruction market transaction.
func seedTransactions(f *testing.F, s *Server) [][]byte {
	f.Helper()
	payer, node := solana.NewWallet().PrivateKey, solana.NewWallet().PrivateKey
	_, bh, _ := s.bank.latestBlockhash()
	mk := func(signers []solana.PrivateKey, ixs ...solana.Instruction) []byte {
		tx, err := NewSignedTransaction(bh, signers, ixs...)
		if err != nil {
			f.Fatal(err)
		}
		b, err := tx.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	program, market := s.MarketsProgram(), s.Market()
	vault, _, _ := chain.VaultPDA(program, market)
	createJob, err := chain.NewCreateJobInstruction(program, solana.NewWallet().PublicKey(), market, payer.PublicKey(), vault, [32]byte{1}, 8, chain.GPUAny)
	if err != nil {
		f.Fatal(err)
	}
	listNode, err := chain.NewListNodeInstruction(program, s.StakingProgram(), market, node.PublicKey())
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{
		mk([]solana.PrivateKey{payer}, system.NewTransferInstruction(42, payer.PublicKey(), node.PublicKey()).Build()),
		mk([]solana.PrivateKey{payer}, createJob),
		mk([]solana.PrivateKey{payer, node}, listNode,
			chain.NewUnlistNodeInstruction(program, market, node.PublicKey()),
			chain.NewFinishJobInstruction(program, market, market, node.PublicKey(), vault, [32]byte{2})),
	}
}

func checkReply(t *testing.T, reply []byte) {
	t.Helper()
	var r struct {
		JSONRPC string          `json:"jsonrpc"`
		Result  json.RawMessage `json:"result"`
		Error   *rpcError       `json:"error"`
		ID      json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(reply, &r); err != nil {
		var batch []json.RawMessage
		if json.Unmarshal(reply, &batch) == nil {
			return
		}
		t.Fatalf("reply is not JSON-RPC: %s", reply)
	}
	if r.JSONRPC != "2.0" || (r.Error == nil) == (r.Result == nil) {
		t.Fatalf("reply needs exactly one of result and error: %s", reply)
	}
}

// FuzzSendTransaction feeds arbitrary wire bytes to sendTransaction (error
// reply, never a panic) and, with the fee payer funded, to an unverified
// simulation so the runtime and the programs execute mutated instructions.
func FuzzSendTransaction(f *testing.F) {
	s := fuzzServer(f)
	for _, tx := range seedTransactions(f, s) {
		f.Add(tx)
		f.Add(tx[:len(tx)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, raw []byte) {
		enc := base64.StdEncoding.EncodeToString(raw)
		for _, method := range []string{"sendTransaction", "simulateTransaction"} {
			body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method,
				"params": []any{enc, map[string]any{"encoding": "base64"}}})
			checkReply(t, handleRPCBody(body, s.call))
		}
		w, err := decodeTx(raw)
		if err != nil {
			return
		}
		s.bank.mu.Lock()
		if s.bank.accounts[w.feePayer()] == nil {
			s.bank.accounts[w.feePayer()] = &Account{Lamports: solana.LAMPORTS_PER_SOL, Owner: solana.SystemProgramID}
		}
		s.bank.mu.Unlock()
		res, err := s.bank.process(w, false, false, false)
		if err != nil {
			t.Fatalf("simulation: %v", err)
		}
		if res.err != nil && res.err.Kind == txErrInstructionError && res.err.Instr.Kind == ixErrProgramFailedToComplete {
			t.Fatalf("a program panicked: %v", res.logs)
		}
	})
}

// FuzzRPCRequest feeds arbitrary bodies to the HTTP and WebSocket JSON-RPC
// dispatch: every reply is JSON-RPC, nothing panics.
func FuzzRPCRequest(f *testing.F) {
	s := fuzzServer(f)
	market := s.Market().String()
	var landed []string // genesis transactions: the authority's airdrop, create_market
	s.bank.withLock(func(uint64, func(solana.Signature) *statusRecord) {
		for sig := range s.bank.statuses {
			landed = append(landed, sig.String())
		}
	})
	sort.Strings(landed)
	if len(landed) < 2 {
		f.Fatalf("genesis landed %d transactions, want 2", len(landed))
	}
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":11,"method":"getSignaturesForAddress","params":["` + market + `"]}`,
		`{"jsonrpc":"2.0","id":12,"method":"getSignaturesForAddress","params":["` + market + `",{"limit":1,"before":"` + landed[0] + `","until":"` + landed[1] + `","commitment":"confirmed","minContextSlot":0}]}`,
		`{"jsonrpc":"2.0","id":13,"method":"getSignaturesForAddress","params":["` + s.MarketsProgram().String() + `",{"limit":1001,"commitment":"processed"}]}`,
		`{"jsonrpc":"2.0","id":14,"method":"getTransaction","params":["` + landed[0] + `"]}`,
		`{"jsonrpc":"2.0","id":15,"method":"getTransaction","params":["` + landed[1] + `","base64"]}`,
		`{"jsonrpc":"2.0","id":16,"method":"getTransaction","params":["` + landed[1] + `",{"encoding":"json","commitment":"confirmed","maxSupportedTransactionVersion":0}]}`,
		`{"jsonrpc":"2.0","id":17,"method":"getTransaction","params":["` + landed[0] + `",{"encoding":"base58","maxSupportedTransactionVersion":256}]}`,
		`{"jsonrpc":"2.0","id":1,"method":"getSlot"}`,
		`{"jsonrpc":"2.0","id":"a","method":"getAccountInfo","params":["` + market + `",{"encoding":"base58","dataSlice":{"offset":8,"length":32}}]}`,
		`{"jsonrpc":"2.0","id":2,"method":"getProgramAccounts","params":["` + s.MarketsProgram().String() + `",{"filters":[{"dataSize":245},{"memcmp":{"offset":104,"bytes":"1"}}],"withContext":true}]}`,
		`{"jsonrpc":"2.0","id":3,"method":"getMultipleAccounts","params":[["` + market + `"],{"encoding":"base64"}]}`,
		`{"jsonrpc":"2.0","id":4,"method":"getSignatureStatuses","params":[["5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"],{"searchTransactionHistory":true}]}`,
		`{"jsonrpc":"2.0","id":5,"method":"isBlockhashValid","params":["J7rBdM6AecPDEZp8aPq5iPSNKVkU5Q76F3oAV4eW5wsW",{"commitment":"processed"}]}`,
		`{"jsonrpc":"2.0","id":6,"method":"accountSubscribe","params":["` + market + `",{"encoding":"base64","commitment":"confirmed"}]}`,
		`{"jsonrpc":"2.0","id":7,"method":"programSubscribe","params":["` + market + `",{"filters":[{"dataSize":1}]}]}`,
		`{"jsonrpc":"2.0","id":8,"method":"signatureSubscribe","params":["5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"]}`,
		`{"jsonrpc":"2.0","id":9,"method":"slotUnsubscribe","params":[1]}`,
		`[{"jsonrpc":"2.0","id":1,"method":"getHealth"},{"jsonrpc":"2.0","id":2,"method":"getVersion"}]`,
		`{"jsonrpc":"2.0","id":10,"method":"getMinimumBalanceForRentExemption","params":[245]}`,
		`[]`, `{}`, `null`, `{"jsonrpc":"2.0","id":1e400,"method":"getSlot"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkReply(t, handleRPCBody(body, s.call))
		conn := &wsConn{send: make(chan []byte, wsSendQueue), done: make(chan struct{})}
		checkReply(t, s.hub.handleMessage(conn, body))
		s.hub.dropConn(conn)
	})
}

// FuzzFilters feeds arbitrary filter JSON and account data to the filter
// parser and matcher.
func FuzzFilters(f *testing.F) {
	f.Add([]byte(`[{"dataSize":245},{"memcmp":{"offset":104,"bytes":"2"}}]`), []byte{1, 2, 3})
	f.Add([]byte(`[{"memcmp":{"offset":18446744073709551615,"bytes":"AQ==","encoding":"base64"}}]`), make([]byte, 245))
	f.Fuzz(func(t *testing.T, filters, data []byte) {
		var raw []json.RawMessage
		if json.Unmarshal(filters, &raw) != nil {
			return
		}
		fs, err := parseFilters(raw)
		if err != nil {
			return
		}
		matchAll(fs, data)
	})
}
