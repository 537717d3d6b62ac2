package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"

	"github.com/hypernode-sol/worker/chain/localnet"
)

// backend is one Solana JSON-RPC endpoint under test.
type backend struct {
	name  string
	url   string // HTTP JSON-RPC
	wsURL string // PubSub
	rpc   *rpc.Client
}

const (
	lamportsPerSignature = 5000
	// rentExemptEmpty is the rent-exempt minimum of an account without data
	// (Solana's default rent: (128 + 0) * 3480 * 2).
	rentExemptEmpty = 890_880
)

// testCtx bounds a test's calls.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startLocalnet starts the embedded localnet on a fresh ledger.
func startLocalnet(t *testing.T) *backend {
	t.Helper()
	s, err := localnet.Start(context.Background(), localnet.Config{
		DataDir:      t.TempDir(),
		SlotInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("start localnet: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close localnet: %v", err)
		}
	})
	return newBackend(t, "localnet", s.URL(), s.WSURL())
}

// shimDir is the litesvm shim's directory.
func shimDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("litesvm-shim")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startLiteSVM runs `node server.js --port 0` and waits for its LISTENING
// line. Skips when node or the shim's node_modules are absent.
func startLiteSVM(t *testing.T) *backend {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: run scripts/ci/litesvm.sh (CI does)")
	}
	dir := shimDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "litesvm", "package.json")); err != nil {
		t.Skipf("litesvm shim dependencies are not installed (%v): run scripts/ci/litesvm.sh or `npm ci` in %s", err, dir)
	}
	cmd := exec.Command(node, "server.js", "--port", "0")
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe() // the shim exits when its stdin closes
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start litesvm shim: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				addr <- a
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case a := <-addr:
		return newBackend(t, "litesvm", "http://"+a, "ws://"+a)
	case err := <-done:
		t.Fatalf("litesvm shim exited before serving: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("litesvm shim did not report its address within 60s\n%s", stderr.String())
	}
	return nil
}

func newBackend(t *testing.T, name, url, wsURL string) *backend {
	t.Helper()
	cl := rpc.New(url)
	t.Cleanup(func() { cl.Close() })
	return &backend{name: name, url: url, wsURL: wsURL, rpc: cl}
}

// --- transactions ----------------------------------------------------------

func newKey(t *testing.T) solana.PrivateKey {
	t.Helper()
	k, err := solana.NewRandomPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (b *backend) blockhash(t *testing.T) solana.Hash {
	t.Helper()
	bh, err := b.rpc.GetLatestBlockhash(testCtx(t), rpc.CommitmentFinalized)
	if err != nil {
		t.Fatalf("%s: getLatestBlockhash: %v", b.name, err)
	}
	return bh.Value.Blockhash
}

// buildTx signs ixs paid by signers[0] under bh.
func buildTx(t *testing.T, bh solana.Hash, signers []solana.PrivateKey, ixs ...solana.Instruction) *solana.Transaction {
	t.Helper()
	tx, err := localnet.NewSignedTransaction(bh, signers, ixs...)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func (b *backend) send(t *testing.T, tx *solana.Transaction, skipPreflight bool) (solana.Signature, error) {
	t.Helper()
	return b.rpc.SendTransactionWithOpts(testCtx(t), tx, rpc.TransactionOpts{SkipPreflight: skipPreflight})
}

func (b *backend) mustSend(t *testing.T, tx *solana.Transaction, skipPreflight bool) solana.Signature {
	t.Helper()
	sig, err := b.send(t, tx, skipPreflight)
	if err != nil {
		t.Fatalf("%s: send: %v", b.name, describe(err))
	}
	return sig
}

// airdrop requests lamports for k and returns the landed status's error
// (JSON, "null" on success).
func (b *backend) airdrop(t *testing.T, k solana.PublicKey, lamports uint64) string {
	t.Helper()
	sig, err := b.rpc.RequestAirdrop(testCtx(t), k, lamports, rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("%s: airdrop %d: %v", b.name, lamports, describe(err))
	}
	st := b.status(t, sig)
	if st == nil {
		t.Fatalf("%s: airdrop %s has no status", b.name, sig)
	}
	return canon(st.Err)
}

// fund airdrops lamports to k and requires success.
func (b *backend) fund(t *testing.T, k solana.PublicKey, lamports uint64) {
	t.Helper()
	if e := b.airdrop(t, k, lamports); e != "null" {
		t.Fatalf("%s: airdrop of %d failed: %s", b.name, lamports, e)
	}
}

func (b *backend) balance(t *testing.T, k solana.PublicKey) uint64 {
	t.Helper()
	r, err := b.rpc.GetBalance(testCtx(t), k, rpc.CommitmentProcessed)
	if err != nil {
		t.Fatalf("%s: getBalance: %v", b.name, err)
	}
	return r.Value
}

// status is sig's status, nil when unknown.
func (b *backend) status(t *testing.T, sig solana.Signature) *rpc.SignatureStatusesResult {
	t.Helper()
	r, err := b.rpc.GetSignatureStatuses(testCtx(t), true, sig)
	if err != nil {
		t.Fatalf("%s: getSignatureStatuses: %v", b.name, err)
	}
	if len(r.Value) != 1 {
		t.Fatalf("%s: getSignatureStatuses: %d values for 1 signature", b.name, len(r.Value))
	}
	return r.Value[0]
}

// statusErr is sig's status error as canonical JSON, "null" on success and
// "unknown" when the signature has no status.
func (b *backend) statusErr(t *testing.T, sig solana.Signature) string {
	t.Helper()
	st := b.status(t, sig)
	if st == nil {
		return "unknown"
	}
	return canon(st.Err)
}

// call is a raw JSON-RPC call through solana-go's client.
func (b *backend) call(t *testing.T, method string, params ...any) (json.RawMessage, error) {
	t.Helper()
	var out json.RawMessage
	err := b.rpc.RPCCallForInto(testCtx(t), &out, method, params)
	return out, err
}

// --- normalisation ---------------------------------------------------------

// canon is v as canonical JSON (map keys sorted; solana-go decodes numbers
// as json.Number, which keeps their text).
func canon(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unmarshalable %T", v)
	}
	return string(b)
}

// rpcError is a JSON-RPC error as the tests compare it.
type rpcError struct {
	Code    int
	Message string
	// Err is data.err of a preflight failure (canonical JSON), "" otherwise.
	Err string
	// DataKeys are those of preflightKeys the data object has, sorted.
	DataKeys string
}

func (e rpcError) String() string { return canon(e) }

// errorOf extracts the JSON-RPC error solana-go returns; ok false when err
// is nil, a test failure when err is not a JSON-RPC error.
func errorOf(t *testing.T, b *backend, err error) (rpcError, bool) {
	t.Helper()
	if err == nil {
		return rpcError{}, false
	}
	var re *jsonrpc.RPCError
	if !errors.As(err, &re) {
		t.Fatalf("%s: want a JSON-RPC error, got %T %v", b.name, err, err)
	}
	out := rpcError{Code: re.Code, Message: re.Message}
	if m, ok := re.Data.(map[string]any); ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			if strings.Contains(","+preflightKeys+",", ","+k+",") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		out.DataKeys = strings.Join(keys, ",")
		if e, ok := m["err"]; ok {
			out.Err = canon(e)
		}
	}
	return out, true
}

func describe(err error) string {
	var re *jsonrpc.RPCError
	if errors.As(err, &re) {
		return canon(re)
	}
	return err.Error()
}
