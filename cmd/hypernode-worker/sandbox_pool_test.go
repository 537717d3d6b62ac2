package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime/workspacefs"
)

// TestWorkspacePoolWiring: with WORKSPACE_SPARES > 0 the driver's workspaces come
// from a pool of that size under DATA_DIR/workspace-pool, each of
// WORKSPACE_LIMIT_MB; closing it leaves the pool directory empty. With 0, or
// without a workspace cap, there is no pool, and a killed worker's spares left
// there are unmounted and removed.
func TestWorkspacePoolWiring(t *testing.T) {
	if testing.Short() {
		t.Skip("loop-mounts filesystems (skipped with -short)")
	}
	if err := workspacefs.Check(); err != nil {
		t.Skip(err)
	}
	data := t.TempDir()
	w := &worker{log: zerolog.Nop(), cfg: &Config{DataDir: data, WorkspaceLimitBytes: 16 << 20,
		Sandbox: SandboxConfig{WorkspaceSpares: 1}}}

	none := &fsm.Driver{}
	w.openWorkspacePool(none)()
	if none.Workspaces != nil {
		t.Errorf("a pool without a workspace cap: %#v", none.Workspaces)
	}

	d := &fsm.Driver{Workspaces: workspaceFS{}}
	closePool := w.openWorkspacePool(d)
	defer closePool()
	fs, ok := d.Workspaces.(workspaceFS)
	if !ok || fs.pool == nil {
		t.Fatalf("Workspaces = %#v, want a pool", d.Workspaces)
	}
	if err := fs.pool.Refill(); errors.Is(err, workspacefs.ErrUnsupported) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	if n := fs.pool.Spares(); n != 1 {
		t.Fatalf("Spares = %d, want WORKSPACE_SPARES = 1", n)
	}
	job := filepath.Join(data, "jobs", "j")
	ws := filepath.Join(job, "workspace")
	if err := d.Workspaces.Mount(ws, filepath.Join(job, "workspace.img"), 16<<20); err != nil {
		t.Fatal(err)
	}
	defer d.Workspaces.Unmount(ws)
	if n := fs.pool.Spares(); n != 0 {
		t.Errorf("Spares = %d after a job's Mount, want 0 (taken)", n)
	}
	closePool()
	if es, err := os.ReadDir(filepath.Join(data, "workspace-pool")); err != nil || len(es) != 0 {
		t.Errorf("pool directory after close: %v, %v; want empty", es, err)
	}

	// A SIGKILLed worker's spare is still mounted; the next start with
	// WORKSPACE_SPARES=0 makes no pool but unmounts and removes it.
	left := filepath.Join(data, "workspace-pool", "spare-3")
	if err := workspacefs.Mount(left, left+".img", 16<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacefs.Unmount(left) })
	w.cfg.Sandbox.WorkspaceSpares = 0
	off := &fsm.Driver{Workspaces: workspaceFS{}}
	w.openWorkspacePool(off)()
	if fs := off.Workspaces.(workspaceFS); fs.pool != nil {
		t.Error("WORKSPACE_SPARES=0 made a pool")
	}
	if mounted, err := workspacefs.IsMountPoint(left); mounted || err == nil {
		t.Errorf("a killed worker's spare with WORKSPACE_SPARES=0: mounted %v, %v; want unmounted and removed", mounted, err)
	}
	if es, err := os.ReadDir(filepath.Join(data, "workspace-pool")); err != nil || len(es) != 0 {
		t.Errorf("pool directory with WORKSPACE_SPARES=0 after a killed worker: %v, %v; want empty", es, err)
	}
}

// TestResumeClearsKilledWorkersSpares: `resume` after a kill -9 unmounts and
// removes the spare workspaces the killed worker left, as start does; it does
// not while another worker holds the journal (that worker's pool), nor with
// --dry-run.
func TestResumeClearsKilledWorkersSpares(t *testing.T) {
	if testing.Short() {
		t.Skip("loop-mounts filesystems (skipped with -short)")
	}
	if err := workspacefs.Check(); err != nil {
		t.Skip(err)
	}
	data := t.TempDir()
	cfg := &Config{Network: "localnet", DataDir: data, LogFormat: "json"}
	left := filepath.Join(data, "workspace-pool", "spare-1")
	if err := workspacefs.Mount(left, left+".img", 16<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacefs.Unmount(left) })
	mounted := func() bool {
		t.Helper()
		m, err := workspacefs.IsMountPoint(left)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return m
	}
	job := solana.NewWallet().PublicKey()
	resume := func(action string) error {
		var out, errOut bytes.Buffer
		return resumeJob(context.Background(), cfg, job, action, &out, &errOut)
	}

	// A running worker holds the journal: resume refuses and its pool stays.
	daemon, err := journal.Open(cfg.JournalPath(), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := resume("continue"); !errors.Is(err, journal.ErrLocked) {
		t.Fatalf("resume beside a running worker: %v; want ErrLocked", err)
	}
	if !mounted() {
		t.Fatal("resume unmounted a running worker's spare")
	}
	daemon.Close()

	if err := resume("show"); !errors.Is(err, errUsage) {
		t.Fatalf("resume --dry-run of a job not journaled: %v; want a usage error", err)
	}
	if !mounted() {
		t.Fatal("resume --dry-run unmounted the spare")
	}
	// The job is not journaled (usage error), but the killed worker's spare
	// is cleared all the same: the lock shows no worker uses it.
	if err := resume("give-back"); !errors.Is(err, errUsage) {
		t.Fatalf("resume of a job not journaled: %v; want a usage error", err)
	}
	if mounted() {
		t.Error("the killed worker's spare is still mounted after resume")
	}
	if es, err := os.ReadDir(filepath.Join(data, "workspace-pool")); err != nil || len(es) != 0 {
		t.Errorf("pool directory after resume: %v, %v; want empty", es, err)
	}
}
