package localnet

import (
	"encoding/base64"
	"testing"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/rpc"
)

func TestAirdropTransferBalanceFee(t *testing.T) {
	s := startLocalnet(t, Config{})
	cl := newRPC(t, s)
	alice, bob := newKey(t), newKey(t)
	fund(t, cl, alice.PublicKey(), 2*solana.LAMPORTS_PER_SOL)
	if got := balance(t, cl, alice.PublicKey()); got != 2*solana.LAMPORTS_PER_SOL {
		t.Fatalf("alice after airdrop: %d", got)
	}
	sig := mustSend(t, cl, []solana.PrivateKey{alice},
		system.NewTransferInstruction(300_000_000, alice.PublicKey(), bob.PublicKey()).Build())
	if got, want := balance(t, cl, alice.PublicKey()), 2*solana.LAMPORTS_PER_SOL-300_000_000-5000; got != want {
		t.Errorf("alice after transfer: %d, want %d", got, want)
	}
	if got := balance(t, cl, bob.PublicKey()); got != 300_000_000 {
		t.Errorf("bob: %d", got)
	}
	st, err := cl.GetSignatureStatuses(testCtx(t), false, sig)
	if err != nil {
		t.Fatal(err)
	}
	if v := st.Value[0]; v == nil || v.Err != nil || v.ConfirmationStatus == "" {
		t.Fatalf("status: %+v", v)
	}
	// Unknown accounts read as null / zero.
	if _, err := cl.GetAccountInfo(testCtx(t), newKey(t).PublicKey()); err != rpc.ErrNotFound {
		t.Errorf("unknown account: %v, want ErrNotFound", err)
	}
}

func TestTransactionRejections(t *testing.T) {
	s := startLocalnet(t, Config{})
	cl := newRPC(t, s)
	alice, bob := newKey(t), newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	fund(t, cl, bob.PublicKey(), rentExemptMinimum(0)) // small transfers to bob keep it rent-exempt
	transfer := func(n uint64) solana.Instruction {
		return system.NewTransferInstruction(n, alice.PublicKey(), bob.PublicKey()).Build()
	}

	t.Run("bad signature", func(t *testing.T) {
		tx := buildTx(t, cl, []solana.PrivateKey{alice}, transfer(1))
		tx.Signatures[0][5] ^= 0xff
		_, err := cl.SendTransaction(testCtx(t), tx)
		re := rpcErr(t, err)
		if re.Code != codeSignatureFailure || re.Message != "Transaction signature verification failure" {
			t.Fatalf("got %d %q", re.Code, re.Message)
		}
	})
	t.Run("replay", func(t *testing.T) {
		tx := buildTx(t, cl, []solana.PrivateKey{alice}, transfer(2))
		if _, err := cl.SendTransaction(testCtx(t), tx); err != nil {
			t.Fatal(err)
		}
		before := balance(t, cl, alice.PublicKey())
		_, err := cl.SendTransaction(testCtx(t), tx)
		re := rpcErr(t, err)
		if re.Code != codePreflightFailure || re.Message != "Transaction simulation failed: This transaction has already been processed" {
			t.Fatalf("got %d %q", re.Code, re.Message)
		}
		if d, _ := re.Data.(map[string]any); d["err"] != "AlreadyProcessed" {
			t.Fatalf("data: %+v", re.Data)
		}
		if after := balance(t, cl, alice.PublicKey()); after != before {
			t.Fatalf("replay charged: %d -> %d", before, after)
		}
	})
	t.Run("insufficient funds fails preflight without fee", func(t *testing.T) {
		before := balance(t, cl, alice.PublicKey())
		_, err := send(t, cl, []solana.PrivateKey{alice}, transfer(5*solana.LAMPORTS_PER_SOL))
		re := rpcErr(t, err)
		if re.Message != "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1" {
			t.Fatalf("message %q", re.Message)
		}
		if customCode(t, err) != 1 {
			t.Fatalf("data: %+v", re.Data)
		}
		if after := balance(t, cl, alice.PublicKey()); after != before {
			t.Fatalf("preflight failure charged: %d -> %d", before, after)
		}
	})
	t.Run("skipPreflight failure lands with fee", func(t *testing.T) {
		before := balance(t, cl, alice.PublicKey())
		tx := buildTx(t, cl, []solana.PrivateKey{alice}, transfer(5*solana.LAMPORTS_PER_SOL))
		sig, err := cl.SendTransactionWithOpts(testCtx(t), tx, rpc.TransactionOpts{SkipPreflight: true})
		if err != nil {
			t.Fatal(err)
		}
		if sig != tx.Signatures[0] {
			t.Fatalf("signature %s, want %s", sig, tx.Signatures[0])
		}
		st, err := cl.GetSignatureStatuses(testCtx(t), true, sig)
		if err != nil {
			t.Fatal(err)
		}
		if v := st.Value[0]; v == nil || customCodeOf(v.Err) != 1 {
			t.Fatalf("status: %+v", st.Value[0])
		}
		if after := balance(t, cl, alice.PublicKey()); after != before-5000 {
			t.Fatalf("balance %d -> %d, want fee 5000 only", before, after)
		}
		if got := balance(t, cl, bob.PublicKey()); got != rentExemptMinimum(0)+2 {
			t.Fatalf("bob got %d, want 2 (from the replay subtest only)", got)
		}
	})
	t.Run("unfunded fee payer", func(t *testing.T) {
		poor := newKey(t)
		_, err := send(t, cl, []solana.PrivateKey{poor}, system.NewTransferInstruction(1, poor.PublicKey(), bob.PublicKey()).Build())
		re := rpcErr(t, err)
		if d, _ := re.Data.(map[string]any); re.Code != codePreflightFailure || d["err"] != "AccountNotFound" {
			t.Fatalf("got %d %q %+v", re.Code, re.Message, re.Data)
		}
	})
	t.Run("garbage bytes", func(t *testing.T) {
		_, err := cl.SendEncodedTransaction(testCtx(t), base64.StdEncoding.EncodeToString([]byte{1, 2, 3}))
		if re := rpcErr(t, err); re.Code != codeInvalidParams {
			t.Fatalf("got %d %q", re.Code, re.Message)
		}
	})
}
