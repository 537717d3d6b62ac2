package localnet

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
)

// waitHeight polls until the block height passes h.
func waitHeight(t *testing.T, cl *rpc.Client, h uint64) {
	t.Helper()
	ctx := testCtx(t)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := cl.GetBlockHeight(ctx, rpc.CommitmentProcessed)
		if err != nil {
			t.Fatal(err)
		}
		if got > h {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("block height stuck below %d", h)
		case <-tick.C:
		}
	}
}

func TestBlockhashExpiry(t *testing.T) {
	s := startLocalnet(t, Config{SlotInterval: time.Millisecond})
	cl := newRPC(t, s)
	alice := newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	bh, err := cl.GetLatestBlockhash(testCtx(t), rpc.CommitmentFinalized)
	if err != nil {
		t.Fatal(err)
	}
	height, err := cl.GetBlockHeight(testCtx(t), rpc.CommitmentProcessed)
	if err != nil {
		t.Fatal(err)
	}
	if lv := bh.Value.LastValidBlockHeight; lv < height || lv > height+maxProcessingAge {
		t.Fatalf("lastValidBlockHeight %d at height %d", lv, height)
	}
	valid, err := cl.IsBlockhashValid(testCtx(t), bh.Value.Blockhash, rpc.CommitmentProcessed)
	if err != nil || !valid.Value {
		t.Fatalf("fresh blockhash valid=%v err=%v", valid, err)
	}
	waitHeight(t, cl, bh.Value.LastValidBlockHeight)
	valid, err = cl.IsBlockhashValid(testCtx(t), bh.Value.Blockhash, rpc.CommitmentProcessed)
	if err != nil || valid.Value {
		t.Fatalf("expired blockhash valid=%v err=%v", valid, err)
	}
	tx := buildTxWith(t, bh.Value.Blockhash, []solana.PrivateKey{alice}, system.NewTransferInstruction(1, alice.PublicKey(), newKey(t).PublicKey()).Build())
	_, err = cl.SendTransaction(testCtx(t), tx)
	re := rpcErr(t, err)
	if d, _ := re.Data.(map[string]any); re.Code != codePreflightFailure || re.Message != "Transaction simulation failed: Blockhash not found" || d["err"] != "BlockhashNotFound" {
		t.Fatalf("got %d %q %+v", re.Code, re.Message, re.Data)
	}
	// With skipPreflight the signature comes back but the transaction is
	// dropped, as a leader drops it.
	sig, err := cl.SendTransactionWithOpts(testCtx(t), tx, rpc.TransactionOpts{SkipPreflight: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.GetSignatureStatuses(testCtx(t), true, sig)
	if err != nil || st.Value[0] != nil {
		t.Fatalf("dropped transaction has status %+v (%v)", st, err)
	}
	if got := balance(t, cl, alice.PublicKey()); got != solana.LAMPORTS_PER_SOL {
		t.Fatalf("dropped transaction charged: %d", got)
	}
}

func TestConfirmationProgress(t *testing.T) {
	s := startLocalnet(t, Config{SlotInterval: time.Millisecond})
	cl := newRPC(t, s)
	alice := newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	sig := mustSend(t, cl, []solana.PrivateKey{alice}, system.NewTransferInstruction(rentExemptMinimum(0), alice.PublicKey(), newKey(t).PublicKey()).Build())
	ctx := testCtx(t)
	seen := map[rpc.ConfirmationStatusType]bool{}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !seen[rpc.ConfirmationStatusFinalized] {
		st, err := cl.GetSignatureStatuses(ctx, false, sig)
		if err != nil {
			t.Fatal(err)
		}
		v := st.Value[0]
		if v == nil {
			t.Fatal("status vanished")
		}
		seen[v.ConfirmationStatus] = true
		switch v.ConfirmationStatus {
		case rpc.ConfirmationStatusFinalized:
			if v.Confirmations != nil {
				t.Fatalf("finalized with confirmations %d", *v.Confirmations)
			}
		case rpc.ConfirmationStatusConfirmed:
			if v.Confirmations == nil || *v.Confirmations < 1 {
				t.Fatalf("confirmed with confirmations %v", v.Confirmations)
			}
		case rpc.ConfirmationStatusProcessed:
		default:
			t.Fatalf("status %q", v.ConfirmationStatus)
		}
		select {
		case <-ctx.Done():
			t.Fatal("never finalized")
		case <-tick.C:
		}
	}
	if !seen[rpc.ConfirmationStatusConfirmed] {
		t.Error("never reported confirmed")
	}
}

func TestRestartKeepsLedger(t *testing.T) {
	dir := t.TempDir()
	node := newKey(t)
	cfg := Config{DataDir: dir, SlotInterval: 20 * time.Millisecond, StakedNodes: []solana.PublicKey{node.PublicKey()}}
	s1, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := rpc.New(s1.URL())
	client := newKey(t)
	job, sig, err := PostJob(testCtx(t), s1.URL(), client, s1.Market(), [32]byte{7}, 16, chain.GPUAny)
	if err != nil {
		s1.Close()
		t.Fatalf("PostJob: %v", err)
	}
	fund(t, cl, node.PublicKey(), solana.LAMPORTS_PER_SOL)
	claim, err := chain.NewWorkJobInstruction(s1.MarketsProgram(), s1.StakingProgram(), job, s1.Market(), node.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, cl, []solana.PrivateKey{node}, claim)
	clientBal, nodeBal := balance(t, cl, client.PublicKey()), balance(t, cl, node.PublicKey())
	bh, err := cl.GetLatestBlockhash(testCtx(t), rpc.CommitmentFinalized)
	if err != nil {
		t.Fatal(err)
	}
	slot1, _ := cl.GetSlot(testCtx(t), rpc.CommitmentProcessed)
	market := s1.Market()
	cl.Close()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(filepath.Join(dir, authorityFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("authority keypair file: %v %v", fi, err)
	}

	s2 := startLocalnet(t, cfg)
	cl2 := newRPC(t, s2)
	if s2.Market() != market {
		t.Fatalf("market %s after restart, want %s", s2.Market(), market)
	}
	info, err := cl2.GetAccountInfo(testCtx(t), job)
	if err != nil {
		t.Fatalf("job after restart: %v", err)
	}
	j, err := chain.DecodeJob(info.Value.Data.GetBinary())
	if err != nil || j.State != chain.JobRunning || j.Node == nil || *j.Node != node.PublicKey() || j.IPFSJob != ([32]byte{7}) || j.MinVRAM != 16 {
		t.Fatalf("job after restart: %+v %v", j, err)
	}
	if got := balance(t, cl2, client.PublicKey()); got != clientBal {
		t.Fatalf("client balance %d after restart, want %d", got, clientBal)
	}
	if got := balance(t, cl2, node.PublicKey()); got != nodeBal {
		t.Fatalf("node balance %d after restart, want %d", got, nodeBal)
	}
	st, err := cl2.GetSignatureStatuses(testCtx(t), true, sig)
	if err != nil || st.Value[0] == nil || st.Value[0].Err != nil {
		t.Fatalf("create_job status after restart: %+v %v", st, err)
	}
	if slot2, _ := cl2.GetSlot(testCtx(t), rpc.CommitmentProcessed); slot2 < slot1 {
		t.Fatalf("slot went back: %d -> %d", slot1, slot2)
	}
	// A blockhash issued before the restart is still recent.
	mustSendWith := func() {
		tx := buildTxWith(t, bh.Value.Blockhash, []solana.PrivateKey{node}, system.NewTransferInstruction(1, node.PublicKey(), client.PublicKey()).Build())
		if _, err := cl2.SendTransaction(testCtx(t), tx); err != nil {
			t.Fatalf("send with pre-restart blockhash: %s", describeRPCError(err))
		}
	}
	mustSendWith()
	// The node finishes the job it claimed before the restart.
	vault := mustMarket(t, cl2, market).Vault
	mustSend(t, cl2, []solana.PrivateKey{node}, chain.NewFinishJobInstruction(s2.MarketsProgram(), job, market, node.PublicKey(), vault, [32]byte{8}))
}

func mustMarket(t *testing.T, cl *rpc.Client, market solana.PublicKey) *chain.Market {
	t.Helper()
	info, err := cl.GetAccountInfo(testCtx(t), market)
	if err != nil {
		t.Fatal(err)
	}
	m, err := chain.DecodeMarket(info.Value.Data.GetBinary())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPostJob(t *testing.T) {
	s := startLocalnet(t, Config{})
	client := newKey(t)
	job, sig, err := PostJob(testCtx(t), s.URL(), client, s.Market(), [32]byte{1, 2, 3}, 24, chain.GPUAMD)
	if err != nil {
		t.Fatal(err)
	}
	cl := newRPC(t, s)
	st, err := cl.GetSignatureStatuses(testCtx(t), false, sig)
	if err != nil || st.Value[0] == nil || st.Value[0].ConfirmationStatus == rpc.ConfirmationStatusProcessed {
		t.Fatalf("status %+v %v", st, err)
	}
	info, err := cl.GetAccountInfo(testCtx(t), job)
	if err != nil {
		t.Fatal(err)
	}
	j, err := chain.DecodeJob(info.Value.Data.GetBinary())
	if err != nil || j.Client != client.PublicKey() || j.IPFSJob != ([32]byte{1, 2, 3}) || j.GPUType != chain.GPUAMD || j.MinVRAM != 24 {
		t.Fatalf("job %+v %v", j, err)
	}
	if pda, _, _ := chain.JobPDA(s.MarketsProgram(), j.ID); pda != job {
		t.Fatalf("job account %s is not the PDA of job_id %s", job, j.ID)
	}
}

func TestReadMethods(t *testing.T) {
	e := newMarketEnv(t)
	ctx := testCtx(t)
	j := e.createJob(t, 5)

	t.Run("base58 and dataSlice", func(t *testing.T) {
		off, n := uint64(40), uint64(32)
		res, err := e.cl.GetAccountInfoWithOpts(ctx, j, &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase58, DataSlice: &rpc.DataSlice{Offset: &off, Length: &n}})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Value.Data.GetBinary(); !bytes.Equal(got, e.market[:]) || res.Value.Space != chain.JobAccountSize {
			t.Fatalf("slice %x (space %d), want the market key", got, res.Value.Space)
		}
		// A whole job account is too big for base58.
		_, err = e.cl.GetAccountInfoWithOpts(ctx, j, &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase58})
		if re := rpcErr(t, err); re.Code != codeInvalidRequest {
			t.Fatalf("base58 of 245 bytes: %d %s", re.Code, re.Message)
		}
	})
	t.Run("getMultipleAccounts", func(t *testing.T) {
		missing := newKey(t).PublicKey()
		res, err := e.cl.GetMultipleAccounts(ctx, e.market, missing, j)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Value) != 3 || res.Value[0] == nil || res.Value[1] != nil || res.Value[2] == nil ||
			len(res.Value[0].Data.GetBinary()) != chain.MarketAccountSize || res.Value[0].RentEpoch == nil {
			t.Fatalf("accounts: %+v", res.Value)
		}
	})
	t.Run("getProgramAccounts withContext and base64 memcmp", func(t *testing.T) {
		raw := rpcCall(t, e.s, "getProgramAccounts", e.program.String(), map[string]any{
			"encoding": "base64", "withContext": true,
			"filters": []any{map[string]any{"memcmp": map[string]any{"offset": 0, "bytes": base64.StdEncoding.EncodeToString(chain.JobDiscriminator[:]), "encoding": "base64"}}},
		})
		var out struct {
			Context *struct{ Slot uint64 } `json:"context"`
			Value   []rpc.KeyedAccount     `json:"value"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if out.Context == nil || len(out.Value) != 1 || out.Value[0].Pubkey != j {
			t.Fatalf("withContext reply: %s", raw)
		}
	})
	t.Run("rent and version", func(t *testing.T) {
		r, err := e.cl.GetMinimumBalanceForRentExemption(ctx, chain.JobAccountSize, "")
		if err != nil || r != (128+chain.JobAccountSize)*3480*2 {
			t.Fatalf("rent %d %v", r, err)
		}
		v, err := e.cl.GetVersion(ctx)
		if err != nil || v.SolanaCore == "" {
			t.Fatalf("version %+v %v", v, err)
		}
		msg := buildTx(t, e.cl, []solana.PrivateKey{e.a, e.b}, system.NewTransferInstruction(1, e.a.PublicKey(), e.b.PublicKey()).Build(),
			system.NewTransferInstruction(1, e.b.PublicKey(), e.a.PublicKey()).Build()).Message
		fee, err := e.cl.GetFeeForMessage(ctx, msg.ToBase64(), rpc.CommitmentProcessed)
		if err != nil || fee.Value == nil || *fee.Value != 10_000 {
			t.Fatalf("fee for a two-signer message: %+v %v", fee, err)
		}
		pf, err := e.cl.GetRecentPrioritizationFees(ctx, nil)
		if err != nil || len(pf) == 0 || pf[len(pf)-1].PrioritizationFee != 0 {
			t.Fatalf("prioritization fees: %+v %v", pf, err)
		}
		h, err := e.cl.GetHealth(ctx)
		if err != nil || h != rpc.HealthOk {
			t.Fatalf("health %q %v", h, err)
		}
	})
	t.Run("simulate", func(t *testing.T) {
		tx := buildTx(t, e.cl, []solana.PrivateKey{e.a}, mustIx(chain.NewListNodeInstruction(e.program, e.staking, e.market, e.a.PublicKey())))
		res, err := e.cl.SimulateTransactionWithOpts(ctx, tx, &rpc.SimulateTransactionOpts{
			Accounts: &rpc.SimulateTransactionAccountsOpts{Encoding: solana.EncodingBase64, Addresses: []solana.PublicKey{e.market}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if customCodeOf(map[string]any{"err": jsonRoundTrip(res.Value.Err)}) != int64(chain.ErrQueueHasJobs) || len(res.Value.Logs) == 0 || res.Value.UnitsConsumed == nil {
			t.Fatalf("simulation: %+v", res.Value)
		}
		// Simulation changes nothing.
		if m := e.readMarket(t); m.QueueType != chain.QueueJobs {
			t.Fatalf("market after simulation: %+v", m)
		}
		wantOK(t, "claim", e.workJob(t, e.a, j))
		tx = buildTx(t, e.cl, []solana.PrivateKey{e.a}, mustIx(chain.NewListNodeInstruction(e.program, e.staking, e.market, e.a.PublicKey())))
		res, err = e.cl.SimulateTransactionWithOpts(ctx, tx, &rpc.SimulateTransactionOpts{
			SigVerify: true,
			Accounts:  &rpc.SimulateTransactionAccountsOpts{Encoding: solana.EncodingBase64, Addresses: []solana.PublicKey{e.market}},
		})
		if err != nil || res.Value.Err != nil || len(res.Value.Accounts) != 1 {
			t.Fatalf("simulation: %+v %v", res, err)
		}
		m, err := chain.DecodeMarket(res.Value.Accounts[0].Data.GetBinary())
		if err != nil || m.QueueType != chain.QueueNodes || len(m.Queue) != 1 {
			t.Fatalf("simulated market %+v %v", m, err)
		}
		if m := e.readMarket(t); m.QueueType != chain.QueueEmpty {
			t.Fatalf("market after simulation: %+v", m)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			body string
			code int
		}{
			{`{"jsonrpc":"2.0","id":1,"method":"nope"}`, codeMethodNotFound},
			{`{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["xyz"]}`, codeInvalidParams},
			{`{"jsonrpc":"2.0","id":1,"method":"getBalance","params":[]}`, codeInvalidParams},
			{`{"jsonrpc":"2.0","id":1,"method":"getBalance","params":{}}`, codeInvalidParams},
			{`{"jsonrpc":"2.0","id":1,"method":"getProgramAccounts","params":["` + e.program.String() + `",{"filters":[{}]}]}`, codeInvalidParams},
			{`{"jsonrpc":"2.0","id":1,"method":`, codeParseError},
			{`{"jsonrpc":"1.0","id":1,"method":"getSlot"}`, codeInvalidRequest},
			{`{"jsonrpc":"2.0","id":{},"method":"getSlot"}`, codeInvalidRequest},
		} {
			resp := postRaw(t, e.s, tc.body)
			if resp.Error == nil || resp.Error.Code != tc.code {
				t.Errorf("%s: got %+v, want code %d", tc.body, resp.Error, tc.code)
			}
		}
	})
}

func jsonRoundTrip(v any) any {
	b, _ := json.Marshal(v)
	var out any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	d.Decode(&out)
	return out
}

type rawResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcError       `json:"error"`
	ID      json.RawMessage `json:"id"`
}

func postRaw(t *testing.T, s *Server, body string) *rawResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, s.URL(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out rawResponse
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&out); err != nil {
		t.Fatalf("reply %s: %v", b, err)
	}
	return &out
}

func rpcCall(t *testing.T, s *Server, method string, params ...any) json.RawMessage {
	t.Helper()
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 9007199254740993, "method": method, "params": params})
	if err != nil {
		t.Fatal(err)
	}
	resp := postRaw(t, s, string(body))
	if resp.Error != nil {
		t.Fatalf("%s: %v", method, resp.Error)
	}
	if string(resp.ID) != "9007199254740993" {
		t.Fatalf("id echoed as %s", resp.ID)
	}
	return resp.Result
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no data dir", Config{}},
		{"public address", Config{DataDir: t.TempDir(), Addr: "0.0.0.0:0"}},
		{"bad address", Config{DataDir: t.TempDir(), Addr: "nonsense"}},
		{"negative slot interval", Config{DataDir: t.TempDir(), SlotInterval: -time.Second}},
		{"same program ids", Config{DataDir: t.TempDir(), MarketsProgram: chain.DefaultStakingProgramID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(context.Background(), tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestCorruptLedgerIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ledgerFile), []byte("not a bbolt file, not at all......"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), Config{DataDir: dir})
	if err == nil {
		s.Close()
		t.Fatal("started on a corrupt ledger")
	}
}

func TestContextCancelStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(10 * time.Second)
	for {
		_, err := http.Get(s.URL() + "/health")
		if err != nil {
			break
		}
		select {
		case <-deadline:
			t.Fatal("server still serving after ctx cancel")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestContentStoreMountAndMethods(t *testing.T) {
	store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "store:"+r.URL.Path)
	})
	s := startLocalnet(t, Config{ContentStore: store})
	for _, path := range []string{"/ipfs/QmX", "/api/v0/add"} {
		resp, err := http.Post(s.URL()+path, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "store:"+path {
			t.Errorf("%s served %q", path, b)
		}
	}
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET / without upgrade: %d", resp.StatusCode)
	}
}

func TestCloseDropsWebsocketClients(t *testing.T) {
	s, err := Start(context.Background(), Config{DataDir: t.TempDir(), SlotInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wsc := connectWS(t, s)
	sub, err := wsc.SlotSubscribe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Recv(recvCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := sub.Recv(recvCtx(t)); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("subscription still open after Close")
			}
			return
		}
	}
}
