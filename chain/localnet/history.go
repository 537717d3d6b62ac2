package localnet

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/gagliardetto/solana-go"
	"github.com/mr-tron/base58"
)

// Transaction history methods: getSignaturesForAddress and getTransaction,
// answered from the ledger's landed transactions (statusRecord) and its
// address_signatures index.

// Limits and error codes of Solana's history methods.
const (
	maxSignaturesForAddress           = 1000
	codeUnsupportedTransactionVersion = -32015
	msgCommitmentBelowConfirmed       = "Method does not support commitment below `confirmed`"
)

// checkAtLeastConfirmed refuses processed (and its old name recent), as
// Solana's history methods do.
func checkAtLeastConfirmed(commitment string) *rpcError {
	if commitment == "processed" || commitment == "recent" {
		return &rpcError{Code: codeInvalidParams, Message: msgCommitmentBelowConfirmed}
	}
	return nil
}

// signatureInfoJSON is one getSignaturesForAddress entry
// (RpcConfirmedTransactionStatusWithSignature).
type signatureInfoJSON struct {
	Signature          solana.Signature `json:"signature"`
	Slot               uint64           `json:"slot"`
	Err                json.RawMessage  `json:"err"`
	Memo               *string          `json:"memo"`
	BlockTime          *int64           `json:"blockTime"`
	ConfirmationStatus string           `json:"confirmationStatus"`
}

// getSignaturesForAddress answers [address, {limit, before, until,
// commitment, minContextSlot}] with the landed transactions whose account
// keys include address, newest first: at most limit (default and maximum
// 1000), strictly older than before and strictly newer than until. As on
// Solana, a before signature that has not landed gives an empty list, an
// until signature that has not landed bounds nothing, and an address no
// transaction names gives an empty list.
func (s *Server) getSignaturesForAddress(params json.RawMessage) (any, *rpcError) {
	var addr string
	var cfg struct {
		commonConfig
		Limit  *uint64 `json:"limit"`
		Before *string `json:"before"`
		Until  *string `json:"until"`
	}
	if e := positional(params, 1, &addr, &cfg); e != nil {
		return nil, e
	}
	k, e := parsePubkey(addr)
	if e != nil {
		return nil, e
	}
	var before, until *solana.Signature
	for _, p := range []struct {
		in  *string
		out **solana.Signature
	}{{cfg.Before, &before}, {cfg.Until, &until}} {
		if p.in == nil {
			continue
		}
		sig, e := parseSignature(*p.in)
		if e != nil {
			return nil, e
		}
		*p.out = &sig
	}
	limit := uint64(maxSignaturesForAddress)
	if cfg.Limit != nil {
		limit = *cfg.Limit
	}
	if limit == 0 || limit > maxSignaturesForAddress {
		return nil, &rpcError{Code: codeInvalidParams, Message: "Invalid limit; max 1000"}
	}
	if e := checkAtLeastConfirmed(cfg.Commitment); e != nil {
		return nil, e
	}
	if e := cfg.check(s.bank.slot()); e != nil {
		return nil, e
	}
	_, txs, err := s.bank.signaturesFor(k, before, until, int(limit))
	switch {
	case errors.Is(err, errNotLanded):
		return []signatureInfoJSON{}, nil
	case err != nil:
		return nil, internalError(err)
	}
	out := make([]signatureInfoJSON, len(txs))
	for i, tx := range txs {
		bt := tx.BlockTime
		out[i] = signatureInfoJSON{Signature: tx.Sig, Slot: tx.Slot, Err: tx.Err, BlockTime: &bt, ConfirmationStatus: tx.Level}
	}
	return out, nil
}

// transactionConfig is getTransaction's second parameter: an object, or
// (Solana's deprecated form) just the encoding as a string.
type transactionConfig struct {
	Encoding                       string `json:"encoding"`
	Commitment                     string `json:"commitment"`
	MaxSupportedTransactionVersion *uint8 `json:"maxSupportedTransactionVersion"`
}

func (c *transactionConfig) UnmarshalJSON(b []byte) error {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '"' {
		return json.Unmarshal(t, &c.Encoding)
	}
	type plain transactionConfig
	return json.Unmarshal(b, (*plain)(c))
}

// uiInstruction is a compiled instruction in the json encoding.
type uiInstruction struct {
	ProgramIDIndex int     `json:"programIdIndex"`
	Accounts       []int   `json:"accounts"`
	Data           string  `json:"data"` // base58
	StackHeight    *uint32 `json:"stackHeight"`
}

type uiMessage struct {
	AccountKeys     []solana.PublicKey   `json:"accountKeys"`
	Header          solana.MessageHeader `json:"header"`
	RecentBlockhash solana.Hash          `json:"recentBlockhash"`
	Instructions    []uiInstruction      `json:"instructions"`
	// AddressTableLookups is present (empty) in v0 messages only.
	AddressTableLookups *[]struct{} `json:"addressTableLookups,omitempty"`
}

type uiTransaction struct {
	Signatures []solana.Signature `json:"signatures"`
	Message    uiMessage          `json:"message"`
}

type loadedAddressesJSON struct {
	Writable []solana.PublicKey `json:"writable"`
	Readonly []solana.PublicKey `json:"readonly"`
}

// txMetaJSON is a landed transaction's status meta
// (UiTransactionStatusMeta).
type txMetaJSON struct {
	Err                  json.RawMessage            `json:"err"`
	Status               map[string]json.RawMessage `json:"status"`
	Fee                  uint64                     `json:"fee"`
	PreBalances          []uint64                   `json:"preBalances"`
	PostBalances         []uint64                   `json:"postBalances"`
	InnerInstructions    []struct{}                 `json:"innerInstructions"`
	LogMessages          []string                   `json:"logMessages"`
	PreTokenBalances     []struct{}                 `json:"preTokenBalances"`
	PostTokenBalances    []struct{}                 `json:"postTokenBalances"`
	Rewards              []struct{}                 `json:"rewards"`
	LoadedAddresses      loadedAddressesJSON        `json:"loadedAddresses"`
	ComputeUnitsConsumed uint64                     `json:"computeUnitsConsumed"`
}

// transactionJSON is getTransaction's result
// (EncodedConfirmedTransactionWithStatusMeta).
type transactionJSON struct {
	Slot        uint64      `json:"slot"`
	BlockTime   *int64      `json:"blockTime"`
	Meta        *txMetaJSON `json:"meta"`
	Transaction any         `json:"transaction"`
	// Version is "legacy" or 0, present only when the request set
	// maxSupportedTransactionVersion.
	Version any `json:"version,omitempty"`
}

// getTransaction answers [signature, {encoding, commitment,
// maxSupportedTransactionVersion}] with a landed transaction and its status
// meta, or null when signature has not landed. Encodings: json (default),
// base64, base58. A v0 transaction needs maxSupportedTransactionVersion, as
// on Solana (-32015 otherwise).
func (s *Server) getTransaction(params json.RawMessage) (any, *rpcError) {
	var ss string
	var cfg transactionConfig
	if e := positional(params, 1, &ss, &cfg); e != nil {
		return nil, e
	}
	sig, e := parseSignature(ss)
	if e != nil {
		return nil, e
	}
	switch cfg.Encoding {
	case "", "json", "base64", "base58":
	default:
		return nil, invalidParams("unsupported encoding %q (the localnet serves json, base64 and base58 transactions)", cfg.Encoding)
	}
	if e := checkAtLeastConfirmed(cfg.Commitment); e != nil {
		return nil, e
	}
	// Validates the commitment's name; there is no minContextSlot here.
	if e := (&commonConfig{Commitment: cfg.Commitment}).check(0); e != nil {
		return nil, e
	}
	_, rec := s.bank.landed(sig)
	if rec == nil {
		return nil, nil
	}
	w, err := decodeTx(rec.Tx)
	if err != nil {
		return nil, internalError(err)
	}
	versioned := w.tx.Message.IsVersioned()
	if versioned && cfg.MaxSupportedTransactionVersion == nil {
		return nil, &rpcError{Code: codeUnsupportedTransactionVersion,
			Message: `Transaction version (0) is not supported by the requesting client. Please try the request again with the following configuration parameter: "maxSupportedTransactionVersion": 0`}
	}
	bt := rec.BlockTime
	out := &transactionJSON{Slot: rec.Slot, BlockTime: &bt, Meta: recordMeta(rec, len(w.keys))}
	if cfg.MaxSupportedTransactionVersion != nil {
		out.Version = "legacy"
		if versioned {
			out.Version = 0
		}
	}
	switch cfg.Encoding {
	case "base64":
		out.Transaction = [2]string{base64.StdEncoding.EncodeToString(rec.Tx), "base64"}
	case "base58":
		out.Transaction = [2]string{base58.Encode(rec.Tx), "base58"}
	default:
		out.Transaction = uiTransactionOf(w)
	}
	return out, nil
}

// recordMeta builds the status meta of a landed transaction with nkeys
// account keys. Records written before balances were recorded report none.
func recordMeta(rec *statusRecord, nkeys int) *txMetaJSON {
	m := &txMetaJSON{
		Err:                  rec.Err,
		Fee:                  rec.Fee,
		PreBalances:          rec.PreBalances,
		PostBalances:         rec.PostBalances,
		InnerInstructions:    []struct{}{},
		LogMessages:          rec.Logs,
		PreTokenBalances:     []struct{}{},
		PostTokenBalances:    []struct{}{},
		Rewards:              []struct{}{},
		LoadedAddresses:      loadedAddressesJSON{Writable: []solana.PublicKey{}, Readonly: []solana.PublicKey{}},
		ComputeUnitsConsumed: rec.Units,
	}
	if len(m.Err) == 0 {
		m.Err = json.RawMessage("null")
	}
	if rec.failed() {
		m.Status = map[string]json.RawMessage{"Err": m.Err}
	} else {
		m.Status = map[string]json.RawMessage{"Ok": json.RawMessage("null")}
	}
	if len(m.PreBalances) != nkeys || len(m.PostBalances) != nkeys {
		m.PreBalances, m.PostBalances = []uint64{}, []uint64{}
	}
	if m.LogMessages == nil {
		m.LogMessages = []string{}
	}
	return m
}

func uiTransactionOf(w *wireTx) *uiTransaction {
	m := &w.tx.Message
	out := &uiTransaction{
		Signatures: w.tx.Signatures,
		Message: uiMessage{
			AccountKeys:     w.keys,
			Header:          m.Header,
			RecentBlockhash: m.RecentBlockhash,
			Instructions:    make([]uiInstruction, len(m.Instructions)),
		},
	}
	if m.IsVersioned() {
		out.Message.AddressTableLookups = &[]struct{}{}
	}
	for i, ci := range m.Instructions {
		accts := make([]int, len(ci.Accounts))
		for j, a := range ci.Accounts {
			accts[j] = int(a)
		}
		out.Message.Instructions[i] = uiInstruction{ProgramIDIndex: int(ci.ProgramIDIndex), Accounts: accts, Data: base58.Encode(ci.Data)}
	}
	return out
}
