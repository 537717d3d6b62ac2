package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/journal"
)

func newResumeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume <job>",
		Short: "Show one job's journal and reconciled state, then continue it (or --give-back / --abandon); the daemon must be stopped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			job, err := solana.PublicKeyFromBase58(args[0])
			if err != nil {
				return usageErr("%q is not a job address", args[0])
			}
			giveBack, _ := cmd.Flags().GetBool("give-back")
			abandon, _ := cmd.Flags().GetBool("abandon")
			if giveBack && abandon {
				return usageErr("--give-back and --abandon exclude each other")
			}
			dryRun, _ := cmd.Flags().GetBool("dry-run")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			action := "continue"
			switch {
			case giveBack:
				action = "give-back"
			case abandon:
				action = "abandon"
			case dryRun:
				action = "show"
			}
			return resumeJob(ctx, cfg, job, action, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConfigFlags(cmd.Flags())
	cmd.Flags().Bool("give-back", false, "stop the job's container and send quit_job: the market queues it for another node")
	cmd.Flags().Bool("abandon", false, "stop and remove the job's container and mark it abandoned (nothing is sent)")
	cmd.Flags().Bool("dry-run", false, "only show the journal and the reconciled state")
	return cmd
}

func resumeJob(ctx context.Context, cfg *Config, job solana.PublicKey, action string, stdout, stderr io.Writer) error {
	w := &worker{cfg: cfg, out: stdout, log: newLogger(stderr, cfg.LogFormat)}
	defer w.close()
	if err := w.openJournal(); err != nil {
		if errors.Is(err, journal.ErrLocked) {
			return fmt.Errorf("%w\nresume works on a stopped worker: stop the daemon first (it resumes every job itself when it starts)", err)
		}
		return err
	}
	// The journal's lock is held: no daemon runs on this data directory, so
	// the spare workspaces a killed one left mounted are cleared as start
	// clears them (not by --dry-run, which changes nothing).
	if action != "show" {
		w.clearWorkspacePool()
	}
	recs, err := w.journal.Records(job.String())
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return usageErr("job %s is not in the journal %s", job, cfg.JournalPath())
	}
	fmt.Fprintf(stdout, "journal of %s:\n", job)
	for _, r := range recs {
		fmt.Fprintf(stdout, "%6d  %s  %s\n", r.Seq, r.At.Format("15:04:05.000"), describe(r))
	}
	if err := w.connect(ctx); err != nil {
		return err
	}
	// The GPUs the job's journaled GPU IDs are looked up in (a failed Detect
	// leaves none: a job that holds GPUs then cannot be started again here).
	w.specs, _ = hardware.Detect(ctx, hardware.Options{DiskPath: cfg.DataDir, InventoryFile: cfg.GPUInventory})
	if w.specs == nil {
		w.specs = &hardware.Specs{}
	}
	w.pool = newGPUPool(cfg, w.specs)
	d := w.driver()
	if snaps, err := w.journal.Snapshots(); err == nil {
		d.RestoreGPUs(snaps)
	}
	rec, err := d.Reconcile(ctx, job)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nreconciled:")
	for _, l := range rec.Lines() {
		fmt.Fprintln(stdout, "  "+l)
	}
	switch action {
	case "show":
		return nil
	case "abandon":
		if err := d.Abandon(ctx, job, "abandoned by the operator"); err != nil {
			return err
		}
	case "give-back":
		if err := d.GiveBack(ctx, job); err != nil {
			return err
		}
	default:
		if rec.State.Terminal() {
			fmt.Fprintln(stdout, "\nnothing to do: the job has ended")
			return nil
		}
		fmt.Fprintln(stdout, "\ncontinuing…")
		start := time.Now()
		if err := d.Run(ctx, job); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "done in %s\n", time.Since(start).Round(time.Millisecond))
	}
	snap, err := w.journal.Snapshot(job.String())
	if err != nil {
		return err
	}
	line := fmt.Sprintf("\njob %s is now %s", job, snap.State)
	if st := snap.Fields[fsm.FieldStatus]; st != "" && fsm.State(snap.State) != fsm.Abandoned {
		line += fmt.Sprintf(" (result %s %s)", st, snap.Fields[fsm.FieldResultCID])
	}
	if r := snap.Fields["reason"]; r != "" && fsm.State(snap.State) == fsm.Abandoned {
		line += " (" + r + ")"
	}
	fmt.Fprintln(stdout, line)
	return nil
}
