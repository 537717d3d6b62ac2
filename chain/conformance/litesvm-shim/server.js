'use strict';
// A Solana JSON-RPC (HTTP) and PubSub (WebSocket) front for litesvm, the
// real Solana SVM packaged as a library, so that the chain/conformance tests
// can drive it with unmodified solana-go clients exactly as they drive the
// embedded localnet.
//
// litesvm decides every execution outcome (signature checks, blockhash and
// duplicate checks, fees, System program semantics, rent-state rules,
// account encodings). This file only adds what a validator's RPC layer adds
// around the bank, written after Agave's rpc crate: the JSON-RPC envelope
// and error codes, preflight simulation (-32002), signature verification
// before preflight (-32003), the {context, value} wrapper, slots and
// subscriptions. litesvm has no blocks: the shim advances one slot per landed
// transaction and treats every landed transaction as finalized.
//
// Usage: node server.js [--port N]  (127.0.0.1 only; port 0 picks one).
// Prints one line "LISTENING 127.0.0.1:PORT" on stdout once it serves.

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const { LiteSvm } = require('litesvm/dist/internal');

// ---------------------------------------------------------------- base58 --

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
const B58_INDEX = new Map([...B58].map((c, i) => [c, BigInt(i)]));

function b58encode(bytes) {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = '';
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = '1' + out;
  }
  return out;
}

// b58decode returns the bytes, or null when s is not base58.
function b58decode(s) {
  if (typeof s !== 'string') return null;
  let n = 0n;
  for (const c of s) {
    const v = B58_INDEX.get(c);
    if (v === undefined) return null;
    n = n * 58n + v;
  }
  const body = [];
  while (n > 0n) {
    body.unshift(Number(n % 256n));
    n /= 256n;
  }
  let zeros = 0;
  while (zeros < s.length && s[zeros] === '1') zeros++;
  return Uint8Array.from([...new Array(zeros).fill(0), ...body]);
}

// ------------------------------------------------------------------ JSON --

// Raw is JSON text written as is (echoed request ids).
class Raw {
  constructor(text) {
    this.text = text;
  }
}

// enc writes JSON with BigInt as exact integers (u64 lamports and
// rentEpoch do not fit a double) and Raw verbatim.
function enc(v) {
  if (v === null || v === undefined) return 'null';
  if (v instanceof Raw) return v.text;
  switch (typeof v) {
    case 'bigint':
      return v.toString();
    case 'number':
    case 'boolean':
    case 'string':
      return JSON.stringify(v);
  }
  if (Array.isArray(v)) return '[' + v.map(enc).join(',') + ']';
  const parts = [];
  for (const [k, x] of Object.entries(v)) {
    if (x !== undefined) parts.push(JSON.stringify(k) + ':' + enc(x));
  }
  return '{' + parts.join(',') + '}';
}

// skipValue returns the index just past the JSON value starting at i.
function skipValue(t, i) {
  const c = t[i];
  if (c === '"') {
    for (i++; i < t.length; i++) {
      if (t[i] === '\\') i++;
      else if (t[i] === '"') return i + 1;
    }
    return t.length;
  }
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < t.length; i++) {
      const d = t[i];
      if (d === '"') {
        i = skipValue(t, i) - 1;
      } else if (d === '{' || d === '[') {
        depth++;
      } else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return t.length;
  }
  while (i < t.length && !',}] \t\r\n'.includes(t[i])) i++;
  return i;
}

function skipWS(t, i) {
  while (i < t.length && ' \t\r\n'.includes(t[i])) i++;
  return i;
}

// rawMember returns the raw JSON text of member key of the object t (valid
// JSON), or undefined: ids are echoed byte for byte (solana-go's websocket
// ids are 64-bit and would lose precision through a double).
function rawMember(t, key) {
  let i = skipWS(t, 0);
  if (t[i] !== '{') return undefined;
  i = skipWS(t, i + 1);
  while (i < t.length && t[i] === '"') {
    const end = skipValue(t, i);
    const name = JSON.parse(t.slice(i, end));
    i = skipWS(t, end);
    i = skipWS(t, i + 1); // ':'
    const vend = skipValue(t, i);
    if (name === key) return t.slice(i, vend);
    i = skipWS(t, vend);
    if (t[i] === ',') i = skipWS(t, i + 1);
  }
  return undefined;
}

// splitArray returns the raw texts of the elements of the JSON array t.
function splitArray(t) {
  const out = [];
  let i = skipWS(t, t.indexOf('[') + 1);
  while (i < t.length && t[i] !== ']') {
    const end = skipValue(t, i);
    out.push(t.slice(i, end));
    i = skipWS(t, end);
    if (t[i] === ',') i = skipWS(t, i + 1);
  }
  return out;
}

// ---------------------------------------------------------------- errors --

class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

const invalidParams = (m) => new RpcError(-32602, m);
const PARSE_ERROR = new RpcError(-32700, 'Parse error');
const INVALID_REQUEST = new RpcError(-32600, 'Invalid request');

// TransactionErrorFieldless, in litesvm's order.
const TX_ERRORS = [
  'AccountInUse', 'AccountLoadedTwice', 'AccountNotFound', 'ProgramAccountNotFound',
  'InsufficientFundsForFee', 'InvalidAccountForFee', 'AlreadyProcessed', 'BlockhashNotFound',
  'CallChainTooDeep', 'MissingSignatureForFee', 'InvalidAccountIndex', 'SignatureFailure',
  'InvalidProgramForExecution', 'SanitizeFailure', 'ClusterMaintenance', 'AccountBorrowOutstanding',
  'WouldExceedMaxBlockCostLimit', 'UnsupportedVersion', 'InvalidWritableAccount',
  'WouldExceedMaxAccountCostLimit', 'WouldExceedAccountDataBlockLimit', 'TooManyAccountLocks',
  'AddressLookupTableNotFound', 'InvalidAddressLookupTableOwner', 'InvalidAddressLookupTableData',
  'InvalidAddressLookupTableIndex', 'InvalidRentPayingAccount', 'WouldExceedMaxVoteCostLimit',
  'WouldExceedAccountDataTotalLimit', 'MaxLoadedAccountsDataSizeExceeded', 'ResanitizationNeeded',
  'InvalidLoadedAccountsDataSizeLimit', 'UnbalancedTransaction', 'ProgramCacheHitMaxLimit',
  'CommitCancelled',
];

// Display texts of Agave's TransactionError variants the tests meet.
const TX_MESSAGES = {
  AccountInUse: 'Account in use',
  AccountLoadedTwice: 'Account loaded twice',
  AccountNotFound: 'Attempt to debit an account but found no record of a prior credit.',
  ProgramAccountNotFound: 'Attempt to load a program that does not exist',
  InsufficientFundsForFee: 'Insufficient funds for fee',
  InvalidAccountForFee: 'This account may not be used to pay transaction fees',
  AlreadyProcessed: 'This transaction has already been processed',
  BlockhashNotFound: 'Blockhash not found',
  SignatureFailure: 'Transaction did not pass signature verification',
  InvalidProgramForExecution: 'Attempt to load a program that is not executable',
  SanitizeFailure: 'Transaction failed to sanitize accounts offsets correctly',
};

// InstructionErrorFieldless, in litesvm's order.
const IX_ERRORS = [
  'GenericError', 'InvalidArgument', 'InvalidInstructionData', 'InvalidAccountData',
  'AccountDataTooSmall', 'InsufficientFunds', 'IncorrectProgramId', 'MissingRequiredSignature',
  'AccountAlreadyInitialized', 'UninitializedAccount', 'UnbalancedInstruction', 'ModifiedProgramId',
  'ExternalAccountLamportSpend', 'ExternalAccountDataModified', 'ReadonlyLamportChange',
  'ReadonlyDataModified', 'DuplicateAccountIndex', 'ExecutableModified', 'RentEpochModified',
  'NotEnoughAccountKeys', 'AccountDataSizeChanged', 'AccountNotExecutable', 'AccountBorrowFailed',
  'AccountBorrowOutstanding', 'DuplicateAccountOutOfSync', 'InvalidError', 'ExecutableDataModified',
  'ExecutableLamportChange', 'ExecutableAccountNotRentExempt', 'UnsupportedProgramId', 'CallDepth',
  'MissingAccount', 'ReentrancyNotAllowed', 'MaxSeedLengthExceeded', 'InvalidSeeds', 'InvalidRealloc',
  'ComputationalBudgetExceeded', 'PrivilegeEscalation', 'ProgramEnvironmentSetupFailure',
  'ProgramFailedToComplete', 'ProgramFailedToCompile', 'Immutable', 'IncorrectAuthority',
  'AccountNotRentExempt', 'InvalidAccountOwner', 'ArithmeticOverflow', 'UnsupportedSysvar',
  'IllegalOwner', 'MaxAccountsDataAllocationsExceeded', 'MaxAccountsExceeded',
  'MaxInstructionTraceLengthExceeded', 'BuiltinProgramsMustConsumeComputeUnits', 'BorshIoError',
];

const IX_MESSAGES = {
  GenericError: 'generic instruction error',
  InvalidArgument: 'invalid program argument',
  InvalidInstructionData: 'invalid instruction data',
  InvalidAccountData: 'invalid account data for instruction',
  InsufficientFunds: 'insufficient funds for instruction',
  MissingRequiredSignature: 'missing required signature for instruction',
  NotEnoughAccountKeys: 'insufficient account keys for instruction',
};

// txError converts litesvm's error to {json, text}: the JSON the RPC puts
// in "err" and Agave's Display text of it.
function txError(e) {
  if (typeof e === 'number') {
    const name = TX_ERRORS[e] || `TransactionError${e}`;
    return { json: name, text: TX_MESSAGES[name] || name };
  }
  switch (e && e.constructor && e.constructor.name) {
    case 'TransactionErrorInstructionError': {
      const ie = e.err();
      let json;
      let text;
      if (typeof ie === 'number') {
        json = IX_ERRORS[ie] || `InstructionError${ie}`;
        text = IX_MESSAGES[json] || json;
      } else if (ie && ie.constructor.name === 'InstructionErrorCustom') {
        json = { Custom: ie.code };
        text = `custom program error: 0x${ie.code.toString(16)}`;
      } else {
        json = { BorshIoError: String(ie && ie.msg) };
        text = 'Failed to serialize or deserialize account data';
      }
      return { json: { InstructionError: [e.index, json] }, text: `Error processing Instruction ${e.index}: ${text}` };
    }
    case 'TransactionErrorDuplicateInstruction':
      return { json: { DuplicateInstruction: e.index }, text: `Transaction contains a duplicate instruction (${e.index}) that is not allowed` };
    case 'TransactionErrorInsufficientFundsForRent':
      return {
        json: { InsufficientFundsForRent: { account_index: e.accountIndex } },
        text: `Transaction results in an account (${e.accountIndex}) with insufficient funds for rent`,
      };
    case 'TransactionErrorProgramExecutionTemporarilyRestricted':
      return {
        json: { ProgramExecutionTemporarilyRestricted: { account_index: e.accountIndex } },
        text: `Execution of the program referenced by account at index ${e.accountIndex} is temporarily restricted.`,
      };
  }
  return { json: String(e), text: String(e) };
}

// ----------------------------------------------------------- transactions --

const PACKET_DATA_SIZE = 1232;
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');

function shortVec(buf, off) {
  let v = 0;
  for (let shift = 0; shift <= 14; shift += 7) {
    if (off >= buf.length) throw new Error('io error: unexpected end of file');
    const b = buf[off++];
    v |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [v, off];
  }
  throw new Error('invalid compact-u16');
}

function take(buf, off, n) {
  if (off + n > buf.length) throw new Error('io error: unexpected end of file');
  return [buf.subarray(off, off + n), off + n];
}

// parseTx decodes a wire transaction (legacy or v0) far enough to verify
// its signatures: throws on malformed bytes.
function parseTx(raw) {
  let [n, off] = shortVec(raw, 0);
  const sigs = [];
  for (let i = 0; i < n; i++) {
    let s;
    [s, off] = take(raw, off, 64);
    sigs.push(s);
  }
  const message = raw.subarray(off);
  let m = 0;
  let versioned = false;
  if (message.length > 0 && message[0] & 0x80) {
    versioned = true;
    if ((message[0] & 0x7f) !== 0) throw new Error('unsupported transaction version');
    m = 1;
  }
  let header;
  [header, m] = take(message, m, 3);
  let nk;
  [nk, m] = shortVec(message, m);
  const keys = [];
  for (let i = 0; i < nk; i++) {
    let k;
    [k, m] = take(message, m, 32);
    keys.push(k);
  }
  let blockhash;
  [blockhash, m] = take(message, m, 32);
  let ni;
  [ni, m] = shortVec(message, m);
  for (let i = 0; i < ni; i++) {
    let na;
    let nd;
    [, m] = take(message, m, 1);
    [na, m] = shortVec(message, m);
    [, m] = take(message, m, na);
    [nd, m] = shortVec(message, m);
    [, m] = take(message, m, nd);
  }
  return { raw, sigs, message, numRequired: header[0], keys, blockhash, versioned };
}

// sanitizeError is Agave's sanitize check of the signature and key counts.
function sanitizeError(tx) {
  if (tx.numRequired > tx.sigs.length || tx.sigs.length > tx.keys.length) return 'index out of bounds';
  return null;
}

function verifySignatures(tx) {
  for (let i = 0; i < tx.sigs.length; i++) {
    try {
      const key = crypto.createPublicKey({ key: Buffer.concat([ED25519_SPKI, tx.keys[i]]), format: 'der', type: 'spki' });
      if (!crypto.verify(null, tx.message, key, tx.sigs[i])) return false;
    } catch (_) {
      return false;
    }
  }
  return true;
}

// ----------------------------------------------------------------- state --

const svm = new LiteSvm();
let slot = svm.getClock().slot;
const statuses = new Map(); // signature (base58) -> {slot, err (json or null)}
const subscriptions = new Map(); // id -> {kind, ws, ...}
let nextSubscription = 0;

function contextOf(value) {
  return { context: { slot }, value };
}

function parsePubkey(s) {
  const b = b58decode(s);
  if (b === null || s === '') throw invalidParams('Invalid param: Invalid');
  if (b.length !== 32) throw invalidParams('Invalid param: WrongSize');
  return b;
}

function accountJSON(acct, encoding, dataSlice) {
  let data = Buffer.from(acct.data());
  const space = data.length;
  if (dataSlice) {
    const o = Math.min(dataSlice.offset || 0, data.length);
    data = data.subarray(o, dataSlice.length === undefined ? undefined : o + dataSlice.length);
  }
  let encoded;
  if (encoding === 'base58') {
    if (data.length > 128) {
      throw new RpcError(-32600, 'Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding.');
    }
    encoded = [b58encode(data), 'base58'];
  } else {
    encoded = [data.toString('base64'), 'base64'];
  }
  return {
    data: encoded,
    executable: acct.executable(),
    lamports: acct.lamports(),
    owner: b58encode(acct.owner()),
    rentEpoch: acct.rentEpoch(),
    space: BigInt(space),
  };
}

function accountEncoding(cfg) {
  const e = (cfg && cfg.encoding) || 'base64';
  if (!['base64', 'base58', 'jsonParsed', 'base64+zstd'].includes(e)) {
    throw invalidParams(`Invalid params: unknown variant \`${e}\`.`);
  }
  if (e === 'base64+zstd') throw invalidParams('the shim serves base64 and base58');
  return e === 'jsonParsed' ? 'base64' : e;
}

function getAccount(key) {
  const a = svm.getAccount(key);
  return a && a.lamports() > 0n ? a : null;
}

function matchesFilters(acct, filters) {
  const data = Buffer.from(acct.data());
  for (const f of filters || []) {
    if (f.dataSize !== undefined) {
      if (data.length !== f.dataSize) return false;
    } else if (f.memcmp) {
      const bytes = f.memcmp.encoding === 'base64' ? Buffer.from(f.memcmp.bytes, 'base64') : Buffer.from(b58decode(f.memcmp.bytes) || []);
      const off = f.memcmp.offset;
      if (off + bytes.length > data.length || !data.subarray(off, off + bytes.length).equals(bytes)) return false;
    } else {
      throw invalidParams('Invalid params: unknown filter.');
    }
  }
  return true;
}

// land records a transaction the SVM committed (success, or failure with
// the fee charged), advances the slot and notifies subscribers.
function land(sig, err) {
  slot += 1n;
  svm.warpToSlot(slot);
  statuses.set(sig, { slot, err });
  notify(sig, err);
}

// submit hands raw to the SVM; returns {sig, landed}.
function submit(tx) {
  const sig = b58encode(tx.sigs[0]);
  const r = tx.versioned ? svm.sendVersionedTransaction(tx.raw) : svm.sendLegacyTransaction(tx.raw);
  const failed = r.constructor.name === 'FailedTransactionMetadata';
  if (!statuses.has(sig) && svm.getTransaction(tx.sigs[0]) !== null) {
    land(sig, failed ? txError(r.err()).json : null);
    return { sig, landed: true };
  }
  return { sig, landed: false };
}

function decodeWire(encoded, encoding) {
  let raw;
  if (typeof encoded !== 'string') throw invalidParams('Invalid params: invalid type: expected a string.');
  switch (encoding || 'base58') {
    case 'base58':
      if (encoded.length > 1683) throw invalidParams(`base58 encoded solana_transaction::versioned::VersionedTransaction too large: ${encoded.length} bytes (max: encoded/raw 1683/${PACKET_DATA_SIZE})`);
      raw = b58decode(encoded);
      if (raw === null) throw invalidParams('invalid base58 encoding: InvalidCharacter');
      break;
    case 'base64':
      if (encoded.length > 1644) throw invalidParams(`base64 encoded solana_transaction::versioned::VersionedTransaction too large: ${encoded.length} bytes (max: encoded/raw 1644/${PACKET_DATA_SIZE})`);
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 !== 0) throw invalidParams('invalid base64 encoding: InvalidByte');
      raw = Buffer.from(encoded, 'base64');
      break;
    default:
      throw invalidParams(`Invalid params: unknown variant \`${encoding}\`.`);
  }
  let tx;
  try {
    tx = parseTx(Buffer.from(raw));
  } catch (e) {
    throw invalidParams(`failed to deserialize solana_transaction::versioned::VersionedTransaction: ${e.message}`);
  }
  const bad = sanitizeError(tx);
  if (bad) throw invalidParams(`invalid transaction: Transaction failed to sanitize accounts offsets correctly`);
  return tx;
}

function simulate(tx) {
  const r = tx.versioned ? svm.simulateVersionedTransaction(tx.raw) : svm.simulateLegacyTransaction(tx.raw);
  const meta = r.meta();
  const out = { err: null, logs: meta.logs(), unitsConsumed: meta.computeUnitsConsumed() };
  if (r.constructor.name === 'FailedTransactionMetadata') {
    const e = txError(r.err());
    out.err = e.json;
    out.text = e.text;
  }
  return out;
}

// ---------------------------------------------------------------- methods --

function args(params, min, max) {
  if (params === undefined || params === null) params = [];
  if (!Array.isArray(params)) throw invalidParams('Invalid params: invalid type: map, expected a sequence.');
  if (params.length < min) throw invalidParams(`\`params\` should have at least ${min} argument(s)`);
  if (params.length > max) throw invalidParams(`Invalid params: invalid length ${params.length}, expected at most ${max}.`);
  return params;
}

function commitmentCheck(cfg) {
  const c = cfg && cfg.commitment;
  if (c !== undefined && !['processed', 'confirmed', 'finalized', 'recent', 'single', 'singleGossip', 'root', 'max'].includes(c)) {
    throw invalidParams(`Invalid params: unknown variant \`${c}\`.`);
  }
}

const methods = {
  getHealth: () => 'ok',
  getVersion: () => ({ 'solana-core': 'litesvm-' + require('litesvm/package.json').version, 'feature-set': 0 }),
  getSlot: (p) => {
    commitmentCheck(args(p, 0, 1)[0]);
    return slot;
  },
  getBlockHeight: (p) => {
    commitmentCheck(args(p, 0, 1)[0]);
    return slot;
  },
  getLatestBlockhash: (p) => {
    commitmentCheck(args(p, 0, 1)[0]);
    return contextOf({ blockhash: svm.latestBlockhash(), lastValidBlockHeight: slot + 150n });
  },
  isBlockhashValid: (p) => {
    const [h, cfg] = args(p, 1, 2);
    commitmentCheck(cfg);
    const b = b58decode(h);
    if (b === null || b.length !== 32) throw invalidParams('Invalid param: Invalid');
    return contextOf(h === svm.latestBlockhash());
  },
  getMinimumBalanceForRentExemption: (p) => {
    const [n] = args(p, 1, 2);
    if (!Number.isInteger(n) || n < 0) throw invalidParams('Invalid params: invalid type: expected usize.');
    return svm.minimumBalanceForRentExemption(BigInt(n));
  },
  getBalance: (p) => {
    const [k, cfg] = args(p, 1, 2);
    const key = parsePubkey(k);
    commitmentCheck(cfg);
    const a = getAccount(key);
    return contextOf(a ? a.lamports() : 0n);
  },
  getAccountInfo: (p) => {
    const [k, cfg] = args(p, 1, 2);
    const key = parsePubkey(k);
    const e = accountEncoding(cfg);
    commitmentCheck(cfg);
    const a = getAccount(key);
    return contextOf(a ? accountJSON(a, e, cfg && cfg.dataSlice) : null);
  },
  getMultipleAccounts: (p) => {
    const [ks, cfg] = args(p, 1, 2);
    if (!Array.isArray(ks)) throw invalidParams('Invalid params: invalid type: expected a sequence.');
    if (ks.length > 100) throw invalidParams('Too many inputs provided; max 100');
    const keys = ks.map(parsePubkey);
    const e = accountEncoding(cfg);
    commitmentCheck(cfg);
    return contextOf(keys.map((k) => {
      const a = getAccount(k);
      return a ? accountJSON(a, e, cfg && cfg.dataSlice) : null;
    }));
  },
  getProgramAccounts: (p) => {
    const [k, cfg] = args(p, 1, 2);
    const program = parsePubkey(k);
    const e = accountEncoding(cfg);
    commitmentCheck(cfg);
    const out = [];
    for (const aa of svm.getProgramAccounts(program)) {
      const a = aa.account();
      if (a.lamports() > 0n && matchesFilters(a, cfg && cfg.filters)) {
        out.push({ pubkey: b58encode(aa.address), account: accountJSON(a, e, cfg && cfg.dataSlice) });
      }
    }
    return cfg && cfg.withContext ? contextOf(out) : out;
  },
  requestAirdrop: (p) => {
    const [k, lamports, cfg] = args(p, 2, 3);
    const key = parsePubkey(k);
    commitmentCheck(cfg);
    if (!Number.isSafeInteger(lamports) || lamports < 0) throw invalidParams('Invalid params: invalid type: expected u64.');
    const r = svm.airdrop(key, BigInt(lamports));
    if (r === null) throw new RpcError(-32603, 'airdrop request failed');
    const sigBytes = r.constructor.name === 'FailedTransactionMetadata' ? r.meta().signature() : r.signature();
    const sig = b58encode(sigBytes);
    if (!statuses.has(sig) && svm.getTransaction(sigBytes) !== null) {
      land(sig, r.constructor.name === 'FailedTransactionMetadata' ? txError(r.err()).json : null);
    } else if (r.constructor.name === 'FailedTransactionMetadata') {
      throw new RpcError(-32603, 'airdrop request failed: ' + txError(r.err()).text);
    }
    return sig;
  },
  sendTransaction: (p) => {
    const [encoded, cfg = {}] = args(p, 1, 2);
    commitmentCheck({ commitment: cfg.preflightCommitment });
    const tx = decodeWire(encoded, cfg.encoding);
    if (!cfg.skipPreflight) {
      if (!verifySignatures(tx)) throw new RpcError(-32003, 'Transaction signature verification failure');
      const sim = simulate(tx);
      if (sim.err !== null) {
        throw new RpcError(-32002, `Transaction simulation failed: ${sim.text}`, {
          accounts: null, err: sim.err, innerInstructions: null, logs: sim.logs,
          replacementBlockhash: null, returnData: null, unitsConsumed: sim.unitsConsumed,
        });
      }
    }
    return submit(tx).sig;
  },
  simulateTransaction: (p) => {
    const [encoded, cfg = {}] = args(p, 1, 2);
    commitmentCheck(cfg);
    const tx = decodeWire(encoded, cfg.encoding);
    if (cfg.sigVerify && !verifySignatures(tx)) throw new RpcError(-32003, 'Transaction signature verification failure');
    const sim = simulate(tx);
    return contextOf({
      accounts: null, err: sim.err, innerInstructions: null, logs: sim.logs,
      replacementBlockhash: null, returnData: null, unitsConsumed: sim.unitsConsumed,
    });
  },
  getSignatureStatuses: (p) => {
    const [ss] = args(p, 1, 2);
    if (!Array.isArray(ss)) throw invalidParams('Invalid params: invalid type: expected a sequence.');
    if (ss.length > 256) throw invalidParams('Too many inputs provided; max 256');
    return contextOf(ss.map((s) => {
      const b = b58decode(s);
      if (b === null || b.length !== 64) throw invalidParams('Invalid param: Invalid');
      const st = statuses.get(s);
      if (!st) return null;
      return {
        slot: st.slot, confirmations: null, err: st.err,
        status: st.err === null ? { Ok: null } : { Err: st.err }, confirmationStatus: 'finalized',
      };
    }));
  },
};

// ---------------------------------------------------------- subscriptions --

function send(ws, text) {
  if (ws.readyState === ws.OPEN) ws.send(text);
}

function notification(method, id, result) {
  return enc({ jsonrpc: '2.0', method, params: { result, subscription: id } });
}

function accountState(key) {
  const a = getAccount(key);
  return a ? a : null;
}

function emptyAccount() {
  return { data: () => new Uint8Array(0), executable: () => false, lamports: () => 0n, owner: () => new Uint8Array(32), rentEpoch: () => 0n };
}

function notify(sig, err) {
  for (const [id, sub] of subscriptions) {
    if (sub.kind === 'signature' && sub.sig === sig) {
      send(sub.ws, notification('signatureNotification', id, contextOf({ err })));
      subscriptions.delete(id);
    } else if (sub.kind === 'account') {
      const a = accountState(sub.key);
      const json = enc(accountJSON(a || emptyAccount(), sub.encoding));
      if (json !== sub.last) {
        sub.last = json;
        send(sub.ws, notification('accountNotification', id, contextOf(new Raw(json))));
      }
    } else if (sub.kind === 'program') {
      for (const aa of svm.getProgramAccounts(sub.program)) {
        const a = aa.account();
        const k = b58encode(aa.address);
        const json = enc(accountJSON(a, sub.encoding));
        if (sub.last.get(k) !== json && matchesFilters(a, sub.filters)) {
          send(sub.ws, notification('programNotification', id, contextOf({ pubkey: k, account: new Raw(json) })));
        }
        sub.last.set(k, json);
      }
    } else if (sub.kind === 'slot') {
      send(sub.ws, notification('slotNotification', id, { parent: slot - 1n, root: slot, slot }));
    }
  }
}

function subscribe(ws, method, params) {
  const id = nextSubscription++;
  switch (method) {
    case 'accountSubscribe': {
      const [k, cfg] = args(params, 1, 2);
      const key = parsePubkey(k);
      const encoding = accountEncoding(cfg);
      commitmentCheck(cfg);
      const a = accountState(key);
      subscriptions.set(id, { kind: 'account', ws, key, encoding, last: enc(accountJSON(a || emptyAccount(), encoding)) });
      return id;
    }
    case 'programSubscribe': {
      const [k, cfg] = args(params, 1, 2);
      const program = parsePubkey(k);
      const encoding = accountEncoding(cfg);
      commitmentCheck(cfg);
      const last = new Map();
      for (const aa of svm.getProgramAccounts(program)) last.set(b58encode(aa.address), enc(accountJSON(aa.account(), encoding)));
      subscriptions.set(id, { kind: 'program', ws, program, encoding, filters: cfg && cfg.filters, last });
      return id;
    }
    case 'signatureSubscribe': {
      const [s, cfg] = args(params, 1, 2);
      const b = b58decode(s);
      if (b === null || b.length !== 64) throw invalidParams('Invalid param: Invalid');
      commitmentCheck(cfg);
      const st = statuses.get(s);
      if (st) {
        setImmediate(() => send(ws, notification('signatureNotification', id, contextOf({ err: st.err }))));
      } else {
        subscriptions.set(id, { kind: 'signature', ws, sig: s });
      }
      return id;
    }
    case 'slotSubscribe':
      args(params, 0, 0);
      subscriptions.set(id, { kind: 'slot', ws });
      return id;
  }
  return undefined;
}

function unsubscribe(ws, method, params) {
  const [id] = args(params, 1, 1);
  const sub = subscriptions.get(id);
  const kind = { accountUnsubscribe: 'account', programUnsubscribe: 'program', signatureUnsubscribe: 'signature', slotUnsubscribe: 'slot' }[method];
  if (!sub || sub.ws !== ws || sub.kind !== kind) throw invalidParams('Invalid subscription id.');
  subscriptions.delete(id);
  return true;
}

// --------------------------------------------------------------- envelope --

function handleOne(text, call) {
  let req;
  try {
    req = JSON.parse(text);
  } catch (_) {
    return { jsonrpc: '2.0', error: { code: PARSE_ERROR.code, message: PARSE_ERROR.message }, id: null };
  }
  let id = new Raw('null');
  const rawId = req && typeof req === 'object' && !Array.isArray(req) ? rawMember(text, 'id') : undefined;
  if (rawId !== undefined) id = new Raw(rawId);
  if (!req || typeof req !== 'object' || Array.isArray(req) || req.jsonrpc !== '2.0' || typeof req.method !== 'string') {
    return { jsonrpc: '2.0', error: { code: INVALID_REQUEST.code, message: INVALID_REQUEST.message }, id };
  }
  try {
    const result = call(req.method, req.params);
    return { jsonrpc: '2.0', result, id };
  } catch (e) {
    if (e instanceof RpcError) {
      return { jsonrpc: '2.0', error: { code: e.code, message: e.message, data: e.data }, id };
    }
    return { jsonrpc: '2.0', error: { code: -32603, message: 'Internal error: ' + e.message }, id };
  }
}

function handleBody(text, call) {
  const t = text.trim();
  if (t.startsWith('[')) {
    try {
      JSON.parse(t);
    } catch (_) {
      return enc({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
    }
    const items = splitArray(t);
    if (items.length === 0) return enc({ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid request' }, id: null });
    return enc(items.map((i) => handleOne(i, call)));
  }
  return enc(handleOne(t, call));
}

function httpCall(method, params) {
  const f = methods[method];
  if (!f) throw new RpcError(-32601, 'Method not found');
  return f(params);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    res.writeHead(405, { 'Content-Type': 'text/plain' });
    res.end('Used HTTP Method is not allowed. POST or OPTIONS is required');
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= 1 << 20) chunks.push(c);
  });
  req.on('end', () => {
    if (size > 1 << 20) {
      res.writeHead(413);
      res.end();
      return;
    }
    const body = handleBody(Buffer.concat(chunks).toString('utf8'), httpCall);
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
    res.end(body);
  });
});

const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const call = (method, params) => {
      if (method.endsWith('Unsubscribe')) return unsubscribe(ws, method, params);
      const id = subscribe(ws, method, params);
      if (id === undefined) throw new RpcError(-32601, 'Method not found');
      return id;
    };
    send(ws, handleBody(data.toString('utf8'), call));
  });
  ws.on('close', () => {
    for (const [id, sub] of subscriptions) if (sub.ws === ws) subscriptions.delete(id);
  });
});

let port = 0;
const pi = process.argv.indexOf('--port');
if (pi >= 0) port = Number(process.argv[pi + 1]);
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`LISTENING ${a.address}:${a.port}\n`);
});
// The parent test closes our stdin when it is done (or dies): exit then.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
