package localnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gagliardetto/solana-go"
)

// Account is one ledger account. An account with zero lamports does not
// exist: it is dropped from the ledger when a transaction leaves it empty.
type Account struct {
	Lamports   uint64
	Owner      solana.PublicKey
	Executable bool
	Data       []byte
}

func (a *Account) clone() *Account {
	c := *a
	c.Data = bytes.Clone(a.Data)
	return &c
}

func (a *Account) equal(b *Account) bool {
	return a.Lamports == b.Lamports && a.Owner == b.Owner && a.Executable == b.Executable && bytes.Equal(a.Data, b.Data)
}

// rentExemptMinimum is Solana's rent-exempt balance for an account holding
// size data bytes: (128 + size) * 3480 lamports/byte-year * 2 years.
func rentExemptMinimum(size uint64) uint64 { return (128 + size) * 3480 * 2 }

// maxAccountData is the largest account data Solana allows (10 MiB).
const maxAccountData = 10 << 20

// Stored account layout: lamports u64 LE | owner [32] | executable u8 | data.
const accountHeaderSize = 8 + 32 + 1

var errStoredAccount = errors.New("malformed stored account")

func marshalAccount(a *Account) []byte {
	out := make([]byte, accountHeaderSize+len(a.Data))
	binary.LittleEndian.PutUint64(out[0:8], a.Lamports)
	copy(out[8:40], a.Owner[:])
	if a.Executable {
		out[40] = 1
	}
	copy(out[accountHeaderSize:], a.Data)
	return out
}

func unmarshalAccount(b []byte) (*Account, error) {
	if len(b) < accountHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", errStoredAccount, len(b), accountHeaderSize)
	}
	if b[40] > 1 {
		return nil, fmt.Errorf("%w: executable flag %d", errStoredAccount, b[40])
	}
	if len(b)-accountHeaderSize > maxAccountData {
		return nil, fmt.Errorf("%w: %d data bytes", errStoredAccount, len(b)-accountHeaderSize)
	}
	a := &Account{
		Lamports:   binary.LittleEndian.Uint64(b[0:8]),
		Executable: b[40] == 1,
		Data:       bytes.Clone(b[accountHeaderSize:]),
	}
	copy(a.Owner[:], b[8:40])
	return a, nil
}
