package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"

	"github.com/hypernode-sol/worker/failpoint"
)

// FeePerSignature is the base fee of a transaction signature, lamports.
const FeePerSignature = 5000

// Errors callers branch on.
var (
	// ErrAccountNotFound: the account does not exist on chain.
	ErrAccountNotFound = errors.New("account not found")
	// ErrBlockhashExpired: the transaction did not land before its
	// lastValidBlockHeight; it never will, so it may be rebuilt.
	ErrBlockhashExpired = errors.New("blockhash expired before the transaction landed")
)

// TxError is a transaction refused at preflight or failed on chain. Program is
// the Markets error code when the failure is one (0 otherwise); Landed tells
// whether it landed (fee charged) or was refused before.
type TxError struct {
	Signature string
	Landed    bool
	Program   ProgramError
	// Err is the RPC's error value (e.g. "BlockhashNotFound" or
	// {"InstructionError":[0,{"Custom":6001}]}) re-encoded as JSON.
	Err string
}

func (e *TxError) Error() string {
	where := "refused at preflight"
	if e.Landed {
		where = "failed on chain"
	}
	if e.Program != 0 {
		return fmt.Sprintf("transaction %s %s: %v", e.Signature, where, e.Program)
	}
	return fmt.Sprintf("transaction %s %s: %s", e.Signature, where, e.Err)
}

// Is lets errors.Is(err, ProgramError) match the program code.
func (e *TxError) Is(target error) bool {
	p, ok := target.(ProgramError)
	return ok && p == e.Program && p != 0
}

// SignedTx is a signed transaction not yet known to have landed: what the
// journal records before sending (DESIGN.md, intent before effect).
type SignedTx struct {
	Instruction          string // Markets instruction it carries
	Signature            solana.Signature
	Raw                  []byte // wire bytes
	LastValidBlockHeight uint64
}

// Client is the worker's view of the chain: one node key, one market.
type Client struct {
	RPC     *rpc.Client
	Key     solana.PrivateKey
	Program solana.PublicKey // Markets program
	Staking solana.PublicKey
	Market  solana.PublicKey
	// PollInterval is how often Submit checks signature status (default 400ms).
	PollInterval time.Duration
	// CallTimeout bounds each RPC call (default 10s).
	CallTimeout time.Duration
}

// NewClient returns a client of rpcURL for node key in market.
func NewClient(rpcURL string, key solana.PrivateKey, program, staking, market solana.PublicKey) *Client {
	return &Client{RPC: rpc.New(rpcURL), Key: key, Program: program, Staking: staking, Market: market}
}

// Node is the node's public key.
func (c *Client) Node() solana.PublicKey { return c.Key.PublicKey() }

func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.CallTimeout
	if d == 0 {
		d = 10 * time.Second
	}
	return context.WithTimeout(ctx, d)
}

// Balance returns the node's balance in lamports.
func (c *Client) Balance(ctx context.Context) (uint64, error) {
	return c.BalanceOf(ctx, c.Node())
}

// BalanceOf returns an account's balance in lamports.
func (c *Client) BalanceOf(ctx context.Context, key solana.PublicKey) (uint64, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.RPC.GetBalance(ctx, key, rpc.CommitmentConfirmed)
	if err != nil {
		return 0, fmt.Errorf("getBalance %s: %w", key, err)
	}
	return out.Value, nil
}

func (c *Client) account(ctx context.Context, key solana.PublicKey) (*rpc.Account, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.RPC.GetAccountInfoWithOpts(ctx, key, &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed})
	if errors.Is(err, rpc.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrAccountNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("getAccountInfo %s: %w", key, err)
	}
	if out == nil || out.Value == nil {
		return nil, fmt.Errorf("%w: %s", ErrAccountNotFound, key)
	}
	return out.Value, nil
}

func (c *Client) owned(acc *rpc.Account, key, owner solana.PublicKey) ([]byte, error) {
	if acc.Owner != owner {
		return nil, fmt.Errorf("%w: %s is owned by %s, not %s", ErrAccountData, key, acc.Owner, owner)
	}
	if acc.Data == nil {
		return nil, fmt.Errorf("%w: %s has no data", ErrAccountData, key)
	}
	return acc.Data.GetBinary(), nil
}

// GetMarket reads the market account.
func (c *Client) GetMarket(ctx context.Context) (*Market, error) {
	acc, err := c.account(ctx, c.Market)
	if err != nil {
		return nil, err
	}
	data, err := c.owned(acc, c.Market, c.Program)
	if err != nil {
		return nil, err
	}
	return DecodeMarket(data)
}

// Job reads a job account.
func (c *Client) Job(ctx context.Context, job solana.PublicKey) (*Job, error) {
	acc, err := c.account(ctx, job)
	if err != nil {
		return nil, err
	}
	data, err := c.owned(acc, job, c.Program)
	if err != nil {
		return nil, err
	}
	return DecodeJob(data)
}

// Jobs reads several job accounts with one getMultipleAccounts; missing or
// undecodable ones are left out of the map.
func (c *Client) Jobs(ctx context.Context, keys []solana.PublicKey) (map[solana.PublicKey]*Job, error) {
	out := make(map[solana.PublicKey]*Job, len(keys))
	for start := 0; start < len(keys); start += 100 {
		end := min(start+100, len(keys))
		cctx, cancel := c.call(ctx)
		res, err := c.RPC.GetMultipleAccountsWithOpts(cctx, keys[start:end], &rpc.GetMultipleAccountsOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("getMultipleAccounts: %w", err)
		}
		for i, acc := range res.Value {
			if acc == nil || i >= end-start {
				continue
			}
			data, err := c.owned(acc, keys[start+i], c.Program)
			if err != nil {
				continue
			}
			if j, err := DecodeJob(data); err == nil {
				out[keys[start+i]] = j
			}
		}
	}
	return out, nil
}

// AssignedJobs finds the jobs of this market assigned to this node
// (getProgramAccounts with the node filter of the spec).
func (c *Client) AssignedJobs(ctx context.Context) (map[solana.PublicKey]*Job, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	node := c.Node()
	res, err := c.RPC.GetProgramAccountsWithOpts(ctx, c.Program, &rpc.GetProgramAccountsOpts{
		Encoding:   solana.EncodingBase64,
		Commitment: rpc.CommitmentConfirmed,
		Filters: []rpc.RPCFilter{
			{DataSize: JobAccountSize},
			{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: JobDiscriminator[:]}},
			{Memcmp: &rpc.RPCFilterMemcmp{Offset: JobOffsetMarket, Bytes: c.Market[:]}},
			{Memcmp: &rpc.RPCFilterMemcmp{Offset: JobOffsetNode, Bytes: append([]byte{1}, node[:]...)}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("getProgramAccounts (jobs of node %s): %w", node, err)
	}
	out := make(map[solana.PublicKey]*Job, len(res))
	for _, ka := range res {
		if ka == nil || ka.Account == nil || ka.Account.Owner != c.Program || ka.Account.Data == nil {
			continue
		}
		if j, err := DecodeJob(ka.Account.Data.GetBinary()); err == nil {
			out[ka.Pubkey] = j
		}
	}
	return out, nil
}

// Stake reads the node's stake account; ErrAccountNotFound when it has none.
func (c *Client) Stake(ctx context.Context) (*Stake, error) {
	pda, _, err := StakePDA(c.Staking, c.Node())
	if err != nil {
		return nil, err
	}
	acc, err := c.account(ctx, pda)
	if err != nil {
		return nil, err
	}
	data, err := c.owned(acc, pda, c.Staking)
	if err != nil {
		return nil, err
	}
	return DecodeStake(data)
}

// Sign builds a transaction of ixs paid and signed by the node key with a
// fresh blockhash. It does not send it.
func (c *Client) Sign(ctx context.Context, name string, ixs ...solana.Instruction) (*SignedTx, error) {
	cctx, cancel := c.call(ctx)
	bh, err := c.RPC.GetLatestBlockhash(cctx, rpc.CommitmentConfirmed)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("getLatestBlockhash: %w", err)
	}
	tx, err := solana.NewTransaction(ixs, bh.Value.Blockhash, solana.TransactionPayer(c.Node()))
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	if _, err := tx.Sign(func(k solana.PublicKey) *solana.PrivateKey {
		if k == c.Node() {
			return &c.Key
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("sign %s: %w", name, err)
	}
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return &SignedTx{Instruction: name, Signature: tx.Signatures[0], Raw: raw, LastValidBlockHeight: bh.Value.LastValidBlockHeight}, nil
}

// SignWorkJob signs work_job (claim) for job.
func (c *Client) SignWorkJob(ctx context.Context, job solana.PublicKey) (*SignedTx, error) {
	ix, err := NewWorkJobInstruction(c.Program, c.Staking, job, c.Market, c.Node())
	if err != nil {
		return nil, err
	}
	return c.Sign(ctx, IxWorkJob, ix)
}

// SignFinishJob signs finish_job for job with the result document's digest.
func (c *Client) SignFinishJob(ctx context.Context, acc *Job, job solana.PublicKey, result [32]byte) (*SignedTx, error) {
	vault, _, err := VaultPDA(c.Program, acc.Market)
	if err != nil {
		return nil, err
	}
	return c.Sign(ctx, IxFinishJob, NewFinishJobInstruction(c.Program, job, acc.Market, c.Node(), vault, result))
}

// SignQuitJob signs quit_job: give a running job back to the market.
func (c *Client) SignQuitJob(ctx context.Context, job solana.PublicKey) (*SignedTx, error) {
	return c.Sign(ctx, IxQuitJob, NewQuitJobInstruction(c.Program, job, c.Market, c.Node()))
}

// ListNode registers the node in the market's node queue and waits for it
// to land. A *TxError with ErrNodeAlreadyQueued or ErrQueueHasJobs tells why
// it was refused.
func (c *Client) ListNode(ctx context.Context) error {
	ix, err := NewListNodeInstruction(c.Program, c.Staking, c.Market, c.Node())
	if err != nil {
		return err
	}
	tx, err := c.Sign(ctx, IxListNode, ix)
	if err != nil {
		return err
	}
	return c.Submit(ctx, tx)
}

// UnlistNode removes the node from the market's node queue.
func (c *Client) UnlistNode(ctx context.Context) error {
	tx, err := c.Sign(ctx, IxUnlistNode, NewUnlistNodeInstruction(c.Program, c.Market, c.Node()))
	if err != nil {
		return err
	}
	return c.Submit(ctx, tx)
}

// Submit sends tx's bytes and waits until it is confirmed. Before sending it
// looks the signature up (with history search): a transaction that already
// landed is not sent again. While unconfirmed it re-sends the same bytes
// every few polls, until the block height passes LastValidBlockHeight; then
// it returns ErrBlockhashExpired. A refusal at preflight or a failure on chain
// is a *TxError.
func (c *Client) Submit(ctx context.Context, tx *SignedTx) error {
	poll := c.PollInterval
	if poll == 0 {
		poll = 400 * time.Millisecond
	}
	sig := tx.Signature
	for i := 0; ; i++ {
		st, err := c.status(ctx, sig)
		if err != nil {
			return err
		}
		if st != nil {
			if st.Err != nil {
				return txErrorFrom(sig.String(), true, st.Err)
			}
			if st.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || st.ConfirmationStatus == rpc.ConfirmationStatusFinalized {
				return nil
			}
		} else {
			cctx, cancel := c.call(ctx)
			height, err := c.RPC.GetBlockHeight(cctx, rpc.CommitmentConfirmed)
			cancel()
			if err != nil {
				return fmt.Errorf("getBlockHeight: %w", err)
			}
			if height > tx.LastValidBlockHeight {
				// One last look: it may have landed in the meantime.
				if st, err := c.status(ctx, sig); err == nil && st == nil {
					return fmt.Errorf("%w: %s (%s, last valid height %d, now %d)", ErrBlockhashExpired, sig, tx.Instruction, tx.LastValidBlockHeight, height)
				}
				continue
			}
			if i%5 == 0 {
				if err := c.send(ctx, tx); err != nil {
					return err
				}
				failpoint.Hit(tx.Instruction + "-after-send")
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (c *Client) status(ctx context.Context, sig solana.Signature) (*rpc.SignatureStatusesResult, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.RPC.GetSignatureStatuses(cctx, true, sig)
	if err != nil {
		return nil, fmt.Errorf("getSignatureStatuses %s: %w", sig, err)
	}
	if len(out.Value) == 0 {
		return nil, nil
	}
	return out.Value[0], nil
}

func (c *Client) send(ctx context.Context, tx *SignedTx) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.RPC.SendRawTransactionWithOpts(cctx, tx.Raw, rpc.TransactionOpts{PreflightCommitment: rpc.CommitmentConfirmed})
	if err == nil {
		return nil
	}
	var rpcErr *jsonrpc.RPCError
	if errors.As(err, &rpcErr) {
		if data, ok := rpcErr.Data.(map[string]interface{}); ok {
			if v, ok := data["err"]; ok && v != nil {
				if s, _ := v.(string); s == "AlreadyProcessed" {
					return nil // landed already; the status poll will see it
				}
				if s, _ := v.(string); s == "BlockhashNotFound" {
					return nil // expiry is decided by block height
				}
				return txErrorFrom(tx.Signature.String(), false, v)
			}
		}
	}
	return fmt.Errorf("sendTransaction %s: %w", tx.Instruction, err)
}

// txErrorFrom decodes Solana's transaction error value.
func txErrorFrom(sig string, landed bool, v interface{}) *TxError {
	b, _ := json.Marshal(v)
	e := &TxError{Signature: sig, Landed: landed, Err: string(b)}
	var shape struct {
		InstructionError []json.RawMessage `json:"InstructionError"`
	}
	if json.Unmarshal(b, &shape) == nil && len(shape.InstructionError) == 2 {
		var custom struct {
			Custom *uint32 `json:"Custom"`
		}
		if json.Unmarshal(shape.InstructionError[1], &custom) == nil && custom.Custom != nil {
			e.Program = ProgramError(*custom.Custom)
		}
	}
	return e
}

// RequestAirdrop asks the RPC's faucet for lamports to the node and waits
// until the airdrop is confirmed (localnet and devnet only).
func (c *Client) RequestAirdrop(ctx context.Context, lamports uint64) error {
	cctx, cancel := c.call(ctx)
	sig, err := c.RPC.RequestAirdrop(cctx, c.Node(), lamports, rpc.CommitmentConfirmed)
	cancel()
	if err != nil {
		return fmt.Errorf("requestAirdrop: %w", err)
	}
	poll := c.PollInterval
	if poll == 0 {
		poll = 400 * time.Millisecond
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.status(ctx, sig)
		if err != nil {
			return err
		}
		if st != nil && st.Err != nil {
			return txErrorFrom(sig.String(), true, st.Err)
		}
		if st != nil && (st.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || st.ConfirmationStatus == rpc.ConfirmationStatusFinalized) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return fmt.Errorf("airdrop %s not confirmed within 60s", sig)
}

// TxStatus is what the chain says of a signature.
type TxStatus struct {
	Found       bool     // landed (in the status cache or the history)
	Confirmed   bool     // at commitment confirmed or finalized
	Err         *TxError // set when it landed and failed
	BlockHeight uint64   // the current block height, to compare with lastValidBlockHeight
}

// TxStatus looks sig up (getSignatureStatuses with searchTransactionHistory)
// and reads the current block height.
func (c *Client) TxStatus(ctx context.Context, sig solana.Signature) (TxStatus, error) {
	var out TxStatus
	st, err := c.status(ctx, sig)
	if err != nil {
		return out, err
	}
	if st != nil {
		out.Found = true
		out.Confirmed = st.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || st.ConfirmationStatus == rpc.ConfirmationStatusFinalized
		if st.Err != nil {
			out.Err = txErrorFrom(sig.String(), true, st.Err)
		}
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	if out.BlockHeight, err = c.RPC.GetBlockHeight(cctx, rpc.CommitmentConfirmed); err != nil {
		return out, fmt.Errorf("getBlockHeight: %w", err)
	}
	return out, nil
}
