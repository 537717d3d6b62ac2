// Package chain speaks Solana for the worker: the Hypernode Markets program's
// account layouts and instructions (layout: shared/spec/markets-program.md),
// the node keypair, and an RPC client that survives a public RPC: a
// retrying, rate-limited, failing-over HTTP transport (transport.go), typed
// errors (options.go), transactions re-sent until their blockhash expires and
// confirmed by signatureSubscribe or polling, and the market watched with
// accountSubscribe (push.go).
//
// The embedded local market that implements the same program lives in
// chain/localnet.
package chain

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
)

// Program IDs of the devnet build (spec: "Programs and encodings"); both are
// configurable (PROGRAM_ID, STAKING_PROGRAM_ID).
var (
	DefaultMarketsProgramID = solana.MustPublicKeyFromBase58("67UE2LconF9QU5Vobsaf5sXnW9yUisebLj8VmgGWLSdb")
	DefaultStakingProgramID = solana.MustPublicKeyFromBase58("3fw9eQN1KHarGcYVETvF7FDt2BYGuDPMjuhoE45RJnTJ")
)

// Account sizes in bytes, discriminator included.
const (
	// MaxQueue is the number of queue entries a market account is allocated for.
	MaxQueue          = 314
	MarketAccountSize = 126 + MaxQueue*32 // 10 174
	JobAccountSize    = 245
	StakeAccountSize  = 89
)

// Byte offsets inside a JobAccount used by getProgramAccounts filters.
const (
	JobOffsetMarket = 40
	JobOffsetNode   = 104 // Option tag; key at 105..137 when Some
	// JobOffsetStateUnassigned is the state byte's offset while node is None.
	JobOffsetStateUnassigned = 185
)

// JobState is JobAccount.state.
type JobState uint8

// Job states of the spec.
const (
	JobQueued JobState = iota
	JobRunning
	JobCompleted
	JobStopped
	JobTimedOut
)

func (s JobState) String() string {
	switch s {
	case JobQueued:
		return "Queued"
	case JobRunning:
		return "Running"
	case JobCompleted:
		return "Completed"
	case JobStopped:
		return "Stopped"
	case JobTimedOut:
		return "TimedOut"
	}
	return fmt.Sprintf("JobState(%d)", uint8(s))
}

// GPUType is JobAccount.gpu_type: which GPU vendor a job needs.
type GPUType uint8

// GPU types of the spec.
const (
	GPUAny GPUType = iota
	GPUNvidia
	GPUAMD
)

func (g GPUType) String() string {
	switch g {
	case GPUAny:
		return "any"
	case GPUNvidia:
		return "nvidia"
	case GPUAMD:
		return "amd"
	}
	return fmt.Sprintf("GPUType(%d)", uint8(g))
}

// Queue types of MarketAccount.queue_type.
const (
	QueueEmpty uint8 = 0
	QueueJobs  uint8 = 1
	QueueNodes uint8 = 2
)

func discriminator(kind, name string) [8]byte {
	h := sha256.Sum256([]byte(kind + ":" + name))
	var d [8]byte
	copy(d[:], h[:8])
	return d
}

// Account discriminators: sha256("account:<Name>")[:8].
var (
	MarketDiscriminator = discriminator("account", "MarketAccount")
	JobDiscriminator    = discriminator("account", "JobAccount")
	StakeDiscriminator  = discriminator("account", "StakeAccount")
)

// Market is a MarketAccount (layout: spec "MarketAccount").
type Market struct {
	Authority         solana.PublicKey
	JobPrice          uint64 // lamports per job
	JobTimeout        int64  // seconds
	NodeXhyperMinimum bin.Uint128
	QueueType         uint8
	VaultBump         uint8
	TotalJobs         uint64
	TotalNodes        uint64
	Vault             solana.PublicKey
	Queue             []solana.PublicKey
}

// Job is a JobAccount (layout: spec "JobAccount"). Node is nil while no node
// is assigned.
type Job struct {
	ID          solana.PublicKey
	Market      solana.PublicKey
	Client      solana.PublicKey
	Node        *solana.PublicKey `bin:"optional"`
	IPFSJob     [32]byte
	IPFSResult  [32]byte
	Price       uint64 // lamports
	Timeout     int64  // seconds
	State       JobState
	TimeCreated int64 // unix seconds
	TimeStart   int64
	TimeEnd     int64
	MinVRAM     uint8 // GiB
	GPUType     GPUType
	Bump        uint8
}

// Stake is a StakeAccount of the staking program. It is active while
// TimeUnstake is zero.
type Stake struct {
	Authority   solana.PublicKey
	Xhyper      bin.Uint128
	Amount      uint64
	TimeStake   int64
	TimeUnstake int64
	Duration    uint64
	Bump        uint8
}

// Active reports whether the stake counts (not unstaking).
func (s *Stake) Active() bool { return s.TimeUnstake == 0 }

// ErrAccountData is wrapped by every account decoding error.
var ErrAccountData = errors.New("invalid account data")

func decodeAccount(data []byte, disc [8]byte, name string, minSize int, v interface{}) error {
	if len(data) < 8 {
		return fmt.Errorf("%w: %s: %d bytes, shorter than the discriminator", ErrAccountData, name, len(data))
	}
	if !bytes.Equal(data[:8], disc[:]) {
		return fmt.Errorf("%w: %s: discriminator %x, want %x", ErrAccountData, name, data[:8], disc[:])
	}
	if len(data) < minSize {
		return fmt.Errorf("%w: %s: %d bytes, want at least %d", ErrAccountData, name, len(data), minSize)
	}
	if err := bin.NewBorshDecoder(data[8:]).Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAccountData, name, err)
	}
	return nil
}

func encodeAccount(disc [8]byte, size int, v interface{}) ([]byte, error) {
	var buf bytes.Buffer
	buf.Write(disc[:])
	if err := bin.NewBorshEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	if buf.Len() > size {
		return nil, fmt.Errorf("encoded account is %d bytes, allocated %d", buf.Len(), size)
	}
	out := make([]byte, size)
	copy(out, buf.Bytes())
	return out, nil
}

// DecodeMarket decodes a MarketAccount's data. Errors wrap ErrAccountData.
func DecodeMarket(data []byte) (*Market, error) {
	if len(data) >= 126 {
		// Refuse an absurd queue length before the decoder allocates for it.
		n := uint32(data[122]) | uint32(data[123])<<8 | uint32(data[124])<<16 | uint32(data[125])<<24
		if n > uint32((len(data)-126)/32) {
			return nil, fmt.Errorf("%w: MarketAccount: queue length %d exceeds the %d-byte account", ErrAccountData, n, len(data))
		}
	}
	var m Market
	if err := decodeAccount(data, MarketDiscriminator, "MarketAccount", 126, &m); err != nil {
		return nil, err
	}
	if m.QueueType > QueueNodes {
		return nil, fmt.Errorf("%w: MarketAccount: queue_type %d", ErrAccountData, m.QueueType)
	}
	return &m, nil
}

// Encode returns the account data, zero-padded to MarketAccountSize.
func (m *Market) Encode() ([]byte, error) {
	if len(m.Queue) > MaxQueue {
		return nil, fmt.Errorf("market queue holds %d entries, at most %d", len(m.Queue), MaxQueue)
	}
	return encodeAccount(MarketDiscriminator, MarketAccountSize, m)
}

// DecodeJob decodes a JobAccount's data. Errors wrap ErrAccountData.
func DecodeJob(data []byte) (*Job, error) {
	var j Job
	if len(data) >= 105 && data[104] > 1 {
		return nil, fmt.Errorf("%w: JobAccount: node option tag %d", ErrAccountData, data[104])
	}
	if err := decodeAccount(data, JobDiscriminator, "JobAccount", 213, &j); err != nil {
		return nil, err
	}
	if j.State > JobTimedOut {
		return nil, fmt.Errorf("%w: JobAccount: state %d", ErrAccountData, j.State)
	}
	return &j, nil
}

// Encode returns the account data, zero-padded to JobAccountSize.
func (j *Job) Encode() ([]byte, error) { return encodeAccount(JobDiscriminator, JobAccountSize, j) }

// DecodeStake decodes a StakeAccount's data. Errors wrap ErrAccountData.
func DecodeStake(data []byte) (*Stake, error) {
	var s Stake
	if err := decodeAccount(data, StakeDiscriminator, "StakeAccount", StakeAccountSize, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Encode returns the account data (StakeAccountSize bytes).
func (s *Stake) Encode() ([]byte, error) {
	return encodeAccount(StakeDiscriminator, StakeAccountSize, s)
}

// JobPDA derives the job account address: seeds ["job", job_id].
func JobPDA(program, jobID solana.PublicKey) (solana.PublicKey, uint8, error) {
	return solana.FindProgramAddress([][]byte{[]byte("job"), jobID[:]}, program)
}

// VaultPDA derives a market's vault: seeds ["vault", market].
func VaultPDA(program, market solana.PublicKey) (solana.PublicKey, uint8, error) {
	return solana.FindProgramAddress([][]byte{[]byte("vault"), market[:]}, program)
}

// StakePDA derives a node's stake account under the staking program: seeds
// ["stake", node].
func StakePDA(staking, node solana.PublicKey) (solana.PublicKey, uint8, error) {
	return solana.FindProgramAddress([][]byte{[]byte("stake"), node[:]}, staking)
}

// ProgramError is a Markets program custom error code (Anchor 6000+).
type ProgramError uint32

// Markets program error codes (spec "Errors").
const (
	ErrQueueFull         ProgramError = 6000
	ErrJobNotInQueue     ProgramError = 6001
	ErrJobNotQueued      ProgramError = 6002
	ErrJobNotRunning     ProgramError = 6003
	ErrNotAssignedNode   ProgramError = 6004
	ErrInsufficientStake ProgramError = 6005
	ErrNodeAlreadyQueued ProgramError = 6006
	ErrQueueHasJobs      ProgramError = 6007
	ErrEmptyResult       ProgramError = 6008
	ErrTimeoutNotReached ProgramError = 6009
	ErrWrongMarket       ProgramError = 6010
	ErrUnauthorized      ProgramError = 6011
	ErrNodeNotQueued     ProgramError = 6012
)

var programErrorNames = map[ProgramError]string{
	ErrQueueFull: "QueueFull", ErrJobNotInQueue: "JobNotInQueue", ErrJobNotQueued: "JobNotQueued",
	ErrJobNotRunning: "JobNotRunning", ErrNotAssignedNode: "NotAssignedNode",
	ErrInsufficientStake: "InsufficientStake", ErrNodeAlreadyQueued: "NodeAlreadyQueued",
	ErrQueueHasJobs: "QueueHasJobs", ErrEmptyResult: "EmptyResult",
	ErrTimeoutNotReached: "TimeoutNotReached", ErrWrongMarket: "WrongMarket",
	ErrUnauthorized: "Unauthorized", ErrNodeNotQueued: "NodeNotQueued",
}

// Name is the program's name for the code, e.g. "JobNotInQueue".
func (e ProgramError) Name() string {
	if n, ok := programErrorNames[e]; ok {
		return n
	}
	return fmt.Sprintf("Custom%d", uint32(e))
}

func (e ProgramError) Error() string {
	return fmt.Sprintf("markets program error %d (%s)", uint32(e), e.Name())
}
