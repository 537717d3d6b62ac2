package localnet

import (
	"context"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/ws"

	"github.com/hypernode-sol/worker/chain"
)

func connectWS(t *testing.T, s *Server) *ws.Client {
	t.Helper()
	c, err := ws.Connect(testCtx(t), s.WSURL())
	if err != nil {
		t.Fatalf("ws connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func recvCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAccountAndProgramSubscribe(t *testing.T) {
	e := newMarketEnv(t)
	wsc := connectWS(t, e.s)
	j := e.createJob(t, 1)

	accSub, err := wsc.AccountSubscribe(j, rpc.CommitmentConfirmed)
	if err != nil {
		t.Fatal(err)
	}
	defer accSub.Unsubscribe()
	progSub, err := wsc.ProgramSubscribeWithOpts(e.program, rpc.CommitmentConfirmed, solana.EncodingBase64, []rpc.RPCFilter{
		{DataSize: chain.JobAccountSize},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetMarket, Bytes: e.market[:]}},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetNode, Bytes: []byte{0}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer progSub.Unsubscribe()
	// Subscriptions are registered once the server answered; a getSlot
	// round trip on HTTP does not order them, so wait for the first slot
	// notification on a slot subscription of the same connection instead.
	slotSub, err := wsc.SlotSubscribe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slotSub.Recv(recvCtx(t)); err != nil {
		t.Fatal(err)
	}
	slotSub.Unsubscribe()

	wantOK(t, "work_job", e.workJob(t, e.a, j))
	got, err := accSub.Recv(recvCtx(t))
	if err != nil {
		t.Fatalf("account notification: %v", err)
	}
	job, err := chain.DecodeJob(got.Value.Data.GetBinary())
	if err != nil {
		t.Fatal(err)
	}
	if job.State != chain.JobRunning || job.Node == nil || *job.Node != e.a.PublicKey() || got.Value.Owner != e.program || got.Context.Slot == 0 {
		t.Fatalf("notified job: %+v (owner %s, slot %d)", job, got.Value.Owner, got.Context.Slot)
	}

	// The job now has a node: it no longer matches the program filter. A new
	// queued job does.
	j2 := e.createJob(t, 2)
	pn, err := progSub.Recv(recvCtx(t))
	if err != nil {
		t.Fatalf("program notification: %v", err)
	}
	if pn.Value.Pubkey != j2 {
		t.Fatalf("program notification for %s, want %s", pn.Value.Pubkey, j2)
	}
	if d := pn.Value.Account.Data.GetBinary(); len(d) != chain.JobAccountSize {
		t.Fatalf("program notification data: %d bytes", len(d))
	}
}

func TestSignatureSubscribe(t *testing.T) {
	s := startLocalnet(t, Config{SlotInterval: 2 * time.Millisecond})
	cl := newRPC(t, s)
	wsc := connectWS(t, s)
	alice, bob := newKey(t), newKey(t)
	fund(t, cl, alice.PublicKey(), solana.LAMPORTS_PER_SOL)
	fund(t, cl, bob.PublicKey(), rentExemptMinimum(0)) // small transfers to bob keep it rent-exempt

	cases := []struct {
		name       string
		commitment rpc.CommitmentType
		lamports   uint64
		wantErr    bool
		after      bool // subscribe after the transaction landed
	}{
		{"processed before landing", rpc.CommitmentProcessed, 1, false, false},
		{"confirmed before landing", rpc.CommitmentConfirmed, 2, false, false},
		{"finalized (default) before landing", "", 3, false, false},
		{"processed after landing", rpc.CommitmentProcessed, 4, false, true},
		{"finalized after landing", rpc.CommitmentFinalized, 5, false, true},
		{"failed on chain", rpc.CommitmentConfirmed, 10 * solana.LAMPORTS_PER_SOL, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx := buildTx(t, cl, []solana.PrivateKey{alice}, system.NewTransferInstruction(tc.lamports, alice.PublicKey(), bob.PublicKey()).Build())
			sig := tx.Signatures[0]
			sendIt := func() {
				if _, err := cl.SendTransactionWithOpts(testCtx(t), tx, rpc.TransactionOpts{SkipPreflight: true}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.after {
				sendIt()
			}
			sub, err := wsc.SignatureSubscribe(sig, tc.commitment)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.after {
				sendIt()
			}
			res, err := sub.Recv(recvCtx(t))
			if err != nil {
				t.Fatalf("signature notification: %v", err)
			}
			if (res.Value.Err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", res.Value.Err, tc.wantErr)
			}
			st, err := cl.GetSignatureStatuses(testCtx(t), true, sig)
			if err != nil {
				t.Fatal(err)
			}
			depth := map[rpc.CommitmentType]uint64{rpc.CommitmentProcessed: 0, rpc.CommitmentConfirmed: 1, "": finalizedDepth, rpc.CommitmentFinalized: finalizedDepth}[tc.commitment]
			if res.Context.Slot < st.Value[0].Slot+depth {
				t.Fatalf("notified at slot %d, landed at %d, commitment depth %d", res.Context.Slot, st.Value[0].Slot, depth)
			}
			// Solana drops a signature subscription after its notification.
			s.hub.mu.Lock()
			left := len(s.hub.subs)
			s.hub.mu.Unlock()
			if left != 0 {
				t.Fatalf("%d subscriptions left after the notification", left)
			}
		})
	}
}

func TestSlotSubscribe(t *testing.T) {
	s := startLocalnet(t, Config{SlotInterval: 5 * time.Millisecond})
	wsc := connectWS(t, s)
	sub, err := wsc.SlotSubscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	first, err := sub.Recv(recvCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	second, err := sub.Recv(recvCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if second.Slot != first.Slot+1 || second.Parent != first.Slot {
		t.Fatalf("slots %+v then %+v", first, second)
	}
}
