package chain_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
)

// newMarket starts a localnet on 127.0.0.1 with node staked, and returns a
// funded client for node.
func newMarket(t *testing.T, slot time.Duration) (*localnet.Server, *chain.Client) {
	t.Helper()
	node, _ := solana.NewRandomPrivateKey()
	srv, err := localnet.Start(context.Background(), localnet.Config{DataDir: t.TempDir(), SlotInterval: slot,
		StakedNodes: []solana.PublicKey{node.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := chain.NewClient(srv.URL(), node, srv.MarketsProgram(), srv.StakingProgram(), srv.Market())
	c.PollInterval = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.RequestAirdrop(ctx, solana.LAMPORTS_PER_SOL); err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func post(t *testing.T, srv *localnet.Server) solana.PublicKey {
	t.Helper()
	client, _ := solana.NewRandomPrivateKey()
	var digest [32]byte
	digest[0] = 1
	job, _, err := localnet.PostJob(context.Background(), srv.URL(), client, srv.Market(), digest, 0, chain.GPUAny)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func TestClaimFinishAndPayment(t *testing.T) {
	srv, c := newMarket(t, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stake, err := c.Stake(ctx)
	if err != nil || !stake.Active() {
		t.Fatalf("stake %+v %v", stake, err)
	}
	job := post(t, srv) // no node queued: the job waits in the queue
	m, err := c.GetMarket(ctx)
	if err != nil || m.QueueType != chain.QueueJobs || len(m.Queue) != 1 || m.Queue[0] != job {
		t.Fatalf("market %+v %v", m, err)
	}
	// list_node is refused while jobs wait.
	if err := c.ListNode(ctx); !errors.Is(err, chain.ErrQueueHasJobs) {
		t.Fatalf("list_node with waiting jobs: %v", err)
	}
	before, _ := c.Balance(ctx)
	tx, err := c.SignWorkJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Submit(ctx, tx); err != nil {
		t.Fatal(err)
	}
	// The same bytes again: recognised as landed, not an error.
	if err := c.Submit(ctx, tx); err != nil {
		t.Fatalf("re-submitting a landed transaction: %v", err)
	}
	acc, err := c.Job(ctx, job)
	if err != nil || acc.State != chain.JobRunning || *acc.Node != c.Node() {
		t.Fatalf("after claim: %+v %v", acc, err)
	}
	assigned, err := c.AssignedJobs(ctx)
	if err != nil || len(assigned) != 1 || assigned[job] == nil {
		t.Fatalf("assigned jobs %v %v", assigned, err)
	}
	// A second claim loses with a typed program error.
	tx2, _ := c.SignWorkJob(ctx, job)
	err = c.Submit(ctx, tx2)
	var txErr *chain.TxError
	if !errors.As(err, &txErr) || (txErr.Program != chain.ErrJobNotInQueue && txErr.Program != chain.ErrJobNotQueued) || txErr.Landed {
		t.Fatalf("second claim: %v", err)
	}
	var result [32]byte
	result[5] = 9
	fin, err := c.SignFinishJob(ctx, acc, job, result)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Submit(ctx, fin); err != nil {
		t.Fatal(err)
	}
	after, _ := c.Balance(ctx)
	want := before + acc.Price*99/100 - 2*chain.FeePerSignature
	if after != want {
		t.Fatalf("balance %d -> %d, want %d (99%% of %d less two fees)", before, after, want, acc.Price)
	}
	acc, _ = c.Job(ctx, job)
	if acc.State != chain.JobCompleted || acc.IPFSResult != result {
		t.Fatalf("after finish: %+v", acc)
	}
	// Registered and then assigned directly by create_job.
	if err := c.ListNode(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.ListNode(ctx); !errors.Is(err, chain.ErrNodeAlreadyQueued) {
		t.Fatalf("second list_node: %v", err)
	}
	direct := post(t, srv)
	acc, err = c.Job(ctx, direct)
	if err != nil || acc.State != chain.JobRunning || *acc.Node != c.Node() {
		t.Fatalf("direct assignment: %+v %v", acc, err)
	}
	if err := c.UnlistNode(ctx); !errors.Is(err, chain.ErrNodeNotQueued) {
		t.Fatalf("unlist after assignment popped us: %v", err)
	}
}

func TestSubmitExpiredBlockhash(t *testing.T) {
	srv, c := newMarket(t, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	job := post(t, srv)
	tx, err := c.SignWorkJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the blockhash expired (150 blocks), then submit: it can
	// never land.
	for {
		h, err := c.RPC.GetBlockHeight(ctx, "confirmed")
		if err != nil {
			t.Fatal(err)
		}
		if h > tx.LastValidBlockHeight {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Submit(ctx, tx); !errors.Is(err, chain.ErrBlockhashExpired) {
		t.Fatalf("expired: %v", err)
	}
	if acc, _ := c.Job(ctx, job); acc.State != chain.JobQueued {
		t.Fatal("an expired claim landed")
	}
}

func TestLoadKeypair(t *testing.T) {
	dir := t.TempDir()
	key, _ := solana.NewRandomPrivateKey()
	good := filepath.Join(dir, "id.json")
	if err := chain.WriteKeypair(good, key); err != nil {
		t.Fatal(err)
	}
	got, err := chain.LoadKeypair(good)
	if err != nil || !got.PublicKey().Equals(key.PublicKey()) {
		t.Fatalf("load: %v", err)
	}
	if err := chain.WriteKeypair(good, key); err == nil {
		t.Fatal("WriteKeypair overwrote a keypair")
	}
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), mode)
		os.Chmod(p, mode)
		return p
	}
	mismatch := make([]byte, 64)
	copy(mismatch, key)
	mismatch[40] ^= 1
	ints := make([]string, 64)
	for i, b := range mismatch {
		ints[i] = strconv.Itoa(int(b))
	}
	cases := map[string]struct {
		path string
		want string
	}{
		"missing":        {filepath.Join(dir, "none.json"), "does not exist"},
		"group-readable": {write("open.json", "[]", 0o640), "readable by group or others"},
		"not json":       {write("garbage.json", "hello", 0o600), "not a JSON array"},
		"short":          {write("short.json", "[1,2,3]", 0o600), "holds 3 numbers"},
		"not bytes":      {write("big.json", "["+strings.Repeat("300,", 63)+"300]", 0o600), "not a byte"},
		"mismatch":       {write("mismatch.json", "["+strings.Join(ints, ",")+"]", 0o600), "does not match"},
		"directory":      {dir, "not a regular file"},
	}
	for name, c := range cases {
		_, err := chain.LoadKeypair(c.path)
		if !errors.Is(err, chain.ErrKeypair) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
