package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/statusapi"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the effective configuration (flags, environment, .env, defaults)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			rpc := cfg.RPCURL
			if cfg.Embedded() {
				rpc = "(embedded localnet on " + cfg.LocalnetAddr + ")"
			}
			market := cfg.Market.String()
			if !cfg.MarketSet {
				market = "(the embedded localnet's market)"
			}
			node := "(keypair not readable)"
			if key, err := chain.LoadKeypair(cfg.KeypairPath); err == nil {
				node = key.PublicKey().String()
			} else if cfg.Embedded() {
				node = "(created at first start)"
			}
			rows := [][2]string{
				{"NETWORK", cfg.Network}, {"SOLANA_RPC_URL", rpc}, {"KEYPAIR_PATH", cfg.KeypairPath}, {"node", node},
				{"MARKET_PUBKEY", market}, {"PROGRAM_ID", cfg.Program.String()}, {"STAKING_PROGRAM_ID", cfg.Staking.String()},
				{"IPFS_GATEWAY", orDefault(strings.Join(cfg.Gateways, ","), "(the embedded localnet's)")},
				{"IPFS_UPLOAD_URL", orDefault(cfg.UploadURL, "(the embedded localnet's)")},
				{"CONTAINER_RUNTIME", cfg.ContainerRuntime}, {"CONTAINERD_ADDRESS", cfg.ContainerdAddress},
				{"AUTO_ACCEPT", fmt.Sprint(cfg.AutoAccept)}, {"POLLING_INTERVAL", fmt.Sprint(cfg.PollInterval.Milliseconds())},
				{"HEALTH_CHECK_INTERVAL", fmt.Sprint(cfg.HealthInterval.Milliseconds())}, {"HYPERNODE_DATA_DIR", cfg.DataDir},
				{"MAX_PARALLEL_JOBS", slotsString(cfg)}, {"GPU_DEVICE_ROOT", cfg.DeviceRoot}, {"GPU_INVENTORY", cfg.GPUInventory}, {"IMPORT_IMAGES", strings.Join(cfg.ImportImages, ",")},
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
			}
			return tw.Flush()
		},
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

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
	st := &statusapi.Status{}
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

func newTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Check this machine: hardware, containerd, keypair, RPC, market, stake",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			return selfTest(cmd.Context(), cmd.OutOrStdout(), cfg)
		},
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

func selfTest(ctx context.Context, out io.Writer, cfg *Config) error {
	failed := 0
	check := func(name string, err error, ok string) {
		if err != nil {
			failed++
			fmt.Fprintf(out, "❌ %s: %v\n", name, err)
			return
		}
		fmt.Fprintf(out, "✅ %s: %s\n", name, ok)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	specs, err := hardware.Detect(ctx, hardware.Options{DiskPath: cfg.DataDir, InventoryFile: cfg.GPUInventory})
	if err == nil {
		check("hardware", nil, fmt.Sprintf("%s, %d GB RAM, %d GPU(s)", specs.CPU.Model, specs.RAMBytes>>30, len(specs.GPUs)))
	} else {
		check("hardware", err, "")
	}
	rt, err := runtime.New(ctx, runtime.Config{Address: cfg.ContainerdAddress})
	if err == nil {
		check("containerd", nil, rt.DaemonVersion()+" at "+rt.Address())
		rt.Close()
	} else {
		check("containerd", err, "")
	}
	if cfg.Embedded() && !cfg.KeypairDefault {
		key, err := chain.LoadKeypair(cfg.KeypairPath)
		check("keypair", err, "node "+keyString(key))
	}
	if cfg.Embedded() {
		fmt.Fprintln(out, "ℹ️  network localnet: the market, RPC and stake are the embedded ones, created by `start`")
	} else {
		key, err := chain.LoadKeypair(cfg.KeypairPath)
		check("keypair", err, "node "+keyString(key))
		if err == nil {
			c := chain.NewClient(cfg.RPCURL, key, cfg.Program, cfg.Staking, cfg.Market)
			bal, err := c.Balance(ctx)
			check("RPC "+cfg.RPCURL, err, fmt.Sprintf("balance %.4f SOL", float64(bal)/1e9))
			_, err = c.GetMarket(ctx)
			check("market "+cfg.Market.String(), err, "readable")
			st, err := c.Stake(ctx)
			if err == nil && !st.Active() {
				err = errors.New("stake is unstaking")
			}
			check("stake", err, "active")
		}
	}
	if failed > 0 {
		fmt.Fprintf(out, "\n%d check(s) failed\n", failed)
		return exitCode(1)
	}
	fmt.Fprintln(out, "\nall checks passed")
	return nil
}

func keyString(k solana.PrivateKey) string {
	if len(k) != 64 {
		return ""
	}
	return k.PublicKey().String()
}

func slotsString(cfg *Config) string {
	if cfg.SlotsAuto {
		return "auto"
	}
	return fmt.Sprint(cfg.Slots)
}
