package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/statusapi"
)

func newLogsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logs <job> [-f]",
		Short: "Print a job's container logs from the data directory; -f follows them until the job ends",
		Long: `Print the output of each of the job's operations (DATA_DIR/jobs/<job>/logs/op-N.log), in order.
The logs of a finished job were scrubbed of its secrets when it ended; while the job runs its
definition is fetched (by the CID in the journal or on chain) and its env values are scrubbed
from what is printed. -f keeps printing new output until the job reaches a final state.
--json prints one JSON object per chunk: {"op": N, "text": "..."}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			key, err := solana.PublicKeyFromBase58(args[0])
			if err != nil {
				return usageErr("%q is not a job address", args[0])
			}
			follow, _ := cmd.Flags().GetBool("follow")
			asJSON, _ := cmd.Flags().GetBool("json")
			return printJobLogs(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, key, follow, asJSON, 500*time.Millisecond)
		},
	}
	addConfigFlags(cmd.Flags())
	cmd.Flags().BoolP("follow", "f", false, "keep printing new output until the job ends")
	cmd.Flags().Bool("json", false, "print JSON lines {\"op\": N, \"text\": ...}")
	return cmd
}

// jobView is what logs needs to know of a job: its state and, while it
// runs, where its definition is.
type jobView struct {
	state   string
	defCID  string // from the journal; "" when the daemon holds it
	running bool   // a daemon answers on the data directory
	status  *statusapi.Status
}

// lookupJob asks the running daemon, else reads the journal read-only.
func lookupJob(ctx context.Context, cfg *Config, job string) (*jobView, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := statusapi.Get(sctx, filepath.Join(cfg.DataDir, "worker.sock"))
	cancel()
	if err == nil {
		for _, j := range st.Jobs {
			if j.Job == job {
				return &jobView{state: j.State, running: true, status: st}, nil
			}
		}
		return nil, usageErr("job %s is not in the running worker's journal", job)
	}
	if !errors.Is(err, statusapi.ErrNotRunning) {
		return nil, err
	}
	j, err := journal.Open(cfg.JournalPath(), journal.Options{ReadOnly: true, LockTimeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("no worker is running and the journal cannot be read: %w", err)
	}
	defer j.Close()
	snap, err := j.Snapshot(job)
	if err != nil {
		return nil, usageErr("job %s is not in the journal %s", job, cfg.JournalPath())
	}
	return &jobView{state: snap.State, defCID: snap.Fields[fsm.FieldDefinition]}, nil
}

// jobSecrets fetches the job's definition and returns its secrets, so that
// a running job's raw log can be printed scrubbed.
func jobSecrets(ctx context.Context, cfg *Config, key solana.PublicKey, v *jobView) ([]jobdef.Secret, error) {
	gateways, rpc := cfg.Gateways, cfg.RPCURL
	if v.status != nil && cfg.Embedded() {
		rpc = v.status.RPC
		if len(gateways) == 0 {
			gateways = []string{v.status.RPC}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cid := v.defCID
	if cid == "" {
		if rpc == "" {
			return nil, errors.New("no RPC URL to read the job account from")
		}
		signer, err := solana.NewRandomPrivateKey() // reads only; never signs
		if err != nil {
			return nil, err
		}
		acc, err := chain.NewClient(rpc, signer, cfg.Program, cfg.Staking, cfg.Market).Job(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("read job account: %w", err)
		}
		cid = ipfs.CIDFromDigest(acc.IPFSJob)
	}
	if len(gateways) == 0 {
		return nil, errors.New("no IPFS gateway configured")
	}
	b, err := (&ipfs.Fetcher{Gateways: gateways, MaxBytes: maxDefinitionBytes, PerGatewayTimeout: 15 * time.Second}).Fetch(ctx, cid)
	if err != nil {
		return nil, fmt.Errorf("fetch definition %s: %w", cid, err)
	}
	def, err := jobdef.Parse(b)
	if err != nil {
		return nil, nil // a rejected definition never ran a container
	}
	return def.Secrets(), nil
}

// opLogs lists the op-N.log files of a job, ordered by N.
func opLogs(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ns []int
	for _, e := range entries {
		name := e.Name()
		if s, ok := strings.CutPrefix(name, "op-"); ok {
			if s, ok = strings.CutSuffix(s, ".log"); ok {
				if n, err := strconv.Atoi(s); err == nil && n >= 0 {
					ns = append(ns, n)
				}
			}
		}
	}
	sort.Ints(ns)
	return ns, nil
}

// logPrinter prints operations' output, scrubbed, as text with a header
// per operation or as JSON lines.
type logPrinter struct {
	out     io.Writer
	asJSON  bool
	secrets []jobdef.Secret
	offsets map[int]int64
	scrub   map[int]*jobdef.ScrubWriter // per operation: a secret split across reads is still caught
	cur     int                         // operation whose header was printed last; -1 none
}

// opSink receives operation n's scrubbed output.
type opSink struct {
	p *logPrinter
	n int
}

func (s opSink) Write(b []byte) (int, error) { return len(b), s.p.emit(s.n, b) }

// close flushes what the scrubbers hold back.
func (p *logPrinter) close() error {
	var first error
	for _, n := range sortedOps(p.scrub) {
		if err := p.scrub[n].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func sortedOps(m map[int]*jobdef.ScrubWriter) []int {
	ns := make([]int, 0, len(m))
	for n := range m {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	return ns
}

// drain prints what was appended to each op log since the last call.
func (p *logPrinter) drain(dir string) error {
	ns, err := opLogs(dir)
	if err != nil {
		return err
	}
	for _, n := range ns {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("op-%d.log", n)))
		if err != nil {
			return err
		}
		_, err = f.Seek(p.offsets[n], io.SeekStart)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(io.LimitReader(f, 64<<20))
			p.offsets[n] += int64(len(b))
			if len(b) > 0 {
				err = p.write(n, b)
			}
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *logPrinter) write(n int, b []byte) error {
	w, ok := p.scrub[n]
	if !ok {
		w = jobdef.NewScrubWriter(opSink{p, n}, p.secrets)
		p.scrub[n] = w
	}
	_, err := w.Write(b)
	return err
}

func (p *logPrinter) emit(n int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if p.asJSON {
		return json.NewEncoder(p.out).Encode(struct {
			Op   int    `json:"op"`
			Text string `json:"text"`
		}{n, string(b)})
	}
	if n != p.cur {
		fmt.Fprintf(p.out, "── operation %d ──\n", n)
		p.cur = n
	}
	_, err := p.out.Write(b)
	return err
}

func printJobLogs(ctx context.Context, out, errOut io.Writer, cfg *Config, key solana.PublicKey, follow, asJSON bool, every time.Duration) error {
	job := key.String()
	v, err := lookupJob(ctx, cfg, job)
	if err != nil {
		return err
	}
	p := &logPrinter{out: out, asJSON: asJSON, offsets: map[int]int64{}, scrub: map[int]*jobdef.ScrubWriter{}, cur: -1}
	defer p.close()
	if !fsm.State(v.state).Terminal() {
		// The raw log of a running job may hold its secrets.
		if p.secrets, err = jobSecrets(ctx, cfg, key, v); err != nil {
			return fmt.Errorf("job %s is %s and its log is not scrubbed yet; its definition is needed to scrub it: %w", job, v.state, err)
		}
	}
	dir := filepath.Join(cfg.DataDir, "jobs", job, "logs")
	if err := p.drain(dir); err != nil {
		return err
	}
	if !follow || fsm.State(v.state).Terminal() {
		return nil
	}
	if !v.running {
		fmt.Fprintf(errOut, "job %s is %s but no worker is running on %s: not following\n", job, v.state, cfg.DataDir)
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		v, err = lookupJob(ctx, cfg, job)
		if err != nil {
			return err
		}
		if err := p.drain(dir); err != nil {
			return err
		}
		if fsm.State(v.state).Terminal() || !v.running {
			fmt.Fprintf(errOut, "job %s is %s\n", job, v.state)
			return nil
		}
	}
}
