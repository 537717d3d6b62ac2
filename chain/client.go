package chain

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	solws "github.com/gagliardetto/solana-go/rpc/ws"

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
	// Transport is the retrying, rate-limited, failing-over HTTP transport
	// under RPC (nil for a Client built by hand around another rpc.Client).
	Transport *Transport
	// WSURL is the WebSocket endpoint for signatureSubscribe and
	// accountSubscribe; "" means polling only.
	WSURL string
	// PriorityFee is the compute-unit price in micro-lamports (0: none),
	// PriorityFeeCap the most lamports of priority fee per transaction (0:
	// no cap), ComputeUnits the limit requested (default
	// DefaultComputeUnits).
	PriorityFee, PriorityFeeCap uint64
	ComputeUnits                uint32
	// PollInterval is how often Submit checks signature status without push
	// (default 400ms); with a live signature subscription it checks every
	// PushPollInterval (default 2s) as a backstop.
	PollInterval, PushPollInterval time.Duration
	// ResendInterval is how often Submit re-sends the same bytes while the
	// transaction has not landed (default 2s).
	ResendInterval time.Duration
	// CallTimeout bounds each RPC call, retries included (default 30s).
	CallTimeout time.Duration
	// OutageLimit is how long Submit rides out an RPC that answers nothing
	// usable before returning the error (default 3 minutes, longer than a
	// blockhash lives).
	OutageLimit time.Duration
	// WSRetry is the least time between two WebSocket connection attempts
	// (default 5s).
	WSRetry time.Duration

	rateLimit float64
	tune      []func(*Transport)
	wsSet     bool
	wsMu      sync.Mutex
	wsConn    *solws.Client
	wsFailed  time.Time
}

// Node is the node's public key.
func (c *Client) Node() solana.PublicKey { return c.Key.PublicKey() }

func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.CallTimeout
	if d == 0 {
		d = callTimeout
	}
	return context.WithTimeout(ctx, d)
}

// Balance returns the node's balance in lamports.
func (c *Client) Balance(ctx context.Context) (uint64, error) {
	return c.BalanceOf(ctx, c.Node())
}

// BalanceOf returns an account's balance in lamports.
func (c *Client) BalanceOf(ctx context.Context, key solana.PublicKey) (uint64, error) {
	out, err := do(ctx, c, "getBalance", func(ctx context.Context) (*rpc.GetBalanceResult, error) {
		return c.RPC.GetBalance(ctx, key, rpc.CommitmentConfirmed)
	})
	if err != nil {
		return 0, fmt.Errorf("balance of %s: %w", key, err)
	}
	if out == nil {
		return 0, fmt.Errorf("balance of %s: %w: null result", key, ErrBadReply)
	}
	return out.Value, nil
}

func (c *Client) account(ctx context.Context, key solana.PublicKey) (*rpc.Account, error) {
	out, err := do(ctx, c, "getAccountInfo", func(ctx context.Context) (*rpc.GetAccountInfoResult, error) {
		return c.RPC.GetAccountInfoWithOpts(ctx, key, &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed})
	})
	if errors.Is(err, ErrAccountNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrAccountNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", key, err)
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
		res, err := do(ctx, c, "getMultipleAccounts", func(ctx context.Context) (*rpc.GetMultipleAccountsResult, error) {
			return c.RPC.GetMultipleAccountsWithOpts(ctx, keys[start:end], &rpc.GetMultipleAccountsOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed})
		})
		if err != nil {
			return nil, fmt.Errorf("read %d job accounts: %w", end-start, err)
		}
		if res == nil {
			return nil, fmt.Errorf("read %d job accounts: %w: null result", end-start, ErrBadReply)
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
	node := c.Node()
	res, err := do(ctx, c, "getProgramAccounts", func(ctx context.Context) (rpc.GetProgramAccountsResult, error) {
		return c.RPC.GetProgramAccountsWithOpts(ctx, c.Program, &rpc.GetProgramAccountsOpts{
			Encoding:   solana.EncodingBase64,
			Commitment: rpc.CommitmentConfirmed,
			Filters: []rpc.RPCFilter{
				{DataSize: JobAccountSize},
				{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: JobDiscriminator[:]}},
				{Memcmp: &rpc.RPCFilterMemcmp{Offset: JobOffsetMarket, Bytes: c.Market[:]}},
				{Memcmp: &rpc.RPCFilterMemcmp{Offset: JobOffsetNode, Bytes: append([]byte{1}, node[:]...)}},
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("jobs assigned to node %s: %w", node, err)
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
	bh, err := do(ctx, c, "getLatestBlockhash", func(ctx context.Context) (*rpc.GetLatestBlockhashResult, error) {
		return c.RPC.GetLatestBlockhash(ctx, rpc.CommitmentConfirmed)
	})
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", name, err)
	}
	if bh == nil || bh.Value == nil {
		return nil, fmt.Errorf("sign %s: getLatestBlockhash: %w: null result", name, ErrBadReply)
	}
	ixs = append(c.computeBudget(), ixs...)
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
// landed is not sent again. It subscribes to the signature's confirmation
// (signatureSubscribe) when the WebSocket is up and polls the status as a
// backstop (every PollInterval without push). While unconfirmed it re-sends
// the same bytes every ResendInterval, until the block height passes
// LastValidBlockHeight; then it returns ErrBlockhashExpired. A refusal at
// preflight or a failure on chain is a *TxError. Transient RPC faults
// (replies lost, errors after the transaction landed, outages shorter than
// OutageLimit) are ridden out: the status decides.
func (c *Client) Submit(ctx context.Context, tx *SignedTx) error {
	poll := cmp.Or(c.PollInterval, 400*time.Millisecond)
	pushPoll := cmp.Or(c.PushPollInterval, 2*time.Second)
	resend := cmp.Or(c.ResendInterval, 2*time.Second)
	outage := cmp.Or(c.OutageLimit, 3*time.Minute)
	sig := tx.Signature
	pushed, stop := c.watchSignature(ctx, sig)
	defer func() { stop() }()
	wait := poll
	if pushed != nil {
		wait = pushPoll
	}
	var lastSend time.Time
	lastOK := time.Now()
	for {
		next := wait
		st, err := c.status(ctx, sig)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			if time.Since(lastOK) > outage {
				return fmt.Errorf("submit %s: %w", tx.Instruction, err)
			}
		case st != nil:
			lastOK = time.Now()
			if st.Err != nil {
				return txErrorFrom(sig.String(), true, st.Err)
			}
			if st.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || st.ConfirmationStatus == rpc.ConfirmationStatusFinalized {
				return nil
			}
		default:
			lastOK = time.Now()
			height, err := c.blockHeight(ctx)
			if err == nil && height > tx.LastValidBlockHeight {
				// One last look: it may have landed in the meantime.
				if st, err := c.status(ctx, sig); err == nil && st == nil {
					return fmt.Errorf("%w: %s (%s, last valid height %d, now %d)", ErrBlockhashExpired, sig, tx.Instruction, tx.LastValidBlockHeight, height)
				}
				continue
			}
			if time.Since(lastSend) >= resend {
				lastSend = time.Now()
				err := c.send(ctx, tx)
				var txErr *TxError
				if errors.As(err, &txErr) {
					return err
				}
				// Any other failure may have landed it anyway (a reply
				// lost): the status decides; the bytes are sent again later.
				if err == nil {
					failpoint.Hit(tx.Instruction + "-after-send")
				}
			}
			// Not landed: look again by the next re-send at the latest.
			next = min(wait, max(resend-time.Since(lastSend), time.Millisecond))
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-pushed:
			// Notified (or the subscription failed): look now, and poll
			// from here on; a signature is notified once.
			pushed, wait = nil, poll
		case <-t.C:
		}
		t.Stop()
	}
}

func (c *Client) blockHeight(ctx context.Context) (uint64, error) {
	return do(ctx, c, "getBlockHeight", func(ctx context.Context) (uint64, error) {
		return c.RPC.GetBlockHeight(ctx, rpc.CommitmentConfirmed)
	})
}

func (c *Client) status(ctx context.Context, sig solana.Signature) (*rpc.SignatureStatusesResult, error) {
	out, err := do(ctx, c, "getSignatureStatuses", func(ctx context.Context) (*rpc.GetSignatureStatusesResult, error) {
		return c.RPC.GetSignatureStatuses(ctx, true, sig)
	})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", sig, err)
	}
	if out == nil || len(out.Value) == 0 {
		return nil, nil
	}
	return out.Value[0], nil
}

// send sends tx's bytes once. AlreadyProcessed and BlockhashNotFound are
// not errors (the status and the block height decide); another preflight
// refusal is a *TxError.
func (c *Client) send(ctx context.Context, tx *SignedTx) error {
	_, err := do(ctx, c, "sendTransaction", func(ctx context.Context) (solana.Signature, error) {
		return c.RPC.SendRawTransactionWithOpts(ctx, tx.Raw, rpc.TransactionOpts{PreflightCommitment: rpc.CommitmentConfirmed})
	})
	if err == nil {
		return nil
	}
	var rpcErr *RPCError
	if errors.As(err, &rpcErr) && len(rpcErr.Data) > 0 {
		var data struct {
			Err json.RawMessage `json:"err"`
		}
		if json.Unmarshal(rpcErr.Data, &data) == nil && len(data.Err) > 0 && string(data.Err) != "null" {
			var name string
			if json.Unmarshal(data.Err, &name) == nil && (name == "AlreadyProcessed" || name == "BlockhashNotFound") {
				return nil
			}
			var v any
			_ = json.Unmarshal(data.Err, &v)
			return txErrorFrom(tx.Signature.String(), false, v)
		}
	}
	return fmt.Errorf("send %s: %w", tx.Instruction, err)
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
	sig, err := do(ctx, c, "requestAirdrop", func(ctx context.Context) (solana.Signature, error) {
		return c.RPC.RequestAirdrop(ctx, c.Node(), lamports, rpc.CommitmentConfirmed)
	})
	if err != nil {
		return fmt.Errorf("airdrop: %w", err)
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
	if out.BlockHeight, err = c.blockHeight(ctx); err != nil {
		return out, err
	}
	return out, nil
}
