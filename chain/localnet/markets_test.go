package localnet

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
)

// fakeClock is a settable Clock sysvar source.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// marketEnv is a localnet with staked nodes A and B, a funded client and a
// funded bystander.
type marketEnv struct {
	s                *Server
	cl               *rpc.Client
	clock            *fakeClock
	program, staking solana.PublicKey
	market, vault    solana.PublicKey
	mk               *chain.Market
	a, b             solana.PrivateKey
	client, other    solana.PrivateKey
}

const testTimeout = 600 // seconds

func newMarketEnv(t *testing.T) *marketEnv {
	t.Helper()
	e := &marketEnv{clock: &fakeClock{now: time.Unix(1_750_000_000, 0)}}
	e.a, e.b, e.client, e.other = newKey(t), newKey(t), newKey(t), newKey(t)
	e.s = startLocalnet(t, Config{
		JobTimeout:        testTimeout,
		NodeXhyperMinimum: bin.Uint128{Lo: 1000},
		StakedNodes:       []solana.PublicKey{e.a.PublicKey(), e.b.PublicKey()},
		Now:               e.clock.Now,
	})
	e.cl = newRPC(t, e.s)
	e.program, e.staking, e.market = e.s.MarketsProgram(), e.s.StakingProgram(), e.s.Market()
	e.mk = e.readMarket(t)
	e.vault = e.mk.Vault
	for _, k := range []solana.PrivateKey{e.a, e.b, e.client, e.other} {
		fund(t, e.cl, k.PublicKey(), 5*solana.LAMPORTS_PER_SOL)
	}
	return e
}

func (e *marketEnv) readMarket(t *testing.T) *chain.Market {
	t.Helper()
	info, err := e.cl.GetAccountInfo(testCtx(t), e.market)
	if err != nil {
		t.Fatalf("market: %v", err)
	}
	m, err := chain.DecodeMarket(info.Value.Data.GetBinary())
	if err != nil {
		t.Fatalf("decode market: %v", err)
	}
	return m
}

func (e *marketEnv) readJob(t *testing.T, job solana.PublicKey) *chain.Job {
	t.Helper()
	info, err := e.cl.GetAccountInfo(testCtx(t), job)
	if err != nil {
		t.Fatalf("job %s: %v", job, err)
	}
	j, err := chain.DecodeJob(info.Value.Data.GetBinary())
	if err != nil {
		t.Fatalf("decode job: %v", err)
	}
	return j
}

// createJob sends create_job from the client; it returns the job account.
func (e *marketEnv) createJob(t *testing.T, digest byte) solana.PublicKey {
	t.Helper()
	jobID := newKey(t).PublicKey()
	ix, err := chain.NewCreateJobInstruction(e.program, jobID, e.market, e.client.PublicKey(), e.vault, [32]byte{digest}, 8, chain.GPUNvidia)
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, e.cl, []solana.PrivateKey{e.client}, ix)
	job, _, _ := chain.JobPDA(e.program, jobID)
	return job
}

func (e *marketEnv) listNode(t *testing.T, node solana.PrivateKey) error {
	t.Helper()
	ix, err := chain.NewListNodeInstruction(e.program, e.staking, e.market, node.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	_, err = send(t, e.cl, []solana.PrivateKey{node}, ix)
	return err
}

func (e *marketEnv) workJob(t *testing.T, node solana.PrivateKey, job solana.PublicKey) error {
	t.Helper()
	ix, err := chain.NewWorkJobInstruction(e.program, e.staking, job, e.market, node.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	_, err = send(t, e.cl, []solana.PrivateKey{node}, ix)
	return err
}

func (e *marketEnv) finishJob(t *testing.T, node solana.PrivateKey, job solana.PublicKey, result [32]byte) error {
	t.Helper()
	_, err := send(t, e.cl, []solana.PrivateKey{node}, chain.NewFinishJobInstruction(e.program, job, e.market, node.PublicKey(), e.vault, result))
	return err
}

func wantCode(t *testing.T, what string, err error, code chain.ProgramError) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %s", what, code.Name())
	}
	if got := customCode(t, err); got != int64(code) {
		t.Fatalf("%s: error %s, want %d (%s)", what, describeRPCError(err), code, code.Name())
	}
}

func wantOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %s", what, describeRPCError(err))
	}
}

func keysEqual(a, b []solana.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMarketFlow(t *testing.T) {
	e := newMarketEnv(t)
	price := e.mk.JobPrice
	if price != DefaultJobPrice || e.mk.JobTimeout != testTimeout || e.mk.QueueType != chain.QueueEmpty {
		t.Fatalf("market: %+v", e.mk)
	}
	vault0 := balance(t, e.cl, e.vault)
	client0 := balance(t, e.cl, e.client.PublicKey())

	// create_job with no node queued: Queued, escrowed.
	j1 := e.createJob(t, 1)
	if j := e.readJob(t, j1); j.State != chain.JobQueued || j.Node != nil || j.Price != price || j.Timeout != testTimeout ||
		j.Client != e.client.PublicKey() || j.MinVRAM != 8 || j.GPUType != chain.GPUNvidia || j.TimeCreated != e.clock.Now().Unix() {
		t.Fatalf("j1: %+v", j)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueJobs || !keysEqual(m.Queue, []solana.PublicKey{j1}) || m.TotalJobs != 1 {
		t.Fatalf("market after create_job: %+v", m)
	}
	if got, want := balance(t, e.cl, e.client.PublicKey()), client0-price-rentExemptMinimum(chain.JobAccountSize)-5000; got != want {
		t.Fatalf("client paid %d, want %d", client0-got, client0-want)
	}
	if got := balance(t, e.cl, e.vault); got != vault0+price {
		t.Fatalf("vault %d, want %d", got, vault0+price)
	}

	// list_node while a job waits: QueueHasJobs.
	wantCode(t, "list_node with waiting jobs", e.listNode(t, e.a), chain.ErrQueueHasJobs)

	// work_job: Running.
	wantOK(t, "work_job", e.workJob(t, e.a, j1))
	if j := e.readJob(t, j1); j.State != chain.JobRunning || j.Node == nil || *j.Node != e.a.PublicKey() || j.TimeStart != e.clock.Now().Unix() {
		t.Fatalf("j1 after work_job: %+v", j)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueEmpty || len(m.Queue) != 0 {
		t.Fatalf("market after work_job: %+v", m)
	}
	wantCode(t, "work_job twice", e.workJob(t, e.b, j1), chain.ErrJobNotQueued)

	// finish_job: checks, then Completed and 99% paid.
	wantCode(t, "finish empty result", e.finishJob(t, e.a, j1, [32]byte{}), chain.ErrEmptyResult)
	wantCode(t, "finish by other node", e.finishJob(t, e.b, j1, [32]byte{9}), chain.ErrNotAssignedNode)
	a0 := balance(t, e.cl, e.a.PublicKey())
	wantOK(t, "finish_job", e.finishJob(t, e.a, j1, [32]byte{9}))
	if j := e.readJob(t, j1); j.State != chain.JobCompleted || j.IPFSResult != ([32]byte{9}) || j.TimeEnd == 0 {
		t.Fatalf("j1 after finish: %+v", j)
	}
	if got, want := balance(t, e.cl, e.a.PublicKey()), a0+price*99/100-5000; got != want {
		t.Fatalf("node balance %d, want %d", got, want)
	}
	if got := balance(t, e.cl, e.vault); got != vault0+price/100 {
		t.Fatalf("vault keeps %d, want %d", got-vault0, price/100)
	}
	wantCode(t, "finish twice", e.finishJob(t, e.a, j1, [32]byte{10}), chain.ErrJobNotRunning)

	// list_node with an empty queue; twice is NodeAlreadyQueued.
	wantOK(t, "list A", e.listNode(t, e.a))
	wantCode(t, "list A twice", e.listNode(t, e.a), chain.ErrNodeAlreadyQueued)
	wantOK(t, "list B", e.listNode(t, e.b))
	if m := e.readMarket(t); m.QueueType != chain.QueueNodes || !keysEqual(m.Queue, []solana.PublicKey{e.a.PublicKey(), e.b.PublicKey()}) {
		t.Fatalf("node queue: %+v", m)
	}

	// create_job with nodes queued: the head node is assigned at once.
	j2 := e.createJob(t, 2)
	if j := e.readJob(t, j2); j.State != chain.JobRunning || j.Node == nil || *j.Node != e.a.PublicKey() || j.TimeStart == 0 {
		t.Fatalf("j2 direct assignment: %+v", j)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueNodes || !keysEqual(m.Queue, []solana.PublicKey{e.b.PublicKey()}) {
		t.Fatalf("node queue after assignment: %+v", m)
	}

	// unlist_node.
	// (The second unlist is paid by another key: the same message under the
	// same blockhash would be AlreadyProcessed.)
	unlist := func(signers ...solana.PrivateKey) error {
		_, err := send(t, e.cl, signers, chain.NewUnlistNodeInstruction(e.program, e.market, e.b.PublicKey()))
		return err
	}
	wantOK(t, "unlist B", unlist(e.b))
	wantCode(t, "unlist B twice", unlist(e.other, e.b), chain.ErrNodeNotQueued)

	// quit_job: back to the queue's front.
	j3 := e.createJob(t, 3)
	quit := func(n solana.PrivateKey, job solana.PublicKey) error {
		_, err := send(t, e.cl, []solana.PrivateKey{n}, chain.NewQuitJobInstruction(e.program, job, e.market, n.PublicKey()))
		return err
	}
	wantCode(t, "quit by unassigned node", quit(e.b, j2), chain.ErrNotAssignedNode)
	wantOK(t, "quit_job", quit(e.a, j2))
	if j := e.readJob(t, j2); j.State != chain.JobQueued || j.Node != nil {
		t.Fatalf("j2 after quit: %+v", j)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueJobs || !keysEqual(m.Queue, []solana.PublicKey{j2, j3}) {
		t.Fatalf("queue after quit: %+v, want [j2 j3]", m.Queue)
	}

	// getProgramAccounts with the spec's two filter sets.
	queued := queryJobs(t, e, []rpc.RPCFilter{
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetMarket, Bytes: e.market[:]}},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetNode, Bytes: []byte{0}}},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetStateUnassigned, Bytes: []byte{0}}},
	})
	if !sameSet(queued, []solana.PublicKey{j2, j3}) {
		t.Fatalf("queued jobs filter: %v, want %v", queued, []solana.PublicKey{j2, j3})
	}
	assignedA := queryJobs(t, e, []rpc.RPCFilter{
		{DataSize: chain.JobAccountSize},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: chain.JobDiscriminator[:]}},
		{Memcmp: &rpc.RPCFilterMemcmp{Offset: chain.JobOffsetNode, Bytes: append([]byte{1}, e.a.PublicKey().Bytes()...)}},
	})
	if !sameSet(assignedA, []solana.PublicKey{j1}) {
		t.Fatalf("assigned-to-A filter: %v, want [%s]", assignedA, j1)
	}

	// work_job takes a job from any queue position.
	wantOK(t, "work_job j3 (second in queue)", e.workJob(t, e.b, j3))
	if m := e.readMarket(t); !keysEqual(m.Queue, []solana.PublicKey{j2}) {
		t.Fatalf("queue after claiming j3: %v", m.Queue)
	}

	// cancel_job: only the client, only while Queued; refunds.
	cancel := func(c solana.PrivateKey, job solana.PublicKey) error {
		_, err := send(t, e.cl, []solana.PrivateKey{c}, chain.NewCancelJobInstruction(e.program, job, e.market, c.PublicKey(), e.vault))
		return err
	}
	wantCode(t, "cancel by stranger", cancel(e.other, j2), chain.ErrUnauthorized)
	wantCode(t, "cancel running", cancel(e.client, j3), chain.ErrJobNotQueued)
	c0 := balance(t, e.cl, e.client.PublicKey())
	wantOK(t, "cancel_job", cancel(e.client, j2))
	if j := e.readJob(t, j2); j.State != chain.JobStopped {
		t.Fatalf("j2 after cancel: %+v", j)
	}
	if got := balance(t, e.cl, e.client.PublicKey()); got != c0+price-5000 {
		t.Fatalf("refund: client %d, want %d", got, c0+price-5000)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueEmpty || len(m.Queue) != 0 {
		t.Fatalf("market after cancel: %+v", m)
	}

	// timeout_job: anyone, once the timeout passed.
	timeout := func() error {
		_, err := send(t, e.cl, []solana.PrivateKey{e.other},
			chain.NewTimeoutJobInstruction(e.program, j3, e.market, e.client.PublicKey(), e.vault, e.other.PublicKey()))
		return err
	}
	wantCode(t, "timeout too early", timeout(), chain.ErrTimeoutNotReached)
	e.clock.Add((testTimeout + 1) * time.Second)
	c1 := balance(t, e.cl, e.client.PublicKey())
	wantOK(t, "timeout_job", timeout())
	if j := e.readJob(t, j3); j.State != chain.JobTimedOut || j.TimeEnd != e.clock.Now().Unix() {
		t.Fatalf("j3 after timeout: %+v", j)
	}
	if got := balance(t, e.cl, e.client.PublicKey()); got != c1+price {
		t.Fatalf("timeout refund: %d, want %d", got, c1+price)
	}
	wantCode(t, "finish timed-out job", e.finishJob(t, e.b, j3, [32]byte{1}), chain.ErrJobNotRunning)
}

func TestQuitJobHandsToWaitingNode(t *testing.T) {
	e := newMarketEnv(t)
	wantOK(t, "list A", e.listNode(t, e.a))
	j := e.createJob(t, 1)
	wantOK(t, "list B", e.listNode(t, e.b))
	_, err := send(t, e.cl, []solana.PrivateKey{e.a}, chain.NewQuitJobInstruction(e.program, j, e.market, e.a.PublicKey()))
	wantOK(t, "quit", err)
	if got := e.readJob(t, j); got.State != chain.JobRunning || got.Node == nil || *got.Node != e.b.PublicKey() {
		t.Fatalf("job after quit with B waiting: %+v", got)
	}
	if m := e.readMarket(t); m.QueueType != chain.QueueEmpty {
		t.Fatalf("market: %+v", m)
	}
}

func TestStakeChecks(t *testing.T) {
	e := newMarketEnv(t)
	low, inactive, none := newKey(t), newKey(t), newKey(t)
	for _, k := range []solana.PrivateKey{low, inactive, none} {
		fund(t, e.cl, k.PublicKey(), solana.LAMPORTS_PER_SOL)
	}
	if err := e.s.SeedStake(low.PublicKey(), bin.Uint128{Lo: 999}, true); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SeedStake(inactive.PublicKey(), bin.Uint128{Lo: 5000}, false); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "stake below minimum", e.listNode(t, low), chain.ErrInsufficientStake)
	wantCode(t, "inactive stake", e.listNode(t, inactive), chain.ErrInsufficientStake)
	if err := e.listNode(t, none); err == nil || customCode(t, err) != anchorAccountNotInitialized {
		t.Fatalf("no stake account: %v", err)
	}
	j := e.createJob(t, 1)
	wantCode(t, "work_job with low stake", e.workJob(t, low, j), chain.ErrInsufficientStake)

	// A stake account passed for another node is a seeds violation.
	ix, err := chain.NewListNodeInstruction(e.program, e.staking, e.market, e.a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ix.Accounts()[1].PublicKey = low.PublicKey()
	_, err = send(t, e.cl, []solana.PrivateKey{low}, ix)
	if err == nil || customCode(t, err) != anchorConstraintSeeds {
		t.Fatalf("foreign stake: %v", err)
	}
}

func TestMarketsAccountChecks(t *testing.T) {
	e := newMarketEnv(t)
	j := e.createJob(t, 1)
	cases := []struct {
		name string
		ix   func() solana.Instruction
		code int64
	}{
		{"unknown discriminator", func() solana.Instruction {
			return solana.NewInstruction(e.program, solana.AccountMetaSlice{solana.Meta(e.market).WRITE()}, []byte{1, 2, 3, 4, 5, 6, 7, 8})
		}, anchorInstructionFallbackNotFound},
		{"short data", func() solana.Instruction {
			return solana.NewInstruction(e.program, solana.AccountMetaSlice{solana.Meta(e.market).WRITE()}, []byte{1})
		}, anchorInstructionMissing},
		{"wrong vault", func() solana.Instruction {
			return chain.NewFinishJobInstruction(e.program, j, e.market, e.a.PublicKey(), e.other.PublicKey(), [32]byte{1})
		}, anchorConstraintAddress},
		{"market not writable", func() solana.Instruction {
			ix := chain.NewUnlistNodeInstruction(e.program, e.market, e.a.PublicKey())
			ix.Accounts()[0].IsWritable = false
			return ix
		}, anchorConstraintMut},
		{"job passed as market", func() solana.Instruction {
			return chain.NewUnlistNodeInstruction(e.program, j, e.a.PublicKey())
		}, anchorAccountDiscriminatorMismatch},
		{"job PDA mismatch", func() solana.Instruction {
			ix, _ := chain.NewCreateJobInstruction(e.program, newKey(t).PublicKey(), e.market, e.a.PublicKey(), e.vault, [32]byte{1}, 0, chain.GPUAny)
			ix.Accounts()[0].PublicKey = j
			return ix
		}, anchorConstraintSeeds},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := send(t, e.cl, []solana.PrivateKey{e.a}, tc.ix())
			if err == nil {
				t.Fatal("succeeded")
			}
			if got := customCode(t, err); got != tc.code {
				t.Fatalf("code %d, want %d (%s)", got, tc.code, describeRPCError(err))
			}
		})
	}
	// A transaction whose second instruction fails leaves nothing of the first.
	before := e.readMarket(t)
	_, err := send(t, e.cl, []solana.PrivateKey{e.a, e.b},
		mustIx(chain.NewWorkJobInstruction(e.program, e.staking, j, e.market, e.a.PublicKey())),
		chain.NewUnlistNodeInstruction(e.program, e.market, e.b.PublicKey()))
	wantCode(t, "atomic", err, chain.ErrNodeNotQueued)
	if re := rpcErr(t, err); !strings.HasPrefix(re.Message, "Transaction simulation failed: Error processing Instruction 1: custom program error: 0x177c") {
		t.Fatalf("message %q", re.Message)
	}
	if after := e.readMarket(t); !keysEqual(after.Queue, before.Queue) || after.QueueType != chain.QueueJobs {
		t.Fatalf("atomic: market changed %+v -> %+v", before, after)
	}
	if got := e.readJob(t, j); got.State != chain.JobQueued || got.Node != nil {
		t.Fatalf("atomic: job changed: %+v", got)
	}
}

func mustIx(ix solana.Instruction, err error) solana.Instruction {
	if err != nil {
		panic(err)
	}
	return ix
}

func queryJobs(t *testing.T, e *marketEnv, filters []rpc.RPCFilter) []solana.PublicKey {
	t.Helper()
	out, err := e.cl.GetProgramAccountsWithOpts(testCtx(t), e.program, &rpc.GetProgramAccountsOpts{Filters: filters})
	if err != nil {
		t.Fatalf("getProgramAccounts: %v", err)
	}
	var keys []solana.PublicKey
	for _, ka := range out {
		if ka.Account.Owner != e.program || !bytes.Equal(ka.Account.Data.GetBinary()[:8], chain.JobDiscriminator[:]) {
			t.Fatalf("unexpected account %s", ka.Pubkey)
		}
		keys = append(keys, ka.Pubkey)
	}
	return keys
}

func sameSet(a, b []solana.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if indexOf(b, x) < 0 {
			return false
		}
	}
	return true
}
