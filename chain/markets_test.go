package chain

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
)

func TestDiscriminatorsMatchSpec(t *testing.T) {
	for _, c := range []struct {
		got  [8]byte
		want string
	}{
		{MarketDiscriminator, "c94ebbe1f0c6c9fb"},
		{JobDiscriminator, "5b10a2052dd27d41"},
		{StakeDiscriminator, "509e437c32bdc0ff"},
		{InstructionDiscriminator(IxCreateMarket), "67e261ebc8bcfbfe"},
		{InstructionDiscriminator(IxCreateJob), "b282d96e641b5277"},
		{InstructionDiscriminator(IxListNode), "3d902a54c19e6b74"},
		{InstructionDiscriminator(IxWorkJob), "c78d2dba7dd40a92"},
		{InstructionDiscriminator(IxFinishJob), "73d976b04fcbc8c2"},
		{InstructionDiscriminator(IxTimeoutJob), "0ea7f3c077fed30f"},
		{InstructionDiscriminator(IxCancelJob), "7ef19bf132ec5376"},
		{InstructionDiscriminator(IxQuitJob), "905d960a37efe77c"},
		{InstructionDiscriminator(IxUnlistNode), "c2fc8385489ca32a"},
	} {
		if hex.EncodeToString(c.got[:]) != c.want {
			t.Errorf("discriminator %x, spec says %s", c.got, c.want)
		}
	}
}

func key(b byte) solana.PublicKey {
	var k solana.PublicKey
	for i := range k {
		k[i] = b
	}
	return k
}

func TestJobLayoutOffsets(t *testing.T) {
	node := key(9)
	j := &Job{ID: key(1), Market: key(2), Client: key(3), Node: &node, Price: 77, Timeout: 3600,
		State: JobRunning, TimeCreated: 11, TimeStart: 12, TimeEnd: 13, MinVRAM: 24, GPUType: GPUAMD, Bump: 254}
	j.IPFSJob[0], j.IPFSResult[0] = 0xaa, 0xbb
	data, err := j.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != JobAccountSize {
		t.Fatalf("size %d", len(data))
	}
	// Offsets of the spec's table for node = Some.
	checks := []struct {
		off  int
		want byte
	}{{8, 1}, {40, 2}, {72, 3}, {104, 1}, {105, 9}, {137, 0xaa}, {169, 0xbb}, {201, 77}, {217, byte(JobRunning)},
		{218, 11}, {226, 12}, {234, 13}, {242, 24}, {243, byte(GPUAMD)}, {244, 254}}
	for _, c := range checks {
		if data[c.off] != c.want {
			t.Errorf("Some: byte %d = %d, want %d", c.off, data[c.off], c.want)
		}
	}
	if binary.LittleEndian.Uint64(data[209:]) != 3600 {
		t.Errorf("timeout at 209 = %d", binary.LittleEndian.Uint64(data[209:]))
	}
	back, err := DecodeJob(data)
	if err != nil || back.Node == nil || *back.Node != node || back.GPUType != GPUAMD || back.TimeEnd != 13 {
		t.Fatalf("round trip: %+v %v", back, err)
	}

	j.Node = nil
	j.State = JobQueued
	data, _ = j.Encode()
	if data[104] != 0 || data[JobOffsetStateUnassigned] != byte(JobQueued) || data[105] != 0xaa || data[212] != 254 {
		t.Errorf("None layout wrong: tag %d state %d ipfs %x bump %d", data[104], data[185], data[105], data[212])
	}
	for _, b := range data[213:] {
		if b != 0 {
			t.Fatal("tail not zero padding")
		}
	}
	back, err = DecodeJob(data)
	if err != nil || back.Node != nil || back.Bump != 254 {
		t.Fatalf("None round trip: %+v %v", back, err)
	}
}

func TestMarketLayout(t *testing.T) {
	m := &Market{Authority: key(1), JobPrice: 5, JobTimeout: 60, NodeXhyperMinimum: bin.Uint128{Lo: 7},
		QueueType: QueueJobs, VaultBump: 250, TotalJobs: 3, TotalNodes: 4, Vault: key(8), Queue: []solana.PublicKey{key(5), key(6)}}
	data, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != MarketAccountSize || MarketAccountSize != 10174 {
		t.Fatalf("size %d", len(data))
	}
	if data[40] != 5 || data[48] != 60 || data[56] != 7 || data[72] != QueueJobs || data[73] != 250 ||
		data[74] != 3 || data[82] != 4 || data[90] != 8 || data[122] != 2 || data[126] != 5 || data[158] != 6 {
		t.Fatal("market offsets do not match the spec")
	}
	back, err := DecodeMarket(data)
	if err != nil || len(back.Queue) != 2 || back.Queue[1] != key(6) || back.NodeXhyperMinimum.Lo != 7 {
		t.Fatalf("round trip %+v %v", back, err)
	}
	m.Queue = make([]solana.PublicKey, MaxQueue+1)
	if _, err := m.Encode(); err == nil {
		t.Fatal("overfull queue encoded")
	}
}

func TestDecodeRejectsBadData(t *testing.T) {
	good, _ := (&Job{}).Encode()
	wrongDisc := append([]byte{}, good...)
	wrongDisc[0] ^= 1
	badTag := append([]byte{}, good...)
	badTag[104] = 7
	badState := append([]byte{}, good...)
	badState[JobOffsetStateUnassigned] = 9
	for name, data := range map[string][]byte{
		"empty": nil, "short": good[:20], "discriminator": wrongDisc, "option tag": badTag, "state": badState,
	} {
		if _, err := DecodeJob(data); !errors.Is(err, ErrAccountData) {
			t.Errorf("%s: err %v, want ErrAccountData", name, err)
		}
	}
	mdata, _ := (&Market{}).Encode()
	binary.LittleEndian.PutUint32(mdata[122:], 1<<31)
	if _, err := DecodeMarket(mdata); !errors.Is(err, ErrAccountData) {
		t.Errorf("absurd queue length: %v", err)
	}
}

func TestInstructionRoundTrip(t *testing.T) {
	var digest [32]byte
	digest[31] = 1
	cj, err := NewCreateJobInstruction(DefaultMarketsProgramID, key(1), key(2), key(3), key(4), digest, 16, GPUNvidia)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := cj.Data()
	ix, err := DecodeInstruction(data)
	if err != nil || ix.Name != IxCreateJob || ix.JobID != key(1) || ix.IPFSJob != digest || ix.MinVRAM != 16 || ix.GPUType != GPUNvidia {
		t.Fatalf("create_job: %+v %v", ix, err)
	}
	if len(cj.Accounts()) != 5 || !cj.Accounts()[2].IsSigner {
		t.Fatal("create_job accounts")
	}
	fj := NewFinishJobInstruction(DefaultMarketsProgramID, key(1), key(2), key(3), key(4), digest)
	data, _ = fj.Data()
	ix, err = DecodeInstruction(data)
	if err != nil || ix.IPFSResult != digest || len(data) != 40 {
		t.Fatalf("finish_job: %+v %v", ix, err)
	}
	cm := NewCreateMarketInstruction(DefaultMarketsProgramID, key(1), key(2), key(3), 1000, 60, bin.Uint128{Lo: 5, Hi: 1})
	data, _ = cm.Data()
	ix, err = DecodeInstruction(data)
	if err != nil || ix.JobPrice != 1000 || ix.JobTimeout != 60 || ix.NodeXhyperMinimum.Lo != 5 || ix.NodeXhyperMinimum.Hi != 1 {
		t.Fatalf("create_market: %+v %v", ix, err)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, append(append([]byte{}, data...), 0), make([]byte, 8)} {
		if _, err := DecodeInstruction(bad); !errors.Is(err, ErrInstructionData) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

func FuzzDecodeAccounts(f *testing.F) {
	j, _ := (&Job{State: JobRunning, Node: new(solana.PublicKey)}).Encode()
	m, _ := (&Market{Queue: []solana.PublicKey{{}}}).Encode()
	s, _ := (&Stake{}).Encode()
	f.Add(j)
	f.Add(m[:200])
	f.Add(s)
	f.Fuzz(func(t *testing.T, data []byte) {
		if job, err := DecodeJob(data); err == nil {
			if _, err := job.Encode(); err != nil {
				t.Fatalf("decoded job does not re-encode: %v", err)
			}
		}
		_, _ = DecodeMarket(data)
		_, _ = DecodeStake(data)
		_, _ = DecodeInstruction(data)
	})
}
