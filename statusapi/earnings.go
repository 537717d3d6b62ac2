package statusapi

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
)

// Price is what one job pays, and where the figure was read.
type Price struct {
	Lamports uint64 `json:"lamports"`
	// Source: "job account" (the chain JobAccount's price, copied from the
	// market when the job was created) or "market" (the market's job_price,
	// used when the job account can no longer be read).
	Source string `json:"source"`
}

// Earnings is what finish_job paid this node, per job and in total.
type Earnings struct {
	TotalLamports uint64       `json:"total_lamports"`
	Jobs          []JobEarning `json:"jobs"`
}

// JobEarning is one paid job: the journal says finish_job landed (state
// finished or failed: the program pays for any result), the chain says the
// price.
type JobEarning struct {
	Job            string    `json:"job"`
	State          string    `json:"state"`
	At             time.Time `json:"at"` // when finish_job's landing was journaled
	PriceLamports  uint64    `json:"price_lamports"`
	EarnedLamports uint64    `json:"earned_lamports"`
	PriceSource    string    `json:"price_source"`
}

// NodeShare is what finish_job pays the node out of a job's price: 99%, the
// 1% protocol fee (integer division, as the program computes it) staying in
// the market's vault (spec/markets-program.md, finish_job).
func NodeShare(price uint64) uint64 { return price - price/100 }

// Paid reports whether finish_job landed for a job in state s.
func Paid(s fsm.State) bool { return s == fsm.Finished || s == fsm.Failed }

// earnings computes Earnings from the journal, reading the prices of paid
// jobs not seen before in one Prices call (a job's price never changes).
type earnings struct {
	journal *journal.Journal
	prices  func(context.Context, []string) (map[string]Price, error)

	mu    sync.Mutex
	cache map[string]Price
}

func (e *earnings) compute(ctx context.Context) (*Earnings, error) {
	snaps, err := e.journal.Snapshots()
	if err != nil {
		return nil, err
	}
	var paid []journal.Snapshot
	var unknown []string
	e.mu.Lock()
	for _, s := range snaps {
		if Paid(fsm.State(s.State)) {
			paid = append(paid, s)
			if _, ok := e.cache[s.Job]; !ok {
				unknown = append(unknown, s.Job)
			}
		}
	}
	e.mu.Unlock()
	if len(unknown) > 0 {
		got, err := e.prices(ctx, unknown)
		if err != nil {
			return nil, fmt.Errorf("prices of %d paid jobs: %w", len(unknown), err)
		}
		e.mu.Lock()
		for _, job := range unknown {
			if p, ok := got[job]; ok {
				e.cache[job] = p
			}
		}
		e.mu.Unlock()
	}
	out := &Earnings{Jobs: []JobEarning{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range paid {
		p, ok := e.cache[s.Job]
		if !ok {
			return nil, fmt.Errorf("no price for paid job %s", s.Job)
		}
		je := JobEarning{Job: s.Job, State: s.State, At: s.Updated, PriceLamports: p.Lamports, EarnedLamports: NodeShare(p.Lamports), PriceSource: p.Source}
		out.Jobs = append(out.Jobs, je)
		out.TotalLamports += je.EarnedLamports
	}
	sort.SliceStable(out.Jobs, func(a, b int) bool { return out.Jobs[a].At.Before(out.Jobs[b].At) })
	return out, nil
}
