package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/ws"
)

// scenario is one system-level behaviour played on every backend. run
// returns a normalised outcome (a comparable struct: deltas, error codes
// and classes, field presence; never slots or times); want is Solana's
// answer, which both outcomes must equal.
type scenario struct {
	name string
	run  func(t *testing.T, b *backend) any
	want any
}

// TestConformance plays every scenario on the localnet and on litesvm and
// asserts identical outcomes, each equal to Solana's known answer.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance starts node with litesvm; skipped under -short")
	}
	lite := startLiteSVM(t)
	local := startLocalnet(t)
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			outs := make([]any, 0, 2)
			for _, b := range []*backend{local, lite} {
				out := sc.run(t, b)
				outs = append(outs, out)
				if !reflect.DeepEqual(out, sc.want) {
					t.Errorf("%s differs from Solana:\n got  %s\n want %s", b.name, canon(out), canon(sc.want))
				}
			}
			if !reflect.DeepEqual(outs[0], outs[1]) {
				t.Errorf("backends differ:\n localnet %s\n litesvm  %s", canon(outs[0]), canon(outs[1]))
			}
		})
	}
}

// preflightKeys are the members of a -32002 error's data the worker reads.
const preflightKeys = "err,logs,unitsConsumed"

func preflight(message, err string) rpcError {
	return rpcError{Code: -32002, Message: "Transaction simulation failed: " + message, Err: err, DataKeys: preflightKeys}
}

func transfer(lamports uint64, from, to solana.PublicKey) solana.Instruction {
	return system.NewTransferInstruction(lamports, from, to).Build()
}

func scenarios() []scenario {
	return []scenario{
		{name: "airdrop_and_balance", run: airdropAndBalance, want: airdropOutcome{
			First: "null", Second: "null", Balance: 4_000_000, Unknown: 0,
		}},
		{name: "transfer_fee", run: transferFee, want: transferFeeOutcome{
			Status: "null", PayerDelta: -1_000_000 - lamportsPerSignature, Received: 1_000_000,
			TwoSigStatus: "null", TwoSigPayerDelta: -2 * lamportsPerSignature, TwoSigFromDelta: -1_000_000, TwoSigReceived: 1_000_000,
		}},
		{name: "bad_signature", run: badSignature, want: badSignatureOutcome{
			Preflight: rpcError{Code: -32003, Message: "Transaction signature verification failure"},
			// Agave verifies signatures only as part of preflight; a
			// skipPreflight send is answered with its signature and the
			// leader drops it.
			SkipPreflight: "accepted", Status: "unknown", PayerDelta: 0,
		}},
		{name: "unknown_blockhash", run: unknownBlockhash, want: droppedOutcome{
			Preflight:     preflight("Blockhash not found", `"BlockhashNotFound"`),
			SkipPreflight: "accepted", Status: "unknown", PayerDelta: 0,
		}},
		{name: "already_processed", run: alreadyProcessed, want: alreadyProcessedOutcome{
			First:         "null",
			Again:         preflight("This transaction has already been processed", `"AlreadyProcessed"`),
			SkipPreflight: "same signature", PayerDelta: -1_000_000 - lamportsPerSignature, Received: 1_000_000,
		}},
		{name: "failed_transaction_charges_fee", run: failedCharges, want: failedOutcome{
			Preflight: preflight("Error processing Instruction 0: custom program error: 0x1",
				`{"InstructionError":[0,{"Custom":1}]}`),
			PreflightPayerDelta: 0,
			Status:              `{"InstructionError":[0,{"Custom":1}]}`,
			PayerDelta:          -lamportsPerSignature, Received: 0,
		}},
		{name: "rent_exempt_minimum", run: rentExemptMinimum, want: failedOutcome{
			Preflight: preflight("Transaction results in an account (1) with insufficient funds for rent",
				`{"InsufficientFundsForRent":{"account_index":1}}`),
			PreflightPayerDelta: 0,
			Status:              `{"InsufficientFundsForRent":{"account_index":1}}`,
			PayerDelta:          -lamportsPerSignature, Received: 0,
			ExemptStatus: "null", ExemptReceived: rentExemptEmpty,
		}},
		{name: "fee_payer_errors", run: feePayerErrors, want: feePayerOutcome{
			Unfunded: preflight("Attempt to debit an account but found no record of a prior credit.", `"AccountNotFound"`),
			LeftRentPaying: preflight("Transaction results in an account (0) with insufficient funds for rent",
				`{"InsufficientFundsForRent":{"account_index":0}}`),
			PayerDeltas:   [2]int64{0, 0},
			AtFloorStatus: "null", AtFloorDelta: -lamportsPerSignature - 1,
		}},
		{name: "account_encodings", run: accountEncodings, want: accountsOutcome{
			RentExempt0: rentExemptEmpty, RentExempt40: 1_169_280,
			Created: accountShape{Lamports: 1_169_280, Owner: "program", Data: strings.Repeat("00", 40),
				Encoding: "base64", Executable: false, RentEpoch: "18446744073709551615", Space: 40},
			Sliced: accountShape{Lamports: 1_169_280, Owner: "program", Data: strings.Repeat("00", 8),
				Encoding: "base58", Executable: false, RentEpoch: "18446744073709551615", Space: 40},
			Wallet: accountShape{Lamports: 3_000_000 - 1_169_280 - 2*lamportsPerSignature, Owner: "system", Data: "",
				Encoding: "base64", Executable: false, RentEpoch: "18446744073709551615", Space: 0},
			Missing:  "not found",
			Multiple: []string{"wallet", "null", "created"},
			// Native program accounts: only owner, executable and lamports
			// are compared (see systemProgramShape).
			SystemProgram: accountShape{Lamports: 1, Owner: "NativeLoader1111111111111111111111111111111", Executable: true},
		}},
		{name: "program_accounts_filters", run: programAccountsFilters, want: programOutcome{
			All: []string{"a", "b"}, Size40: []string{"a"}, ZeroPrefix: []string{"a", "b"},
			OnePrefix: []string{}, PastB: []string{"a"}, WithContext: 2,
			Notified: "a 1169280 40",
		}},
		{name: "signature_statuses", run: signatureStatuses, want: statusesOutcome{
			Raw: []string{
				`confirmationStatus,confirmations,err,slot,status|finalized|null|null|{"Ok":null}`,
				`confirmationStatus,confirmations,err,slot,status|finalized|null|{"InstructionError":[0,{"Custom":1}]}|{"Err":{"InstructionError":[0,{"Custom":1}]}}`,
				`null`,
			},
			Typed: []string{"finalized null", `finalized {"InstructionError":[0,{"Custom":1}]}`, "nil"},
		}},
		{name: "invalid_params", run: invalidParams, want: invalidParamsWant},
		{name: "websocket_notifications", run: websocketNotifications, want: wsOutcome{
			AccountLamports: 1_000_000, AccountOwner: "system", AccountData: 0,
			Landed: "null", Failed: `{"InstructionError":[0,{"Custom":1}]}`,
		}},
	}
}

// --- airdrop ----------------------------------------------------------------

type airdropOutcome struct {
	First, Second    string
	Balance, Unknown uint64
}

func airdropAndBalance(t *testing.T, b *backend) any {
	k := newKey(t).PublicKey()
	return airdropOutcome{
		First:   b.airdrop(t, k, 1_500_000),
		Second:  b.airdrop(t, k, 2_500_000),
		Balance: b.balance(t, k),
		Unknown: b.balance(t, newKey(t).PublicKey()),
	}
}

// --- fees -------------------------------------------------------------------

type transferFeeOutcome struct {
	Status                            string
	PayerDelta                        int64
	Received                          uint64
	TwoSigStatus                      string
	TwoSigPayerDelta, TwoSigFromDelta int64
	TwoSigReceived                    uint64
}

func delta(before, after uint64) int64 { return int64(after) - int64(before) }

func transferFee(t *testing.T, b *backend) any {
	payer, from := newKey(t), newKey(t)
	to, dest := newKey(t).PublicKey(), newKey(t).PublicKey()
	b.fund(t, payer.PublicKey(), 10_000_000)
	b.fund(t, from.PublicKey(), 3_000_000)
	var o transferFeeOutcome

	p0 := b.balance(t, payer.PublicKey())
	sig := b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1_000_000, payer.PublicKey(), to)), false)
	o.Status = b.statusErr(t, sig)
	o.PayerDelta = delta(p0, b.balance(t, payer.PublicKey()))
	o.Received = b.balance(t, to)

	// Two signatures: payer pays the fee, from moves the lamports.
	p0, f0 := b.balance(t, payer.PublicKey()), b.balance(t, from.PublicKey())
	sig = b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{payer, from}, transfer(1_000_000, from.PublicKey(), dest)), false)
	o.TwoSigStatus = b.statusErr(t, sig)
	o.TwoSigPayerDelta = delta(p0, b.balance(t, payer.PublicKey()))
	o.TwoSigFromDelta = delta(f0, b.balance(t, from.PublicKey()))
	o.TwoSigReceived = b.balance(t, dest)
	return o
}

// --- rejected transactions --------------------------------------------------

type badSignatureOutcome struct {
	Preflight     rpcError
	SkipPreflight string // "accepted" or the error
	Status        string
	PayerDelta    int64
}

func badSignature(t *testing.T, b *backend) any {
	payer := newKey(t)
	b.fund(t, payer.PublicKey(), 2_000_000)
	p0 := b.balance(t, payer.PublicKey())
	tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1_000_000, payer.PublicKey(), newKey(t).PublicKey()))
	tx.Signatures[0][10] ^= 0xff
	var o badSignatureOutcome
	_, err := b.send(t, tx, false)
	o.Preflight, _ = errorOf(t, b, err)
	sig, err := b.send(t, tx, true)
	o.SkipPreflight = accepted(t, b, sig, tx, err)
	o.Status = b.statusErr(t, tx.Signatures[0])
	o.PayerDelta = delta(p0, b.balance(t, payer.PublicKey()))
	return o
}

// accepted is "accepted" when a send returned tx's signature, else the
// error.
func accepted(t *testing.T, b *backend, sig solana.Signature, tx *solana.Transaction, err error) string {
	t.Helper()
	if e, ok := errorOf(t, b, err); ok {
		return e.String()
	}
	if sig != tx.Signatures[0] {
		return "another signature " + sig.String()
	}
	return "accepted"
}

type droppedOutcome struct {
	Preflight     rpcError
	SkipPreflight string
	Status        string
	PayerDelta    int64
}

func unknownBlockhash(t *testing.T, b *backend) any {
	payer := newKey(t)
	b.fund(t, payer.PublicKey(), 2_000_000)
	p0 := b.balance(t, payer.PublicKey())
	var stale solana.Hash
	copy(stale[:], newKey(t).PublicKey().Bytes())
	tx := buildTx(t, stale, []solana.PrivateKey{payer}, transfer(1_000_000, payer.PublicKey(), newKey(t).PublicKey()))
	var o droppedOutcome
	_, err := b.send(t, tx, false)
	o.Preflight, _ = errorOf(t, b, err)
	sig, err := b.send(t, tx, true)
	o.SkipPreflight = accepted(t, b, sig, tx, err)
	o.Status = b.statusErr(t, tx.Signatures[0])
	o.PayerDelta = delta(p0, b.balance(t, payer.PublicKey()))
	return o
}

type alreadyProcessedOutcome struct {
	First         string
	Again         rpcError
	SkipPreflight string
	PayerDelta    int64
	Received      uint64
}

func alreadyProcessed(t *testing.T, b *backend) any {
	payer := newKey(t)
	to := newKey(t).PublicKey()
	b.fund(t, payer.PublicKey(), 2_000_000)
	p0 := b.balance(t, payer.PublicKey())
	tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1_000_000, payer.PublicKey(), to))
	var o alreadyProcessedOutcome
	sig := b.mustSend(t, tx, false)
	o.First = b.statusErr(t, sig)
	_, err := b.send(t, tx, false)
	o.Again, _ = errorOf(t, b, err)
	sig2, err := b.send(t, tx, true)
	if e, ok := errorOf(t, b, err); ok {
		o.SkipPreflight = e.String()
	} else if sig2 == sig {
		o.SkipPreflight = "same signature"
	} else {
		o.SkipPreflight = "another signature"
	}
	o.PayerDelta = delta(p0, b.balance(t, payer.PublicKey()))
	o.Received = b.balance(t, to)
	return o
}

// --- failed but landed ------------------------------------------------------

type failedOutcome struct {
	Preflight           rpcError
	PreflightPayerDelta int64
	Status              string
	PayerDelta          int64
	Received            uint64
	ExemptStatus        string `json:",omitempty"`
	ExemptReceived      uint64 `json:",omitempty"`
}

// sendFailing sends tx with preflight (refused), then with skipPreflight
// (lands failed, fee charged).
func sendFailing(t *testing.T, b *backend, payer solana.PublicKey, to solana.PublicKey, tx *solana.Transaction) failedOutcome {
	t.Helper()
	var o failedOutcome
	p0 := b.balance(t, payer)
	_, err := b.send(t, tx, false)
	o.Preflight, _ = errorOf(t, b, err)
	o.PreflightPayerDelta = delta(p0, b.balance(t, payer))
	sig := b.mustSend(t, tx, true)
	o.Status = b.statusErr(t, sig)
	o.PayerDelta = delta(p0, b.balance(t, payer))
	o.Received = b.balance(t, to)
	return o
}

func failedCharges(t *testing.T, b *backend) any {
	payer := newKey(t)
	to := newKey(t).PublicKey()
	b.fund(t, payer.PublicKey(), 2_000_000)
	tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(5_000_000, payer.PublicKey(), to))
	return sendFailing(t, b, payer.PublicKey(), to, tx)
}

func rentExemptMinimum(t *testing.T, b *backend) any {
	payer := newKey(t)
	to, exempt := newKey(t).PublicKey(), newKey(t).PublicKey()
	b.fund(t, payer.PublicKey(), 3_000_000)
	tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1_000, payer.PublicKey(), to))
	o := sendFailing(t, b, payer.PublicKey(), to, tx)
	sig := b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(rentExemptEmpty, payer.PublicKey(), exempt)), false)
	o.ExemptStatus = b.statusErr(t, sig)
	o.ExemptReceived = b.balance(t, exempt)
	return o
}

type feePayerOutcome struct {
	Unfunded, LeftRentPaying rpcError
	PayerDeltas              [2]int64
	AtFloorStatus            string
	AtFloorDelta             int64
}

// feePayerErrors: a payer that does not exist, and one whose fee would
// leave it rent-paying, are refused before execution without a charge;
// one left exactly at the rent-exempt minimum pays. (Insufficient funds
// for the fee itself cannot be reached: a system account below the fee is
// below the rent-exempt minimum and cannot exist.)
func feePayerErrors(t *testing.T, b *backend) any {
	var o feePayerOutcome
	sink := newKey(t).PublicKey()
	b.fund(t, sink, 1_000_000)
	try := func(funding uint64) (rpcError, solana.Signature, int64) {
		payer := newKey(t)
		if funding > 0 {
			b.fund(t, payer.PublicKey(), funding)
		}
		p0 := b.balance(t, payer.PublicKey())
		tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1, payer.PublicKey(), sink))
		sig, err := b.send(t, tx, false)
		e, _ := errorOf(t, b, err)
		return e, sig, delta(p0, b.balance(t, payer.PublicKey()))
	}
	o.Unfunded, _, o.PayerDeltas[0] = try(0)
	o.LeftRentPaying, _, o.PayerDeltas[1] = try(rentExemptEmpty)
	e, sig, d := try(rentExemptEmpty + lamportsPerSignature + 1)
	if e.Code != 0 {
		t.Errorf("%s: payer left at the rent-exempt minimum refused: %s", b.name, e)
	} else {
		o.AtFloorStatus = b.statusErr(t, sig)
	}
	o.AtFloorDelta = d
	return o
}

// --- accounts ---------------------------------------------------------------

// accountShape is an account as solana-go decodes it, with owners named
// relative to the scenario ("system", "program") and data as hex.
type accountShape struct {
	Lamports   uint64
	Owner      string
	Data       string
	Encoding   string
	Executable bool
	RentEpoch  string
	Space      uint64
}

type accountsOutcome struct {
	RentExempt0, RentExempt40 uint64
	Created, Sliced, Wallet   accountShape
	Missing                   string
	Multiple                  []string
	SystemProgram             accountShape
}

func shapeOf(a *rpc.Account, program solana.PublicKey) accountShape {
	s := accountShape{Lamports: a.Lamports, Owner: a.Owner.String(), Executable: a.Executable, Space: a.Space}
	switch a.Owner {
	case solana.SystemProgramID:
		s.Owner = "system"
	case program:
		s.Owner = "program"
	}
	if a.Data != nil {
		s.Data = hexOf(a.Data.GetBinary())
		s.Encoding = encodingOf(a)
	}
	if a.RentEpoch != nil {
		s.RentEpoch = a.RentEpoch.String()
	}
	return s
}

// encodingOf is the encoding name of a.Data, read back through its JSON
// form ["data","encoding"].
func encodingOf(a *rpc.Account) string {
	raw, err := json.Marshal(a.Data)
	if err != nil {
		return "unmarshalable"
	}
	var pair []string
	if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 {
		return string(raw)
	}
	return pair[1]
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func accountEncodings(t *testing.T, b *backend) any {
	ctx := testCtx(t)
	var o accountsOutcome
	r0, err := b.rpc.GetMinimumBalanceForRentExemption(ctx, 0, rpc.CommitmentFinalized)
	if err != nil {
		t.Fatalf("%s: getMinimumBalanceForRentExemption: %v", b.name, err)
	}
	r40, err := b.rpc.GetMinimumBalanceForRentExemption(ctx, 40, rpc.CommitmentFinalized)
	if err != nil {
		t.Fatalf("%s: getMinimumBalanceForRentExemption: %v", b.name, err)
	}
	o.RentExempt0, o.RentExempt40 = r0, r40

	wallet, created := newKey(t), newKey(t)
	program := newKey(t).PublicKey()
	b.fund(t, wallet.PublicKey(), 3_000_000)
	create := system.NewCreateAccountInstruction(r40, 40, program, wallet.PublicKey(), created.PublicKey()).Build()
	sig := b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{wallet, created}, create), false)
	if e := b.statusErr(t, sig); e != "null" {
		t.Fatalf("%s: create_account failed: %s", b.name, e)
	}

	get := func(k solana.PublicKey, opts *rpc.GetAccountInfoOpts) (*rpc.Account, error) {
		if opts == nil {
			opts = &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentProcessed}
		}
		r, err := b.rpc.GetAccountInfoWithOpts(ctx, k, opts)
		if err != nil {
			return nil, err
		}
		return r.Value, nil
	}
	mustGet := func(k solana.PublicKey, opts *rpc.GetAccountInfoOpts) *rpc.Account {
		a, err := get(k, opts)
		if err != nil {
			t.Fatalf("%s: getAccountInfo %s: %v", b.name, k, err)
		}
		return a
	}
	o.Created = shapeOf(mustGet(created.PublicKey(), nil), program)
	off, n := uint64(4), uint64(8)
	o.Sliced = shapeOf(mustGet(created.PublicKey(), &rpc.GetAccountInfoOpts{
		Encoding: solana.EncodingBase58, Commitment: rpc.CommitmentProcessed,
		DataSlice: &rpc.DataSlice{Offset: &off, Length: &n},
	}), program)
	o.Wallet = shapeOf(mustGet(wallet.PublicKey(), nil), program)
	missing := newKey(t).PublicKey()
	if _, err := get(missing, nil); errors.Is(err, rpc.ErrNotFound) {
		o.Missing = "not found"
	} else {
		o.Missing = "err: " + describe(err)
	}

	m, err := b.rpc.GetMultipleAccountsWithOpts(ctx, []solana.PublicKey{wallet.PublicKey(), missing, created.PublicKey()},
		&rpc.GetMultipleAccountsOpts{Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentProcessed})
	if err != nil {
		t.Fatalf("%s: getMultipleAccounts: %v", b.name, err)
	}
	for _, a := range m.Value {
		switch {
		case a == nil:
			o.Multiple = append(o.Multiple, "null")
		case a.Owner == program:
			o.Multiple = append(o.Multiple, "created")
		case a.Owner == solana.SystemProgramID:
			o.Multiple = append(o.Multiple, "wallet")
		default:
			o.Multiple = append(o.Multiple, "owner "+a.Owner.String())
		}
	}
	o.SystemProgram = systemProgramShape(mustGet(solana.SystemProgramID, nil))
	return o
}

// systemProgramShape keeps owner, executable and lamports of a native
// program account. Asserted exception: the data (the builtin's name) and
// rentEpoch of native program accounts are not compared: litesvm names the
// System program "solana_system_program" with rentEpoch 0, the localnet
// "system_program" with rentEpoch u64::MAX; nothing reads them.
func systemProgramShape(a *rpc.Account) accountShape {
	return accountShape{Lamports: a.Lamports, Owner: a.Owner.String(), Executable: a.Executable}
}

// --- program accounts -------------------------------------------------------

type programOutcome struct {
	// Accounts found, named "a" (40 bytes) and "b" (24 bytes).
	All, Size40, ZeroPrefix, OnePrefix, PastB []string
	WithContext                               int
	// Notified is the programSubscribe notification under a dataSize 40
	// filter: "name lamports space".
	Notified string
}

func programAccountsFilters(t *testing.T, b *backend) any {
	ctx := testCtx(t)
	wallet, a, bk := newKey(t), newKey(t), newKey(t)
	program := newKey(t).PublicKey()
	names := map[solana.PublicKey]string{a.PublicKey(): "a", bk.PublicKey(): "b"}
	name := func(k solana.PublicKey) string {
		if n, ok := names[k]; ok {
			return n
		}
		return k.String()
	}
	b.fund(t, wallet.PublicKey(), 10_000_000)
	cl, err := ws.Connect(ctx, b.wsURL)
	if err != nil {
		t.Fatalf("%s: ws connect: %v", b.name, err)
	}
	t.Cleanup(cl.Close)
	sub, err := cl.ProgramSubscribeWithOpts(program, rpc.CommitmentProcessed, solana.EncodingBase64,
		[]rpc.RPCFilter{{DataSize: 40}})
	if err != nil {
		t.Fatalf("%s: programSubscribe: %v", b.name, err)
	}
	defer sub.Unsubscribe()

	r40, r24 := uint64(1_169_280), uint64(1_057_920) // rent-exempt minimums of 40 and 24 bytes
	b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{wallet, a, bk},
		system.NewCreateAccountInstruction(r40, 40, program, wallet.PublicKey(), a.PublicKey()).Build(),
		system.NewCreateAccountInstruction(r24, 24, program, wallet.PublicKey(), bk.PublicKey()).Build()), false)

	var o programOutcome
	n, err := sub.Recv(ctx)
	if err != nil {
		t.Fatalf("%s: program notification: %v", b.name, err)
	}
	if acct := n.Value.Account; acct != nil {
		o.Notified = fmt.Sprintf("%s %d %d", name(n.Value.Pubkey), acct.Lamports, len(acct.Data.GetBinary()))
	}
	find := func(filters ...rpc.RPCFilter) []string {
		r, err := b.rpc.GetProgramAccountsWithOpts(ctx, program, &rpc.GetProgramAccountsOpts{
			Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentProcessed, Filters: filters})
		if err != nil {
			t.Fatalf("%s: getProgramAccounts %s: %v", b.name, canon(filters), err)
		}
		out := []string{}
		for _, ka := range r {
			out = append(out, name(ka.Pubkey))
		}
		sort.Strings(out)
		return out
	}
	o.All = find()
	o.Size40 = find(rpc.RPCFilter{DataSize: 40})
	o.ZeroPrefix = find(rpc.RPCFilter{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: solana.Base58{0, 0, 0, 0}}})
	o.OnePrefix = find(rpc.RPCFilter{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: solana.Base58{1}}})
	o.PastB = find(rpc.RPCFilter{Memcmp: &rpc.RPCFilterMemcmp{Offset: 30, Bytes: solana.Base58{0, 0, 0, 0}}})

	raw, err := b.call(t, "getProgramAccounts", program.String(), map[string]any{"withContext": true, "encoding": "base64"})
	if err != nil {
		t.Fatalf("%s: getProgramAccounts withContext: %v", b.name, err)
	}
	var wc struct {
		Context struct {
			Slot *uint64 `json:"slot"`
		} `json:"context"`
		Value []json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &wc); err != nil || wc.Context.Slot == nil {
		t.Errorf("%s: withContext reply %s: %v", b.name, raw, err)
	}
	o.WithContext = len(wc.Value)
	return o
}

// --- signature statuses -----------------------------------------------------

type statusesOutcome struct {
	// Raw: per signature "sorted keys|confirmationStatus|confirmations|err|status", or "null".
	Raw []string
	// Typed: per signature as solana-go decodes it.
	Typed []string
}

func signatureStatuses(t *testing.T, b *backend) any {
	payer := newKey(t)
	b.fund(t, payer.PublicKey(), 3_000_000)
	ok := b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{payer},
		transfer(1_000_000, payer.PublicKey(), newKey(t).PublicKey())), false)
	failed := b.mustSend(t, buildTx(t, b.blockhash(t), []solana.PrivateKey{payer},
		transfer(50_000_000, payer.PublicKey(), newKey(t).PublicKey())), true)
	var unknown solana.Signature
	copy(unknown[:], bytes.Repeat([]byte{7}, 64))
	sigs := []solana.Signature{ok, failed, unknown}

	// Wait until both landed transactions are finalized (the localnet
	// finalizes 32 slots later; litesvm at once).
	ctx := testCtx(t)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var typed *rpc.GetSignatureStatusesResult
	for {
		var err error
		typed, err = b.rpc.GetSignatureStatuses(ctx, true, sigs...)
		if err != nil {
			t.Fatalf("%s: getSignatureStatuses: %v", b.name, err)
		}
		if typed.Value[0] != nil && typed.Value[1] != nil &&
			typed.Value[0].ConfirmationStatus == rpc.ConfirmationStatusFinalized &&
			typed.Value[1].ConfirmationStatus == rpc.ConfirmationStatusFinalized {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not finalized: %s", b.name, canon(typed.Value))
		case <-tick.C:
		}
	}
	var o statusesOutcome
	for _, v := range typed.Value {
		if v == nil {
			o.Typed = append(o.Typed, "nil")
			continue
		}
		o.Typed = append(o.Typed, string(v.ConfirmationStatus)+" "+canon(v.Err))
	}
	strs := make([]string, len(sigs))
	for i, s := range sigs {
		strs[i] = s.String()
	}
	raw, err := b.call(t, "getSignatureStatuses", strs, map[string]any{"searchTransactionHistory": true})
	if err != nil {
		t.Fatalf("%s: getSignatureStatuses: %v", b.name, err)
	}
	var res struct {
		Value []map[string]json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%s: getSignatureStatuses reply %s: %v", b.name, raw, err)
	}
	for _, v := range res.Value {
		if v == nil {
			o.Raw = append(o.Raw, "null")
			continue
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var cs string
		json.Unmarshal(v["confirmationStatus"], &cs)
		o.Raw = append(o.Raw, strings.Join([]string{strings.Join(keys, ","), cs,
			compact(v["confirmations"]), compact(v["err"]), compact(v["status"])}, "|"))
	}
	return o
}

func compact(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "absent"
	}
	return canon(v)
}

// --- invalid params ---------------------------------------------------------

type paramCase struct {
	name   string
	method string
	params []any
	// exact: the message is Solana's fixed text and is compared; otherwise
	// only the code (message class: non-empty).
	exact bool
}

var paramCases = []paramCase{
	{name: "pubkey not base58", method: "getBalance", params: []any{"0OIl"}, exact: true},
	{name: "pubkey wrong size", method: "getBalance", params: []any{"1111"}, exact: true},
	{name: "missing params", method: "getBalance", params: []any{}, exact: true},
	{name: "unknown method", method: "getNothing", params: []any{}, exact: true},
	{name: "bad encoding", method: "getAccountInfo", params: []any{solana.SystemProgramID.String(), map[string]any{"encoding": "bogus"}}},
	{name: "bad signature string", method: "getSignatureStatuses", params: []any{[]string{"xyz"}}, exact: true},
	{name: "too many statuses", method: "getSignatureStatuses", params: []any{manySignatures(257)}, exact: true},
	{name: "transaction not base58", method: "sendTransaction", params: []any{"0OIl"}},
	{name: "transaction not a transaction", method: "sendTransaction", params: []any{"AQID", map[string]any{"encoding": "base64"}}},
	{name: "unknown commitment", method: "getBalance", params: []any{solana.SystemProgramID.String(), map[string]any{"commitment": "soon"}}},
}

func manySignatures(n int) []string {
	out := make([]string, n)
	var s solana.Signature
	for i := range out {
		out[i] = s.String()
	}
	return out
}

type paramOutcome struct {
	Code    int
	Message string
}

var invalidParamsWant = []paramOutcome{
	{-32602, "Invalid param: Invalid"},
	{-32602, "Invalid param: WrongSize"},
	{-32602, "`params` should have at least 1 argument(s)"},
	{-32601, "Method not found"},
	{-32602, ""},
	{-32602, "Invalid param: Invalid"},
	{-32602, "Too many inputs provided; max 256"},
	{-32602, ""},
	{-32602, ""},
	{-32602, ""},
	// A body that is not JSON.
	{-32700, "Parse error"},
}

func invalidParams(t *testing.T, b *backend) any {
	var out []paramOutcome
	for _, c := range paramCases {
		_, err := b.call(t, c.method, c.params...)
		e, ok := errorOf(t, b, err)
		if !ok {
			t.Errorf("%s: %s: no error", b.name, c.name)
			continue
		}
		if e.Message == "" {
			t.Errorf("%s: %s: empty message", b.name, c.name)
		}
		if !c.exact {
			e.Message = ""
		}
		out = append(out, paramOutcome{Code: e.Code, Message: e.Message})
	}
	// Not JSON at all: solana-go cannot send that; post it directly.
	resp, err := http.Post(b.url, "application/json", strings.NewReader(`{"jsonrpc":"2.0",`))
	if err != nil {
		t.Fatalf("%s: post: %v", b.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Error *paramOutcome `json:"error"`
		ID    any           `json:"id"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Error == nil {
		t.Errorf("%s: parse error reply %q: %v", b.name, body, err)
		return out
	}
	return append(out, *r.Error)
}

// --- websocket --------------------------------------------------------------

type wsOutcome struct {
	AccountLamports uint64
	AccountOwner    string
	AccountData     int
	Landed, Failed  string
}

func websocketNotifications(t *testing.T, b *backend) any {
	ctx := testCtx(t)
	cl, err := ws.Connect(ctx, b.wsURL)
	if err != nil {
		t.Fatalf("%s: ws connect: %v", b.name, err)
	}
	t.Cleanup(cl.Close)
	payer, to := newKey(t), newKey(t)
	b.fund(t, payer.PublicKey(), 3_000_000)

	asub, err := cl.AccountSubscribe(to.PublicKey(), rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("%s: accountSubscribe: %v", b.name, err)
	}
	defer asub.Unsubscribe()
	tx := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(1_000_000, payer.PublicKey(), to.PublicKey()))
	ssub, err := cl.SignatureSubscribe(tx.Signatures[0], rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("%s: signatureSubscribe: %v", b.name, err)
	}
	b.mustSend(t, tx, false)
	var o wsOutcome
	an, err := asub.Recv(ctx)
	if err != nil {
		t.Fatalf("%s: account notification: %v", b.name, err)
	}
	if an.Value != nil {
		o.AccountLamports = an.Value.Lamports
		o.AccountOwner = shapeOf(an.Value, solana.PublicKey{}).Owner
		if an.Value.Data != nil {
			o.AccountData = len(an.Value.Data.GetBinary())
		}
	}
	sn, err := ssub.Recv(ctx)
	if err != nil {
		t.Fatalf("%s: signature notification: %v", b.name, err)
	}
	o.Landed = canon(sn.Value.Err)

	// A transaction that lands failed: its notification carries the error.
	bad := buildTx(t, b.blockhash(t), []solana.PrivateKey{payer}, transfer(50_000_000, payer.PublicKey(), to.PublicKey()))
	fsub, err := cl.SignatureSubscribe(bad.Signatures[0], rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("%s: signatureSubscribe: %v", b.name, err)
	}
	b.mustSend(t, bad, true)
	fn, err := fsub.Recv(ctx)
	if err != nil {
		t.Fatalf("%s: signature notification: %v", b.name, err)
	}
	o.Failed = canon(fn.Value.Err)
	return o
}
