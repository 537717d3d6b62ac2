package fsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// fakeChain is an in-memory market: job accounts and landed signatures.
type fakeChain struct {
	mu      sync.Mutex
	node    solana.PublicKey
	jobs    map[solana.PublicKey]*chain.Job
	landed  map[solana.Signature]string // signature -> instruction
	sent    map[solana.Signature]int    // submissions per signature
	expire  map[string]int              // instruction -> how many next submissions expire
	stealOn bool                        // another node claims first
}

func newFakeChain() *fakeChain {
	return &fakeChain{node: solana.NewWallet().PublicKey(), jobs: map[solana.PublicKey]*chain.Job{},
		landed: map[solana.Signature]string{}, sent: map[solana.Signature]int{}, expire: map[string]int{}}
}

func (c *fakeChain) Node() solana.PublicKey { return c.node }

func (c *fakeChain) Job(_ context.Context, k solana.PublicKey) (*chain.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[k]
	if !ok {
		return nil, chain.ErrAccountNotFound
	}
	cp := *j
	return &cp, nil
}

type fakeTx struct {
	Job    solana.PublicKey
	Result [32]byte
}

func (c *fakeChain) sign(name string, body fakeTx) *chain.SignedTx {
	var sig solana.Signature
	_, _ = rand.Read(sig[:])
	raw, _ := json.Marshal(body)
	return &chain.SignedTx{Instruction: name, Signature: sig, Raw: raw, LastValidBlockHeight: 150}
}

func (c *fakeChain) SignWorkJob(_ context.Context, job solana.PublicKey) (*chain.SignedTx, error) {
	return c.sign(chain.IxWorkJob, fakeTx{Job: job}), nil
}

func (c *fakeChain) SignFinishJob(_ context.Context, _ *chain.Job, job solana.PublicKey, r [32]byte) (*chain.SignedTx, error) {
	return c.sign(chain.IxFinishJob, fakeTx{Job: job, Result: r}), nil
}

func (c *fakeChain) SignQuitJob(_ context.Context, job solana.PublicKey) (*chain.SignedTx, error) {
	return c.sign(chain.IxQuitJob, fakeTx{Job: job}), nil
}

func (c *fakeChain) TxStatus(_ context.Context, sig solana.Signature) (chain.TxStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.landed[sig]
	return chain.TxStatus{Found: ok, Confirmed: ok, BlockHeight: 10}, nil
}

func (c *fakeChain) Submit(ctx context.Context, tx *chain.SignedTx) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[tx.Signature]++
	if _, ok := c.landed[tx.Signature]; ok {
		return nil
	}
	if c.expire[tx.Instruction] > 0 {
		c.expire[tx.Instruction]--
		return chain.ErrBlockhashExpired
	}
	var body fakeTx
	if err := json.Unmarshal(tx.Raw, &body); err != nil {
		return err
	}
	j := c.jobs[body.Job]
	switch tx.Instruction {
	case chain.IxWorkJob:
		if c.stealOn {
			other := solana.NewWallet().PublicKey()
			j.Node, j.State = &other, chain.JobRunning
		}
		if j.State != chain.JobQueued {
			return &chain.TxError{Signature: tx.Signature.String(), Program: chain.ErrJobNotQueued}
		}
		n := c.node
		j.Node, j.State, j.TimeStart = &n, chain.JobRunning, time.Now().Unix()
	case chain.IxQuitJob:
		if j.State != chain.JobRunning || j.Node == nil || *j.Node != c.node {
			return &chain.TxError{Signature: tx.Signature.String(), Program: chain.ErrNotAssignedNode}
		}
		j.Node, j.State = nil, chain.JobQueued
	case chain.IxFinishJob:
		if j.State != chain.JobRunning {
			return &chain.TxError{Signature: tx.Signature.String(), Landed: true, Program: chain.ErrJobNotRunning}
		}
		j.State, j.IPFSResult = chain.JobCompleted, body.Result
	}
	c.landed[tx.Signature] = tx.Instruction
	return nil
}

func (c *fakeChain) count(instruction string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, in := range c.landed {
		if in == instruction {
			n++
		}
	}
	return n
}

// memStore is a content store in memory that computes real CIDs.
type memStore struct {
	mu      sync.Mutex
	blobs   map[string][]byte
	lie     map[string][]byte // cid -> bytes served instead
	fetches map[string]int    // cid -> Fetch calls
}

func newMemStore() *memStore {
	return &memStore{blobs: map[string][]byte{}, lie: map[string][]byte{}, fetches: map[string]int{}}
}

func (s *memStore) put(b []byte) string {
	c, _, err := ipfs.ComputeCID(bytes.NewReader(b))
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.blobs[c.String()] = b
	s.mu.Unlock()
	return c.String()
}

func (s *memStore) Fetch(_ context.Context, cid string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches[cid]++
	if b, ok := s.lie[cid]; ok {
		got, _, _ := ipfs.ComputeCID(bytes.NewReader(b))
		return nil, &ipfs.MismatchError{Gateway: "mem", Want: cid, Got: got.String()}
	}
	b, ok := s.blobs[cid]
	if !ok {
		return nil, errors.New("not found")
	}
	return b, nil
}

func (s *memStore) ComputeCID(r io.Reader) (string, int64, error) {
	c, n, err := ipfs.ComputeCID(r)
	return c.String(), n, err
}

func (s *memStore) AddFile(_ context.Context, path string) (string, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	return s.put(b), int64(len(b)), nil
}

func (s *memStore) get(t *testing.T, cid string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[cid]
	if !ok {
		t.Fatalf("CID %s not in store", cid)
	}
	return b
}

// fakeRuntime runs operations as Go code: argv[2] of a shell op is
// interpreted: "exit N", "sleep" (until ctx or Kill), "write F TEXT" (into
// the workspace), "echo TEXT".
type fakeRuntime struct {
	mu       sync.Mutex
	created  map[string]ContainerSpec
	starts   map[string]int // "id/n" -> task starts
	calls    map[string]int // "id/n" -> RunOp calls (starts and re-attaches)
	exited   map[string]Exit
	killed   map[string]bool
	removed  map[string]bool
	blocking chan struct{} // closed to release "sleep" ops that should end normally
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{created: map[string]ContainerSpec{}, starts: map[string]int{}, calls: map[string]int{}, exited: map[string]Exit{},
		killed: map[string]bool{}, removed: map[string]bool{}, blocking: make(chan struct{})}
}

func (r *fakeRuntime) EnsureImage(_ context.Context, ref string) error {
	if strings.Contains(ref, "missing") {
		return errors.New("pull: not found")
	}
	return nil
}

func (r *fakeRuntime) Create(_ context.Context, s ContainerSpec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.created[s.ID] = s
	return nil
}

func (r *fakeRuntime) RunOp(ctx context.Context, id string, n int, op Op, logPath string) (Exit, error) {
	k := fmt.Sprintf("%s/%d", id, n)
	r.mu.Lock()
	r.calls[k]++
	spec, ok := r.created[id]
	if !ok {
		r.mu.Unlock()
		return Exit{}, errors.New("no such container")
	}
	if e, ok := r.exited[k]; ok {
		r.mu.Unlock()
		return e, nil
	}
	first := r.starts[k] == 0
	if first { // a task that exists is re-attached, not started again
		r.starts[k]++
	}
	r.mu.Unlock()
	cmd := op.Argv[len(op.Argv)-1]
	var out string
	code := 0
	switch {
	case cmd == "missing":
		return Exit{}, fmt.Errorf("%w: exec: \"missing\": no such file", ErrOpCannotStart)
	case strings.HasPrefix(cmd, "exit "):
		fmt.Sscanf(cmd, "exit %d", &code)
	case strings.HasPrefix(cmd, "fill "): // fill N: write N bytes, then sleep
		var size int
		fmt.Sscanf(cmd, "fill %d", &size)
		if err := os.WriteFile(filepath.Join(spec.Workspace, "big"), make([]byte, size), 0o644); err != nil {
			return Exit{}, err
		}
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-r.blocking:
		}
	case cmd == "sleep":
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-r.blocking:
		}
	case strings.HasPrefix(cmd, "write "):
		parts := strings.SplitN(cmd, " ", 3)
		if err := os.WriteFile(filepath.Join(spec.Workspace, parts[1]), []byte(parts[2]), 0o644); err != nil {
			return Exit{}, err
		}
	case strings.HasPrefix(cmd, "echo "):
		out = cmd[5:] + "\n"
	}
	if first {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return Exit{}, err
		}
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return Exit{}, err
		}
		f.WriteString(out)
		f.Close()
	}
	e := Exit{Code: code, ExitedAt: time.Now()}
	r.mu.Lock()
	r.exited[k] = e
	r.mu.Unlock()
	return e, nil
}

func (r *fakeRuntime) Inspect(_ context.Context, id string) (ContainerState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	spec, ok := r.created[id]
	if !ok || r.removed[id] {
		return ContainerState{}, nil
	}
	return ContainerState{Exists: true, Op: -1, Labels: map[string]string{LabelNode: spec.Node}}, nil
}

func (r *fakeRuntime) List(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id := range r.created {
		if !r.removed[id] {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (r *fakeRuntime) Kill(_ context.Context, id string) error {
	r.mu.Lock()
	r.killed[id] = true
	r.mu.Unlock()
	return nil
}

func (r *fakeRuntime) Remove(_ context.Context, id string) error {
	r.mu.Lock()
	r.removed[id] = true
	r.mu.Unlock()
	return nil
}

type rig struct {
	t      *testing.T
	dir    string
	j      *journal.Journal
	chain  *fakeChain
	store  *memStore
	rt     *fakeRuntime
	driver *Driver
}

func newRig(t *testing.T) *rig {
	dir := t.TempDir()
	j, err := journal.Open(filepath.Join(dir, "journal.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	r := &rig{t: t, dir: dir, j: j, chain: newFakeChain(), store: newMemStore(), rt: newFakeRuntime()}
	r.driver = r.newDriver()
	return r
}

func (r *rig) newDriver() *Driver {
	return &Driver{Journal: r.j, Chain: r.chain, Store: r.store, Runtime: r.rt, DataDir: r.dir,
		Log: zerolog.Nop(), RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond}
}

// post queues a job whose definition is def (raw JSON).
func (r *rig) post(def string) solana.PublicKey {
	cid := r.store.put([]byte(def))
	d, err := ipfs.DigestFromCID(cid)
	if err != nil {
		r.t.Fatal(err)
	}
	key := solana.NewWallet().PublicKey()
	r.chain.jobs[key] = &chain.Job{ID: key, State: chain.JobQueued, IPFSJob: d, Timeout: 3600, Price: 1000}
	return key
}

func (r *rig) run(job solana.PublicKey) {
	r.t.Helper()
	if _, err := r.driver.Poll(job); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.driver.Run(ctx, job); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) path(job solana.PublicKey) []string {
	recs, err := r.j.Records(job.String())
	if err != nil {
		r.t.Fatal(err)
	}
	var p []string
	for _, rec := range recs {
		if rec.Kind == journal.KindTransition {
			p = append(p, rec.To)
		}
	}
	return p
}

func (r *rig) result(job solana.PublicKey) *jobdef.Result {
	snap, err := r.j.Snapshot(job.String())
	if err != nil {
		r.t.Fatal(err)
	}
	res, err := jobdef.ParseResult(r.store.get(r.t, snap.Fields[FieldResultCID]))
	if err != nil {
		r.t.Fatal(err)
	}
	acc := r.chain.jobs[job]
	if want, _ := ipfs.DigestFromCID(snap.Fields[FieldResultCID]); acc.IPFSResult != [32]byte(want) {
		r.t.Fatalf("finish_job carried %x, result CID is %s", acc.IPFSResult, snap.Fields[FieldResultCID])
	}
	return res
}

func (r *rig) verify() {
	problems, _, err := Verify(r.j)
	if err != nil || len(problems) > 0 {
		r.t.Fatalf("journal does not verify: %v %v", problems, err)
	}
}

const imageField = `"image":"hypernode.local/test:latest"`

func TestDriverSucceeds(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo hello s3cr3t-value"},{"type":"run","command":"write output/result.txt 42"}],"env":{"TOKEN":"s3cr3t-value"}}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,running,uploaded,finished" {
		t.Fatalf("path %s", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusSucceeded || len(res.Operations) != 2 || res.Operations[0].LogTail != "hello [redacted]\n" {
		t.Fatalf("result %+v", res)
	}
	if len(res.Outputs) != 1 || res.Outputs[0].Path != "result.txt" || string(r.store.get(t, res.Outputs[0].CID)) != "42" {
		t.Fatalf("outputs %+v", res.Outputs)
	}
	if r.chain.count(chain.IxWorkJob) != 1 || r.chain.count(chain.IxFinishJob) != 1 {
		t.Fatal("expected one claim and one finish")
	}
	spec := r.rt.created[ContainerID(job.String(), 1)]
	if !contains(spec.Env, "TOKEN=s3cr3t-value") {
		t.Fatal("secret env not handed to the container")
	}
	raw, _ := os.ReadFile(r.j.Path())
	if bytes.Contains(raw, []byte("s3cr3t-value")) {
		t.Fatal("secret reached the journal")
	}
	if !r.rt.removed[spec.ID] {
		t.Fatal("container not removed after upload")
	}
	r.verify()
}

// TestDriverFetchesDefinitionOnce: the start and run steps reuse the
// definition the fetch step verified against its CID; a driver that ends the
// job forgets it, and a new driver (a restart) fetches it again.
func TestDriverFetchesDefinitionOnce(t *testing.T) {
	r := newRig(t)
	def := `{` + imageField + `,"operations":[{"type":"run","command":"echo one"}]}`
	job := r.post(def)
	cid := r.store.put([]byte(def))
	r.run(job)
	if res := r.result(job); res.Status != jobdef.StatusSucceeded {
		t.Fatalf("result %+v", res)
	}
	if n := r.store.fetches[cid]; n != 1 {
		t.Errorf("definition fetched %d times for one job, want 1", n)
	}
	if def := r.driver.cachedDefinition(cid); def != nil {
		t.Errorf("ended job's definition still cached: %+v", def)
	}

	// Same definition, another job, a driver that restarts between fetch and
	// start: the new process fetches it once more.
	job2 := r.post(def)
	r.chain.jobs[job2].State = chain.JobRunning
	node := r.chain.Node()
	r.chain.jobs[job2].Node = &node
	if _, err := r.driver.Poll(job2); err != nil {
		t.Fatal(err)
	}
	for {
		snap, err := r.j.Snapshot(job2.String())
		if err != nil {
			t.Fatal(err)
		}
		if snap.State == string(Fetched) {
			break
		}
		if err := r.driver.step(context.Background(), job2, snap); err != nil {
			t.Fatalf("step from %s: %v", snap.State, err)
		}
	}
	r.driver = r.newDriver()
	r.run(job2)
	if n := r.store.fetches[cid]; n != 3 {
		t.Errorf("definition fetched %d times in all, want 3 (job 1, job 2 before and after the restart)", n)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestDriverFailingOperation(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"exit 3"},{"type":"run","command":"echo never"}]}`)
	r.run(job)
	if got := r.path(job); got[len(got)-1] != string(Failed) {
		t.Fatalf("path %v", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || len(res.Operations) != 1 || res.Operations[0].ExitCode != 3 || !strings.Contains(res.Error, "code 3") {
		t.Fatalf("result %+v", res)
	}
	if r.rt.starts[ContainerID(job.String(), 1)+"/1"] != 0 {
		t.Fatal("operation after a failed one was started")
	}
	r.verify()
}

func TestDriverOperationCannotStart(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"missing"},{"type":"run","command":"echo never"}]}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || len(res.Operations) != 1 || res.Operations[0].ExitCode != 127 || !strings.Contains(res.Error, "no such file") {
		t.Fatalf("result %+v", res)
	}
	r.verify()
}

func TestDriverFailsJobThatFillsItsWorkspace(t *testing.T) {
	r := newRig(t)
	r.driver.WatchInterval = 5 * time.Millisecond
	r.driver.Limits.MaxWorkspaceBytes = 1000
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"fill 5000"}]}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "workspace exceeded its 1000-byte limit") {
		t.Fatalf("result %+v", res)
	}
	if !r.rt.killed[ContainerID(job.String(), 1)] {
		t.Fatal("container not killed")
	}
	r.verify()
}

func TestDriverFailsJobOverOutputLimits(t *testing.T) {
	r := newRig(t)
	r.driver.Limits.MaxOutputBytes = 3
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"write output/a.txt 12345"}]}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "output files exceed 3 bytes") || len(res.Outputs) != 0 {
		t.Fatalf("result %+v", res)
	}
	r.verify()
}

func TestDriverFailsJobWhoseImageCannotBePulled(t *testing.T) {
	r := newRig(t)
	job := r.post(`{"image":"hypernode.local/missing:latest","operations":[{"type":"run","command":"true"}]}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,uploaded,failed" {
		t.Fatalf("path %s", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "could not be pulled (5 attempts)") {
		t.Fatalf("result %+v", res)
	}
	r.verify()
}

func TestDriverTimeout(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"timeout":1,"operations":[{"type":"run","command":"sleep"}]}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusTimeout || res.Operations[0].ExitCode != 137 {
		t.Fatalf("result %+v", res)
	}
	if !r.rt.killed[ContainerID(job.String(), 1)] {
		t.Fatal("container not killed at the deadline")
	}
	if got := r.path(job); got[len(got)-1] != string(Failed) {
		t.Fatalf("path %v", got)
	}
}

func TestDriverRejectsInvalidDefinition(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"exec","command":"true"}]}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,uploaded,failed" {
		t.Fatalf("path %s", got)
	}
	res := r.result(job)
	if res.Status != jobdef.StatusRejected || !strings.Contains(res.Error, "operations[0].type") {
		t.Fatalf("result %+v", res)
	}
	if len(r.rt.created) != 0 {
		t.Fatal("a container was created for an invalid definition")
	}
}

func TestDriverRejectsMismatchedDefinition(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	r.store.lie[ipfs.CIDFromDigest(ipfs.Digest(r.chain.jobs[job].IPFSJob))] = []byte("tampered")
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusRejected || len(r.rt.created) != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestDriverLostClaim(t *testing.T) {
	r := newRig(t)
	r.chain.stealOn = true
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	r.run(job)
	if got := strings.Join(r.path(job), ","); got != "polled,lost" {
		t.Fatalf("path %s", got)
	}
	snap, _ := r.j.Snapshot(job.String())
	if snap.Fields["reason"] != "JobNotQueued" {
		t.Fatalf("reason %q", snap.Fields["reason"])
	}
}

func TestDriverRebuildsExpiredTransaction(t *testing.T) {
	r := newRig(t)
	r.chain.expire[chain.IxFinishJob] = 2
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	r.run(job)
	if r.chain.count(chain.IxFinishJob) != 1 {
		t.Fatal("finish_job did not land exactly once")
	}
	recs, _ := r.j.Records(job.String())
	var finishIntents int
	for _, rec := range recs {
		if rec.Tx != nil && rec.Tx.Instruction == chain.IxFinishJob {
			finishIntents++
		}
	}
	if finishIntents != 3 {
		t.Fatalf("%d finish_job intents, want 3 (two expired, one landed)", finishIntents)
	}
	r.verify()
}

// A worker stopped mid-operation resumes: the same container's task is
// re-attached (never started twice) and the job finishes once.
func TestDriverResumesMidOperation(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo one"},{"type":"run","command":"sleep"}]}`)
	if _, err := r.driver.Poll(job); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.driver.Run(ctx, job) }()
	id := ContainerID(job.String(), 1)
	waitFor(t, func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		return r.rt.starts[id+"/1"] == 1
	})
	cancel() // the process "dies" while op 1 runs
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	snap, _ := r.j.Snapshot(job.String())
	if snap.State != string(Running) || snap.Op == nil || snap.Op.Index != 1 {
		t.Fatalf("snapshot after crash: %+v", snap)
	}
	close(r.rt.blocking) // the op ends while we are down
	r.driver = r.newDriver()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := r.driver.Run(ctx2, job); err != nil {
		t.Fatal(err)
	}
	if r.rt.starts[id+"/1"] != 1 || r.rt.starts[id+"/0"] != 1 {
		t.Fatalf("starts %v: an operation was started twice", r.rt.starts)
	}
	if r.rt.calls[id+"/0"] != 1 || r.rt.calls[id+"/1"] != 2 || len(r.rt.created) != 1 {
		t.Fatalf("calls %v, containers %d: want op 0 run once, op 1 re-attached once, one container", r.rt.calls, len(r.rt.created))
	}
	if r.result(job).Status != jobdef.StatusSucceeded || r.chain.count(chain.IxFinishJob) != 1 {
		t.Fatal("resumed job did not finish exactly once")
	}
	r.verify()
}

// A finish_job signed and journaled but not known to have landed is re-sent
// byte for byte after a restart, not signed again.
func TestDriverResendsJournaledTransaction(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	if _, err := r.driver.Poll(job); err != nil {
		t.Fatal(err)
	}
	// Drive to uploaded, then stop before finish lands: expire forever.
	r.chain.expire[chain.IxFinishJob] = 0
	ctx, cancel := context.WithCancel(context.Background())
	r.driver.Chain = &haltingChain{fakeChain: r.chain, halt: chain.IxFinishJob, cancel: cancel}
	if err := r.driver.Run(ctx, job); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	snap, _ := r.j.Snapshot(job.String())
	if snap.State != string(Uploaded) || snap.Tx == nil || snap.Tx.Instruction != chain.IxFinishJob {
		t.Fatalf("snapshot %+v", snap)
	}
	sig := solana.MustSignatureFromBase58(snap.Tx.Signature)
	r.driver = r.newDriver()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := r.driver.Run(ctx2, job); err != nil {
		t.Fatal(err)
	}
	if r.chain.landed[sig] != chain.IxFinishJob || r.chain.count(chain.IxFinishJob) != 1 {
		t.Fatal("the journaled finish_job was not the one that landed")
	}
	r.verify()
}

// haltingChain cancels the run when a transaction of instruction halt is
// submitted, as if the process died right after journaling its intent.
type haltingChain struct {
	*fakeChain
	halt   string
	cancel context.CancelFunc
}

func (h *haltingChain) Submit(ctx context.Context, tx *chain.SignedTx) error {
	if tx.Instruction == h.halt {
		h.cancel()
		return ctx.Err()
	}
	return h.fakeChain.Submit(ctx, tx)
}

func TestDriverAbandonsJobTakenAway(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	if _, err := r.driver.Poll(job); err != nil {
		t.Fatal(err)
	}
	r.chain.jobs[job].State = chain.JobQueued
	n := r.chain.node
	r.chain.jobs[job].Node = &n
	// Claimed, then the job times out on chain before fetch.
	if err := r.driver.transition(job.String(), Polled, EvClaim, nil); err != nil {
		t.Fatal(err)
	}
	r.chain.jobs[job].State = chain.JobTimedOut
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.driver.Run(ctx, job); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,abandoned" {
		t.Fatalf("path %s", got)
	}
	if r.chain.count(chain.IxFinishJob) != 0 {
		t.Fatal("finish sent for an abandoned job")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDriverFailsJobOverLogLimit: output reaching the log limit fails the
// job with that reason, even when the operation exits 0.
func TestDriverFailsJobOverLogLimit(t *testing.T) {
	r := newRig(t)
	r.driver.Limits.MaxLogBytes = 10
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo far more than ten bytes"},{"type":"run","command":"echo never"}]}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "operation 0 was stopped: its output reached the 10-byte log limit") {
		t.Fatalf("result %+v", res)
	}
	if len(res.Operations) != 1 {
		t.Fatalf("operations %+v: the one after the limit ran", res.Operations)
	}
	r.verify()
}

// TestDriverScrubsOutputs: a secret the job writes into an output file is
// scrubbed before the file is uploaded.
func TestDriverScrubsOutputs(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"write output/leak.txt token=s3cr3t-value;"}],"env":{"TOKEN":"s3cr3t-value"}}`)
	r.run(job)
	res := r.result(job)
	if res.Status != jobdef.StatusSucceeded || len(res.Outputs) != 1 {
		t.Fatalf("result %+v", res)
	}
	got := string(r.store.get(t, res.Outputs[0].CID))
	if got != "token="+jobdef.Redacted+";" || res.Outputs[0].Size != int64(len(got)) {
		t.Fatalf("uploaded output %q (size %d)", got, res.Outputs[0].Size)
	}
	r.verify()
}

type fakeModels struct {
	mu       sync.Mutex
	acquired map[string]string // job -> model
	finished map[string]bool   // job -> succeeded
}

func (f *fakeModels) Acquire(model, job string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquired[job] = model
	return "/cache/" + model, false, nil
}

func (f *fakeModels) Finish(job string, ok bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, done := f.finished[job]; !done {
		f.finished[job] = ok
	}
	return nil
}

// TestDriverModelCache: a job naming a model gets the cache mounted and its
// path in the environment; the cache learns whether the job succeeded.
func TestDriverModelCache(t *testing.T) {
	for _, tc := range []struct {
		cmd string
		ok  bool
	}{{"echo fine", true}, {"exit 2", false}} {
		r := newRig(t)
		m := &fakeModels{acquired: map[string]string{}, finished: map[string]bool{}}
		r.driver.Models = m
		job := r.post(`{` + imageField + `,"model":"org/llm","operations":[{"type":"run","command":"` + tc.cmd + `"}]}`)
		r.run(job)
		spec := r.rt.created[ContainerID(job.String(), 1)]
		if spec.ModelDir != "/cache/org/llm" || spec.ModelReadOnly || !contains(spec.Env, EnvModelDir+"="+ModelsDir) {
			t.Fatalf("spec %+v", spec)
		}
		if ok, done := m.finished[job.String()]; !done || ok != tc.ok || m.acquired[job.String()] != "org/llm" {
			t.Fatalf("%s: finished %v %v, acquired %q", tc.cmd, ok, done, m.acquired[job.String()])
		}
		r.verify()
	}
}
