package localnet

import (
	"context"
	"fmt"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
)

// UnknownInstruction is the name ListInstructions and CountInstructions
// give a Markets-program instruction whose data chain.DecodeInstruction
// refuses (such a transaction can only have landed failed).
const UnknownInstruction = "unknown"

// LandedInstruction is one Markets instruction of a landed transaction that
// names the queried account among its accounts.
type LandedInstruction struct {
	Signature solana.Signature
	Slot      uint64
	// Index is the instruction's position in its transaction.
	Index int
	// Name is the Markets instruction (chain.IxWorkJob, …) or
	// UnknownInstruction.
	Name string
	// FeePayer is the transaction's first signer, who paid its fee.
	FeePayer solana.PublicKey
	// Failed is true when the transaction landed with an error: none of its
	// instructions took effect, whichever one failed.
	Failed bool
	// Err is the transaction's error as the RPC reports it
	// ({"InstructionError":[i,{"Custom":N}]}, …); nil on success.
	Err any
}

// InstructionCount is how many times one Markets instruction naming an
// account landed: in total and per fee payer (the signer who sent it),
// split by whether its transaction succeeded.
type InstructionCount struct {
	Succeeded, Failed     int
	SucceededBy, FailedBy map[solana.PublicKey]int
}

// historyPage is the getSignaturesForAddress page size ListInstructions
// asks for (Solana's maximum).
const historyPage = 1000

// ListInstructions reads, over rpcURL with solana-go's RPC client, every
// landed transaction whose account keys include account
// (getSignaturesForAddress, paged with before, commitment confirmed), fetches
// each one (getTransaction, base64) and returns its instructions for
// program that name account among their accounts, oldest first. It reads
// only the chain, not any worker's journal, so tests can count independently
// what landed. Errors wrap the RPC error, or rpc.ErrNotFound when a listed
// transaction cannot be fetched.
func ListInstructions(ctx context.Context, rpcURL string, program, account solana.PublicKey) ([]LandedInstruction, error) {
	return listInstructions(ctx, rpcURL, program, account, historyPage)
}

func listInstructions(ctx context.Context, rpcURL string, program, account solana.PublicKey, pageSize int) ([]LandedInstruction, error) {
	cl := rpc.New(rpcURL)
	defer cl.Close()
	var sigs []*rpc.TransactionSignature
	opts := &rpc.GetSignaturesForAddressOpts{Limit: &pageSize, Commitment: rpc.CommitmentConfirmed}
	for {
		page, err := cl.GetSignaturesForAddressWithOpts(ctx, account, opts)
		if err != nil {
			return nil, fmt.Errorf("signatures for %s: %w", account, err)
		}
		sigs = append(sigs, page...)
		if len(page) < pageSize {
			break
		}
		opts.Before = page[len(page)-1].Signature
	}
	maxVersion := uint64(0)
	var out []LandedInstruction
	for i := len(sigs) - 1; i >= 0; i-- {
		sig := sigs[i].Signature
		res, err := cl.GetTransaction(ctx, sig, &rpc.GetTransactionOpts{
			Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed, MaxSupportedTransactionVersion: &maxVersion,
		})
		if err != nil {
			return nil, fmt.Errorf("transaction %s: %w", sig, err)
		}
		if res.Transaction == nil || res.Meta == nil {
			return nil, fmt.Errorf("transaction %s: reply without transaction or meta", sig)
		}
		tx, err := res.Transaction.GetTransaction()
		if err != nil {
			return nil, fmt.Errorf("transaction %s: decode: %w", sig, err)
		}
		keys := tx.Message.AccountKeys
		if len(keys) == 0 {
			return nil, fmt.Errorf("transaction %s: no account keys", sig)
		}
		for idx, ci := range tx.Message.Instructions {
			if int(ci.ProgramIDIndex) >= len(keys) || keys[ci.ProgramIDIndex] != program || !namesAccount(ci.Accounts, keys, account) {
				continue
			}
			name := UnknownInstruction
			if ix, err := chain.DecodeInstruction(ci.Data); err == nil {
				name = ix.Name
			}
			out = append(out, LandedInstruction{
				Signature: sig, Slot: res.Slot, Index: idx, Name: name,
				FeePayer: keys[0], Failed: res.Meta.Err != nil, Err: res.Meta.Err,
			})
		}
	}
	return out, nil
}

func namesAccount(accts []uint16, keys []solana.PublicKey, account solana.PublicKey) bool {
	for _, a := range accts {
		if int(a) < len(keys) && keys[a] == account {
			return true
		}
	}
	return false
}

// CountInstructions counts ListInstructions' result per instruction name:
// e.g. for a job account, counts[chain.IxWorkJob].Succeeded is how many
// work_job transactions for it landed successfully (one, for a job claimed
// once) and counts[chain.IxWorkJob].FailedBy[node] how many of node's
// work_job transactions for it landed failed.
func CountInstructions(ctx context.Context, rpcURL string, program, account solana.PublicKey) (map[string]InstructionCount, error) {
	ixs, err := ListInstructions(ctx, rpcURL, program, account)
	if err != nil {
		return nil, err
	}
	counts := map[string]InstructionCount{}
	for _, ix := range ixs {
		c, ok := counts[ix.Name]
		if !ok {
			c = InstructionCount{SucceededBy: map[solana.PublicKey]int{}, FailedBy: map[solana.PublicKey]int{}}
		}
		if ix.Failed {
			c.Failed++
			c.FailedBy[ix.FeePayer]++
		} else {
			c.Succeeded++
			c.SucceededBy[ix.FeePayer]++
		}
		counts[ix.Name] = c
	}
	return counts, nil
}
