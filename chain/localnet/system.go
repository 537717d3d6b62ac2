package localnet

import (
	"math/bits"

	"github.com/gagliardetto/solana-go"
	computebudget "github.com/gagliardetto/solana-go/programs/compute-budget"
	"github.com/gagliardetto/solana-go/programs/system"
)

// System program custom error codes (solana SystemError).
const (
	sysErrAccountAlreadyInUse        = 0
	sysErrResultWithNegativeLamports = 1
	sysErrInvalidAccountDataLength   = 3
)

// systemProgram implements Transfer, CreateAccount, Allocate and Assign of
// the System program with its checks; other System instructions answer
// InvalidInstructionData.
func systemProgram(ic *invokeContext) *instrError {
	*ic.units += unitsSystem
	inst, err := system.DecodeInstruction(nil, ic.data)
	if err != nil {
		return ixErr(ixErrInvalidInstructionData)
	}
	switch v := inst.Impl.(type) {
	case *system.Transfer:
		if v.Lamports == nil {
			return ixErr(ixErrInvalidInstructionData)
		}
		from, ierr := ic.meta(0)
		if ierr != nil {
			return ierr
		}
		to, ierr := ic.meta(1)
		if ierr != nil {
			return ierr
		}
		return systemTransfer(ic, from, to.key, *v.Lamports)
	case *system.CreateAccount:
		if v.Lamports == nil || v.Space == nil || v.Owner == nil {
			return ixErr(ixErrInvalidInstructionData)
		}
		from, ierr := ic.meta(0)
		if ierr != nil {
			return ierr
		}
		to, ierr := ic.meta(1)
		if ierr != nil {
			return ierr
		}
		if !to.signer {
			ic.log("Create Account: account %s must sign", to.key)
			return ixErr(ixErrMissingRequiredSignature)
		}
		if a := ic.account(to.key); a != nil && (a.Lamports > 0 || len(a.Data) > 0 || a.Owner != solana.SystemProgramID) {
			ic.log("Create Account: account Address { address: %s, base: None } already in use", to.key)
			return customErr(sysErrAccountAlreadyInUse)
		}
		if ierr := systemAllocate(ic, to, *v.Space); ierr != nil {
			return ierr
		}
		if ierr := ic.assign(to.key, *v.Owner); ierr != nil {
			return ierr
		}
		return systemTransfer(ic, from, to.key, *v.Lamports)
	case *system.Allocate:
		if v.Space == nil {
			return ixErr(ixErrInvalidInstructionData)
		}
		acc, ierr := signerMeta(ic, 0)
		if ierr != nil {
			return ierr
		}
		return systemAllocate(ic, acc, *v.Space)
	case *system.Assign:
		if v.Owner == nil {
			return ixErr(ixErrInvalidInstructionData)
		}
		acc, ierr := signerMeta(ic, 0)
		if ierr != nil {
			return ierr
		}
		return ic.assign(acc.key, *v.Owner)
	default:
		ic.log("system instruction %s is not supported by the localnet", system.InstructionIDToName(inst.TypeID.Uint32()))
		return ixErr(ixErrInvalidInstructionData)
	}
}

func systemTransfer(ic *invokeContext, from accountMeta, to solana.PublicKey, lamports uint64) *instrError {
	if !from.signer {
		ic.log("Transfer: `from` account %s must sign", from.key)
		return ixErr(ixErrMissingRequiredSignature)
	}
	a := ic.account(from.key)
	if a != nil && len(a.Data) > 0 {
		ic.log("Transfer: `from` must not carry data")
		return ixErr(ixErrInvalidArgument)
	}
	if a == nil || a.Lamports < lamports {
		have := uint64(0)
		if a != nil {
			have = a.Lamports
		}
		ic.log("Transfer: insufficient lamports %d, need %d", have, lamports)
		return customErr(sysErrResultWithNegativeLamports)
	}
	if ierr := ic.debit(from.key, lamports); ierr != nil {
		return ierr
	}
	return ic.credit(to, lamports)
}

func systemAllocate(ic *invokeContext, acc accountMeta, space uint64) *instrError {
	a := ic.account(acc.key)
	if a != nil && (len(a.Data) > 0 || a.Owner != solana.SystemProgramID) {
		ic.log("Allocate: account Address { address: %s, base: None } already in use", acc.key)
		return customErr(sysErrAccountAlreadyInUse)
	}
	if space > maxAccountData {
		ic.log("Allocate: requested %d, max allowed %d", space, maxAccountData)
		return customErr(sysErrInvalidAccountDataLength)
	}
	return ic.setData(acc.key, make([]byte, space))
}

// Compute-unit limits of Solana's fee rules.
const (
	defaultInstructionUnits = 200_000
	maxTransactionUnits     = 1_400_000
)

// prioritizationFee is the priority fee Solana charges a transaction,
// lamports: ceil(limit · price / 1e6), where price is its
// SetComputeUnitPrice (micro-lamports per unit, 0 without one) and limit
// its SetComputeUnitLimit, or 200 000 per instruction other than Compute
// Budget ones (at most 1 400 000). Instructions that do not decode are
// left to fail when they execute.
func prioritizationFee(ixs []solana.CompiledInstruction, keys []solana.PublicKey) uint64 {
	var price uint64
	var limit uint64
	limitSet := false
	others := uint64(0)
	for _, ci := range ixs {
		if int(ci.ProgramIDIndex) >= len(keys) || keys[ci.ProgramIDIndex] != solana.ComputeBudget {
			others++
			continue
		}
		inst, err := computebudget.DecodeInstruction(nil, ci.Data)
		if err != nil {
			continue
		}
		switch v := inst.Impl.(type) {
		case *computebudget.SetComputeUnitPrice:
			price = v.MicroLamports
		case *computebudget.SetComputeUnitLimit:
			limit, limitSet = uint64(v.Units), true
		}
	}
	if price == 0 {
		return 0
	}
	if !limitSet {
		limit = others * defaultInstructionUnits
	}
	limit = min(limit, maxTransactionUnits)
	hi, lo := bits.Mul64(limit, price)
	if hi != 0 {
		return ^uint64(0)
	}
	return lo/1_000_000 + min(lo%1_000_000, 1)
}

// computeBudgetProgram accepts well-formed Compute Budget instructions; the
// price and limit they set only decide the prioritization fee (charged with
// the base fee, see prioritizationFee): the localnet does not meter units.
func computeBudgetProgram(ic *invokeContext) *instrError {
	*ic.units += unitsComputeBudget
	if _, err := computebudget.DecodeInstruction(nil, ic.data); err != nil {
		return ixErr(ixErrInvalidInstructionData)
	}
	return nil
}

// signerMeta is account i of the instruction, which must have signed
// (MissingRequiredSignature otherwise).
func signerMeta(ic *invokeContext, i int) (accountMeta, *instrError) {
	acc, ierr := ic.meta(i)
	if ierr != nil {
		return acc, ierr
	}
	if !acc.signer {
		return acc, ixErr(ixErrMissingRequiredSignature)
	}
	return acc, nil
}
