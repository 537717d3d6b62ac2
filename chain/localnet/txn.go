package localnet

import (
	"errors"
	"fmt"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
)

// packetDataSize is the largest wire transaction Solana accepts (bytes).
const packetDataSize = 1232

// Errors of decodeTx; the RPC answers them with -32602 "invalid transaction".
var (
	errTxDecode   = errors.New("malformed transaction bytes")
	errTxSanitize = errors.New("invalid transaction")
)

// wireTx is a decoded, sanitized transaction with its message bytes (what the
// signatures sign) and the signer/writable flags of each account key.
type wireTx struct {
	raw      []byte
	tx       *solana.Transaction
	msgBytes []byte
	keys     []solana.PublicKey
	signer   []bool
	writable []bool
}

func (w *wireTx) signature() solana.Signature { return w.tx.Signatures[0] }
func (w *wireTx) feePayer() solana.PublicKey  { return w.keys[0] }
func (w *wireTx) blockhash() solana.Hash      { return w.tx.Message.RecentBlockhash }
func (w *wireTx) fee() uint64 {
	return lamportsPerSignature*uint64(len(w.tx.Signatures)) + prioritizationFee(w.tx.Message.Instructions, w.keys)
}

// decodeTx decodes wire bytes (legacy, or v0 without address table lookups)
// and applies Solana's sanitize rules. Errors wrap errTxDecode or
// errTxSanitize; it never panics on arbitrary bytes.
func decodeTx(raw []byte) (w *wireTx, err error) {
	defer func() {
		if r := recover(); r != nil {
			w, err = nil, fmt.Errorf("%w: decoder panic: %v", errTxDecode, r)
		}
	}()
	if len(raw) > packetDataSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errTxDecode, len(raw), packetDataSize)
	}
	dec := bin.NewBinDecoder(raw)
	n, err := dec.ReadCompactU16()
	if err != nil {
		return nil, fmt.Errorf("%w: signature count: %v", errTxDecode, err)
	}
	msgStart := int(dec.Position()) + n*solana.SignatureLength
	dec = bin.NewBinDecoder(raw)
	tx, err := solana.TransactionFromDecoder(dec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errTxDecode, err)
	}
	msgEnd := int(dec.Position())
	if msgStart > msgEnd || msgEnd > len(raw) {
		return nil, fmt.Errorf("%w: message bounds %d..%d of %d bytes", errTxDecode, msgStart, msgEnd, len(raw))
	}
	w = &wireTx{raw: raw, tx: tx, msgBytes: raw[msgStart:msgEnd]}
	if err := w.sanitize(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *wireTx) sanitize() error {
	m := &w.tx.Message
	if m.IsVersioned() {
		if m.GetVersion() != solana.MessageVersionV0 {
			return fmt.Errorf("%w: unsupported message version", errTxSanitize)
		}
		if len(m.AddressTableLookups) > 0 {
			return fmt.Errorf("%w: address table lookups are not supported by the localnet", errTxSanitize)
		}
	}
	h := m.Header
	nkeys := len(m.AccountKeys)
	nsig := int(h.NumRequiredSignatures)
	switch {
	case nsig == 0:
		return fmt.Errorf("%w: no required signature (fee payer)", errTxSanitize)
	case int(h.NumReadonlySignedAccounts) >= nsig:
		return fmt.Errorf("%w: fee payer must be writable", errTxSanitize)
	case nsig+int(h.NumReadonlyUnsignedAccounts) > nkeys:
		return fmt.Errorf("%w: header counts exceed %d account keys", errTxSanitize, nkeys)
	case len(w.tx.Signatures) != nsig:
		return fmt.Errorf("%w: %d signatures for %d required", errTxSanitize, len(w.tx.Signatures), nsig)
	case nkeys > 256:
		return fmt.Errorf("%w: %d account keys", errTxSanitize, nkeys)
	}
	seen := make(map[solana.PublicKey]bool, nkeys)
	for _, k := range m.AccountKeys {
		if seen[k] {
			return fmt.Errorf("%w: Account loaded twice", errTxSanitize)
		}
		seen[k] = true
	}
	programs := map[int]bool{}
	for i, ci := range m.Instructions {
		p := int(ci.ProgramIDIndex)
		if p == 0 || p >= nkeys {
			return fmt.Errorf("%w: instruction %d: program id index %d", errTxSanitize, i, p)
		}
		programs[p] = true
		for _, a := range ci.Accounts {
			if int(a) >= nkeys {
				return fmt.Errorf("%w: instruction %d: account index %d of %d keys", errTxSanitize, i, a, nkeys)
			}
		}
	}
	w.keys = m.AccountKeys
	w.signer = make([]bool, nkeys)
	w.writable = make([]bool, nkeys)
	for i := range nkeys {
		w.signer[i] = i < nsig
		if i < nsig {
			w.writable[i] = i < nsig-int(h.NumReadonlySignedAccounts)
		} else {
			w.writable[i] = i < nkeys-int(h.NumReadonlyUnsignedAccounts)
		}
		// Solana demotes invoked programs and reserved keys to read-only.
		if programs[i] || reservedKeys[w.keys[i]] {
			w.writable[i] = false
		}
	}
	if !w.writable[0] {
		return fmt.Errorf("%w: fee payer must be writable", errTxSanitize)
	}
	return nil
}

// verifySignatures checks every ed25519 signature against the exact message
// bytes.
func (w *wireTx) verifySignatures() bool {
	for i, sig := range w.tx.Signatures {
		if !sig.Verify(w.keys[i], w.msgBytes) {
			return false
		}
	}
	return true
}

// reservedKeys are builtin program and sysvar ids: never writable.
var reservedKeys = map[solana.PublicKey]bool{
	solana.SystemProgramID:               true,
	solana.ComputeBudget:                 true,
	solana.SysVarClockPubkey:             true,
	solana.SysVarRentPubkey:              true,
	solana.BPFLoaderUpgradeableProgramID: true,
	nativeLoaderID:                       true,
}

var nativeLoaderID = solana.MustPublicKeyFromBase58("NativeLoader1111111111111111111111111111111")
