package chain

import (
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/gagliardetto/solana-go"
)

// ErrKeypair is wrapped by every keypair loading error.
var ErrKeypair = errors.New("keypair")

// LoadKeypair reads a Solana CLI keypair file: a JSON array of 64 byte values
// (the ed25519 seed then the public key). It refuses a file that the group or
// others may read, and one whose public half does not match its seed. Errors
// wrap ErrKeypair and never contain key material.
func LoadKeypair(path string) (solana.PrivateKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w file %s does not exist (create one with `solana-keygen new --outfile %s`)", ErrKeypair, path, path)
		}
		return nil, fmt.Errorf("%w file %s: %v", ErrKeypair, path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w file %s is not a regular file", ErrKeypair, path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w file %s is readable by group or others (mode %04o); run `chmod 600 %s`", ErrKeypair, path, perm, path)
	}
	if info.Size() > 4096 {
		return nil, fmt.Errorf("%w file %s is %d bytes, too large for a keypair", ErrKeypair, path, info.Size())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w file %s: %v", ErrKeypair, path, err)
	}
	return ParseKeypair(raw, path)
}

// ParseKeypair parses the JSON form of LoadKeypair; name labels errors.
func ParseKeypair(raw []byte, name string) (solana.PrivateKey, error) {
	var ints []int
	if err := json.Unmarshal(raw, &ints); err != nil {
		return nil, fmt.Errorf("%w file %s is not a JSON array of 64 numbers", ErrKeypair, name)
	}
	if len(ints) != 64 {
		return nil, fmt.Errorf("%w file %s holds %d numbers, want 64", ErrKeypair, name, len(ints))
	}
	key := make([]byte, 64)
	for i, v := range ints {
		if v < 0 || v > 255 {
			return nil, fmt.Errorf("%w file %s: entry %d is not a byte", ErrKeypair, name, i)
		}
		key[i] = byte(v)
	}
	// solana-go's Validate only checks that the public half is on the
	// curve; derive it from the seed and compare.
	derived := ed25519.NewKeyFromSeed(key[:32])
	if subtle.ConstantTimeCompare(derived[32:], key[32:]) != 1 {
		return nil, fmt.Errorf("%w file %s: public key does not match the secret half", ErrKeypair, name)
	}
	return solana.PrivateKey(key), nil
}

// WriteKeypair writes key in the Solana CLI format with mode 0600, creating
// the file; it refuses to overwrite an existing file.
func WriteKeypair(path string, key solana.PrivateKey) error {
	ints := make([]int, len(key))
	for i, b := range key {
		ints[i] = int(b)
	}
	b, _ := json.Marshal(ints)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%w file %s: %v", ErrKeypair, path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
