package localnet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
)

// ErrTxFailed is wrapped when a transaction landed with an error or its
// blockhash expired before it landed.
var ErrTxFailed = errors.New("transaction failed")

// confirmPoll is how often PostJob polls signature statuses.
const confirmPoll = 100 * time.Millisecond

// PostJob posts a job to market as client, the way a client application
// does, over rpcURL with solana-go's RPC client: it airdrops to the client
// when its balance cannot cover the job price, the job account's rent and
// the fee, sends create_job with a fresh random job_id, and waits until the
// transaction is confirmed. ipfsJobDigest is the job definition's CIDv0
// sha2-256 digest; minVRAM in GiB. It returns the job account (the PDA of
// job_id) and the transaction signature. Errors wrap ErrTxFailed when the
// transaction failed on chain or expired.
func PostJob(ctx context.Context, rpcURL string, client solana.PrivateKey, market solana.PublicKey, ipfsJobDigest [32]byte, minVRAM uint8, gpu chain.GPUType) (job solana.PublicKey, sig solana.Signature, err error) {
	cl := rpc.New(rpcURL)
	defer cl.Close()
	info, err := cl.GetAccountInfo(ctx, market)
	if err != nil {
		return job, sig, fmt.Errorf("post job: read market %s: %w", market, err)
	}
	program := info.Value.Owner
	mk, err := chain.DecodeMarket(info.Value.Data.GetBinary())
	if err != nil {
		return job, sig, fmt.Errorf("post job: market %s: %w", market, err)
	}
	need := mk.JobPrice + rentExemptMinimum(chain.JobAccountSize) + lamportsPerSignature
	bal, err := cl.GetBalance(ctx, client.PublicKey(), rpc.CommitmentConfirmed)
	if err != nil {
		return job, sig, fmt.Errorf("post job: client balance: %w", err)
	}
	if bal.Value < need {
		drop, err := cl.RequestAirdrop(ctx, client.PublicKey(), need-bal.Value+solana.LAMPORTS_PER_SOL, rpc.CommitmentConfirmed)
		if err != nil {
			return job, sig, fmt.Errorf("post job: airdrop to client: %w", err)
		}
		if err := waitConfirmed(ctx, cl, drop, 0); err != nil {
			return job, sig, fmt.Errorf("post job: airdrop to client: %w", err)
		}
	}
	jobID := solana.NewWallet().PublicKey()
	ix, err := chain.NewCreateJobInstruction(program, jobID, market, client.PublicKey(), mk.Vault, ipfsJobDigest, minVRAM, gpu)
	if err != nil {
		return job, sig, fmt.Errorf("post job: build create_job: %w", err)
	}
	job, _, err = chain.JobPDA(program, jobID)
	if err != nil {
		return job, sig, fmt.Errorf("post job: job PDA: %w", err)
	}
	bh, err := cl.GetLatestBlockhash(ctx, rpc.CommitmentConfirmed)
	if err != nil {
		return job, sig, fmt.Errorf("post job: blockhash: %w", err)
	}
	tx, err := NewSignedTransaction(bh.Value.Blockhash, []solana.PrivateKey{client}, ix)
	if err != nil {
		return job, sig, fmt.Errorf("post job: %w", err)
	}
	sig, err = cl.SendTransaction(ctx, tx)
	if err != nil {
		return job, sig, fmt.Errorf("post job: send create_job: %w", err)
	}
	if err := waitConfirmed(ctx, cl, sig, bh.Value.LastValidBlockHeight); err != nil {
		return job, sig, fmt.Errorf("post job: create_job %s: %w", sig, err)
	}
	return job, sig, nil
}

// waitConfirmed polls until sig is confirmed (nil), landed with an error or
// expired past lastValid (ErrTxFailed), or ctx ends. lastValid 0 waits
// without an expiry.
func waitConfirmed(ctx context.Context, cl *rpc.Client, sig solana.Signature, lastValid uint64) error {
	t := time.NewTicker(confirmPoll)
	defer t.Stop()
	for {
		st, err := cl.GetSignatureStatuses(ctx, true, sig)
		if err != nil {
			return fmt.Errorf("signature status: %w", err)
		}
		if len(st.Value) == 1 && st.Value[0] != nil {
			v := st.Value[0]
			if v.Err != nil {
				return fmt.Errorf("%w: %v", ErrTxFailed, v.Err)
			}
			if v.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || v.ConfirmationStatus == rpc.ConfirmationStatusFinalized {
				return nil
			}
		} else if lastValid > 0 {
			h, err := cl.GetBlockHeight(ctx, rpc.CommitmentConfirmed)
			if err == nil && h > lastValid {
				return fmt.Errorf("%w: blockhash expired at block height %d before it landed", ErrTxFailed, lastValid)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
