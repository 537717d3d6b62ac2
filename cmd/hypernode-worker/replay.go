package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/journal"
)

// addDataDirFlag is for commands that need only the data directory.
func addDataDirFlag(fs *pflag.FlagSet) {
	fs.String("data-dir", "", "data directory (env HYPERNODE_DATA_DIR, default ~/.hypernode)")
}

func dataDir(fs *pflag.FlagSet) (string, error) {
	d, _ := fs.GetString("data-dir")
	if d == "" {
		d = os.Getenv("HYPERNODE_DATA_DIR")
	}
	if d == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", usageErr("--data-dir is not set and there is no home directory")
		}
		d = filepath.Join(home, ".hypernode")
	}
	return filepath.Abs(d)
}

func newReplayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Print the job journal and verify it (exit 1 naming the first bad record)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dataDir(cmd.Flags())
			if err != nil {
				return err
			}
			job, _ := cmd.Flags().GetString("job")
			asJSON, _ := cmd.Flags().GetBool("json")
			path := filepath.Join(dir, "journal.db")
			// Job names and fields come from the file: never raw to a terminal.
			out := io.Writer(printableWriter{cmd.OutOrStdout()})
			if repair, _ := cmd.Flags().GetBool("repair"); repair {
				return repairJournal(out, path)
			}
			if verifyOnly, _ := cmd.Flags().GetBool("verify"); verifyOnly {
				return verifyJournal(out, path)
			}
			if asJSON {
				out = cmd.OutOrStdout()
			}
			return replay(out, path, job, asJSON)
		},
	}
	addDataDirFlag(cmd.Flags())
	cmd.Flags().String("job", "", "only this job's records")
	cmd.Flags().Bool("json", false, "one JSON record per line")
	cmd.Flags().Bool("verify", false, "only verify: the file's structure, every record and snapshot, and the lifecycle invariants")
	cmd.Flags().Bool("repair", false, "rebuild the snapshots and index from the log (the worker must be stopped), then verify; refuses when the log itself is damaged")
	return cmd
}

// rebuildJournal is journal.Rebuild refusing a log whose records break the
// job lifecycle (fsm.Verifier): the repair rewrites only what the log
// implies, so it needs a log the worker could have written.
func rebuildJournal(path string) (journal.RebuildReport, error) {
	v := fsm.NewVerifier()
	return journal.Rebuild(path, journal.RebuildVerifier{
		Record: v.Add,
		Done: func() error {
			if p := v.Problems(); len(p) > 0 {
				return fmt.Errorf("%d record(s) break the job lifecycle, first: %s (the log itself is damaged)", len(p), p[0])
			}
			return nil
		},
	})
}

// repairJournal rebuilds the journal's derived data from its log
// (journal.Rebuild) and verifies the result as --verify does.
func repairJournal(out io.Writer, path string) error {
	rep, err := rebuildJournal(path)
	if errors.Is(err, journal.ErrLocked) {
		return fmt.Errorf("%w; stop the worker first", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "journal rebuilt from its log: %d records, %d jobs' snapshots and index rewritten (schema %d → %d)\n", rep.Records, rep.Jobs, rep.FromSchema, journal.SchemaVersion)
	return verifyJournal(out, path)
}

// verifyJournal checks the file deeply (journal.CheckWith) and the
// lifecycle invariants (fsm.Verifier) in one walk of the log, then the
// snapshots against the replayed states, printing only the verdict.
func verifyJournal(out io.Writer, path string) error {
	v := fsm.NewVerifier()
	err := journal.CheckWith(path, journal.CheckVisitor{
		Record:    func(r journal.Record) error { v.Add(r); return nil },
		Snapshots: v.CheckSnapshots,
	})
	if errors.Is(err, journal.ErrLocked) {
		return fmt.Errorf("%w; stop the worker first", err)
	}
	if err != nil {
		return err
	}
	problems := v.Problems()
	for _, p := range problems {
		fmt.Fprintln(out, "INVALID", p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("journal %s: %d problem(s), first: %s", path, len(problems), problems[0])
	}
	fmt.Fprintf(out, "journal verified: %d records, file structure sound, every transition legal, every effect preceded by its intent\n", v.Count())
	return nil
}

func replay(out io.Writer, path, job string, asJSON bool) error {
	j, err := journal.Open(path, journal.Options{ReadOnly: true, LockTimeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, journal.ErrLocked) {
			return fmt.Errorf("%w; stop the worker first, or use `hypernode-worker status`", err)
		}
		return err
	}
	defer j.Close()
	paths := map[string][]string{}
	enc := json.NewEncoder(out)
	err = j.Each(func(r journal.Record) error {
		if job != "" && r.Job != job {
			return nil
		}
		if r.Kind == journal.KindTransition {
			paths[r.Job] = append(paths[r.Job], r.To)
		}
		if asJSON {
			return enc.Encode(r)
		}
		fmt.Fprintf(out, "%6d  %s  %s  %s\n", r.Seq, r.At.Format("15:04:05.000"), r.Job, describe(r))
		return nil
	})
	if err != nil {
		return err
	}
	if job != "" {
		if _, err := j.Snapshot(job); errors.Is(err, journal.ErrNotFound) {
			return usageErr("job %s is not in the journal %s", job, path)
		}
	}
	problems, n, err := fsm.Verify(j)
	if err != nil {
		return err
	}
	if !asJSON {
		snaps, _ := j.Snapshots()
		sort.Slice(snaps, func(a, b int) bool { return snaps[a].LastSeq < snaps[b].LastSeq })
		fmt.Fprintln(out, "\njobs:")
		for _, s := range snaps {
			if job != "" && s.Job != job {
				continue
			}
			line := fmt.Sprintf("  %s  %s", s.Job, strings.Join(paths[s.Job], " → "))
			if st := s.Fields[fsm.FieldStatus]; st != "" {
				line += fmt.Sprintf("  (result %s %s)", st, s.Fields[fsm.FieldResultCID])
			}
			fmt.Fprintln(out, line)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(out, "INVALID", p)
		}
		return fmt.Errorf("journal %s: %d problem(s), first: %s", path, len(problems), problems[0])
	}
	if !asJSON {
		fmt.Fprintf(out, "\njournal verified: %d records, every transition legal (the transitions only: replay --verify also checks the file, the snapshots and the index)\n", n)
	}
	return nil
}

func describe(r journal.Record) string {
	var b strings.Builder
	switch r.Kind {
	case journal.KindTransition:
		from := r.From
		if from == "" {
			from = "∅"
		}
		fmt.Fprintf(&b, "%-8s %s → %s", r.Event, from, r.To)
	case journal.KindIntent:
		b.WriteString("intent   ")
		switch {
		case r.Tx != nil:
			fmt.Fprintf(&b, "tx %s sig=%s valid≤%d", r.Tx.Instruction, r.Tx.Signature, r.Tx.LastValidBlockHeight)
		case r.Container != nil:
			fmt.Fprintf(&b, "container %s deadline=%s", r.Container.ID, r.Container.Deadline.Format(time.RFC3339))
		case r.Op != nil:
			fmt.Fprintf(&b, "op %d", r.Op.Index)
		case r.Upload != nil:
			fmt.Fprintf(&b, "upload %s %s", r.Upload.What, r.Upload.CID)
		}
	case journal.KindProgress:
		b.WriteString("progress")
	}
	keys := make([]string, 0, len(r.Fields))
	for k := range r.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if r.Fields[k] != "" && !strings.HasSuffix(k, ".started") {
			fmt.Fprintf(&b, " %s=%q", k, r.Fields[k])
		}
	}
	return b.String()
}
