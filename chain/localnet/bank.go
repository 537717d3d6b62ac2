package localnet

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"
)

// Ledger clock constants (Solana's).
const (
	// maxProcessingAge: a blockhash is valid for 150 blocks after the block
	// that issued it (lastValidBlockHeight = issued height + 150).
	maxProcessingAge = 150
	// recentBlockhashes is how many blockhashes the bank remembers.
	recentBlockhashes = 300
	// statusCacheSlots: getSignatureStatuses without searchTransactionHistory
	// only sees transactions this recent.
	statusCacheSlots = 300
	// finalizedDepth: a slot is finalized (rooted) 32 slots later.
	finalizedDepth = 32
)

// eventSink receives the bank's changes, in order, while the bank lock is
// held; it must not block or call back into the bank.
type eventSink interface {
	accountsChanged(slot uint64, changes map[solana.PublicKey]*Account)
	signatureLanded(sig solana.Signature, slot uint64, err json.RawMessage)
	slotAdvanced(slot uint64)
}

type nopSink struct{}

func (nopSink) accountsChanged(uint64, map[solana.PublicKey]*Account)     {}
func (nopSink) signatureLanded(solana.Signature, uint64, json.RawMessage) {}
func (nopSink) slotAdvanced(uint64)                                       {}

// bank is the ledger: accounts, the slot clock and recent blockhashes,
// landed transactions' statuses. Transactions apply atomically under mu and
// are durable in the store before their effects are visible.
type bank struct {
	mu       sync.Mutex
	store    *store
	now      func() time.Time
	events   eventSink
	programs map[solana.PublicKey]programHandler

	marketsID, stakingID solana.PublicKey
	faucet               solana.PrivateKey
	airdropNonce         uint64

	accounts map[solana.PublicKey]*Account
	statuses map[solana.Signature]*statusRecord
	chain    chainMeta
	// lastSeq is the sequence number of the newest landed transaction.
	lastSeq uint64
	// expiry, when > 0, replaces maxProcessingAge (the fault ExpiryBlocks).
	expiry uint64
}

// setExpiry sets how many blocks a blockhash stays valid; 0 restores
// Solana's maxProcessingAge.
func (b *bank) setExpiry(blocks uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expiry = blocks
}

func (b *bank) validityLocked() uint64 {
	if b.expiry > 0 {
		return b.expiry
	}
	return maxProcessingAge
}

func newBank(st *store, state *ledgerState, now func() time.Time, marketsID, stakingID solana.PublicKey) *bank {
	b := &bank{
		store:     st,
		now:       now,
		events:    nopSink{},
		marketsID: marketsID,
		stakingID: stakingID,
		accounts:  state.accounts,
		statuses:  state.statuses,
		lastSeq:   state.lastSeq,
	}
	if state.chain != nil {
		b.chain = *state.chain
	}
	b.programs = map[solana.PublicKey]programHandler{
		solana.SystemProgramID: systemProgram,
		solana.ComputeBudget:   computeBudgetProgram,
		marketsID:              b.marketsProgram,
	}
	return b
}

// --- slot clock ------------------------------------------------------------

func nextBlockhash(prev solana.Hash, slot uint64) solana.Hash {
	h := sha256.New()
	h.Write([]byte("hypernode-localnet"))
	h.Write(prev[:])
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], slot)
	h.Write(s[:])
	var out solana.Hash
	copy(out[:], h.Sum(nil))
	return out
}

// genesisChain starts the clock at slot 0 with a blockhash from seed.
func genesisChain(seed [32]byte) chainMeta {
	return chainMeta{Blockhashes: []blockhashEntry{{Hash: nextBlockhash(solana.Hash(seed), 0)}}}
}

// advance produces the next block: slot and block height +1, a new
// blockhash. Durable before visible.
func (b *bank) advance() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := b.chain
	next.Slot++
	next.Height++
	latest := next.Blockhashes[len(next.Blockhashes)-1]
	hashes := append([]blockhashEntry(nil), next.Blockhashes...)
	hashes = append(hashes, blockhashEntry{Hash: nextBlockhash(latest.Hash, next.Slot), Slot: next.Slot, Height: next.Height})
	if len(hashes) > recentBlockhashes {
		hashes = hashes[len(hashes)-recentBlockhashes:]
	}
	next.Blockhashes = hashes
	if err := b.store.commit(nil, nil, nil, nil, &next); err != nil {
		return err
	}
	b.chain = next
	b.events.slotAdvanced(next.Slot)
	return nil
}

func (b *bank) slot() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.chain.Slot
}

func (b *bank) blockHeight() (slot, height uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.chain.Slot, b.chain.Height
}

// latestBlockhash returns the newest blockhash and its lastValidBlockHeight.
func (b *bank) latestBlockhash() (slot uint64, hash solana.Hash, lastValid uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.chain.Blockhashes[len(b.chain.Blockhashes)-1]
	return b.chain.Slot, e.Hash, e.Height + b.validityLocked()
}

// blockhashValidLocked reports whether h was issued at most 150 blocks ago.
func (b *bank) blockhashValidLocked(h solana.Hash) bool {
	for i := len(b.chain.Blockhashes) - 1; i >= 0; i-- {
		e := b.chain.Blockhashes[i]
		if e.Hash == h {
			return b.chain.Height <= e.Height+b.validityLocked()
		}
	}
	return false
}

func (b *bank) blockhashValid(h solana.Hash) (slot uint64, valid bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.chain.Slot, b.blockhashValidLocked(h)
}

// --- reads -----------------------------------------------------------------

// account returns a copy of k's state, nil when it does not exist.
func (b *bank) account(k solana.PublicKey) (uint64, *Account) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.accounts[k]
	if a == nil {
		return b.chain.Slot, nil
	}
	return b.chain.Slot, a.clone()
}

func (b *bank) accountsOf(keys []solana.PublicKey) (uint64, []*Account) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Account, len(keys))
	for i, k := range keys {
		if a := b.accounts[k]; a != nil {
			out[i] = a.clone()
		}
	}
	return b.chain.Slot, out
}

// programAccounts returns copies of the accounts owned by program that pass
// keep.
func (b *bank) programAccounts(program solana.PublicKey, keep func(*Account) bool) (uint64, map[solana.PublicKey]*Account) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[solana.PublicKey]*Account{}
	for k, a := range b.accounts {
		if a.Owner == program && keep(a) {
			out[k] = a.clone()
		}
	}
	return b.chain.Slot, out
}

// sigStatus is a signature's status as getSignatureStatuses reports it.
type sigStatus struct {
	Slot          uint64
	Confirmations uint64
	Err           json.RawMessage
	Level         string // processed, confirmed, finalized
}

func commitmentLevel(txSlot, current uint64) string {
	switch {
	case current >= txSlot+finalizedDepth:
		return "finalized"
	case current >= txSlot+1:
		return "confirmed"
	}
	return "processed"
}

// statusesOf looks signatures up; without history only the status cache
// (the last 300 slots) is searched. Unknown signatures are nil.
func (b *bank) statusesOf(sigs []solana.Signature, history bool) (uint64, []*sigStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.chain.Slot
	out := make([]*sigStatus, len(sigs))
	for i, s := range sigs {
		r := b.statuses[s]
		if r == nil || (!history && cur > r.Slot+statusCacheSlots) {
			continue
		}
		out[i] = &sigStatus{Slot: r.Slot, Confirmations: cur - r.Slot, Err: r.Err, Level: commitmentLevel(r.Slot, cur)}
	}
	return cur, out
}

// landedTx is one entry of getSignaturesForAddress.
type landedTx struct {
	Sig       solana.Signature
	Slot      uint64
	Err       json.RawMessage
	BlockTime int64
	Level     string // processed, confirmed, finalized
}

// errNotLanded is returned by signaturesFor for a before signature the
// ledger does not hold.
var errNotLanded = errors.New("signature has not landed")

// signaturesFor lists up to limit landed transactions whose account keys
// include addr, newest first, strictly older than before and strictly newer
// than until (each optional). A before signature that has not landed gives
// errNotLanded (Solana answers an empty list); an until signature that has
// not landed bounds nothing.
func (b *bank) signaturesFor(addr solana.PublicKey, before, until *solana.Signature, limit int) (uint64, []landedTx, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.chain.Slot
	below, above := ^uint64(0), uint64(0)
	if before != nil {
		r := b.statuses[*before]
		if r == nil {
			return cur, nil, errNotLanded
		}
		below = r.Seq
	}
	if until != nil {
		if r := b.statuses[*until]; r != nil {
			above = r.Seq
		}
	}
	out := []landedTx{}
	var missing error
	err := b.store.signaturesFor(addr, below, above, func(sig solana.Signature) bool {
		r := b.statuses[sig]
		if r == nil {
			missing = fmt.Errorf("%w: address_signatures names %s, which has no status", ErrLedger, sig)
			return false
		}
		out = append(out, landedTx{Sig: sig, Slot: r.Slot, Err: r.Err, BlockTime: r.BlockTime, Level: commitmentLevel(r.Slot, cur)})
		return len(out) < limit
	})
	if err == nil {
		err = missing
	}
	return cur, out, err
}

// landed returns the record of a landed transaction, nil when sig has not
// landed, and the current slot. Records are never modified once stored.
func (b *bank) landed(sig solana.Signature) (uint64, *statusRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.chain.Slot, b.statuses[sig]
}

// --- transactions ----------------------------------------------------------

// txResult is what processing a transaction produced.
type txResult struct {
	sig    solana.Signature
	err    *txError // nil: success
	landed bool     // committed to the ledger (success, or failure with fee)
	// checked is false when the transaction failed before execution
	// (blockhash, duplicate, fee payer): it can never land as it is.
	checked  bool
	logs     []string
	units    uint64
	accounts map[solana.PublicKey]*Account // post-state of a simulation
}

// process runs a verified transaction. With commit it lands when it
// succeeds, or when it fails on chain and skipPreflight is set (the fee is
// charged, effects rolled back). Without commit it is a simulation.
func (b *bank) process(w *wireTx, commit, skipPreflight, checkBlockhash bool) (*txResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.processLocked(w, commit, skipPreflight, checkBlockhash)
}

func (b *bank) processLocked(w *wireTx, commit, skipPreflight, checkBlockhash bool) (*txResult, error) {
	res := &txResult{sig: w.signature(), logs: []string{}}
	if checkBlockhash && !b.blockhashValidLocked(w.blockhash()) {
		res.err = newTxError(txErrBlockhashNotFound)
		return res, nil
	}
	if _, dup := b.statuses[res.sig]; dup && commit {
		res.err = newTxError(txErrAlreadyProcessed)
		return res, nil
	}
	payer := b.accounts[w.feePayer()]
	fee := w.fee()
	switch {
	case payer == nil:
		res.err = newTxError(txErrAccountNotFound)
		return res, nil
	case payer.Owner != solana.SystemProgramID || len(payer.Data) > 0:
		res.err = newTxError(txErrInvalidAccountForFee)
		return res, nil
	case payer.Lamports < fee:
		res.err = newTxError(txErrInsufficientFundsForFee)
		return res, nil
	case !rentTransitionAllowed(payer.Lamports, len(payer.Data), payer.Lamports-fee, len(payer.Data)):
		res.err = insufficientFundsForRent(0)
		return res, nil
	}
	res.checked = true

	ws := newWorkingSet(b.accounts)
	ws.get(w.feePayer()).Lamports -= fee
	res.err = b.execute(w, ws, res)
	if res.err == nil {
		res.err = b.checkRent(w, ws, fee)
	}
	if !commit {
		res.accounts = ws.touched
		return res, nil
	}
	if res.err != nil {
		if !skipPreflight {
			return res, nil
		}
		ws = newWorkingSet(b.accounts)
		ws.get(w.feePayer()).Lamports -= fee
	}
	changes := ws.changes()
	rec := &statusRecord{
		Slot: b.chain.Slot, Err: errJSON(res.err), Fee: fee,
		BlockTime: b.now().Unix(), Tx: w.raw, Logs: res.logs,
		Seq: b.lastSeq + 1, Units: res.units,
		PreBalances: make([]uint64, len(w.keys)), PostBalances: make([]uint64, len(w.keys)),
	}
	for i, k := range w.keys {
		if a := b.accounts[k]; a != nil {
			rec.PreBalances[i] = a.Lamports
			rec.PostBalances[i] = a.Lamports
		}
		if a, changed := changes[k]; changed {
			rec.PostBalances[i] = 0
			if a != nil {
				rec.PostBalances[i] = a.Lamports
			}
		}
	}
	sig := res.sig
	if err := b.store.commit(changes, &sig, rec, w.keys, nil); err != nil {
		return nil, err
	}
	b.lastSeq = rec.Seq
	for k, a := range changes {
		if a == nil {
			delete(b.accounts, k)
		} else {
			b.accounts[k] = a
		}
	}
	b.statuses[sig] = rec
	res.landed = true
	b.events.accountsChanged(b.chain.Slot, changes)
	b.events.signatureLanded(sig, rec.Slot, rec.Err)
	return res, nil
}

// execute runs the instructions in order on ws; the first failing one
// fails the transaction.
func (b *bank) execute(w *wireTx, ws *workingSet, res *txResult) *txError {
	ixs := w.tx.Message.Instructions
	for _, ci := range ixs {
		p := w.keys[ci.ProgramIDIndex]
		a := ws.peek(p)
		if a == nil {
			return newTxError(txErrProgramAccountNotFound)
		}
		if !a.Executable {
			return newTxError(txErrInvalidProgramForExecution)
		}
	}
	now := b.now().Unix()
	for i, ci := range ixs {
		metas := make([]accountMeta, len(ci.Accounts))
		for j, idx := range ci.Accounts {
			metas[j] = accountMeta{key: w.keys[idx], signer: w.signer[idx], writable: w.writable[idx]}
		}
		ic := &invokeContext{
			bank: b, ws: ws, program: w.keys[ci.ProgramIDIndex], metas: metas, data: ci.Data,
			depth: 1, now: now, logs: &res.logs, units: &res.units,
		}
		if ierr := ic.run(); ierr != nil {
			return instructionFailed(i, ierr)
		}
	}
	return nil
}

// checkRent is the runtime's rule after a successful execution: no
// writable account may end rent-paying (holding lamports below its
// rent-exempt minimum) unless it already was, with the same data size and
// no more lamports. The fee payer's state before is after the fee.
func (b *bank) checkRent(w *wireTx, ws *workingSet, fee uint64) *txError {
	for i, k := range w.keys {
		if !w.writable[i] {
			continue
		}
		var preL, postL uint64
		var preN, postN int
		if a := b.accounts[k]; a != nil {
			preL, preN = a.Lamports, len(a.Data)
		}
		if k == w.feePayer() {
			preL -= fee
		}
		if a := ws.peek(k); a != nil {
			postL, postN = a.Lamports, len(a.Data)
		}
		if !rentTransitionAllowed(preL, preN, postL, postN) {
			return insufficientFundsForRent(i)
		}
	}
	return nil
}

// rentTransitionAllowed is Solana's RentState transition rule: an account
// may end empty or rent-exempt; it may end rent-paying only if it was
// rent-paying before with the same size and did not gain lamports.
func rentTransitionAllowed(preLamports uint64, preSize int, postLamports uint64, postSize int) bool {
	rentPaying := func(l uint64, n int) bool { return l > 0 && l < rentExemptMinimum(uint64(n)) }
	if !rentPaying(postLamports, postSize) {
		return true
	}
	return rentPaying(preLamports, preSize) && preSize == postSize && postLamports <= preLamports
}

// genesisAccounts writes accounts outside any transaction (first start,
// seeding stakes). Durable before visible.
func (b *bank) genesisAccounts(accts map[solana.PublicKey]*Account) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var chain *chainMeta
	if len(b.chain.Blockhashes) > 0 {
		c := b.chain
		chain = &c
	}
	if err := b.store.commit(accts, nil, nil, nil, chain); err != nil {
		return err
	}
	for k, a := range accts {
		if a == nil || a.Lamports == 0 {
			delete(b.accounts, k)
			continue
		}
		b.accounts[k] = a.clone()
	}
	b.events.accountsChanged(b.chain.Slot, accts)
	return nil
}

// --- faucet ----------------------------------------------------------------

// faucetLamports is the faucet's genesis balance (500 million SOL).
const faucetLamports = 500_000_000 * solana.LAMPORTS_PER_SOL

// airdrop lands a System transfer of lamports from the faucet to to, signed
// by the faucet, through the normal transaction path.
func (b *bank) airdrop(to solana.PublicKey, lamports uint64) (solana.Signature, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.airdropNonce++
	bh := b.chain.Blockhashes[len(b.chain.Blockhashes)-1].Hash
	tx, err := faucetTransfer(b.faucet, to, lamports, b.airdropNonce, bh)
	if err != nil {
		return solana.Signature{}, err
	}
	raw, err := tx.MarshalBinary()
	if err != nil {
		return solana.Signature{}, fmt.Errorf("encode airdrop: %w", err)
	}
	w, err := decodeTx(raw)
	if err != nil {
		return solana.Signature{}, fmt.Errorf("decode airdrop: %w", err)
	}
	res, err := b.processLocked(w, true, false, true)
	if err != nil {
		return solana.Signature{}, err
	}
	if res.err != nil {
		return solana.Signature{}, fmt.Errorf("airdrop: %w", res.err)
	}
	return res.sig, nil
}

// withLock runs f under the bank lock with the current slot and a status
// lookup, so that f is ordered against landing events.
func (b *bank) withLock(f func(slot uint64, status func(solana.Signature) *statusRecord)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b.chain.Slot, func(s solana.Signature) *statusRecord { return b.statuses[s] })
}
