// Package conformance holds the suite that plays the same system-level
// scenarios against the embedded localnet (package chain/localnet) and
// against litesvm, the real Solana SVM, and asserts that unmodified
// solana-go clients see identical outcomes: balances and their deltas, fees,
// error codes and classes, status and account shapes, notifications.
//
// litesvm runs inside a small Node JSON-RPC/WebSocket shim in
// litesvm-shim/ (server.js; `npm ci` there, scripts/ci/litesvm.sh in CI).
// The tests skip with the reason when node or the shim's node_modules are
// absent, and under -short. The package has no non-test code.
package conformance
