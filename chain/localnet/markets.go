package localnet

import (
	"bytes"
	"strings"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"

	"github.com/hypernode-sol/worker/chain"
)

// Anchor framework error codes the Markets program answers when an
// instruction's accounts or data do not validate.
const (
	anchorInstructionMissing           = 100
	anchorInstructionFallbackNotFound  = 101
	anchorInstructionDidNotDeserialize = 102
	anchorConstraintMut                = 2000
	anchorConstraintSeeds              = 2006
	anchorConstraintAddress            = 2012
	anchorAccountDiscriminatorMismatch = 3002
	anchorAccountDidNotDeserialize     = 3003
	anchorAccountNotEnoughKeys         = 3005
	anchorAccountOwnedByWrongProgram   = 3007
	anchorInvalidProgramID             = 3008
	anchorAccountNotSigner             = 3010
	anchorAccountNotInitialized        = 3012
)

var anchorErrors = map[uint32][2]string{
	anchorInstructionMissing:           {"InstructionMissing", "8 byte instruction identifier not provided"},
	anchorInstructionFallbackNotFound:  {"InstructionFallbackNotFound", "Fallback functions are not supported"},
	anchorInstructionDidNotDeserialize: {"InstructionDidNotDeserialize", "The program could not deserialize the given instruction"},
	anchorConstraintMut:                {"ConstraintMut", "A mut constraint was violated"},
	anchorConstraintSeeds:              {"ConstraintSeeds", "A seeds constraint was violated"},
	anchorConstraintAddress:            {"ConstraintAddress", "An address constraint was violated"},
	anchorAccountDiscriminatorMismatch: {"AccountDiscriminatorMismatch", "8 byte discriminator did not match what was expected"},
	anchorAccountDidNotDeserialize:     {"AccountDidNotDeserialize", "Failed to deserialize the account"},
	anchorAccountNotEnoughKeys:         {"AccountNotEnoughKeys", "Not enough account keys given to the instruction"},
	anchorAccountOwnedByWrongProgram:   {"AccountOwnedByWrongProgram", "The given account is owned by a different program than expected"},
	anchorInvalidProgramID:             {"InvalidProgramId", "Program ID was not as expected"},
	anchorAccountNotSigner:             {"AccountNotSigner", "The given account did not sign"},
	anchorAccountNotInitialized:        {"AccountNotInitialized", "The program expected this account to be already initialized"},
}

var programErrorMessages = map[chain.ProgramError]string{
	chain.ErrQueueFull:         "The market queue is full",
	chain.ErrJobNotInQueue:     "The job is not in the market's queue",
	chain.ErrJobNotQueued:      "The job is not queued",
	chain.ErrJobNotRunning:     "The job is not running",
	chain.ErrNotAssignedNode:   "The node is not assigned to this job",
	chain.ErrInsufficientStake: "The node's stake is inactive or below the market minimum",
	chain.ErrNodeAlreadyQueued: "The node is already queued",
	chain.ErrQueueHasJobs:      "Jobs are waiting in the market: claim one with work_job",
	chain.ErrEmptyResult:       "The result digest is empty",
	chain.ErrTimeoutNotReached: "The job has not timed out yet",
	chain.ErrWrongMarket:       "The job belongs to another market",
	chain.ErrUnauthorized:      "The signer is not allowed to do this",
	chain.ErrNodeNotQueued:     "The node is not in the market's node queue",
}

// markets executes one Markets program instruction (spec
// "Instructions") inside ic.
type markets struct {
	ic      *invokeContext
	program solana.PublicKey
	staking solana.PublicKey
}

// marketsProgram is the Markets program's entrypoint.
func (b *bank) marketsProgram(ic *invokeContext) *instrError {
	*ic.units += unitsMarketsBase
	x := &markets{ic: ic, program: b.marketsID, staking: b.stakingID}
	if len(ic.data) < 8 {
		return x.anchorFail("", anchorInstructionMissing)
	}
	var d [8]byte
	copy(d[:], ic.data[:8])
	name, ok := chain.InstructionName(d)
	if !ok {
		return x.anchorFail("", anchorInstructionFallbackNotFound)
	}
	ix, err := chain.DecodeInstruction(ic.data)
	if err != nil {
		return x.anchorFail("", anchorInstructionDidNotDeserialize)
	}
	ic.log("Instruction: %s", pascal(name))
	switch name {
	case chain.IxCreateMarket:
		return x.createMarket(ix)
	case chain.IxCreateJob:
		return x.createJob(ix)
	case chain.IxListNode:
		return x.listNode()
	case chain.IxWorkJob:
		return x.workJob()
	case chain.IxFinishJob:
		return x.finishJob(ix)
	case chain.IxTimeoutJob:
		return x.timeoutJob()
	case chain.IxCancelJob:
		return x.cancelJob()
	case chain.IxQuitJob:
		return x.quitJob()
	case chain.IxUnlistNode:
		return x.unlistNode()
	}
	return x.anchorFail("", anchorInstructionFallbackNotFound)
}

func pascal(snake string) string {
	parts := strings.Split(snake, "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "")
}

func (x *markets) anchorFail(account string, code uint32) *instrError {
	e := anchorErrors[code]
	if account != "" {
		x.ic.log("AnchorError caused by account: %s. Error Code: %s. Error Number: %d. Error Message: %s.", account, e[0], code, e[1])
	} else {
		x.ic.log("AnchorError occurred. Error Code: %s. Error Number: %d. Error Message: %s.", e[0], code, e[1])
	}
	return customErr(code)
}

func (x *markets) fail(code chain.ProgramError) *instrError {
	x.ic.log("AnchorError occurred. Error Code: %s. Error Number: %d. Error Message: %s.", code.Name(), uint32(code), programErrorMessages[code])
	return customErr(uint32(code))
}

// acct is the i-th account with Anchor's mut and signer constraints.
func (x *markets) acct(i int, name string, mut, signer bool) (accountMeta, *instrError) {
	if i >= len(x.ic.metas) {
		return accountMeta{}, x.anchorFail("", anchorAccountNotEnoughKeys)
	}
	m := x.ic.metas[i]
	if mut && !m.writable {
		return m, x.anchorFail(name, anchorConstraintMut)
	}
	if signer && !m.signer {
		return m, x.anchorFail(name, anchorAccountNotSigner)
	}
	return m, nil
}

// acctSpec is an account an instruction expects: its name (for Anchor's
// error) and whether it must be writable and a signer.
type acctSpec struct {
	name        string
	mut, signer bool
}

// accts checks the accounts from position first on against specs, in
// order, as acct does one by one.
func (x *markets) accts(first int, specs ...acctSpec) ([]accountMeta, *instrError) {
	out := make([]accountMeta, len(specs))
	for i, sp := range specs {
		m, ierr := x.acct(first+i, sp.name, sp.mut, sp.signer)
		if ierr != nil {
			return nil, ierr
		}
		out[i] = m
	}
	return out, nil
}

func (x *markets) systemProgramAcct(i int) *instrError {
	m, ierr := x.acct(i, "system_program", false, false)
	if ierr != nil {
		return ierr
	}
	if m.key != solana.SystemProgramID {
		return x.anchorFail("system_program", anchorInvalidProgramID)
	}
	return nil
}

// owned returns the data of an initialized account of owner whose
// discriminator is disc.
func (x *markets) owned(m accountMeta, name string, owner solana.PublicKey, disc [8]byte) ([]byte, *instrError) {
	a := x.ic.account(m.key)
	if a == nil || (a.Owner == solana.SystemProgramID && len(a.Data) == 0) {
		return nil, x.anchorFail(name, anchorAccountNotInitialized)
	}
	if a.Owner != owner {
		return nil, x.anchorFail(name, anchorAccountOwnedByWrongProgram)
	}
	if len(a.Data) < 8 || !bytes.Equal(a.Data[:8], disc[:]) {
		return nil, x.anchorFail(name, anchorAccountDiscriminatorMismatch)
	}
	return a.Data, nil
}

func (x *markets) loadMarket(m accountMeta) (*chain.Market, *instrError) {
	data, ierr := x.owned(m, "market", x.program, chain.MarketDiscriminator)
	if ierr != nil {
		return nil, ierr
	}
	mk, err := chain.DecodeMarket(data)
	if err != nil {
		return nil, x.anchorFail("market", anchorAccountDidNotDeserialize)
	}
	return mk, nil
}

func (x *markets) loadJob(m accountMeta) (*chain.Job, *instrError) {
	data, ierr := x.owned(m, "job", x.program, chain.JobDiscriminator)
	if ierr != nil {
		return nil, ierr
	}
	j, err := chain.DecodeJob(data)
	if err != nil {
		return nil, x.anchorFail("job", anchorAccountDidNotDeserialize)
	}
	return j, nil
}

// checkStake validates the node's stake PDA: an active stake whose xhyper
// reaches the market minimum, else InsufficientStake.
func (x *markets) checkStake(m accountMeta, node solana.PublicKey, mk *chain.Market) *instrError {
	want, _, err := chain.StakePDA(x.staking, node)
	if err != nil || m.key != want {
		return x.anchorFail("stake", anchorConstraintSeeds)
	}
	data, ierr := x.owned(m, "stake", x.staking, chain.StakeDiscriminator)
	if ierr != nil {
		return ierr
	}
	st, err := chain.DecodeStake(data)
	if err != nil {
		return x.anchorFail("stake", anchorAccountDidNotDeserialize)
	}
	if !st.Active() || lessU128(st.Xhyper, mk.NodeXhyperMinimum) {
		return x.fail(chain.ErrInsufficientStake)
	}
	return nil
}

func lessU128(a, b bin.Uint128) bool {
	if a.Hi != b.Hi {
		return a.Hi < b.Hi
	}
	return a.Lo < b.Lo
}

func (x *markets) saveMarket(k solana.PublicKey, mk *chain.Market) *instrError {
	data, err := mk.Encode()
	if err != nil {
		return x.fail(chain.ErrQueueFull)
	}
	return x.ic.setData(k, data)
}

func (x *markets) saveJob(k solana.PublicKey, j *chain.Job) *instrError {
	data, err := j.Encode()
	if err != nil {
		return ixErr(ixErrInvalidAccountData)
	}
	return x.ic.setData(k, data)
}

// initAccount is Anchor's `init`: payer funds a rent-exempt account of
// space bytes owned by the Markets program (System program CPIs, signed for
// the PDA when pda is true).
func (x *markets) initAccount(payer, target accountMeta, space uint64, pda bool) *instrError {
	var signers []solana.PublicKey
	if pda {
		signers = append(signers, target.key)
	}
	need := rentExemptMinimum(space)
	a := x.ic.account(target.key)
	if a == nil || a.Lamports == 0 {
		return x.ic.invoke(system.NewCreateAccountInstruction(need, space, x.program, payer.key, target.key).Build(), signers...)
	}
	if a.Lamports < need {
		if ierr := x.ic.invoke(system.NewTransferInstruction(need-a.Lamports, payer.key, target.key).Build()); ierr != nil {
			return ierr
		}
	}
	if ierr := x.ic.invoke(system.NewAllocateInstruction(space, target.key).Build(), signers...); ierr != nil {
		return ierr
	}
	return x.ic.invoke(system.NewAssignInstruction(x.program, target.key).Build(), signers...)
}

func (x *markets) transfer(from, to solana.PublicKey, lamports uint64) *instrError {
	return x.ic.invoke(system.NewTransferInstruction(lamports, from, to).Build())
}

// pay moves lamports out of the program-owned vault.
func (x *markets) pay(vault, to solana.PublicKey, lamports uint64) *instrError {
	if ierr := x.ic.debit(vault, lamports); ierr != nil {
		return ierr
	}
	return x.ic.credit(to, lamports)
}

func indexOf(q []solana.PublicKey, k solana.PublicKey) int {
	for i, e := range q {
		if e == k {
			return i
		}
	}
	return -1
}

func removeAt(q []solana.PublicKey, i int) []solana.PublicKey {
	return append(q[:i:i], q[i+1:]...)
}

// dequeue removes entry i and marks an emptied queue Empty.
func dequeue(mk *chain.Market, i int) {
	mk.Queue = removeAt(mk.Queue, i)
	if len(mk.Queue) == 0 {
		mk.QueueType = chain.QueueEmpty
	}
}
