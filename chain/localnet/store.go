package localnet

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"
)

// The ledger file: one bbolt database, DataDir/ledger.db.
//
//	accounts:           pubkey (32 bytes) -> marshalAccount
//	signatures:         signature (64 bytes) -> statusRecord (JSON)
//	address_signatures: pubkey (32) | seq (8, big-endian) -> signature (64),
//	                    one entry per account key of each landed transaction
//	meta:               "schema" -> "1"; "chain" -> chainMeta (JSON); "market" -> pubkey
//
// Every commit is one bbolt transaction, fsynced before the caller replies;
// a landed transaction's status and its address_signatures entries are
// written in the same one. A ledger written before address_signatures
// existed gets it built from its stored transactions on open
// (indexLegacy).
var (
	bucketAccounts   = []byte("accounts")
	bucketSignatures = []byte("signatures")
	bucketAddrSigs   = []byte("address_signatures")
	bucketMeta       = []byte("meta")

	keySchema = []byte("schema")
	keyChain  = []byte("chain")
	keyMarket = []byte("market")
)

const schemaVersion = "1"

// ErrLedger is wrapped by every error reading a malformed ledger file.
var ErrLedger = errors.New("malformed localnet ledger")

// statusRecord is a landed transaction: the slot it landed in, its error
// (JSON null on success), the fee charged, its wire bytes and logs, its
// landing sequence number (1, 2, … in landing order across the ledger; 0 in
// records written before sequence numbers existed, until indexLegacy), the
// lamports of each account key before and after it, and the compute units
// it reported.
type statusRecord struct {
	Slot         uint64          `json:"slot"`
	Err          json.RawMessage `json:"err"`
	Fee          uint64          `json:"fee"`
	BlockTime    int64           `json:"blockTime"`
	Tx           []byte          `json:"tx"`
	Logs         []string        `json:"logs,omitempty"`
	Seq          uint64          `json:"seq,omitempty"`
	PreBalances  []uint64        `json:"preBalances,omitempty"`
	PostBalances []uint64        `json:"postBalances,omitempty"`
	Units        uint64          `json:"units,omitempty"`
}

func (r *statusRecord) failed() bool { return len(r.Err) > 0 && string(r.Err) != "null" }

// blockhashEntry is a blockhash and the block (slot, height) that issued it.
type blockhashEntry struct {
	Hash   solana.Hash `json:"hash"`
	Slot   uint64      `json:"slot"`
	Height uint64      `json:"height"`
}

// chainMeta is the clock of the ledger: current slot, block height and the
// recent blockhashes, oldest first.
type chainMeta struct {
	Slot        uint64           `json:"slot"`
	Height      uint64           `json:"height"`
	Blockhashes []blockhashEntry `json:"blockhashes"`
}

type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAccounts, bucketSignatures, bucketAddrSigs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: schema version %q, this build reads %q", ErrLedger, v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// ledgerState is everything the bank keeps, as loaded from disk.
type ledgerState struct {
	accounts map[solana.PublicKey]*Account
	statuses map[solana.Signature]*statusRecord
	chain    *chainMeta // nil on a fresh ledger
	market   *solana.PublicKey
	lastSeq  uint64 // highest landing sequence number (indexLegacy)
}

func (s *store) load() (*ledgerState, error) {
	st := &ledgerState{
		accounts: map[solana.PublicKey]*Account{},
		statuses: map[solana.Signature]*statusRecord{},
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			if len(k) != solana.PublicKeyLength {
				return fmt.Errorf("%w: account key of %d bytes", ErrLedger, len(k))
			}
			a, err := unmarshalAccount(v)
			if err != nil {
				return fmt.Errorf("%w: account %s: %v", ErrLedger, solana.PublicKeyFromBytes(k), err)
			}
			st.accounts[solana.PublicKeyFromBytes(k)] = a
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketSignatures).ForEach(func(k, v []byte) error {
			if len(k) != solana.SignatureLength {
				return fmt.Errorf("%w: signature key of %d bytes", ErrLedger, len(k))
			}
			var r statusRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: status of %s: %v", ErrLedger, solana.SignatureFromBytes(k), err)
			}
			st.statuses[solana.SignatureFromBytes(k)] = &r
			return nil
		})
		if err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyChain); v != nil {
			var c chainMeta
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("%w: chain meta: %v", ErrLedger, err)
			}
			if len(c.Blockhashes) == 0 {
				return fmt.Errorf("%w: chain meta holds no blockhash", ErrLedger)
			}
			st.chain = &c
		}
		if v := meta.Get(keyMarket); v != nil {
			if len(v) != solana.PublicKeyLength {
				return fmt.Errorf("%w: market key of %d bytes", ErrLedger, len(v))
			}
			m := solana.PublicKeyFromBytes(v)
			st.market = &m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// reset empties the ledger (an interrupted first start).
func (s *store) reset() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAccounts, bucketSignatures, bucketAddrSigs} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Delete(keyChain); err != nil {
			return err
		}
		return meta.Delete(keyMarket)
	})
}

// addrSigKey is the address_signatures key of addr's entry for the
// transaction with sequence number seq.
func addrSigKey(addr solana.PublicKey, seq uint64) []byte {
	k := make([]byte, solana.PublicKeyLength+8)
	copy(k, addr[:])
	binary.BigEndian.PutUint64(k[solana.PublicKeyLength:], seq)
	return k
}

// commit writes changed accounts (nil or zero lamports: deleted), an optional
// landed transaction's status with an address_signatures entry for each of
// its account keys (keys), and optional chain meta in one durable
// transaction.
func (s *store) commit(changes map[solana.PublicKey]*Account, sig *solana.Signature, rec *statusRecord, keys []solana.PublicKey, chain *chainMeta) error {
	var recJSON, chainJSON []byte
	var err error
	if rec != nil {
		if recJSON, err = json.Marshal(rec); err != nil {
			return fmt.Errorf("encode status: %w", err)
		}
	}
	if chain != nil {
		if chainJSON, err = json.Marshal(chain); err != nil {
			return fmt.Errorf("encode chain meta: %w", err)
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		accts := tx.Bucket(bucketAccounts)
		for k, a := range changes {
			if a == nil || a.Lamports == 0 {
				if err := accts.Delete(k[:]); err != nil {
					return err
				}
				continue
			}
			if err := accts.Put(k[:], marshalAccount(a)); err != nil {
				return err
			}
		}
		if sig != nil && rec != nil {
			if err := tx.Bucket(bucketSignatures).Put(sig[:], recJSON); err != nil {
				return err
			}
			idx := tx.Bucket(bucketAddrSigs)
			for _, k := range keys {
				if err := idx.Put(addrSigKey(k, rec.Seq), sig[:]); err != nil {
					return err
				}
			}
		}
		if chain != nil {
			if err := tx.Bucket(bucketMeta).Put(keyChain, chainJSON); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit ledger: %w", err)
	}
	return nil
}

func (s *store) saveMarket(m solana.PublicKey) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyMarket, m[:])
	})
}

// indexLegacy gives sequence numbers to records that lack one (a ledger
// written before address_signatures existed) and builds their
// address_signatures entries from their stored wire bytes, in one durable
// transaction, updating statuses in place. Such records are ordered by slot,
// then by signature bytes (the order they landed in within a slot was not
// recorded), after every record that has a sequence number. It returns the
// highest sequence number in statuses.
func (s *store) indexLegacy(statuses map[solana.Signature]*statusRecord) (uint64, error) {
	var last uint64
	var legacy []solana.Signature
	for sig, r := range statuses {
		if r.Seq == 0 {
			legacy = append(legacy, sig)
		}
		last = max(last, r.Seq)
	}
	if len(legacy) == 0 {
		return last, nil
	}
	sort.Slice(legacy, func(i, j int) bool {
		a, b := statuses[legacy[i]], statuses[legacy[j]]
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		return bytes.Compare(legacy[i][:], legacy[j][:]) < 0
	})
	updated := make(map[solana.Signature]*statusRecord, len(legacy))
	keys := make(map[solana.Signature][]solana.PublicKey, len(legacy))
	for _, sig := range legacy {
		w, err := decodeTx(statuses[sig].Tx)
		if err != nil {
			return 0, fmt.Errorf("%w: stored transaction %s: %v", ErrLedger, sig, err)
		}
		last++
		r := *statuses[sig]
		r.Seq = last
		updated[sig] = &r
		keys[sig] = w.keys
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		sigs, idx := tx.Bucket(bucketSignatures), tx.Bucket(bucketAddrSigs)
		for sig, r := range updated {
			b, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode status: %w", err)
			}
			if err := sigs.Put(sig[:], b); err != nil {
				return err
			}
			for _, k := range keys[sig] {
				if err := idx.Put(addrSigKey(k, r.Seq), sig[:]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("index stored transactions: %w", err)
	}
	for sig, r := range updated {
		statuses[sig] = r
	}
	return last, nil
}

// signaturesFor walks addr's address_signatures entries newest first,
// strictly below sequence number below and strictly above above, calling
// visit for each until it returns false.
func (s *store) signaturesFor(addr solana.PublicKey, below, above uint64, visit func(sig solana.Signature) bool) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAddrSigs).Cursor()
		k, v := c.Seek(addrSigKey(addr, below))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			if len(k) != solana.PublicKeyLength+8 || len(v) != solana.SignatureLength {
				return fmt.Errorf("%w: address_signatures entry of %d/%d bytes", ErrLedger, len(k), len(v))
			}
			if !bytes.Equal(k[:solana.PublicKeyLength], addr[:]) {
				return nil
			}
			if binary.BigEndian.Uint64(k[solana.PublicKeyLength:]) <= above {
				return nil
			}
			if !visit(solana.SignatureFromBytes(v)) {
				return nil
			}
		}
		return nil
	})
}
