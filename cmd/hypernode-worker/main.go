// Command hypernode-worker is the Hypernode GPU worker: it registers this
// machine in a Hypernode market on Solana, claims jobs, runs them in
// hardened containerd containers, uploads results to IPFS and is paid by
// finish_job. Every job's life is journaled so that it resumes exactly after
// a crash. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime"
)

func main() {
	// The containerd shim runs this executable as each operation's log
	// writer; in that role it never returns from here.
	runtime.RunLoggerIfInvoked()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI and returns the process exit code: 0 success, 1
// failure, 2 usage or configuration error.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintln(stderr, "hypernode-worker:", printableLines(clean(err)))
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// printableLines is s with each line made safe for a terminal
// (journal.Printable), its line breaks kept: what the worker prints can
// hold job names and keys read from the journal or the chain.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = journal.Printable(l)
	}
	return strings.Join(lines, "\n")
}

// printableWriter writes through printableLines: for text output only (a
// JSON encoder escapes what it writes itself).
type printableWriter struct{ w io.Writer }

func (p printableWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, printableLines(string(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}

// exitCode lets a command choose its exit status after printing its own output.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// clean drops the errUsage prefix from a usage error's message.
func clean(err error) string {
	s := err.Error()
	const p = "usage: "
	if errors.Is(err, errUsage) && len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "hypernode-worker",
		Short:         "Earn from the Hypernode compute market with this machine's GPUs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })
	root.AddCommand(newStartCmd(), newReplayCmd(), newConfigCmd(), newStatusCmd(), newTestCmd(), newLogsCmd(), newLocalnetCmd(), newKeygenCmd(), newResumeCmd(), newCacheCmd())
	return root
}

// newLogger returns a zerolog logger: human console output on a terminal (or
// when format is "console"), JSON otherwise.
func newLogger(w io.Writer, format string) zerolog.Logger {
	console := format == "console"
	if format == "auto" || format == "" {
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}
