package fsm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
)

// runUntilOp drives job until its operation n is running, then stops the
// driver as a crash would.
func (r *rig) runUntilOp(job solana.PublicKey, n int) {
	r.t.Helper()
	if _, err := r.driver.Poll(job); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.driver.Run(ctx, job) }()
	id := ContainerID(job.String(), 1)
	waitFor(r.t, func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		return r.rt.calls[id+"/"+string(rune('0'+n))] > 0
	})
	cancel()
	<-done
}

func TestDriverAbandonsJobTimedOutWhileRunning(t *testing.T) {
	r := newRig(t)
	r.driver.WatchInterval = 5 * time.Millisecond
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"sleep"}]}`)
	if _, err := r.driver.Poll(job); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.driver.Run(context.Background(), job) }()
	id := ContainerID(job.String(), 1)
	waitFor(t, func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		return r.rt.calls[id+"/0"] > 0
	})
	r.chain.mu.Lock()
	r.chain.jobs[job].State = chain.JobTimedOut
	r.chain.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.path(job), ","); got != "polled,claimed,fetched,running,abandoned" {
		t.Fatalf("path %s", got)
	}
	if !r.rt.killed[id] || !r.rt.removed[id] {
		t.Fatal("container not stopped and removed")
	}
	if _, err := os.Stat(r.driver.workspace(job.String())); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("workspace left behind")
	}
	if r.chain.count(chain.IxFinishJob) != 0 {
		t.Fatal("finish sent for a timed-out job")
	}
	r.verify()
}

func TestGiveBack(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"sleep"}]}`)
	r.runUntilOp(job, 0)
	if err := r.driver.GiveBack(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	snap, _ := r.j.Snapshot(job.String())
	if snap.State != string(Abandoned) || snap.Fields["quit_sig"] == "" {
		t.Fatalf("snapshot %+v", snap)
	}
	if acc := r.chain.jobs[job]; acc.State != chain.JobQueued || acc.Node != nil {
		t.Fatalf("chain after quit_job: %+v", acc)
	}
	if !r.rt.removed[ContainerID(job.String(), 1)] {
		t.Fatal("container not removed")
	}
	if err := r.driver.GiveBack(context.Background(), job); !errors.Is(err, ErrTerminal) {
		t.Fatalf("second give-back: %v", err)
	}
	r.verify()
}

func TestAbandonByOperator(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"sleep"}]}`)
	r.runUntilOp(job, 0)
	if err := r.driver.Abandon(context.Background(), job, "operator"); err != nil {
		t.Fatal(err)
	}
	if got := r.path(job); got[len(got)-1] != string(Abandoned) || !r.rt.removed[ContainerID(job.String(), 1)] {
		t.Fatalf("path %v", got)
	}
	if r.chain.count(chain.IxQuitJob) != 0 {
		t.Fatal("abandon sent quit_job")
	}
}

func TestReconcileDescribesPendingWork(t *testing.T) {
	r := newRig(t)
	job := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"echo a"},{"type":"run","command":"sleep"}]}`)
	r.runUntilOp(job, 1)
	rec, err := r.driver.Reconcile(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(rec.Lines(), "\n")
	for _, want := range []string{"journal:     running", "Running, this node", "re-attach to operation 1", ContainerID(job.String(), 1)} {
		if !strings.Contains(text, want) {
			t.Errorf("reconciliation lacks %q:\n%s", want, text)
		}
	}
	r.chain.jobs[job].State = chain.JobStopped
	rec, _ = r.driver.Reconcile(context.Background(), job)
	if !strings.HasPrefix(rec.Next, "abandon") {
		t.Errorf("next for a stopped job: %s", rec.Next)
	}
}

func TestReaper(t *testing.T) {
	r := newRig(t)
	live := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"sleep"}]}`)
	r.runUntilOp(live, 0)
	done := r.post(`{` + imageField + `,"operations":[{"type":"run","command":"true"}]}`)
	r.run(done)
	node := r.chain.node.String()
	// Leftovers: the finished job's container (as if its removal was lost),
	// an unknown container of ours, another node's, an unknown job dir.
	doneID := ContainerID(done.String(), 1)
	r.rt.mu.Lock()
	delete(r.rt.removed, doneID)
	r.rt.created["hn-stray-1"] = ContainerSpec{ID: "hn-stray-1", Node: node}
	r.rt.created["hn-theirs-1"] = ContainerSpec{ID: "hn-theirs-1", Node: "someone-else"}
	r.rt.mu.Unlock()
	stray := r.driver.JobDir("StrayJob")
	if err := os.MkdirAll(filepath.Join(stray, "workspace"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(r.driver.workspace(done.String()), 0o755) // a finished job's workspace left behind

	now := time.Now()
	reaper := &Reaper{Driver: r.driver, Opts: ReapOptions{Grace: time.Minute, Now: func() time.Time { return now }}}
	removed, err := reaper.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(removed, "\n")
	if !strings.Contains(got, doneID) || strings.Contains(got, "hn-stray-1") || strings.Contains(got, "StrayJob") {
		t.Fatalf("first pass removed:\n%s", got)
	}
	if !strings.Contains(got, "workspace "+r.driver.workspace(done.String())) {
		t.Fatalf("finished job's workspace kept:\n%s", got)
	}
	now = now.Add(2 * time.Minute)
	removed, err = reaper.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got = strings.Join(removed, "\n")
	if !strings.Contains(got, "hn-stray-1") || !strings.Contains(got, "StrayJob") {
		t.Fatalf("after the grace period removed:\n%s", got)
	}
	r.rt.mu.Lock()
	defer r.rt.mu.Unlock()
	if r.rt.removed["hn-theirs-1"] || r.rt.removed[ContainerID(live.String(), 1)] {
		t.Fatal("reaped another node's container or a live job's")
	}
}
