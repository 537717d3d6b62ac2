package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/statusapi"
)

const defaultLocalnetURL = "http://127.0.0.1:8899"

func newLocalnetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "localnet",
		Short: "Run the embedded local market standalone (Solana JSON-RPC, WebSocket and an IPFS gateway on loopback)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			addr, _ := f.GetString("addr")
			dir, _ := f.GetString("dir")
			stakes, _ := f.GetStringSlice("stake")
			price, _ := f.GetUint64("job-price")
			timeout, _ := f.GetInt64("job-timeout")
			slot, _ := f.GetDuration("slot-interval")
			faults, err := faultFlags(f)
			if err != nil {
				return err
			}
			var nodes []solana.PublicKey
			for _, s := range stakes {
				k, err := publicKeyOrKeypair(s)
				if err != nil {
					return usageErr("--stake %q: %v", s, err)
				}
				nodes = append(nodes, k)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			store, err := ipfs.NewStore(filepath.Join(dir, "ipfs"))
			if err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), "auto")
			srv, err := localnet.Start(ctx, localnet.Config{Addr: addr, DataDir: dir, StakedNodes: nodes, JobPrice: price,
				JobTimeout: timeout, ContentStore: ipfs.NewGatewayHandler(store, ipfs.WithLogger(log)), Log: &log,
				SlotInterval: slot, Faults: faults})
			if err != nil {
				return err
			}
			defer srv.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "localnet RPC:  %s\nWebSocket:     %s\nIPFS gateway:  %s/ipfs/<cid>\nmarket:        %s\nprogram:       %s\n",
				srv.URL(), srv.WSURL(), srv.URL(), srv.Market(), srv.MarketsProgram())
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.String("addr", "127.0.0.1:8899", "loopback address to listen on")
	f.String("dir", ".hypernode-localnet", "state directory (ledger, keys, content store)")
	f.StringSlice("stake", nil, "node public key (or keypair file) to give an active stake; repeatable")
	f.Uint64("job-price", 0, "job price, lamports (default 10 000 000)")
	f.Int64("job-timeout", 0, "job timeout, seconds (default 3600)")
	f.Duration("slot-interval", 0, "block time (default 400ms)")
	f.Uint64("fault-seed", 1, "seed of the fault draws (same seed, same requests: same faults)")
	f.Int("fault-latency-ms", 0, "added latency of every JSON-RPC reply, ms")
	f.Float64("fault-429", 0, "fraction of JSON-RPC requests answered 429 Too Many Requests")
	f.Float64("fault-503", 0, "fraction of JSON-RPC requests answered 503 Service Unavailable")
	f.Int("fault-retry-after", 0, "Retry-After seconds sent with injected 429/503 (0: none)")
	f.Float64("fault-drop", 0, "fraction of sendTransaction accepted but never landed")
	f.Float64("fault-reply-error", 0, "fraction of sendTransaction landed but answered with an error")
	f.Uint64("fault-expiry-blocks", 0, "blocks a blockhash stays valid (default Solana's 150)")
	f.Bool("fault-refuse-websocket", false, "refuse WebSocket connections (clients must poll)")
	cmd.Long = "Run the embedded local market standalone. Faults can be injected from the start with the --fault-* flags, " +
		"or changed while it runs: POST a JSON Faults object (seed, latency_ms, rate_429, rate_503, retry_after_seconds, drop_rate, " +
		"reply_error_rate, expiry_blocks, refuse_websocket) to /admin/faults from loopback; GET reads them."
	cmd.AddCommand(newLocalnetPostCmd(), newLocalnetShowCmd(), newLocalnetBalanceCmd())
	return cmd
}

// faultFlags reads the --fault-* flags.
func faultFlags(f *pflag.FlagSet) (localnet.Faults, error) {
	var out localnet.Faults
	out.Seed, _ = f.GetUint64("fault-seed")
	out.LatencyMS, _ = f.GetInt("fault-latency-ms")
	out.Rate429, _ = f.GetFloat64("fault-429")
	out.Rate503, _ = f.GetFloat64("fault-503")
	out.RetryAfterSeconds, _ = f.GetInt("fault-retry-after")
	out.DropRate, _ = f.GetFloat64("fault-drop")
	out.ReplyErrorRate, _ = f.GetFloat64("fault-reply-error")
	out.ExpiryBlocks, _ = f.GetUint64("fault-expiry-blocks")
	out.RefuseWebSocket, _ = f.GetBool("fault-refuse-websocket")
	if err := out.Validate(); err != nil {
		return out, usageErr("%v", err)
	}
	return out, nil
}

func publicKeyOrKeypair(s string) (solana.PublicKey, error) {
	if k, err := solana.PublicKeyFromBase58(s); err == nil {
		return k, nil
	}
	key, err := chain.LoadKeypair(s)
	if err != nil {
		return solana.PublicKey{}, err
	}
	return key.PublicKey(), nil
}

// findMarket returns the market of a localnet: the only MarketAccount owned
// by the Markets program. rpcURL may list several URLs; the call is retried
// like every chain client call (429, 503, connection errors), within 60 s.
func findMarket(ctx context.Context, rpcURL string, program solana.PublicKey) (solana.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c := chain.NewClient(rpcURL, nil, program, solana.PublicKey{}, solana.PublicKey{}, chain.WithWebSocket(""))
	defer c.Close()
	res, err := c.RPC.GetProgramAccountsWithOpts(ctx, program, &rpc.GetProgramAccountsOpts{
		Encoding: solana.EncodingBase64,
		Filters: []rpc.RPCFilter{{DataSize: chain.MarketAccountSize},
			{Memcmp: &rpc.RPCFilterMemcmp{Offset: 0, Bytes: chain.MarketDiscriminator[:]}}},
	})
	if err != nil {
		return solana.PublicKey{}, fmt.Errorf("find the market on %s: %w", redactSetting("SOLANA_RPC_URL", rpcURL), err)
	}
	if len(res) != 1 {
		return solana.PublicKey{}, fmt.Errorf("%s has %d markets; name one with --market", rpcURL, len(res))
	}
	return res[0].Pubkey, nil
}

func newLocalnetPostCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "post <definition.json>",
		Short: "Store a job definition in the localnet's content store and post it with create_job; prints the job address",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			rpcURL, _ := f.GetString("rpc")
			marketS, _ := f.GetString("market")
			keyPath, _ := f.GetString("client-keypair")
			minVRAM, _ := f.GetUint8("min-vram")
			gpuS, _ := f.GetString("gpu-type")
			gpu, ok := map[string]chain.GPUType{"any": chain.GPUAny, "nvidia": chain.GPUNvidia, "amd": chain.GPUAMD}[gpuS]
			if !ok {
				return usageErr("--gpu-type %q is not any, nvidia or amd", gpuS)
			}
			def, err := os.ReadFile(args[0])
			if err != nil {
				return usageErr("definition: %v", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			var market solana.PublicKey
			if marketS != "" {
				if market, err = solana.PublicKeyFromBase58(marketS); err != nil {
					return usageErr("--market %q is not a public key", marketS)
				}
			} else if market, err = findMarket(ctx, rpcURL, chain.DefaultMarketsProgramID); err != nil {
				return err
			}
			var client solana.PrivateKey
			if keyPath != "" {
				if client, err = chain.LoadKeypair(keyPath); err != nil {
					return usageErr("%v", err)
				}
			} else if client, err = solana.NewRandomPrivateKey(); err != nil {
				return err
			}
			up := &ipfs.Uploader{APIURL: rpcURL}
			cid, _, err := up.Add(ctx, filepath.Base(args[0]), bytes.NewReader(def))
			if err != nil {
				return fmt.Errorf("store definition: %w", err)
			}
			digest, err := ipfs.DigestFromCID(cid)
			if err != nil {
				return err
			}
			job, sig, err := localnet.PostJob(ctx, rpcURL, client, market, digest, minVRAM, gpu)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), job)
			fmt.Fprintf(cmd.ErrOrStderr(), "posted %s: definition %s, create_job %s\n", args[0], cid, sig)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("rpc", defaultLocalnetURL, "localnet URL")
	f.String("market", "", "market (default: the localnet's only market)")
	f.String("client-keypair", "", "client keypair paying the job (default: a new one, funded by airdrop)")
	f.Uint8("min-vram", 0, "least VRAM the job needs, GiB")
	f.String("gpu-type", "any", "any, nvidia or amd")
	return cmd
}

func newLocalnetBalanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "balance <pubkey|keypair-file>",
		Short: "Print an account's balance in lamports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rpcURL, _ := cmd.Flags().GetString("rpc")
			key, err := publicKeyOrKeypair(args[0])
			if err != nil {
				return usageErr("%s: %v", args[0], err)
			}
			out, err := rpc.New(rpcURL).GetBalance(cmd.Context(), key, rpc.CommitmentConfirmed)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Value)
			return nil
		},
	}
	cmd.Flags().String("rpc", defaultLocalnetURL, "RPC URL")
	return cmd
}

func newLocalnetShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show <job>...",
		Short: "Wait for jobs to end, then show each one's chain state, journal state and verified result",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			rpcURL, _ := f.GetString("rpc")
			wait, _ := f.GetDuration("wait")
			dir, _ := f.GetString("data-dir")
			var jobs []solana.PublicKey
			for _, a := range args {
				k, err := solana.PublicKeyFromBase58(a)
				if err != nil {
					return usageErr("%q is not a job address", a)
				}
				jobs = append(jobs, k)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait+30*time.Second)
			defer cancel()
			return showJobs(ctx, cmd.OutOrStdout(), rpcURL, dir, jobs, wait)
		},
	}
	f := cmd.Flags()
	f.String("rpc", defaultLocalnetURL, "localnet URL")
	f.Duration("wait", 3*time.Minute, "how long to wait for the jobs to end")
	f.String("data-dir", "", "worker data directory: also wait for its journal to settle each job")
	return cmd
}

type shownJob struct {
	key     solana.PublicKey
	acc     *chain.Job
	journal string
}

func showJobs(ctx context.Context, out io.Writer, rpcURL, dataDir string, jobs []solana.PublicKey, wait time.Duration) error {
	c := &chain.Client{RPC: rpc.New(rpcURL), Program: chain.DefaultMarketsProgramID}
	deadline := time.Now().Add(wait)
	shown := make([]shownJob, len(jobs))
	for {
		settled := true
		var states map[string]string
		if dataDir != "" {
			states = journalStates(ctx, dataDir)
		}
		for i, k := range jobs {
			acc, err := c.Job(ctx, k)
			if err != nil {
				return err
			}
			shown[i] = shownJob{key: k, acc: acc, journal: states[k.String()]}
			if acc.State == chain.JobQueued || acc.State == chain.JobRunning {
				settled = false
			}
			if dataDir != "" && !fsm.State(shown[i].journal).Terminal() {
				settled = false
			}
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			printJobs(ctx, out, rpcURL, shown)
			return fmt.Errorf("jobs not settled after %s", wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return printJobs(ctx, out, rpcURL, shown)
}

func journalStates(ctx context.Context, dataDir string) map[string]string {
	st, err := statusapi.Get(ctx, filepath.Join(dataDir, "worker.sock"))
	if errors.Is(err, statusapi.ErrNotRunning) {
		st, err = statusFromJournal(filepath.Join(dataDir, "journal.db"))
	}
	m := map[string]string{}
	if err != nil {
		return m
	}
	for _, j := range st.Jobs {
		m[j.Job] = j.State
	}
	return m
}

// printJobs prints each job with its result document fetched from the
// localnet gateway and verified against its CID.
func printJobs(ctx context.Context, out io.Writer, rpcURL string, jobs []shownJob) error {
	fetcher := &ipfs.Fetcher{Gateways: []string{rpcURL}, MaxBytes: jobdef.MaxResultBytes, PerGatewayTimeout: 10 * time.Second}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tCHAIN\tJOURNAL\tRESULT\tRESULT CID\tDETAIL")
	var failed error
	for _, j := range jobs {
		status, cid, detail := "-", "-", ""
		if j.acc.IPFSResult != ([32]byte{}) {
			cid = ipfs.CIDFromDigest(ipfs.Digest(j.acc.IPFSResult))
			b, err := fetcher.Fetch(ctx, cid)
			if err != nil {
				detail = "result not verifiable: " + err.Error()
				failed = err
			} else if res, err := jobdef.ParseResult(b); err != nil {
				detail = "result document invalid: " + err.Error()
				failed = err
			} else {
				status = res.Status + " ✔"
				detail = resultDetail(ctx, fetcher, res)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.key, j.acc.State, orDefault(j.journal, "-"), status, cid, detail)
	}
	tw.Flush()
	var total uint64
	for _, j := range jobs {
		total += j.acc.Price
	}
	fmt.Fprintf(out, "prices: %d lamports in all\n", total)
	return failed
}

func resultDetail(ctx context.Context, f *ipfs.Fetcher, res *jobdef.Result) string {
	var parts []string
	if res.Error != "" {
		parts = append(parts, res.Error)
	}
	for _, o := range res.Outputs {
		s := fmt.Sprintf("output %s (%d B, %s)", o.Path, o.Size, o.CID)
		if o.Size <= 200 {
			if b, err := f.Fetch(ctx, o.CID); err == nil {
				s += fmt.Sprintf(": %q", strings.TrimSpace(string(b)))
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func newKeygenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keygen <outfile>",
		Short: "Create a node keypair in the Solana CLI format (mode 0600); prints its public key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := solana.NewRandomPrivateKey()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(args[0]), 0o700); err != nil {
				return err
			}
			if err := chain.WriteKeypair(args[0], key); err != nil {
				return usageErr("%v", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), key.PublicKey())
			return nil
		},
	}
	return cmd
}
