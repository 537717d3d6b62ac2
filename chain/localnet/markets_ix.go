package localnet

import (
	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
)

// The nine Markets instructions. Account lists and effects follow
// shared/spec/markets-program.md "Instructions"; Anchor's account checks run
// first (in declaration order), then the instruction's own checks.

// createMarket: market (w,s,new), authority (w,s), vault (w), system_program.
func (x *markets) createMarket(ix *chain.Instruction) *instrError {
	a, ierr := x.accts(0, acctSpec{"market", true, true}, acctSpec{"authority", true, true}, acctSpec{"vault", true, false})
	if ierr != nil {
		return ierr
	}
	market, authority, vault := a[0], a[1], a[2]
	if ierr := x.systemProgramAcct(3); ierr != nil {
		return ierr
	}
	vaultKey, vaultBump, err := chain.VaultPDA(x.program, market.key)
	if err != nil || vault.key != vaultKey {
		return x.anchorFail("vault", anchorConstraintSeeds)
	}
	if ierr := x.initAccount(authority, market, chain.MarketAccountSize, false); ierr != nil {
		return ierr
	}
	if ierr := x.initAccount(authority, vault, 0, true); ierr != nil {
		return ierr
	}
	mk := &chain.Market{
		Authority:         authority.key,
		JobPrice:          ix.JobPrice,
		JobTimeout:        ix.JobTimeout,
		NodeXhyperMinimum: ix.NodeXhyperMinimum,
		QueueType:         chain.QueueEmpty,
		VaultBump:         vaultBump,
		Vault:             vaultKey,
		Queue:             []solana.PublicKey{},
	}
	return x.saveMarket(market.key, mk)
}

// createJob: job (w, PDA ["job", job_id]), market (w), client (w,s), vault
// (w), system_program. Escrows the market's job price; assigns the head
// queued node at once, else queues the job.
func (x *markets) createJob(ix *chain.Instruction) *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", true, false}, acctSpec{"client", true, true}, acctSpec{"vault", true, false})
	if ierr != nil {
		return ierr
	}
	job, market, client, vault := a[0], a[1], a[2], a[3]
	if ierr := x.systemProgramAcct(4); ierr != nil {
		return ierr
	}
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return ierr
	}
	jobKey, bump, err := chain.JobPDA(x.program, ix.JobID)
	if err != nil || job.key != jobKey {
		return x.anchorFail("job", anchorConstraintSeeds)
	}
	if vault.key != mk.Vault {
		return x.anchorFail("vault", anchorConstraintAddress)
	}
	if ierr := x.initAccount(client, job, chain.JobAccountSize, true); ierr != nil {
		return ierr
	}
	if ierr := x.transfer(client.key, vault.key, mk.JobPrice); ierr != nil {
		return ierr
	}
	j := &chain.Job{
		ID:          ix.JobID,
		Market:      market.key,
		Client:      client.key,
		IPFSJob:     ix.IPFSJob,
		Price:       mk.JobPrice,
		Timeout:     mk.JobTimeout,
		State:       chain.JobQueued,
		TimeCreated: x.ic.now,
		MinVRAM:     ix.MinVRAM,
		GPUType:     ix.GPUType,
		Bump:        bump,
	}
	if mk.QueueType == chain.QueueNodes && len(mk.Queue) > 0 {
		node := mk.Queue[0]
		dequeue(mk, 0)
		j.Node = &node
		j.State = chain.JobRunning
		j.TimeStart = x.ic.now
		x.ic.log("Job %s assigned to node %s", job.key, node)
	} else {
		if len(mk.Queue) >= chain.MaxQueue {
			return x.fail(chain.ErrQueueFull)
		}
		mk.Queue = append(mk.Queue, job.key)
		mk.QueueType = chain.QueueJobs
	}
	mk.TotalJobs++
	if ierr := x.saveJob(job.key, j); ierr != nil {
		return ierr
	}
	return x.saveMarket(market.key, mk)
}

// listNode: market (w), node (s), stake (PDA), system_program.
func (x *markets) listNode() *instrError {
	a, ierr := x.accts(0, acctSpec{"market", true, false}, acctSpec{"node", false, true}, acctSpec{"stake", false, false})
	if ierr != nil {
		return ierr
	}
	market, node, stake := a[0], a[1], a[2]
	if ierr := x.systemProgramAcct(3); ierr != nil {
		return ierr
	}
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return ierr
	}
	if ierr := x.checkStake(stake, node.key, mk); ierr != nil {
		return ierr
	}
	switch {
	case mk.QueueType == chain.QueueJobs && len(mk.Queue) > 0:
		return x.fail(chain.ErrQueueHasJobs)
	case mk.QueueType == chain.QueueNodes && indexOf(mk.Queue, node.key) >= 0:
		return x.fail(chain.ErrNodeAlreadyQueued)
	case len(mk.Queue) >= chain.MaxQueue:
		return x.fail(chain.ErrQueueFull)
	}
	mk.Queue = append(mk.Queue, node.key)
	mk.QueueType = chain.QueueNodes
	mk.TotalNodes++
	return x.saveMarket(market.key, mk)
}

// workJob: job (w), market (w), node (s), stake (PDA), system_program.
// Claims a queued job from any queue position.
func (x *markets) workJob() *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", true, false}, acctSpec{"node", false, true}, acctSpec{"stake", false, false})
	if ierr != nil {
		return ierr
	}
	job, market, node, stake := a[0], a[1], a[2], a[3]
	if ierr := x.systemProgramAcct(4); ierr != nil {
		return ierr
	}
	j, ierr := x.loadJob(job)
	if ierr != nil {
		return ierr
	}
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return ierr
	}
	if j.Market != market.key {
		return x.fail(chain.ErrWrongMarket)
	}
	if ierr := x.checkStake(stake, node.key, mk); ierr != nil {
		return ierr
	}
	if j.State != chain.JobQueued {
		return x.fail(chain.ErrJobNotQueued)
	}
	i := indexOf(mk.Queue, job.key)
	if mk.QueueType != chain.QueueJobs || i < 0 {
		return x.fail(chain.ErrJobNotInQueue)
	}
	dequeue(mk, i)
	n := node.key
	j.Node = &n
	j.State = chain.JobRunning
	j.TimeStart = x.ic.now
	if ierr := x.saveJob(job.key, j); ierr != nil {
		return ierr
	}
	return x.saveMarket(market.key, mk)
}

// finishJob: job (w), market, node (w,s), vault (w), system_program. Pays
// 99% of the price to the node; 1% stays in the vault.
func (x *markets) finishJob(ix *chain.Instruction) *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", false, false}, acctSpec{"node", true, true}, acctSpec{"vault", true, false})
	if ierr != nil {
		return ierr
	}
	job, market, node, vault := a[0], a[1], a[2], a[3]
	if ierr := x.systemProgramAcct(4); ierr != nil {
		return ierr
	}
	j, _, ierr := x.jobInMarket(job, market, vault)
	if ierr != nil {
		return ierr
	}
	if j.Node == nil || *j.Node != node.key {
		return x.fail(chain.ErrNotAssignedNode)
	}
	if j.State != chain.JobRunning {
		return x.fail(chain.ErrJobNotRunning)
	}
	if ix.IPFSResult == ([32]byte{}) {
		return x.fail(chain.ErrEmptyResult)
	}
	j.IPFSResult = ix.IPFSResult
	j.State = chain.JobCompleted
	j.TimeEnd = x.ic.now
	if ierr := x.pay(vault.key, node.key, nodeShare(j.Price)); ierr != nil {
		return ierr
	}
	return x.saveJob(job.key, j)
}

// nodeShare is what finish_job pays the node: the price less the 1%
// protocol fee (rounded down), in lamports.
func nodeShare(price uint64) uint64 { return price - price/100 }

// timeoutJob: job (w), market, client (w), vault (w), caller (s). Anyone may
// call it once now > time_start + timeout of a Running job; refunds the client.
func (x *markets) timeoutJob() *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", false, false}, acctSpec{"client", true, false}, acctSpec{"vault", true, false})
	if ierr != nil {
		return ierr
	}
	job, market, client, vault := a[0], a[1], a[2], a[3]
	if _, ierr := x.acct(4, "caller", false, true); ierr != nil {
		return ierr
	}
	j, _, ierr := x.jobInMarket(job, market, vault)
	if ierr != nil {
		return ierr
	}
	if client.key != j.Client {
		return x.fail(chain.ErrUnauthorized)
	}
	if j.State != chain.JobRunning {
		return x.fail(chain.ErrJobNotRunning)
	}
	if x.ic.now <= j.TimeStart+j.Timeout {
		return x.fail(chain.ErrTimeoutNotReached)
	}
	j.State = chain.JobTimedOut
	j.TimeEnd = x.ic.now
	if ierr := x.pay(vault.key, client.key, j.Price); ierr != nil {
		return ierr
	}
	return x.saveJob(job.key, j)
}

// cancelJob: job (w), market (w), client (s,w), vault (w). The client
// withdraws a Queued job and is refunded.
func (x *markets) cancelJob() *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", true, false}, acctSpec{"client", true, true}, acctSpec{"vault", true, false})
	if ierr != nil {
		return ierr
	}
	job, market, client, vault := a[0], a[1], a[2], a[3]
	j, mk, ierr := x.jobInMarket(job, market, vault)
	if ierr != nil {
		return ierr
	}
	if client.key != j.Client {
		return x.fail(chain.ErrUnauthorized)
	}
	if j.State != chain.JobQueued {
		return x.fail(chain.ErrJobNotQueued)
	}
	i := indexOf(mk.Queue, job.key)
	if mk.QueueType != chain.QueueJobs || i < 0 {
		return x.fail(chain.ErrJobNotInQueue)
	}
	dequeue(mk, i)
	j.State = chain.JobStopped
	j.TimeEnd = x.ic.now
	if ierr := x.pay(vault.key, client.key, j.Price); ierr != nil {
		return ierr
	}
	if ierr := x.saveJob(job.key, j); ierr != nil {
		return ierr
	}
	return x.saveMarket(market.key, mk)
}

// quitJob: job (w), market (w), node (s). The assigned node gives a Running
// job back: node cleared, state Queued, job pushed to the queue's front.
// When other nodes wait in the market's node queue the job goes straight to
// the first of them (as create_job does); a quitting node that was itself
// the only queued node is taken out of the queue.
func (x *markets) quitJob() *instrError {
	a, ierr := x.accts(0, acctSpec{"job", true, false}, acctSpec{"market", true, false}, acctSpec{"node", false, true})
	if ierr != nil {
		return ierr
	}
	job, market, node := a[0], a[1], a[2]
	j, ierr := x.loadJob(job)
	if ierr != nil {
		return ierr
	}
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return ierr
	}
	if j.Market != market.key {
		return x.fail(chain.ErrWrongMarket)
	}
	if j.Node == nil || *j.Node != node.key {
		return x.fail(chain.ErrNotAssignedNode)
	}
	if j.State != chain.JobRunning {
		return x.fail(chain.ErrJobNotRunning)
	}
	j.Node = nil
	j.State = chain.JobQueued
	j.TimeStart = 0
	if mk.QueueType == chain.QueueNodes {
		for i, n := range mk.Queue {
			if n == node.key {
				continue
			}
			next := n
			dequeue(mk, i)
			j.Node = &next
			j.State = chain.JobRunning
			j.TimeStart = x.ic.now
			x.ic.log("Job %s assigned to node %s", job.key, next)
			break
		}
		if j.Node == nil {
			// Only the quitting node waits: it leaves the queue.
			mk.Queue = nil
			mk.QueueType = chain.QueueEmpty
		}
	}
	if j.Node == nil {
		if len(mk.Queue) >= chain.MaxQueue {
			return x.fail(chain.ErrQueueFull)
		}
		mk.Queue = append([]solana.PublicKey{job.key}, mk.Queue...)
		mk.QueueType = chain.QueueJobs
	}
	if ierr := x.saveJob(job.key, j); ierr != nil {
		return ierr
	}
	return x.saveMarket(market.key, mk)
}

// unlistNode: market (w), node (s). Removes the node from the node queue.
func (x *markets) unlistNode() *instrError {
	a, ierr := x.accts(0, acctSpec{"market", true, false}, acctSpec{"node", false, true})
	if ierr != nil {
		return ierr
	}
	market, node := a[0], a[1]
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return ierr
	}
	i := indexOf(mk.Queue, node.key)
	if mk.QueueType != chain.QueueNodes || i < 0 {
		return x.fail(chain.ErrNodeNotQueued)
	}
	dequeue(mk, i)
	return x.saveMarket(market.key, mk)
}

// jobInMarket loads a job and its market and checks, in the program's order,
// that the job belongs to that market (WrongMarket) and that vault is the
// market's vault (an Anchor address constraint): the prologue of the
// instructions that move the job's escrow.
func (x *markets) jobInMarket(job, market, vault accountMeta) (*chain.Job, *chain.Market, *instrError) {
	j, ierr := x.loadJob(job)
	if ierr != nil {
		return nil, nil, ierr
	}
	mk, ierr := x.loadMarket(market)
	if ierr != nil {
		return nil, nil, ierr
	}
	if j.Market != market.key {
		return nil, nil, x.fail(chain.ErrWrongMarket)
	}
	if vault.key != mk.Vault {
		return nil, nil, x.anchorFail("vault", anchorConstraintAddress)
	}
	return j, mk, nil
}
