package localnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/rpc"
	bolt "go.etcd.io/bbolt"

	"github.com/hypernode-sol/worker/chain"
)

// sendSkip sends with skipPreflight, so that a transaction failing on chain
// still lands (fee charged, effects rolled back).
func sendSkip(t *testing.T, cl *rpc.Client, signers []solana.PrivateKey, ixs ...solana.Instruction) solana.Signature {
	t.Helper()
	sig, err := cl.SendTransactionWithOpts(testCtx(t), buildTx(t, cl, signers, ixs...), rpc.TransactionOpts{SkipPreflight: true})
	if err != nil {
		t.Fatalf("send (skipPreflight): %s", describeRPCError(err))
	}
	return sig
}

func sigsFor(t *testing.T, cl *rpc.Client, k solana.PublicKey, opts *rpc.GetSignaturesForAddressOpts) []solana.Signature {
	t.Helper()
	res, err := cl.GetSignaturesForAddressWithOpts(testCtx(t), k, opts)
	if err != nil {
		t.Fatalf("getSignaturesForAddress %s: %s", k, describeRPCError(err))
	}
	out := make([]solana.Signature, len(res))
	for i, r := range res {
		out[i] = r.Signature
	}
	return out
}

func sigsEqual(a, b []solana.Signature) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// historyEnv: alice funded by an airdrop, two transfers to bob, then a
// transfer alice cannot cover, landed failed with skipPreflight.
type historyEnv struct {
	s                        *Server
	cl                       *rpc.Client
	alice, bob               solana.PrivateKey
	drop, t1, t2, failed     solana.Signature
	aliceNewestFirst, bobNew []solana.Signature
}

func newHistoryEnv(t *testing.T, cfg Config) *historyEnv {
	t.Helper()
	e := &historyEnv{s: startLocalnet(t, cfg)}
	e.cl = newRPC(t, e.s)
	e.alice, e.bob = newKey(t), newKey(t)
	var err error
	e.drop, err = e.cl.RequestAirdrop(testCtx(t), e.alice.PublicKey(), solana.LAMPORTS_PER_SOL, rpc.CommitmentConfirmed)
	if err != nil {
		t.Fatal(err)
	}
	transfer := func(n uint64) solana.Instruction {
		return system.NewTransferInstruction(n, e.alice.PublicKey(), e.bob.PublicKey()).Build()
	}
	e.t1 = mustSend(t, e.cl, []solana.PrivateKey{e.alice}, transfer(rentExemptMinimum(0))) // bob may not be left rent-paying
	e.t2 = mustSend(t, e.cl, []solana.PrivateKey{e.alice}, transfer(2000))
	e.failed = sendSkip(t, e.cl, []solana.PrivateKey{e.alice}, transfer(2*solana.LAMPORTS_PER_SOL))
	st, err := e.cl.GetSignatureStatuses(testCtx(t), true, e.failed)
	if err != nil || st.Value[0] == nil || st.Value[0].Err == nil {
		t.Fatalf("the overdrawing transfer did not land failed: %+v %v", st, err)
	}
	e.aliceNewestFirst = []solana.Signature{e.failed, e.t2, e.t1, e.drop}
	e.bobNew = []solana.Signature{e.failed, e.t2, e.t1}
	return e
}

func TestSignaturesForAddress(t *testing.T) {
	e := newHistoryEnv(t, Config{})
	ctx := testCtx(t)
	alice := e.alice.PublicKey()

	t.Run("entries", func(t *testing.T) {
		res, err := e.cl.GetSignaturesForAddress(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 4 {
			t.Fatalf("%d entries, want 4", len(res))
		}
		prevSlot := ^uint64(0)
		for i, r := range res {
			if r.Signature != e.aliceNewestFirst[i] {
				t.Fatalf("entry %d is %s, want %s", i, r.Signature, e.aliceNewestFirst[i])
			}
			if r.Slot > prevSlot {
				t.Fatalf("entry %d slot %d after slot %d: not newest first", i, r.Slot, prevSlot)
			}
			prevSlot = r.Slot
			if (r.Err != nil) != (r.Signature == e.failed) {
				t.Errorf("entry %d err %v", i, r.Err)
			}
			if r.Memo != nil || r.BlockTime == nil || *r.BlockTime == 0 || r.ConfirmationStatus == "" {
				t.Errorf("entry %d: %+v", i, r)
			}
			st, err := e.cl.GetSignatureStatuses(ctx, true, r.Signature)
			if err != nil || st.Value[0] == nil || st.Value[0].Slot != r.Slot {
				t.Errorf("entry %d slot %d, status %+v %v", i, r.Slot, st, err)
			}
		}
		if code := customCodeOf(map[string]any{"err": jsonRoundTrip(res[0].Err)}); code != int64(sysErrResultWithNegativeLamports) {
			t.Errorf("failed entry err %v, want Custom(%d)", res[0].Err, sysErrResultWithNegativeLamports)
		}
		if got := sigsFor(t, e.cl, e.bob.PublicKey(), nil); !sigsEqual(got, e.bobNew) {
			t.Errorf("bob: %v, want %v", got, e.bobNew)
		}
		if got := sigsFor(t, e.cl, newKey(t).PublicKey(), nil); len(got) != 0 {
			t.Errorf("unused address: %v", got)
		}
		// Every transaction names the System program.
		if got := sigsFor(t, e.cl, solana.SystemProgramID, &rpc.GetSignaturesForAddressOpts{Until: e.drop}); !sigsEqual(got, e.bobNew) {
			t.Errorf("System program until the airdrop: %v", got)
		}
	})

	t.Run("raw shape", func(t *testing.T) {
		raw := rpcCall(t, e.s, "getSignaturesForAddress", alice.String(), map[string]any{"limit": 1})
		var out []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
			t.Fatalf("%s: %v", raw, err)
		}
		var keys []string
		for k := range out[0] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want := []string{"blockTime", "confirmationStatus", "err", "memo", "signature", "slot"}
		if len(keys) != len(want) {
			t.Fatalf("keys %v, want %v", keys, want)
		}
		for i := range want {
			if keys[i] != want[i] {
				t.Fatalf("keys %v, want %v", keys, want)
			}
		}
		if string(out[0]["memo"]) != "null" {
			t.Errorf("memo %s", out[0]["memo"])
		}
	})

	t.Run("pages", func(t *testing.T) {
		one, two := 1, 2
		var unknown solana.Signature
		unknown[0] = 1
		for _, tc := range []struct {
			name string
			opts *rpc.GetSignaturesForAddressOpts
			want []solana.Signature
		}{
			{"limit", &rpc.GetSignaturesForAddressOpts{Limit: &two}, []solana.Signature{e.failed, e.t2}},
			{"before", &rpc.GetSignaturesForAddressOpts{Before: e.t2}, []solana.Signature{e.t1, e.drop}},
			{"before with limit", &rpc.GetSignaturesForAddressOpts{Before: e.failed, Limit: &one}, []solana.Signature{e.t2}},
			{"until", &rpc.GetSignaturesForAddressOpts{Until: e.t1}, []solana.Signature{e.failed, e.t2}},
			{"before and until", &rpc.GetSignaturesForAddressOpts{Before: e.failed, Until: e.drop}, []solana.Signature{e.t2, e.t1}},
			{"nothing between", &rpc.GetSignaturesForAddressOpts{Before: e.t2, Until: e.t1}, nil},
			{"before the oldest", &rpc.GetSignaturesForAddressOpts{Before: e.drop}, nil},
			{"before unknown", &rpc.GetSignaturesForAddressOpts{Before: unknown}, nil},
			{"until unknown", &rpc.GetSignaturesForAddressOpts{Until: unknown}, e.aliceNewestFirst},
			{"confirmed", &rpc.GetSignaturesForAddressOpts{Commitment: rpc.CommitmentConfirmed}, e.aliceNewestFirst},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := sigsFor(t, e.cl, alice, tc.opts); !sigsEqual(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			})
		}
		// Walking pages of one with before visits every entry once.
		var walked []solana.Signature
		opts := &rpc.GetSignaturesForAddressOpts{Limit: &one}
		for {
			page := sigsFor(t, e.cl, alice, opts)
			if len(page) == 0 {
				break
			}
			walked = append(walked, page...)
			opts.Before = page[0]
		}
		if !sigsEqual(walked, e.aliceNewestFirst) {
			t.Fatalf("walked %v", walked)
		}
	})

	t.Run("errors", func(t *testing.T) {
		a := alice.String()
		for _, tc := range []struct {
			name   string
			params []any
			code   int
			msg    string
		}{
			{"invalid address", []any{"not-base58-0OIl"}, codeInvalidParams, "Invalid param: Invalid"},
			{"short address", []any{"1111"}, codeInvalidParams, "Invalid param: WrongSize"},
			{"no address", nil, codeInvalidParams, ""},
			{"address not a string", []any{42}, codeInvalidParams, ""},
			{"limit 0", []any{a, map[string]any{"limit": 0}}, codeInvalidParams, "Invalid limit; max 1000"},
			{"limit 1001", []any{a, map[string]any{"limit": 1001}}, codeInvalidParams, "Invalid limit; max 1000"},
			{"negative limit", []any{a, map[string]any{"limit": -1}}, codeInvalidParams, ""},
			{"bad before", []any{a, map[string]any{"before": "xyz"}}, codeInvalidParams, "Invalid param: Invalid"},
			{"bad until", []any{a, map[string]any{"until": 7}}, codeInvalidParams, ""},
			{"processed", []any{a, map[string]any{"commitment": "processed"}}, codeInvalidParams, msgCommitmentBelowConfirmed},
			{"unknown commitment", []any{a, map[string]any{"commitment": "soon"}}, codeInvalidParams, ""},
			{"minContextSlot ahead", []any{a, map[string]any{"minContextSlot": uint64(1) << 60}}, codeMinContextSlot, ""},
			{"three params", []any{a, map[string]any{}, 1}, codeInvalidParams, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "getSignaturesForAddress", "params": tc.params})
				resp := postRaw(t, e.s, string(body))
				if resp.Error == nil || resp.Error.Code != tc.code || (tc.msg != "" && resp.Error.Message != tc.msg) {
					t.Fatalf("got %+v (result %s), want %d %q", resp.Error, resp.Result, tc.code, tc.msg)
				}
			})
		}
	})
}

func TestGetTransaction(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_760_000_000, 0)}
	e := newHistoryEnv(t, Config{Now: clock.Now})
	ctx := testCtx(t)
	alice, bob := e.alice.PublicKey(), e.bob.PublicKey()
	clock.Add(time.Hour)
	aliceBefore, bobBefore := balance(t, e.cl, alice), balance(t, e.cl, bob)
	tx := buildTx(t, e.cl, []solana.PrivateKey{e.alice}, system.NewTransferInstruction(777, alice, bob).Build())
	sig, err := e.cl.SendTransaction(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	status, err := e.cl.GetSignatureStatuses(ctx, true, sig)
	if err != nil || status.Value[0] == nil {
		t.Fatal(status, err)
	}
	v0 := uint64(0)

	checkMeta := func(t *testing.T, res *rpc.GetTransactionResult) {
		t.Helper()
		if res.Slot != status.Value[0].Slot || res.BlockTime == nil || int64(*res.BlockTime) != clock.Now().Unix() {
			t.Errorf("slot %d blockTime %v, want %d %d", res.Slot, res.BlockTime, status.Value[0].Slot, clock.Now().Unix())
		}
		m := res.Meta
		if m == nil {
			t.Fatal("no meta")
		}
		if m.Err != nil || m.Fee != 5000 || m.Status["Ok"] != nil || len(m.Status) != 1 || len(m.LogMessages) == 0 ||
			m.ComputeUnitsConsumed == nil || *m.ComputeUnitsConsumed == 0 {
			t.Errorf("meta %+v", m)
		}
		// Account keys: alice (payer), bob, System program.
		wantPre := []uint64{aliceBefore, bobBefore}
		wantPost := []uint64{aliceBefore - 777 - 5000, bobBefore + 777}
		if len(m.PreBalances) != 3 || len(m.PostBalances) != 3 || m.PreBalances[2] != m.PostBalances[2] {
			t.Fatalf("balances %v -> %v", m.PreBalances, m.PostBalances)
		}
		for i := range wantPre {
			if m.PreBalances[i] != wantPre[i] || m.PostBalances[i] != wantPost[i] {
				t.Errorf("balances %v -> %v, want %v -> %v", m.PreBalances, m.PostBalances, wantPre, wantPost)
			}
		}
	}

	t.Run("json", func(t *testing.T) {
		res, err := e.cl.GetTransaction(ctx, sig, nil)
		if err != nil {
			t.Fatal(describeRPCError(err))
		}
		checkMeta(t, res)
		got, err := res.Transaction.GetTransaction()
		if err != nil {
			t.Fatal(err)
		}
		b, err := got.MarshalBinary()
		if err != nil || !bytes.Equal(b, wire) {
			t.Fatalf("json transaction re-encodes to %x (%v), want %x", b, err, wire)
		}
		if !got.IsSigner(alice) || got.Signatures[0] != sig {
			t.Fatalf("transaction %+v", got)
		}
		// No version without maxSupportedTransactionVersion, as on Solana.
		raw := rpcCall(t, e.s, "getTransaction", sig.String(), "json")
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(raw, &probe); err != nil {
			t.Fatal(err)
		}
		if _, ok := probe["version"]; ok {
			t.Errorf("version without maxSupportedTransactionVersion: %s", raw)
		}
	})
	t.Run("base64", func(t *testing.T) {
		res, err := e.cl.GetTransaction(ctx, sig, &rpc.GetTransactionOpts{Encoding: solana.EncodingBase64, MaxSupportedTransactionVersion: &v0})
		if err != nil {
			t.Fatal(describeRPCError(err))
		}
		checkMeta(t, res)
		if !bytes.Equal(res.Transaction.GetBinary(), wire) || res.Version != rpc.LegacyTransactionVersion {
			t.Fatalf("base64 transaction %x version %d", res.Transaction.GetBinary(), res.Version)
		}
		res58, err := e.cl.GetTransaction(ctx, sig, &rpc.GetTransactionOpts{Encoding: solana.EncodingBase58})
		if err != nil || !bytes.Equal(res58.Transaction.GetBinary(), wire) {
			t.Fatalf("base58: %v", err)
		}
	})
	t.Run("failed transaction", func(t *testing.T) {
		res, err := e.cl.GetTransaction(ctx, e.failed, &rpc.GetTransactionOpts{Encoding: solana.EncodingBase64})
		if err != nil {
			t.Fatal(err)
		}
		m := res.Meta
		if m.Err == nil || m.Status["Err"] == nil || m.Fee != 5000 || len(m.PreBalances) != 3 ||
			m.PostBalances[0] != m.PreBalances[0]-5000 || m.PostBalances[1] != m.PreBalances[1] {
			t.Fatalf("failed meta %+v", m)
		}
	})
	t.Run("airdrop", func(t *testing.T) {
		res, err := e.cl.GetTransaction(ctx, e.drop, &rpc.GetTransactionOpts{Encoding: solana.EncodingBase64})
		if err != nil {
			t.Fatal(err)
		}
		got, err := res.Transaction.GetTransaction()
		if err != nil || !got.IsSigner(solana.PublicKey(e.s.bank.faucet.PublicKey())) || res.Meta.PostBalances[1] != solana.LAMPORTS_PER_SOL {
			t.Fatalf("airdrop %+v %v", res.Meta, err)
		}
	})
	t.Run("v0", func(t *testing.T) {
		vtx, err := solana.NewTransaction([]solana.Instruction{system.NewTransferInstruction(5, alice, bob).Build()},
			freshBlockhash(t, e.cl), solana.TransactionPayer(alice))
		if err != nil {
			t.Fatal(err)
		}
		vtx.Message.SetVersion(solana.MessageVersionV0)
		if _, err := vtx.Sign(func(k solana.PublicKey) *solana.PrivateKey { return &e.alice }); err != nil {
			t.Fatal(err)
		}
		vsig, err := e.cl.SendTransaction(ctx, vtx)
		if err != nil {
			t.Fatal(describeRPCError(err))
		}
		_, err = e.cl.GetTransaction(ctx, vsig, &rpc.GetTransactionOpts{Encoding: solana.EncodingBase64})
		if re := rpcErr(t, err); re.Code != codeUnsupportedTransactionVersion {
			t.Fatalf("v0 without maxSupportedTransactionVersion: %d %s", re.Code, re.Message)
		}
		res, err := e.cl.GetTransaction(ctx, vsig, &rpc.GetTransactionOpts{MaxSupportedTransactionVersion: &v0})
		if err != nil {
			t.Fatal(describeRPCError(err))
		}
		raw := rpcCall(t, e.s, "getTransaction", vsig.String(), map[string]any{"maxSupportedTransactionVersion": 0})
		if res.Version != 0 || !bytes.Contains(raw, []byte(`"version":0`)) || !bytes.Contains(raw, []byte(`"addressTableLookups":[]`)) {
			t.Fatalf("v0 reply %s", raw)
		}
	})
	t.Run("not landed", func(t *testing.T) {
		var unknown solana.Signature
		unknown[1] = 9
		if _, err := e.cl.GetTransaction(ctx, unknown, nil); !errors.Is(err, rpc.ErrNotFound) {
			t.Fatalf("unknown signature: %v, want rpc.ErrNotFound", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			params []any
			code   int
		}{
			{"bad signature", []any{"abc"}, codeInvalidParams},
			{"no params", nil, codeInvalidParams},
			{"jsonParsed", []any{sig.String(), map[string]any{"encoding": "jsonParsed"}}, codeInvalidParams},
			{"unknown encoding string", []any{sig.String(), "hex"}, codeInvalidParams},
			{"processed", []any{sig.String(), map[string]any{"commitment": "processed"}}, codeInvalidParams},
			{"version out of range", []any{sig.String(), map[string]any{"maxSupportedTransactionVersion": 300}}, codeInvalidParams},
			{"config not an object", []any{sig.String(), []int{1}}, codeInvalidParams},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "getTransaction", "params": tc.params})
				resp := postRaw(t, e.s, string(body))
				if resp.Error == nil || resp.Error.Code != tc.code {
					t.Fatalf("got %+v (result %s), want %d", resp.Error, resp.Result, tc.code)
				}
			})
		}
	})
}

func TestHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SlotInterval: 10 * time.Millisecond}
	s1, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := rpc.New(s1.URL())
	alice, bob := newKey(t), newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	mustSend(t, cl, []solana.PrivateKey{alice}, system.NewTransferInstruction(rentExemptMinimum(0), alice.PublicKey(), bob.PublicKey()).Build())
	sendSkip(t, cl, []solana.PrivateKey{alice}, system.NewTransferInstruction(5*solana.LAMPORTS_PER_SOL, alice.PublicKey(), bob.PublicKey()).Build())
	before := sigsFor(t, cl, alice.PublicKey(), nil)
	market := sigsFor(t, cl, s1.Market(), nil)
	cl.Close()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if len(before) != 3 || len(market) != 1 {
		t.Fatalf("before restart: alice %v, market %v", before, market)
	}

	s2 := startLocalnet(t, cfg)
	cl2 := newRPC(t, s2)
	if got := sigsFor(t, cl2, alice.PublicKey(), nil); !sigsEqual(got, before) {
		t.Fatalf("after restart %v, want %v", got, before)
	}
	if got := sigsFor(t, cl2, s2.Market(), nil); !sigsEqual(got, market) {
		t.Fatalf("create_market after restart %v, want %v", got, market)
	}
	res, err := cl2.GetTransaction(testCtx(t), before[0], &rpc.GetTransactionOpts{Encoding: solana.EncodingBase64})
	if err != nil || res.Meta.Err == nil || len(res.Meta.PreBalances) != 3 {
		t.Fatalf("failed transfer after restart: %+v %v", res, err)
	}
	// The landing order continues after the restart.
	after := mustSend(t, cl2, []solana.PrivateKey{alice}, system.NewTransferInstruction(2, alice.PublicKey(), bob.PublicKey()).Build())
	if got := sigsFor(t, cl2, alice.PublicKey(), nil); !sigsEqual(got, append([]solana.Signature{after}, before...)) {
		t.Fatalf("after a new transfer: %v", got)
	}
}

// TestHistoryIndexBuiltForOldLedger rewrites a ledger into the layout
// written before the history index existed (no address_signatures entries,
// no sequence numbers or balances in status records) and checks a restart
// rebuilds the index from the stored transactions.
func TestHistoryIndexBuiltForOldLedger(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SlotInterval: 10 * time.Millisecond}
	s1, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := rpc.New(s1.URL())
	alice, bob := newKey(t), newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	for n := range uint64(3) {
		mustSend(t, cl, []solana.PrivateKey{alice}, system.NewTransferInstruction(rentExemptMinimum(0)+n, alice.PublicKey(), bob.PublicKey()).Build())
	}
	want := sigsFor(t, cl, alice.PublicKey(), nil)
	cl.Close()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := bolt.Open(filepath.Join(dir, ledgerFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketAddrSigs); err != nil {
			return err
		}
		sigs := tx.Bucket(bucketSignatures)
		old := map[string][]byte{}
		err := sigs.ForEach(func(k, v []byte) error {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			for _, f := range []string{"seq", "preBalances", "postBalances", "units"} {
				delete(m, f)
			}
			b, err := json.Marshal(m)
			old[string(k)] = b
			return err
		})
		if err != nil {
			return err
		}
		for k, v := range old {
			if err := sigs.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	s2 := startLocalnet(t, cfg)
	cl2 := newRPC(t, s2)
	res, err := cl2.GetSignaturesForAddress(testCtx(t), alice.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	// Within one slot the rebuilt order is by signature bytes, so compare
	// as sets and check slots descend.
	got := make([]solana.Signature, len(res))
	for i, r := range res {
		got[i] = r.Signature
		if i > 0 && r.Slot > res[i-1].Slot {
			t.Fatalf("rebuilt index not newest first: %+v", res)
		}
	}
	sortSigs := func(s []solana.Signature) []solana.Signature {
		s = append([]solana.Signature(nil), s...)
		sort.Slice(s, func(i, j int) bool { return bytes.Compare(s[i][:], s[j][:]) < 0 })
		return s
	}
	if !sigsEqual(sortSigs(got), sortSigs(want)) {
		t.Fatalf("rebuilt index %v, want %v", got, want)
	}
	// Old records report no balances but still decode.
	tx, err := cl2.GetTransaction(testCtx(t), want[0], nil)
	if err != nil || tx.Meta == nil || len(tx.Meta.PreBalances) != 0 || tx.Meta.Fee != 5000 {
		t.Fatalf("old record: %+v %v", tx, err)
	}
	// New transactions land after the rebuilt ones.
	after := mustSend(t, cl2, []solana.PrivateKey{alice}, system.NewTransferInstruction(9, alice.PublicKey(), bob.PublicKey()).Build())
	if top := sigsFor(t, cl2, alice.PublicKey(), nil); len(top) != len(want)+1 || top[0] != after {
		t.Fatalf("after a new transfer: %v", top)
	}
}

func TestCountInstructions(t *testing.T) {
	e := newMarketEnv(t)
	ctx := testCtx(t)
	job := e.createJob(t, 3)
	wantOK(t, "work_job by A", e.workJob(t, e.a, job))
	claim, err := chain.NewWorkJobInstruction(e.program, e.staking, job, e.market, e.b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	// B's claim loses the race: it fails on chain but lands (fee charged).
	losing := sendSkip(t, e.cl, []solana.PrivateKey{e.b}, claim)
	wantOK(t, "finish_job by A", e.finishJob(t, e.a, job, [32]byte{4}))
	// A second job and a transfer do not count for the first job.
	other := e.createJob(t, 5)
	mustSend(t, e.cl, []solana.PrivateKey{e.client}, system.NewTransferInstruction(1, e.client.PublicKey(), e.a.PublicKey()).Build())

	counts, err := CountInstructions(ctx, e.s.URL(), e.program, job)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		ok, failed       int
		okBy, failedBy   solana.PublicKey
		okByN, failedByN int
	}
	client, a, b := e.client.PublicKey(), e.a.PublicKey(), e.b.PublicKey()
	for name, w := range map[string]want{
		chain.IxCreateJob: {ok: 1, okBy: client, okByN: 1},
		chain.IxWorkJob:   {ok: 1, failed: 1, okBy: a, okByN: 1, failedBy: b, failedByN: 1},
		chain.IxFinishJob: {ok: 1, okBy: a, okByN: 1},
	} {
		c := counts[name]
		if c.Succeeded != w.ok || c.Failed != w.failed || c.SucceededBy[w.okBy] != w.okByN || len(c.SucceededBy) != 1 ||
			(w.failed > 0 && (c.FailedBy[w.failedBy] != w.failedByN || len(c.FailedBy) != 1)) || (w.failed == 0 && len(c.FailedBy) != 0) {
			t.Errorf("%s: %+v, want %+v", name, c, w)
		}
	}
	if len(counts) != 3 {
		t.Errorf("counts for %d instruction names, want 3: %+v", len(counts), counts)
	}

	list, err := ListInstructions(ctx, e.s.URL(), e.program, job)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ix := range list {
		names = append(names, ix.Name)
	}
	if len(list) != 4 || names[0] != chain.IxCreateJob || names[1] != chain.IxWorkJob || names[2] != chain.IxWorkJob || names[3] != chain.IxFinishJob ||
		list[2].Signature != losing || !list[2].Failed || list[2].FeePayer != b || list[1].Failed {
		t.Fatalf("list %+v", list)
	}
	if customCodeOf(map[string]any{"err": jsonRoundTrip(list[2].Err)}) != int64(chain.ErrJobNotQueued) {
		t.Errorf("losing claim err %v, want JobNotQueued", list[2].Err)
	}

	// Small pages walk the same history.
	paged, err := listInstructions(ctx, e.s.URL(), e.program, job, 1)
	if err != nil || len(paged) != len(list) {
		t.Fatalf("paged list %+v %v", paged, err)
	}
	for i := range paged {
		if paged[i].Signature != list[i].Signature || paged[i].Name != list[i].Name || paged[i].Index != list[i].Index || paged[i].Failed != list[i].Failed {
			t.Fatalf("paged entry %d %+v, want %+v", i, paged[i], list[i])
		}
	}

	if c, err := CountInstructions(ctx, e.s.URL(), e.program, other); err != nil || c[chain.IxCreateJob].Succeeded != 1 || len(c) != 1 {
		t.Errorf("other job: %+v %v", c, err)
	}
	if c, err := CountInstructions(ctx, e.s.URL(), e.staking, job); err != nil || len(c) != 0 {
		t.Errorf("another program: %+v %v", c, err)
	}
	if _, err := CountInstructions(ctx, "http://127.0.0.1:1", e.program, job); err == nil {
		t.Error("counted over a closed port")
	}
}
