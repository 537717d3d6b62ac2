package localnet

import (
	"encoding/json"
	"fmt"
)

// Transaction-level error kinds (Solana's TransactionError variants, as the
// JSON-RPC spells them).
const (
	txErrBlockhashNotFound          = "BlockhashNotFound"
	txErrAlreadyProcessed           = "AlreadyProcessed"
	txErrAccountNotFound            = "AccountNotFound"
	txErrInsufficientFundsForFee    = "InsufficientFundsForFee"
	txErrInvalidAccountForFee       = "InvalidAccountForFee"
	txErrProgramAccountNotFound     = "ProgramAccountNotFound"
	txErrInvalidProgramForExecution = "InvalidProgramForExecution"
	txErrInstructionError           = "InstructionError"
	txErrInsufficientFundsForRent   = "InsufficientFundsForRent"
)

var txErrMessages = map[string]string{
	txErrBlockhashNotFound:          "Blockhash not found",
	txErrAlreadyProcessed:           "This transaction has already been processed",
	txErrAccountNotFound:            "Attempt to debit an account but found no record of a prior credit.",
	txErrInsufficientFundsForFee:    "Insufficient funds for fee",
	txErrInvalidAccountForFee:       "This account may not be used to pay transaction fees",
	txErrProgramAccountNotFound:     "Attempt to load a program that does not exist",
	txErrInvalidProgramForExecution: "Attempt to load a program that is not executable",
}

// Instruction error kinds (Solana's InstructionError variants).
const (
	ixErrCustom                      = "Custom"
	ixErrInvalidArgument             = "InvalidArgument"
	ixErrInvalidInstructionData      = "InvalidInstructionData"
	ixErrInvalidAccountData          = "InvalidAccountData"
	ixErrInsufficientFunds           = "InsufficientFunds"
	ixErrMissingRequiredSignature    = "MissingRequiredSignature"
	ixErrNotEnoughAccountKeys        = "NotEnoughAccountKeys"
	ixErrExternalAccountLamportSpend = "ExternalAccountLamportSpend"
	ixErrExternalAccountDataModified = "ExternalAccountDataModified"
	ixErrReadonlyLamportChange       = "ReadonlyLamportChange"
	ixErrReadonlyDataModified        = "ReadonlyDataModified"
	ixErrModifiedProgramID           = "ModifiedProgramId"
	ixErrUnsupportedProgramID        = "UnsupportedProgramId"
	ixErrProgramFailedToComplete     = "ProgramFailedToComplete"
	ixErrArithmeticOverflow          = "ArithmeticOverflow"
	ixErrPrivilegeEscalation         = "PrivilegeEscalation"
	ixErrMissingAccount              = "MissingAccount"
)

var ixErrMessages = map[string]string{
	ixErrInvalidArgument:             "invalid program argument",
	ixErrInvalidInstructionData:      "invalid instruction data",
	ixErrInvalidAccountData:          "invalid account data for instruction",
	ixErrInsufficientFunds:           "insufficient funds for instruction",
	ixErrMissingRequiredSignature:    "missing required signature for instruction",
	ixErrNotEnoughAccountKeys:        "insufficient account keys for instruction",
	ixErrExternalAccountLamportSpend: "instruction spent from the balance of an account it does not own",
	ixErrExternalAccountDataModified: "instruction modified data of an account it does not own",
	ixErrReadonlyLamportChange:       "instruction changed the balance of a read-only account",
	ixErrReadonlyDataModified:        "instruction modified data of a read-only account",
	ixErrModifiedProgramID:           "instruction illegally modified the program id of an account",
	ixErrUnsupportedProgramID:        "Unsupported program id",
	ixErrProgramFailedToComplete:     "Program failed to complete",
	ixErrArithmeticOverflow:          "Arithmetic overflowed",
	ixErrPrivilegeEscalation:         "Cross-program invocation with unauthorized signer or writable account",
	ixErrMissingAccount:              "An account required by the instruction is missing",
}

// instrError is a Solana InstructionError: a named variant, or Custom(code)
// for program-defined errors (Markets codes 6000+, Anchor framework codes,
// System program codes).
type instrError struct {
	Kind string
	Code uint32 // Kind == ixErrCustom
}

func customErr(code uint32) *instrError { return &instrError{Kind: ixErrCustom, Code: code} }
func ixErr(kind string) *instrError     { return &instrError{Kind: kind} }

func (e *instrError) Error() string {
	if e.Kind == ixErrCustom {
		return fmt.Sprintf("custom program error: 0x%x", e.Code)
	}
	if m, ok := ixErrMessages[e.Kind]; ok {
		return m
	}
	return e.Kind
}

// MarshalJSON gives {"Custom":N} or "Kind".
func (e *instrError) MarshalJSON() ([]byte, error) {
	if e.Kind == ixErrCustom {
		return json.Marshal(map[string]uint32{ixErrCustom: e.Code})
	}
	return json.Marshal(e.Kind)
}

// txError is a Solana TransactionError: a named variant,
// InstructionError(index, instrError) or InsufficientFundsForRent{account_index}.
type txError struct {
	Kind  string
	Index int         // instruction (InstructionError) or account (InsufficientFundsForRent) index
	Instr *instrError // Kind == txErrInstructionError
}

// insufficientFundsForRent: the transaction would leave account index
// (in the message's keys) rent-paying.
func insufficientFundsForRent(index int) *txError {
	return &txError{Kind: txErrInsufficientFundsForRent, Index: index}
}

func newTxError(kind string) *txError { return &txError{Kind: kind} }

func instructionFailed(index int, e *instrError) *txError {
	return &txError{Kind: txErrInstructionError, Index: index, Instr: e}
}

// Error is the text Solana puts after "Transaction simulation failed: ".
func (e *txError) Error() string {
	if e.Kind == txErrInstructionError && e.Instr != nil {
		return fmt.Sprintf("Error processing Instruction %d: %s", e.Index, e.Instr.Error())
	}
	if e.Kind == txErrInsufficientFundsForRent {
		return fmt.Sprintf("Transaction results in an account (%d) with insufficient funds for rent", e.Index)
	}
	if m, ok := txErrMessages[e.Kind]; ok {
		return m
	}
	return e.Kind
}

// MarshalJSON gives {"InstructionError":[i,…]},
// {"InsufficientFundsForRent":{"account_index":i}} or "Kind".
func (e *txError) MarshalJSON() ([]byte, error) {
	if e.Kind == txErrInstructionError && e.Instr != nil {
		return json.Marshal(map[string][]any{txErrInstructionError: {e.Index, e.Instr}})
	}
	if e.Kind == txErrInsufficientFundsForRent {
		return json.Marshal(map[string]map[string]int{txErrInsufficientFundsForRent: {"account_index": e.Index}})
	}
	return json.Marshal(e.Kind)
}

// errJSON is the status "err" field: null for success.
func errJSON(e *txError) json.RawMessage {
	if e == nil {
		return json.RawMessage("null")
	}
	b, err := json.Marshal(e)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}
