package chain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
)

// Instruction names of the Markets program (spec "Instructions").
const (
	IxCreateMarket = "create_market"
	IxCreateJob    = "create_job"
	IxListNode     = "list_node"
	IxWorkJob      = "work_job"
	IxFinishJob    = "finish_job"
	IxTimeoutJob   = "timeout_job"
	IxCancelJob    = "cancel_job"
	IxQuitJob      = "quit_job"
	IxUnlistNode   = "unlist_node"
)

var instructionNames = []string{IxCreateMarket, IxCreateJob, IxListNode, IxWorkJob,
	IxFinishJob, IxTimeoutJob, IxCancelJob, IxQuitJob, IxUnlistNode}

// InstructionDiscriminator is sha256("global:<name>")[:8].
func InstructionDiscriminator(name string) [8]byte { return discriminator("global", name) }

var nameByDiscriminator = func() map[[8]byte]string {
	m := make(map[[8]byte]string, len(instructionNames))
	for _, n := range instructionNames {
		m[InstructionDiscriminator(n)] = n
	}
	return m
}()

// InstructionName returns the Markets instruction whose discriminator is d.
func InstructionName(d [8]byte) (string, bool) {
	n, ok := nameByDiscriminator[d]
	return n, ok
}

// Instruction is a decoded Markets instruction: its name and the arguments
// that name carries (others are zero).
type Instruction struct {
	Name string
	// create_market
	JobPrice          uint64 // lamports
	JobTimeout        int64  // seconds
	NodeXhyperMinimum bin.Uint128
	// create_job
	JobID   solana.PublicKey
	IPFSJob [32]byte
	MinVRAM uint8 // GiB
	GPUType GPUType
	// finish_job
	IPFSResult [32]byte
}

// ErrInstructionData is wrapped by every instruction decoding error.
var ErrInstructionData = errors.New("invalid instruction data")

type createMarketArgs struct {
	JobPrice          uint64
	JobTimeout        int64
	NodeXhyperMinimum bin.Uint128
}

type createJobArgs struct {
	JobID   solana.PublicKey
	IPFSJob [32]byte
	MinVRAM uint8
	GPUType GPUType
}

// argsSize is the exact Borsh size of each instruction's arguments.
var argsSize = map[string]int{
	IxCreateMarket: 8 + 8 + 16, IxCreateJob: 32 + 32 + 1 + 1, IxFinishJob: 32,
}

// DecodeInstruction decodes Markets instruction data. Unknown discriminators,
// short or overlong data give an error wrapping ErrInstructionData.
func DecodeInstruction(data []byte) (*Instruction, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the discriminator", ErrInstructionData, len(data))
	}
	var d [8]byte
	copy(d[:], data[:8])
	name, ok := nameByDiscriminator[d]
	if !ok {
		return nil, fmt.Errorf("%w: unknown discriminator %x", ErrInstructionData, d)
	}
	args := data[8:]
	if len(args) != argsSize[name] {
		return nil, fmt.Errorf("%w: %s: %d argument bytes, want %d", ErrInstructionData, name, len(args), argsSize[name])
	}
	ix := &Instruction{Name: name}
	switch name {
	case IxCreateMarket:
		ix.JobPrice = binary.LittleEndian.Uint64(args[0:8])
		ix.JobTimeout = int64(binary.LittleEndian.Uint64(args[8:16]))
		ix.NodeXhyperMinimum = bin.Uint128{Lo: binary.LittleEndian.Uint64(args[16:24]), Hi: binary.LittleEndian.Uint64(args[24:32]), Endianness: binary.LittleEndian}
	case IxCreateJob:
		copy(ix.JobID[:], args[0:32])
		copy(ix.IPFSJob[:], args[32:64])
		ix.MinVRAM = args[64]
		ix.GPUType = GPUType(args[65])
	case IxFinishJob:
		copy(ix.IPFSResult[:], args[0:32])
	}
	return ix, nil
}

func instructionData(name string, args interface{}) []byte {
	var buf bytes.Buffer
	d := InstructionDiscriminator(name)
	buf.Write(d[:])
	if args != nil {
		if err := bin.NewBorshEncoder(&buf).Encode(args); err != nil {
			// Only fixed-size plain structs are encoded here.
			panic(fmt.Sprintf("encode %s args: %v", name, err))
		}
	}
	return buf.Bytes()
}

func ix(program solana.PublicKey, data []byte, accounts ...*solana.AccountMeta) solana.Instruction {
	return solana.NewInstruction(program, solana.AccountMetaSlice(accounts), data)
}

func w(k solana.PublicKey) *solana.AccountMeta  { return solana.NewAccountMeta(k, true, false) }
func ws(k solana.PublicKey) *solana.AccountMeta { return solana.NewAccountMeta(k, true, true) }
func ro(k solana.PublicKey) *solana.AccountMeta { return solana.NewAccountMeta(k, false, false) }
func rs(k solana.PublicKey) *solana.AccountMeta { return solana.NewAccountMeta(k, false, true) }

// NewCreateMarketInstruction builds create_market. market must sign (new account).
func NewCreateMarketInstruction(program, market, authority, vault solana.PublicKey, price uint64, timeout int64, min bin.Uint128) solana.Instruction {
	min.Endianness = binary.LittleEndian
	return ix(program, instructionData(IxCreateMarket, createMarketArgs{price, timeout, min}),
		ws(market), ws(authority), w(vault), ro(solana.SystemProgramID))
}

// NewCreateJobInstruction builds create_job; the job account is the PDA of jobID.
func NewCreateJobInstruction(program, jobID, market, client, vault solana.PublicKey, ipfsJob [32]byte, minVRAM uint8, gpu GPUType) (solana.Instruction, error) {
	job, _, err := JobPDA(program, jobID)
	if err != nil {
		return nil, err
	}
	return ix(program, instructionData(IxCreateJob, createJobArgs{jobID, ipfsJob, minVRAM, gpu}),
		w(job), w(market), ws(client), w(vault), ro(solana.SystemProgramID)), nil
}

// NewListNodeInstruction builds list_node; the stake account is the node's PDA
// under the staking program.
func NewListNodeInstruction(program, staking, market, node solana.PublicKey) (solana.Instruction, error) {
	stake, _, err := StakePDA(staking, node)
	if err != nil {
		return nil, err
	}
	return ix(program, instructionData(IxListNode, nil),
		w(market), rs(node), ro(stake), ro(solana.SystemProgramID)), nil
}

// NewWorkJobInstruction builds work_job (claim a queued job).
func NewWorkJobInstruction(program, staking, job, market, node solana.PublicKey) (solana.Instruction, error) {
	stake, _, err := StakePDA(staking, node)
	if err != nil {
		return nil, err
	}
	return ix(program, instructionData(IxWorkJob, nil),
		w(job), w(market), rs(node), ro(stake), ro(solana.SystemProgramID)), nil
}

// NewFinishJobInstruction builds finish_job with the result document's digest.
func NewFinishJobInstruction(program, job, market, node, vault solana.PublicKey, result [32]byte) solana.Instruction {
	return ix(program, instructionData(IxFinishJob, result),
		w(job), ro(market), ws(node), w(vault), ro(solana.SystemProgramID))
}

// NewTimeoutJobInstruction builds timeout_job; caller signs and may be anyone.
func NewTimeoutJobInstruction(program, job, market, client, vault, caller solana.PublicKey) solana.Instruction {
	return ix(program, instructionData(IxTimeoutJob, nil),
		w(job), ro(market), w(client), w(vault), rs(caller))
}

// NewCancelJobInstruction builds cancel_job; the client signs.
func NewCancelJobInstruction(program, job, market, client, vault solana.PublicKey) solana.Instruction {
	return ix(program, instructionData(IxCancelJob, nil),
		w(job), w(market), ws(client), w(vault))
}

// NewQuitJobInstruction builds quit_job: the assigned node gives the job back.
func NewQuitJobInstruction(program, job, market, node solana.PublicKey) solana.Instruction {
	return ix(program, instructionData(IxQuitJob, nil), w(job), w(market), rs(node))
}

// NewUnlistNodeInstruction builds unlist_node: leave the market's node queue.
func NewUnlistNodeInstruction(program, market, node solana.PublicKey) solana.Instruction {
	return ix(program, instructionData(IxUnlistNode, nil), w(market), rs(node))
}
