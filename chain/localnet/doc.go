// Package localnet is the embedded local Solana market: a loopback
// Solana-JSON-RPC-compatible server (HTTP and WebSocket on one port) that
// unmodified solana-go clients talk to, executing System, Compute Budget and
// Hypernode Markets program instructions exactly as
// shared/spec/markets-program.md describes, with its ledger (accounts,
// landed transactions and their per-address index, slot, recent blockhashes)
// persisted in bbolt so that jobs and their history survive a restart.
//
// File map: server.go (Config, Start, lifecycle, slot ticker), rpc.go (JSON-RPC
// envelope and dispatch), rpc_methods.go (HTTP methods), ws.go
// (subscriptions), history.go (getSignaturesForAddress, getTransaction),
// bank.go (accounts, blockhashes, atomic transaction apply),
// txn.go (wire decoding and sanitizing), txerror.go (Solana's error shapes),
// runtime.go (instruction context and the runtime's account rules),
// system.go (System and Compute Budget programs), markets.go and
// markets_ix.go (Markets program), account.go, store.go (bbolt), genesis.go
// (first start), faults.go (faults on demand: latency, 429/503, dropped
// and land-but-error sends, fast blockhash expiry, no WebSocket; traffic
// counters; the loopback admin endpoint /admin/faults), post.go (a client helper that posts a job), count.go (a
// client helper that lists and counts the Markets instructions that landed
// for an account, from the chain's history alone).
//
// Deliberate simplifications: every read sees the latest (processed) state
// whatever commitment is asked (getSignaturesForAddress and getTransaction
// refuse processed, as Solana does, yet list and return processed
// transactions; each entry's confirmationStatus is its true level);
// getTransaction reports no inner instructions, token balances or rewards
// (always empty); account and program notifications are sent
// when a transaction lands, whatever their commitment (signature
// notifications do honour processed / confirmed / finalized); rent is not
// collected (getMinimumBalanceForRentExemption uses Solana's formula), yet
// Solana's rent-state rule holds: no transaction may leave an account with
// lamports below its rent-exempt minimum (InsufficientFundsForRent);
// priority fees are charged as Solana does (ceil(limit·price/1e6) lamports
// on top of 5 000 per signature, see prioritizationFee) but compute units
// are not metered; v0 transactions with address table lookups
// are refused; account data encodings are base64 (also the default and the
// answer to jsonParsed) and base58.
package localnet
