package localnet

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	"github.com/mr-tron/base58"
)

// Limits Solana's RPC applies.
const (
	maxMultipleAccounts  = 100
	maxSignatureStatuses = 256
	maxFilters           = 4
	maxMemcmpBytes       = 128
	maxBase58AccountData = 128
	codeMinContextSlot   = -32016
)

// rentEpochMax is what Solana reports as rentEpoch for rent-exempt accounts.
const rentEpochMax = ^uint64(0)

// Version this server reports (getVersion).
const (
	reportedCoreVersion = "2.1.21-hypernode-localnet"
	reportedFeatureSet  = 1725507508
)

func (s *Server) registerMethods() {
	s.methods = map[string]methodFunc{
		"getHealth":                         s.getHealth,
		"getVersion":                        s.getVersion,
		"getSlot":                           s.getSlot,
		"getBlockHeight":                    s.getBlockHeight,
		"getLatestBlockhash":                s.getLatestBlockhash,
		"isBlockhashValid":                  s.isBlockhashValid,
		"getBalance":                        s.getBalance,
		"getAccountInfo":                    s.getAccountInfo,
		"getMultipleAccounts":               s.getMultipleAccounts,
		"getProgramAccounts":                s.getProgramAccounts,
		"getMinimumBalanceForRentExemption": s.getMinimumBalanceForRentExemption,
		"sendTransaction":                   s.sendTransaction,
		"simulateTransaction":               s.simulateTransaction,
		"getSignatureStatuses":              s.getSignatureStatuses,
		"requestAirdrop":                    s.requestAirdrop,
		"getSignaturesForAddress":           s.getSignaturesForAddress,
		"getTransaction":                    s.getTransaction,
		// Beyond the spec's surface, for fee estimation.
		"getFeeForMessage":            s.getFeeForMessage,
		"getRecentPrioritizationFees": s.getRecentPrioritizationFees,
	}
}

// --- parameter parsing -----------------------------------------------------

// positional decodes a JSON array of params into targets; the first
// required ones must be present. JSON null leaves a target untouched.
func positional(params json.RawMessage, required int, targets ...any) *rpcError {
	var arr []json.RawMessage
	if p := bytes.TrimSpace(params); len(p) > 0 && string(p) != "null" {
		if err := json.Unmarshal(p, &arr); err != nil {
			return invalidParams("params must be an array")
		}
	}
	if len(arr) < required {
		return &rpcError{Code: codeInvalidParams, Message: fmt.Sprintf("`params` should have at least %d argument(s)", required)}
	}
	if len(arr) > len(targets) {
		return invalidParams("`params` should have at most %d argument(s)", len(targets))
	}
	for i, raw := range arr {
		if string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, targets[i]); err != nil {
			return invalidParams("param %d: %v", i, err)
		}
	}
	return nil
}

// tooManyInputs is Solana's answer to a list longer than max (without the
// "Invalid params: " prefix).
func tooManyInputs(max int) *rpcError {
	return &rpcError{Code: codeInvalidParams, Message: fmt.Sprintf("Too many inputs provided; max %d", max)}
}

func parsePubkey(s string) (solana.PublicKey, *rpcError) {
	b, err := base58.Decode(s)
	if err != nil || s == "" {
		return solana.PublicKey{}, &rpcError{Code: codeInvalidParams, Message: "Invalid param: Invalid"}
	}
	if len(b) != solana.PublicKeyLength {
		return solana.PublicKey{}, &rpcError{Code: codeInvalidParams, Message: "Invalid param: WrongSize"}
	}
	return solana.PublicKeyFromBytes(b), nil
}

func parseSignature(s string) (solana.Signature, *rpcError) {
	b, err := base58.Decode(s)
	if err != nil || len(b) != solana.SignatureLength {
		return solana.Signature{}, &rpcError{Code: codeInvalidParams, Message: "Invalid param: Invalid"}
	}
	return solana.SignatureFromBytes(b), nil
}

func parseHash(s string) (solana.Hash, *rpcError) {
	b, err := base58.Decode(s)
	if err != nil || len(b) != 32 {
		return solana.Hash{}, &rpcError{Code: codeInvalidParams, Message: "Invalid param: Invalid"}
	}
	var h solana.Hash
	copy(h[:], b)
	return h, nil
}

// commonConfig is the config object most methods take.
type commonConfig struct {
	Commitment     string  `json:"commitment"`
	MinContextSlot *uint64 `json:"minContextSlot"`
}

// check validates the commitment and minContextSlot against the current slot.
func (c *commonConfig) check(slot uint64) *rpcError {
	switch c.Commitment {
	case "", "processed", "confirmed", "finalized", "recent", "single", "singleGossip", "root", "max":
	default:
		return invalidParams("unknown commitment %q", c.Commitment)
	}
	if c.MinContextSlot != nil && *c.MinContextSlot > slot {
		return &rpcError{Code: codeMinContextSlot, Message: "Minimum context slot has not been reached",
			Data: mustMarshal(map[string]uint64{"contextSlot": slot})}
	}
	return nil
}

type dataSlice struct {
	Offset *uint64 `json:"offset"`
	Length *uint64 `json:"length"`
}

type accountConfig struct {
	commonConfig
	Encoding  string     `json:"encoding"`
	DataSlice *dataSlice `json:"dataSlice"`
}

// --- account encoding ------------------------------------------------------

// rpcContext is the {"context":{"slot":N},"value":…} wrapper.
type rpcContext struct {
	Context struct {
		Slot uint64 `json:"slot"`
	} `json:"context"`
	Value any `json:"value"`
}

func withContext(slot uint64, v any) *rpcContext {
	c := &rpcContext{Value: v}
	c.Context.Slot = slot
	return c
}

// accountJSON is an account as the RPC reports it.
type accountJSON struct {
	Data       [2]string        `json:"data"`
	Executable bool             `json:"executable"`
	Lamports   uint64           `json:"lamports"`
	Owner      solana.PublicKey `json:"owner"`
	RentEpoch  uint64           `json:"rentEpoch"`
	Space      uint64           `json:"space"`
}

// checkEncoding validates an account data encoding: base64 (default),
// base58, and jsonParsed (answered as base64: the localnet has no parsers).
func checkEncoding(enc string) (string, *rpcError) {
	switch enc {
	case "", "base64", "jsonParsed":
		return "base64", nil
	case "base58":
		return "base58", nil
	}
	return "", invalidParams("unsupported encoding %q (the localnet serves base64 and base58)", enc)
}

func encodeAccount(a *Account, enc string, slice *dataSlice) (*accountJSON, *rpcError) {
	data := a.Data
	if slice != nil {
		off := uint64(0)
		if slice.Offset != nil {
			off = *slice.Offset
		}
		if off > uint64(len(data)) {
			off = uint64(len(data))
		}
		data = data[off:]
		if slice.Length != nil && *slice.Length < uint64(len(data)) {
			data = data[:*slice.Length]
		}
	}
	out := &accountJSON{
		Executable: a.Executable, Lamports: a.Lamports, Owner: a.Owner,
		RentEpoch: rentEpochMax, Space: uint64(len(a.Data)),
	}
	switch enc {
	case "base58":
		if len(data) > maxBase58AccountData {
			return nil, &rpcError{Code: codeInvalidRequest,
				Message: "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding."}
		}
		out.Data = [2]string{base58.Encode(data), "base58"}
	default:
		out.Data = [2]string{base64.StdEncoding.EncodeToString(data), "base64"}
	}
	return out, nil
}

// --- filters ---------------------------------------------------------------

// accountFilter is one getProgramAccounts / programSubscribe filter.
type accountFilter struct {
	dataSize *uint64
	offset   uint64
	bytes    []byte
	memcmp   bool
}

type filterJSON struct {
	DataSize *uint64 `json:"dataSize"`
	Memcmp   *struct {
		Offset   *uint64 `json:"offset"`
		Bytes    *string `json:"bytes"`
		Encoding string  `json:"encoding"`
	} `json:"memcmp"`
}

var errFilter = errors.New("invalid filter")

func parseFilters(raw []json.RawMessage) ([]accountFilter, error) {
	if len(raw) > maxFilters {
		return nil, fmt.Errorf("%w: too many filters provided; max %d", errFilter, maxFilters)
	}
	out := make([]accountFilter, 0, len(raw))
	for i, r := range raw {
		var f filterJSON
		if err := json.Unmarshal(r, &f); err != nil {
			return nil, fmt.Errorf("%w: filter %d: %v", errFilter, i, err)
		}
		if f.DataSize == nil && f.Memcmp == nil {
			return nil, fmt.Errorf("%w: filter %d: neither dataSize nor memcmp", errFilter, i)
		}
		if f.DataSize != nil {
			out = append(out, accountFilter{dataSize: f.DataSize})
		}
		if m := f.Memcmp; m != nil {
			if m.Offset == nil || m.Bytes == nil {
				return nil, fmt.Errorf("%w: filter %d: memcmp needs offset and bytes", errFilter, i)
			}
			var b []byte
			var err error
			switch m.Encoding {
			case "", "base58":
				b, err = base58.Decode(*m.Bytes)
			case "base64":
				b, err = base64.StdEncoding.DecodeString(*m.Bytes)
			default:
				err = fmt.Errorf("unknown encoding %q", m.Encoding)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: filter %d: memcmp bytes: %v", errFilter, i, err)
			}
			if len(b) > maxMemcmpBytes {
				return nil, fmt.Errorf("%w: filter %d: memcmp of %d bytes, max %d", errFilter, i, len(b), maxMemcmpBytes)
			}
			out = append(out, accountFilter{memcmp: true, offset: *m.Offset, bytes: b})
		}
	}
	return out, nil
}

func (f accountFilter) match(data []byte) bool {
	if f.dataSize != nil {
		return uint64(len(data)) == *f.dataSize
	}
	if f.offset > uint64(len(data)) || uint64(len(data))-f.offset < uint64(len(f.bytes)) {
		return false
	}
	return bytes.Equal(data[f.offset:f.offset+uint64(len(f.bytes))], f.bytes)
}

func matchAll(fs []accountFilter, data []byte) bool {
	for _, f := range fs {
		if !f.match(data) {
			return false
		}
	}
	return true
}

// --- methods ---------------------------------------------------------------

func (s *Server) getHealth(params json.RawMessage) (any, *rpcError) { return "ok", nil }

func (s *Server) getVersion(params json.RawMessage) (any, *rpcError) {
	return map[string]any{"solana-core": reportedCoreVersion, "feature-set": reportedFeatureSet}, nil
}

func (s *Server) getSlot(params json.RawMessage) (any, *rpcError) {
	var cfg commonConfig
	if e := positional(params, 0, &cfg); e != nil {
		return nil, e
	}
	slot := s.bank.slot()
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	return slot, nil
}

func (s *Server) getBlockHeight(params json.RawMessage) (any, *rpcError) {
	var cfg commonConfig
	if e := positional(params, 0, &cfg); e != nil {
		return nil, e
	}
	slot, height := s.bank.blockHeight()
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	return height, nil
}

func (s *Server) getLatestBlockhash(params json.RawMessage) (any, *rpcError) {
	var cfg commonConfig
	if e := positional(params, 0, &cfg); e != nil {
		return nil, e
	}
	slot, hash, lastValid := s.bank.latestBlockhash()
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	return withContext(slot, map[string]any{"blockhash": hash, "lastValidBlockHeight": lastValid}), nil
}

func (s *Server) isBlockhashValid(params json.RawMessage) (any, *rpcError) {
	var hs string
	var cfg commonConfig
	if e := positional(params, 1, &hs, &cfg); e != nil {
		return nil, e
	}
	h, e := parseHash(hs)
	if e != nil {
		return nil, e
	}
	slot, ok := s.bank.blockhashValid(h)
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	return withContext(slot, ok), nil
}

func (s *Server) getBalance(params json.RawMessage) (any, *rpcError) {
	var ks string
	var cfg commonConfig
	if e := positional(params, 1, &ks, &cfg); e != nil {
		return nil, e
	}
	k, e := parsePubkey(ks)
	if e != nil {
		return nil, e
	}
	slot, a := s.bank.account(k)
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	var lamports uint64
	if a != nil {
		lamports = a.Lamports
	}
	return withContext(slot, lamports), nil
}

func (s *Server) getAccountInfo(params json.RawMessage) (any, *rpcError) {
	var ks string
	var cfg accountConfig
	if e := positional(params, 1, &ks, &cfg); e != nil {
		return nil, e
	}
	k, e := parsePubkey(ks)
	if e != nil {
		return nil, e
	}
	enc, e := checkEncoding(cfg.Encoding)
	if e != nil {
		return nil, e
	}
	slot, a := s.bank.account(k)
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	if a == nil {
		return withContext(slot, nil), nil
	}
	aj, e := encodeAccount(a, enc, cfg.DataSlice)
	if e != nil {
		return nil, e
	}
	return withContext(slot, aj), nil
}

func (s *Server) getMultipleAccounts(params json.RawMessage) (any, *rpcError) {
	var kss []string
	var cfg accountConfig
	if e := positional(params, 1, &kss, &cfg); e != nil {
		return nil, e
	}
	if len(kss) > maxMultipleAccounts {
		return nil, tooManyInputs(maxMultipleAccounts)
	}
	keys := make([]solana.PublicKey, len(kss))
	for i, ks := range kss {
		k, e := parsePubkey(ks)
		if e != nil {
			return nil, e
		}
		keys[i] = k
	}
	enc, e := checkEncoding(cfg.Encoding)
	if e != nil {
		return nil, e
	}
	slot, accts := s.bank.accountsOf(keys)
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	out := make([]*accountJSON, len(accts))
	for i, a := range accts {
		if a == nil {
			continue
		}
		aj, e := encodeAccount(a, enc, cfg.DataSlice)
		if e != nil {
			return nil, e
		}
		out[i] = aj
	}
	return withContext(slot, out), nil
}

type keyedAccountJSON struct {
	Pubkey  solana.PublicKey `json:"pubkey"`
	Account *accountJSON     `json:"account"`
}

func (s *Server) getProgramAccounts(params json.RawMessage) (any, *rpcError) {
	var ps string
	var cfg struct {
		accountConfig
		Filters     []json.RawMessage `json:"filters"`
		WithContext bool              `json:"withContext"`
	}
	if e := positional(params, 1, &ps, &cfg); e != nil {
		return nil, e
	}
	program, e := parsePubkey(ps)
	if e != nil {
		return nil, e
	}
	enc, e := checkEncoding(cfg.Encoding)
	if e != nil {
		return nil, e
	}
	filters, err := parseFilters(cfg.Filters)
	if err != nil {
		return nil, invalidParams("%v", err)
	}
	slot, accts := s.bank.programAccounts(program, func(a *Account) bool { return matchAll(filters, a.Data) })
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	out := make([]keyedAccountJSON, 0, len(accts))
	for k, a := range accts {
		aj, e := encodeAccount(a, enc, cfg.DataSlice)
		if e != nil {
			return nil, e
		}
		out = append(out, keyedAccountJSON{Pubkey: k, Account: aj})
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Pubkey[:], out[j].Pubkey[:]) < 0 })
	if cfg.WithContext {
		return withContext(slot, out), nil
	}
	return out, nil
}

func (s *Server) getMinimumBalanceForRentExemption(params json.RawMessage) (any, *rpcError) {
	var size uint64
	var cfg commonConfig
	if e := positional(params, 1, &size, &cfg); e != nil {
		return nil, e
	}
	if e := cfg.check(s.bank.slot()); e != nil {
		return nil, e
	}
	if size > maxAccountData {
		return nil, invalidParams("data length %d exceeds %d", size, maxAccountData)
	}
	return rentExemptMinimum(size), nil
}

// decodeWire decodes an encoded transaction (base58 default, or base64) and
// sanitizes it.
func decodeWire(encoded, encoding string) (*wireTx, *rpcError) {
	var raw []byte
	var err error
	switch encoding {
	case "", "base58":
		if len(encoded) > 1683 {
			return nil, invalidParams("base58 encoded transaction too large: %d bytes (max: encoded/raw 1683/%d)", len(encoded), packetDataSize)
		}
		raw, err = base58.Decode(encoded)
	case "base64":
		if len(encoded) > 1644 {
			return nil, invalidParams("base64 encoded transaction too large: %d bytes (max: encoded/raw 1644/%d)", len(encoded), packetDataSize)
		}
		raw, err = base64.StdEncoding.DecodeString(encoded)
	default:
		return nil, invalidParams("unsupported encoding: %s. Supported encodings: base58, base64", encoding)
	}
	if err != nil {
		return nil, invalidParams("invalid %s encoding: %v", encoding, err)
	}
	w, err := decodeTx(raw)
	if err != nil {
		if errors.Is(err, errTxSanitize) {
			return nil, &rpcError{Code: codeInvalidParams, Message: err.Error()}
		}
		return nil, &rpcError{Code: codeInvalidParams, Message: "failed to deserialize solana_transaction::versioned::VersionedTransaction: " + err.Error()}
	}
	return w, nil
}

// preflightData is the data of a -32002 preflight failure.
type preflightData struct {
	Accounts             any             `json:"accounts"`
	Err                  json.RawMessage `json:"err"`
	InnerInstructions    any             `json:"innerInstructions"`
	Logs                 []string        `json:"logs"`
	ReplacementBlockhash any             `json:"replacementBlockhash"`
	ReturnData           any             `json:"returnData"`
	UnitsConsumed        uint64          `json:"unitsConsumed"`
}

func (s *Server) sendTransaction(params json.RawMessage) (any, *rpcError) {
	var encoded string
	var cfg struct {
		Encoding            string  `json:"encoding"`
		SkipPreflight       bool    `json:"skipPreflight"`
		PreflightCommitment string  `json:"preflightCommitment"`
		MaxRetries          *uint64 `json:"maxRetries"`
		MinContextSlot      *uint64 `json:"minContextSlot"`
	}
	if e := positional(params, 1, &encoded, &cfg); e != nil {
		return nil, e
	}
	cc := commonConfig{Commitment: cfg.PreflightCommitment, MinContextSlot: cfg.MinContextSlot}
	if e := cc.check(s.bank.slot()); e != nil {
		return nil, e
	}
	w, e := decodeWire(encoded, cfg.Encoding)
	if e != nil {
		return nil, e
	}
	if !w.verifySignatures() {
		if cfg.SkipPreflight {
			// Solana verifies signatures in preflight only: without it the
			// signature is returned and the leader drops the transaction.
			return w.signature().String(), nil
		}
		return nil, &rpcError{Code: codeSignatureFailure, Message: "Transaction signature verification failure"}
	}
	res, err := s.bank.process(w, true, cfg.SkipPreflight, true)
	if err != nil {
		return nil, internalError(err)
	}
	if res.err != nil && !res.landed && !cfg.SkipPreflight {
		data := preflightData{Err: errJSON(res.err), Logs: res.logs, UnitsConsumed: res.units}
		return nil, &rpcError{
			Code:    codePreflightFailure,
			Message: "Transaction simulation failed: " + res.err.Error(),
			Data:    mustMarshal(data),
		}
	}
	if res.landed {
		s.log.Debug().Str("sig", res.sig.String()).Bool("ok", res.err == nil).Msg("transaction landed")
	}
	return res.sig.String(), nil
}

func (s *Server) simulateTransaction(params json.RawMessage) (any, *rpcError) {
	var encoded string
	var cfg struct {
		commonConfig
		Encoding               string `json:"encoding"`
		SigVerify              bool   `json:"sigVerify"`
		ReplaceRecentBlockhash bool   `json:"replaceRecentBlockhash"`
		Accounts               *struct {
			Encoding  string   `json:"encoding"`
			Addresses []string `json:"addresses"`
		} `json:"accounts"`
		InnerInstructions bool `json:"innerInstructions"`
	}
	if e := positional(params, 1, &encoded, &cfg); e != nil {
		return nil, e
	}
	slot := s.bank.slot()
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	if cfg.SigVerify && cfg.ReplaceRecentBlockhash {
		return nil, invalidParams("sigVerify may not be used with replaceRecentBlockhash")
	}
	var addrs []solana.PublicKey
	accEnc := "base64"
	if cfg.Accounts != nil {
		var e *rpcError
		if accEnc, e = checkEncoding(cfg.Accounts.Encoding); e != nil {
			return nil, e
		}
		for _, a := range cfg.Accounts.Addresses {
			k, e := parsePubkey(a)
			if e != nil {
				return nil, e
			}
			addrs = append(addrs, k)
		}
	}
	w, e := decodeWire(encoded, cfg.Encoding)
	if e != nil {
		return nil, e
	}
	if cfg.SigVerify && !w.verifySignatures() {
		return nil, &rpcError{Code: codeSignatureFailure, Message: "Transaction signature verification failure"}
	}
	res, err := s.bank.process(w, false, false, !cfg.ReplaceRecentBlockhash)
	if err != nil {
		return nil, internalError(err)
	}
	value := map[string]any{
		"err":                  errJSON(res.err),
		"logs":                 res.logs,
		"accounts":             nil,
		"unitsConsumed":        res.units,
		"returnData":           nil,
		"innerInstructions":    nil,
		"replacementBlockhash": nil,
	}
	if cfg.ReplaceRecentBlockhash {
		_, h, lv := s.bank.latestBlockhash()
		value["replacementBlockhash"] = map[string]any{"blockhash": h, "lastValidBlockHeight": lv}
	}
	if cfg.Accounts != nil && res.checked {
		out := make([]*accountJSON, len(addrs))
		for i, k := range addrs {
			a := res.accounts[k]
			if a == nil {
				_, a = s.bank.account(k)
			}
			if a == nil || a.Lamports == 0 {
				continue
			}
			aj, e := encodeAccount(a, accEnc, nil)
			if e != nil {
				return nil, e
			}
			out[i] = aj
		}
		value["accounts"] = out
	}
	return withContext(slot, value), nil
}

type signatureStatusJSON struct {
	Slot               uint64          `json:"slot"`
	Confirmations      *uint64         `json:"confirmations"`
	Err                json.RawMessage `json:"err"`
	Status             map[string]any  `json:"status"`
	ConfirmationStatus string          `json:"confirmationStatus"`
}

func (s *Server) getSignatureStatuses(params json.RawMessage) (any, *rpcError) {
	var sss []string
	var cfg struct {
		SearchTransactionHistory bool `json:"searchTransactionHistory"`
	}
	if e := positional(params, 1, &sss, &cfg); e != nil {
		return nil, e
	}
	if len(sss) > maxSignatureStatuses {
		return nil, tooManyInputs(maxSignatureStatuses)
	}
	sigs := make([]solana.Signature, len(sss))
	for i, ss := range sss {
		sig, e := parseSignature(ss)
		if e != nil {
			return nil, e
		}
		sigs[i] = sig
	}
	slot, sts := s.bank.statusesOf(sigs, cfg.SearchTransactionHistory)
	out := make([]*signatureStatusJSON, len(sts))
	for i, st := range sts {
		if st == nil {
			continue
		}
		j := &signatureStatusJSON{Slot: st.Slot, Err: st.Err, ConfirmationStatus: st.Level}
		if st.Level != "finalized" {
			c := st.Confirmations
			j.Confirmations = &c
		}
		if string(st.Err) == "null" || len(st.Err) == 0 {
			j.Status = map[string]any{"Ok": nil}
		} else {
			j.Status = map[string]any{"Err": st.Err}
		}
		out[i] = j
	}
	return withContext(slot, out), nil
}

func (s *Server) requestAirdrop(params json.RawMessage) (any, *rpcError) {
	var ks string
	var lamports uint64
	var cfg commonConfig
	if e := positional(params, 2, &ks, &lamports, &cfg); e != nil {
		return nil, e
	}
	k, e := parsePubkey(ks)
	if e != nil {
		return nil, e
	}
	if e := cfg.check(s.bank.slot()); e != nil {
		return nil, e
	}
	sig, err := s.bank.airdrop(k, lamports)
	if err != nil {
		return nil, &rpcError{Code: codeInternal, Message: "airdrop request failed: " + err.Error()}
	}
	return sig.String(), nil
}

// getFeeForMessage answers the fee of a base64 message (5 000 lamports per
// required signature plus its prioritization fee), null when its blockhash
// is not valid.
func (s *Server) getFeeForMessage(params json.RawMessage) (any, *rpcError) {
	var enc string
	var cfg commonConfig
	if e := positional(params, 1, &enc, &cfg); e != nil {
		return nil, e
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(raw) > packetDataSize {
		return nil, invalidParams("message must be base64 of at most %d bytes", packetDataSize)
	}
	msg, err := decodeMessage(raw)
	if err != nil {
		return nil, invalidParams("%v", err)
	}
	slot, ok := s.bank.blockhashValid(msg.RecentBlockhash)
	if e := cfg.check(slot); e != nil {
		return nil, e
	}
	if !ok {
		return withContext(slot, nil), nil
	}
	return withContext(slot, lamportsPerSignature*uint64(msg.Header.NumRequiredSignatures)+prioritizationFee(msg.Instructions, msg.AccountKeys)), nil
}

func decodeMessage(raw []byte) (m *solana.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w: decoder panic: %v", errTxDecode, r)
		}
	}()
	m = new(solana.Message)
	if err := m.UnmarshalWithDecoder(bin.NewBinDecoder(raw)); err != nil {
		return nil, fmt.Errorf("%w: message: %v", errTxDecode, err)
	}
	return m, nil
}

// getRecentPrioritizationFees reports a zero fee for each of the last 150
// slots: the localnet keeps no per-slot history of the priority fees it
// charges.
func (s *Server) getRecentPrioritizationFees(params json.RawMessage) (any, *rpcError) {
	var addrs []string
	if e := positional(params, 0, &addrs); e != nil {
		return nil, e
	}
	if len(addrs) > 128 {
		return nil, tooManyInputs(128)
	}
	for _, a := range addrs {
		if _, e := parsePubkey(a); e != nil {
			return nil, e
		}
	}
	type fee struct {
		Slot              uint64 `json:"slot"`
		PrioritizationFee uint64 `json:"prioritizationFee"`
	}
	cur := s.bank.slot()
	first := uint64(0)
	if cur >= maxProcessingAge {
		first = cur - maxProcessingAge + 1
	}
	out := make([]fee, 0, cur-first+1)
	for sl := first; sl <= cur; sl++ {
		out = append(out, fee{Slot: sl})
	}
	return out, nil
}
