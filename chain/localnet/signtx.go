package localnet

import (
	"errors"
	"fmt"

	"github.com/gagliardetto/solana-go"
)

// NewSignedTransaction builds a legacy transaction of ixs under blockhash bh,
// paid by signers[0], and signs it with every key of signers that the
// message names as a signer. It errors when signers is empty, the message
// cannot be built, or a required signature has no key among signers.
func NewSignedTransaction(bh solana.Hash, signers []solana.PrivateKey, ixs ...solana.Instruction) (*solana.Transaction, error) {
	if len(signers) == 0 {
		return nil, errors.New("build transaction: no fee payer")
	}
	tx, err := solana.NewTransaction(ixs, bh, solana.TransactionPayer(signers[0].PublicKey()))
	if err != nil {
		return nil, fmt.Errorf("build transaction: %w", err)
	}
	if _, err := tx.Sign(func(k solana.PublicKey) *solana.PrivateKey {
		for i := range signers {
			if signers[i].PublicKey() == k {
				return &signers[i]
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("sign transaction: %w", err)
	}
	return tx, nil
}
