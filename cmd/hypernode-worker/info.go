package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/statusapi"
)

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the worker is doing: node, balance, jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dataDir(cmd.Flags())
			if err != nil {
				return err
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := statusapi.Get(ctx, filepath.Join(dir, "worker.sock"))
			running := err == nil
			if errors.Is(err, statusapi.ErrNotRunning) {
				// No daemon: show the journal.
				st, err = statusFromJournal(filepath.Join(dir, "journal.db"))
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(out, st, running)
			return nil
		},
	}
	addDataDirFlag(cmd.Flags())
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func statusFromJournal(path string) (*statusapi.Status, error) {
	j, err := journal.Open(path, journal.Options{ReadOnly: true, LockTimeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("no worker is running and the journal cannot be read: %w", err)
	}
	defer j.Close()
	snaps, err := j.Snapshots()
	if err != nil {
		return nil, err
	}
	st := &statusapi.Status{Jobs: []statusapi.Job{}}
	for _, s := range snaps {
		st.Jobs = append(st.Jobs, statusapi.JobFromSnapshot(s))
	}
	return st, nil
}

func printStatus(out io.Writer, st *statusapi.Status, running bool) {
	if running {
		fmt.Fprintf(out, "Worker running since %s\n", st.StartedAt.Local().Format(time.RFC1123))
		fmt.Fprintf(out, "  Node:    %s\n  Market:  %s\n  RPC:     %s\n", st.Node, st.Market, st.RPC)
		if st.BalanceLamports != nil {
			fmt.Fprintf(out, "  Balance: %.6f SOL\n", float64(*st.BalanceLamports)/float64(solana.LAMPORTS_PER_SOL))
		}
		fmt.Fprintf(out, "  Jobs running: %d of %d slots\n", st.ActiveJobs, st.Slots)
	} else {
		fmt.Fprintln(out, "Worker not running; jobs from the journal:")
	}
	if len(st.Jobs) == 0 {
		fmt.Fprintln(out, "  no jobs yet")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  JOB\tSTATE\tRESULT\tCID\tUPDATED")
	for _, j := range st.Jobs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", j.Job, j.State, j.Status, j.ResultCID, j.Updated.Local().Format(time.TimeOnly))
	}
	tw.Flush()
}
