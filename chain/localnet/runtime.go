package localnet

import (
	"bytes"
	"fmt"
	"math"

	"github.com/gagliardetto/solana-go"
)

// programHandler executes one instruction of a native (Go) program.
type programHandler func(ic *invokeContext) *instrError

// Compute units reported per instruction (a fixed cost model; the localnet
// does not meter).
const (
	computeUnitLimit     = 200_000
	unitsSystem          = 150
	unitsComputeBudget   = 150
	unitsMarketsBase     = 6_000
	maxInvokeDepth       = 4
	lamportsPerSignature = 5_000
)

// workingSet is a transaction's private copy of the accounts it touches;
// the bank commits it only if the transaction lands.
type workingSet struct {
	base    map[solana.PublicKey]*Account
	touched map[solana.PublicKey]*Account
}

func newWorkingSet(base map[solana.PublicKey]*Account) *workingSet {
	return &workingSet{base: base, touched: map[solana.PublicKey]*Account{}}
}

// get returns the writable working copy of k (an empty system account when
// k does not exist).
func (w *workingSet) get(k solana.PublicKey) *Account {
	if a, ok := w.touched[k]; ok {
		return a
	}
	var c *Account
	if a := w.base[k]; a != nil {
		c = a.clone()
	} else {
		c = &Account{Owner: solana.SystemProgramID}
	}
	w.touched[k] = c
	return c
}

// peek returns the current state of k without copying, nil when absent.
func (w *workingSet) peek(k solana.PublicKey) *Account {
	if a, ok := w.touched[k]; ok {
		if a.Lamports == 0 && len(a.Data) == 0 && !a.Executable {
			return nil
		}
		return a
	}
	return w.base[k]
}

// changes lists the accounts whose state differs from the base; nil values
// are accounts that no longer exist (zero lamports).
func (w *workingSet) changes() map[solana.PublicKey]*Account {
	out := map[solana.PublicKey]*Account{}
	for k, a := range w.touched {
		b := w.base[k]
		if a.Lamports == 0 {
			if b != nil {
				out[k] = nil
			}
			continue
		}
		if b == nil || !a.equal(b) {
			out[k] = a
		}
	}
	return out
}

// accountMeta is one account of an instruction as the runtime sees it.
type accountMeta struct {
	key      solana.PublicKey
	signer   bool
	writable bool
}

// invokeContext is the runtime around one executing instruction: its
// accounts and data, the transaction's working set, and the rules every
// Solana program is held to (only the owner debits or writes data, only
// writable accounts change, signers are real).
type invokeContext struct {
	bank    *bank
	ws      *workingSet
	program solana.PublicKey
	metas   []accountMeta
	data    []byte
	depth   int
	now     int64 // unix seconds (Clock sysvar)
	logs    *[]string
	units   *uint64
}

func (ic *invokeContext) log(format string, args ...any) {
	*ic.logs = append(*ic.logs, "Program log: "+fmt.Sprintf(format, args...))
}

// meta returns the i-th instruction account.
func (ic *invokeContext) meta(i int) (accountMeta, *instrError) {
	if i >= len(ic.metas) {
		return accountMeta{}, ixErr(ixErrNotEnoughAccountKeys)
	}
	return ic.metas[i], nil
}

func (ic *invokeContext) isSigner(k solana.PublicKey) bool {
	for _, m := range ic.metas {
		if m.key == k && m.signer {
			return true
		}
	}
	return false
}

func (ic *invokeContext) hasAccount(k solana.PublicKey) bool {
	for _, m := range ic.metas {
		if m.key == k {
			return true
		}
	}
	return false
}

func (ic *invokeContext) isWritable(k solana.PublicKey) bool {
	for _, m := range ic.metas {
		if m.key == k && m.writable {
			return true
		}
	}
	return false
}

// account returns the current state of k, nil when it does not exist.
func (ic *invokeContext) account(k solana.PublicKey) *Account { return ic.ws.peek(k) }

func (ic *invokeContext) debit(k solana.PublicKey, n uint64) *instrError {
	if n == 0 {
		return nil
	}
	if !ic.isWritable(k) {
		return ixErr(ixErrReadonlyLamportChange)
	}
	a := ic.ws.get(k)
	if a.Owner != ic.program {
		return ixErr(ixErrExternalAccountLamportSpend)
	}
	if a.Lamports < n {
		return ixErr(ixErrInsufficientFunds)
	}
	a.Lamports -= n
	return nil
}

func (ic *invokeContext) credit(k solana.PublicKey, n uint64) *instrError {
	if n == 0 {
		return nil
	}
	if !ic.isWritable(k) {
		return ixErr(ixErrReadonlyLamportChange)
	}
	a := ic.ws.get(k)
	if a.Lamports > math.MaxUint64-n {
		return ixErr(ixErrArithmeticOverflow)
	}
	a.Lamports += n
	return nil
}

// setData replaces k's data; only the owner may, and only the System
// program may change its length (allocate).
func (ic *invokeContext) setData(k solana.PublicKey, data []byte) *instrError {
	if !ic.isWritable(k) {
		return ixErr(ixErrReadonlyDataModified)
	}
	a := ic.ws.get(k)
	if a.Owner != ic.program || a.Executable {
		return ixErr(ixErrExternalAccountDataModified)
	}
	if len(data) != len(a.Data) && ic.program != solana.SystemProgramID {
		return ixErr(ixErrInvalidAccountData)
	}
	a.Data = bytes.Clone(data)
	return nil
}

// assign moves k to a new owner; only its current owner may, while its data
// is zeroed.
func (ic *invokeContext) assign(k solana.PublicKey, owner solana.PublicKey) *instrError {
	if !ic.isWritable(k) {
		return ixErr(ixErrModifiedProgramID)
	}
	a := ic.ws.get(k)
	if a.Owner == owner {
		return nil
	}
	if a.Owner != ic.program || a.Executable || !isZero(a.Data) {
		return ixErr(ixErrModifiedProgramID)
	}
	a.Owner = owner
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// invoke is a cross-program invocation: the callee gets the listed
// accounts; signer and writable privileges must already be held by the
// caller, except signatures of the caller's PDAs listed in pdaSigners.
func (ic *invokeContext) invoke(ix solana.Instruction, pdaSigners ...solana.PublicKey) *instrError {
	if ic.depth+1 > maxInvokeDepth {
		return ixErr(ixErrProgramFailedToComplete)
	}
	data, err := ix.Data()
	if err != nil {
		return ixErr(ixErrInvalidInstructionData)
	}
	if !ic.hasAccount(ix.ProgramID()) {
		ic.log("Unknown program %s", ix.ProgramID())
		return ixErr(ixErrMissingAccount)
	}
	var metas []accountMeta
	for _, m := range ix.Accounts() {
		if m.IsWritable && !ic.isWritable(m.PublicKey) {
			ic.log("%s's writable privilege escalated", m.PublicKey)
			return ixErr(ixErrPrivilegeEscalation)
		}
		if m.IsSigner && !ic.isSigner(m.PublicKey) && !contains(pdaSigners, m.PublicKey) {
			ic.log("%s's signer privilege escalated", m.PublicKey)
			return ixErr(ixErrPrivilegeEscalation)
		}
		metas = append(metas, accountMeta{key: m.PublicKey, signer: m.IsSigner, writable: m.IsWritable})
	}
	callee := &invokeContext{
		bank: ic.bank, ws: ic.ws, program: ix.ProgramID(), metas: metas, data: data,
		depth: ic.depth + 1, now: ic.now, logs: ic.logs, units: ic.units,
	}
	return callee.run()
}

func contains(ks []solana.PublicKey, k solana.PublicKey) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// run dispatches to the program's handler and writes Solana's invoke /
// consumed / success / failed log lines. A handler panic becomes
// ProgramFailedToComplete.
func (ic *invokeContext) run() (ierr *instrError) {
	handler := ic.bank.programs[ic.program]
	*ic.logs = append(*ic.logs, fmt.Sprintf("Program %s invoke [%d]", ic.program, ic.depth))
	before := *ic.units
	defer func() {
		if r := recover(); r != nil {
			ic.log("panicked: %v", r)
			ierr = ixErr(ixErrProgramFailedToComplete)
		}
		if ic.program != solana.SystemProgramID && ic.program != solana.ComputeBudget {
			*ic.logs = append(*ic.logs, fmt.Sprintf("Program %s consumed %d of %d compute units",
				ic.program, *ic.units-before, computeUnitLimit-before))
		}
		if ierr != nil {
			*ic.logs = append(*ic.logs, fmt.Sprintf("Program %s failed: %s", ic.program, ierr.Error()))
			return
		}
		*ic.logs = append(*ic.logs, fmt.Sprintf("Program %s success", ic.program))
	}()
	if handler == nil {
		return ixErr(ixErrUnsupportedProgramID)
	}
	return handler(ic)
}
