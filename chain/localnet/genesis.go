package localnet

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	computebudget "github.com/gagliardetto/solana-go/programs/compute-budget"
	"github.com/gagliardetto/solana-go/programs/system"

	"github.com/hypernode-sol/worker/chain"
)

// Files under DataDir.
const (
	ledgerFile    = "ledger.db"
	authorityFile = "market-authority.json" // Solana CLI keypair format, 0600
	faucetFile    = "faucet.json"           // Solana CLI keypair format, 0600
)

// authorityFunding is what the market authority receives at genesis: enough
// for the market account's rent and fees (lamports).
const authorityFunding = 10 * solana.LAMPORTS_PER_SOL

// stakeSeedAmount and stakeSeedDuration fill the seeded stake accounts'
// informational fields.
const (
	stakeSeedAmount   = 1_000 * solana.LAMPORTS_PER_SOL
	stakeSeedDuration = 365 * 24 * 3600
)

// readKeypair reads a Solana CLI keypair file (a JSON array of 64 bytes).
// The error never quotes the file's content.
func readKeypair(path string) (solana.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b []byte
	var nums []int
	if err := json.Unmarshal(raw, &nums); err != nil {
		return nil, fmt.Errorf("keypair %s: not a JSON array of bytes", path)
	}
	if len(nums) != 64 {
		return nil, fmt.Errorf("keypair %s: %d bytes, want 64", path, len(nums))
	}
	for _, n := range nums {
		if n < 0 || n > 255 {
			return nil, fmt.Errorf("keypair %s: element out of byte range", path)
		}
		b = append(b, byte(n))
	}
	k := solana.PrivateKey(b)
	if !k.IsValid() {
		return nil, fmt.Errorf("keypair %s: invalid ed25519 key", path)
	}
	return k, nil
}

// writeKeypair writes k as a Solana CLI keypair file, mode 0600, atomically
// (temp file, fsync, rename).
func writeKeypair(path string, k solana.PrivateKey) error {
	nums := make([]int, len(k))
	for i, c := range k {
		nums[i] = int(c)
	}
	data, err := json.Marshal(nums)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".keypair-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadOrCreateKeypair returns the keypair in path, creating it when absent.
func loadOrCreateKeypair(path string) (solana.PrivateKey, error) {
	k, err := readKeypair(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err = solana.NewRandomPrivateKey()
	if err != nil {
		return nil, err
	}
	if err := writeKeypair(path, k); err != nil {
		return nil, fmt.Errorf("write keypair %s: %w", path, err)
	}
	return k, nil
}

// faucetTransfer is the faucet's airdrop transaction. The compute unit price
// (ignored by the localnet) carries nonce so that equal airdrops under one
// blockhash still have distinct signatures.
func faucetTransfer(faucet solana.PrivateKey, to solana.PublicKey, lamports uint64, nonce uint64, bh solana.Hash) (*solana.Transaction, error) {
	tx, err := NewSignedTransaction(bh, []solana.PrivateKey{faucet},
		computebudget.NewSetComputeUnitPriceInstruction(nonce).Build(),
		system.NewTransferInstruction(lamports, faucet.PublicKey(), to).Build())
	if err != nil {
		return nil, fmt.Errorf("airdrop: %w", err)
	}
	return tx, nil
}

func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

// programAccounts are the executable accounts of the programs the localnet
// runs or knows.
func programAccounts(marketsID, stakingID solana.PublicKey) map[solana.PublicKey]*Account {
	native := func(name string) *Account {
		return &Account{Lamports: 1, Owner: nativeLoaderID, Executable: true, Data: []byte(name)}
	}
	bpf := func(id solana.PublicKey) *Account {
		pd, _, _ := solana.FindProgramAddress([][]byte{id[:]}, solana.BPFLoaderUpgradeableProgramID)
		data := make([]byte, 36)
		data[0] = 2 // UpgradeableLoaderState::Program
		copy(data[4:], pd[:])
		return &Account{Lamports: rentExemptMinimum(36), Owner: solana.BPFLoaderUpgradeableProgramID, Executable: true, Data: data}
	}
	return map[solana.PublicKey]*Account{
		solana.SystemProgramID: native("system_program"),
		solana.ComputeBudget:   native("compute_budget_program"),
		marketsID:              bpf(marketsID),
		stakingID:              bpf(stakingID),
	}
}

// stakeAccount is an active stake account of node holding xhyper.
func stakeAccount(staking, node solana.PublicKey, xhyper bin.Uint128, active bool, now int64) (solana.PublicKey, *Account, error) {
	key, bump, err := chain.StakePDA(staking, node)
	if err != nil {
		return solana.PublicKey{}, nil, fmt.Errorf("stake PDA of %s: %w", node, err)
	}
	st := &chain.Stake{
		Authority: node, Xhyper: xhyper, Amount: stakeSeedAmount,
		TimeStake: now, Duration: stakeSeedDuration, Bump: bump,
	}
	if !active {
		st.TimeUnstake = now
	}
	data, err := st.Encode()
	if err != nil {
		return solana.PublicKey{}, nil, fmt.Errorf("encode stake of %s: %w", node, err)
	}
	return key, &Account{Lamports: rentExemptMinimum(uint64(len(data))), Owner: staking, Data: data}, nil
}

// createMarket lands create_market for a new market keypair, signed by the
// authority, funding the authority from the faucet first.
func (b *bank) createMarket(authority solana.PrivateKey, price uint64, timeout int64, min bin.Uint128) (solana.PublicKey, error) {
	if _, err := b.airdrop(authority.PublicKey(), authorityFunding); err != nil {
		return solana.PublicKey{}, fmt.Errorf("fund market authority: %w", err)
	}
	market, err := solana.NewRandomPrivateKey()
	if err != nil {
		return solana.PublicKey{}, err
	}
	vault, _, err := chain.VaultPDA(b.marketsID, market.PublicKey())
	if err != nil {
		return solana.PublicKey{}, fmt.Errorf("vault PDA: %w", err)
	}
	_, bh, _ := b.latestBlockhash()
	tx, err := NewSignedTransaction(bh, []solana.PrivateKey{authority, market},
		chain.NewCreateMarketInstruction(b.marketsID, market.PublicKey(), authority.PublicKey(), vault, price, timeout, min))
	if err != nil {
		return solana.PublicKey{}, fmt.Errorf("create_market: %w", err)
	}
	raw, err := tx.MarshalBinary()
	if err != nil {
		return solana.PublicKey{}, err
	}
	w, err := decodeTx(raw)
	if err != nil {
		return solana.PublicKey{}, fmt.Errorf("decode create_market: %w", err)
	}
	res, err := b.process(w, true, false, true)
	if err != nil {
		return solana.PublicKey{}, err
	}
	if res.err != nil {
		return solana.PublicKey{}, fmt.Errorf("create_market: %w (logs: %v)", res.err, res.logs)
	}
	return market.PublicKey(), nil
}
