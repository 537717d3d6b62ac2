package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/statusapi"
)

// Outcomes of one self-test check.
const (
	checkOK   = "ok"
	checkFail = "fail" // makes `test` exit 1
	checkWarn = "warn" // worth knowing; does not fail the test
	checkSkip = "skip" // not applicable here (no GPU, embedded localnet not running)
)

// checkResult is one row of the self-test table.
type checkResult struct {
	Check  string `json:"check"`
	Result string `json:"result"` // ok, fail, warn, skip
	Detail string `json:"detail"`
}

// selfTestReport is `test --json`.
type selfTestReport struct {
	Checks []checkResult `json:"checks"`
	Failed int           `json:"failed"`
}

// defaultTestImage is run by the "test container" check unless --test-image
// names another; it is pulled when absent.
const defaultTestImage = "busybox:latest"

func newTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Self-test this machine: hardware, GPUs, disk, containerd, a test container, keypair, RPC, market, stake, gateways",
		Long: `Run every check the worker depends on and print a table of results. A failed check makes the
exit status 1; a missing GPU is reported as "none found" and skipped, not failed (such a
machine takes jobs that need no GPU). The test container runs --test-image, by default the
first image of IMPORT_IMAGES (imported first), else ` + defaultTestImage + ` (pulled when absent).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			image, _ := cmd.Flags().GetString("test-image")
			if !cmd.Flags().Changed("test-image") {
				image = "" // the first IMPORT_IMAGES image, else defaultTestImage
			}
			rep := selfTest(cmd.Context(), cfg, image)
			out := cmd.OutOrStdout()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printSelfTest(out, rep)
			}
			if rep.Failed > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	addConfigFlags(cmd.Flags())
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().String("test-image", defaultTestImage, "image the test container runs (needs /bin/sh); default: the first IMPORT_IMAGES image, else this")
	return cmd
}

func printSelfTest(out io.Writer, rep *selfTestReport) {
	mark := map[string]string{checkOK: "✅ ok", checkFail: "❌ FAIL", checkWarn: "⚠️  warn", checkSkip: "➖ skip"}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Check, mark[c.Result], c.Detail)
	}
	tw.Flush()
	if rep.Failed > 0 {
		fmt.Fprintf(out, "\n%d check(s) failed\n", rep.Failed)
	} else {
		fmt.Fprintln(out, "\nall checks passed")
	}
}

// selfTest runs every check; each one is bounded so the whole stays under a
// couple of minutes even when services hang.
func selfTest(ctx context.Context, cfg *Config, testImage string) *selfTestReport {
	rep := &selfTestReport{}
	add := func(name, result, format string, args ...any) {
		rep.Checks = append(rep.Checks, checkResult{Check: name, Result: result, Detail: fmt.Sprintf(format, args...)})
		if result == checkFail {
			rep.Failed++
		}
	}
	bounded := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }

	// Hardware and GPUs.
	hctx, cancel := bounded(30 * time.Second)
	specs, err := hardware.Detect(hctx, hardware.Options{DiskPath: existingParent(cfg.DataDir), InventoryFile: cfg.GPUInventory})
	cancel()
	if err != nil {
		add("hardware", checkFail, "%v", err)
		specs = &hardware.Specs{}
	} else {
		add("hardware", checkOK, "%s (%d cores, %d threads), %d GB RAM, %s", specs.CPU.Model, specs.CPU.Cores, specs.CPU.Threads,
			(specs.RAMBytes+hardware.GiB/2)/hardware.GiB, specs.OS)
	}
	var gpuWarns []string
	for _, w := range specs.Warnings {
		if w, ok := strings.CutPrefix(w, hardware.GPUWarningPrefix); ok {
			if rest, none := strings.CutPrefix(w, "no GPU found"); none {
				w = "none found" + rest
			}
			gpuWarns = append(gpuWarns, w)
		}
	}
	switch {
	case len(specs.GPUs) == 0:
		add("GPU", checkSkip, "%s", orDefault(strings.Join(gpuWarns, "; "), "none found"))
	default:
		var names []string
		for _, g := range specs.GPUs {
			names = append(names, fmt.Sprintf("%s (%d GB)", g.Name, g.VRAMGiB()))
		}
		result := checkOK
		if len(gpuWarns) > 0 {
			result = checkWarn
			names = append(names, gpuWarns...)
		}
		add("GPU", result, "%d: %s", len(specs.GPUs), strings.Join(names, "; "))
	}

	// Disk.
	if specs.DiskFreeBytes == 0 {
		add("disk", checkFail, "free space of %s unknown", cfg.DataDir)
	} else if cfg.DiskFloorBytes > 0 && specs.DiskFreeBytes < cfg.DiskFloorBytes {
		add("disk", checkFail, "%d MiB free for %s, under DISK_FLOOR_MB %d: claiming would pause", specs.DiskFreeBytes>>20, cfg.DataDir, cfg.DiskFloorBytes>>20)
	} else {
		add("disk", checkOK, "%.1f GiB free for %s (floor %d MiB)", float64(specs.DiskFreeBytes)/hardware.GiB, cfg.DataDir, cfg.DiskFloorBytes>>20)
	}

	// containerd, a test container, and GPUs inside it.
	cctx, cancel := bounded(10 * time.Second)
	rt, err := runtime.New(cctx, runtime.Config{Address: cfg.ContainerdAddress})
	cancel()
	if err != nil {
		add("containerd", checkFail, "%v", err)
		add("test container", checkSkip, "containerd not reachable")
	} else {
		add("containerd", checkOK, "containerd %s at %s", rt.DaemonVersion(), rt.Address())
		tctx, cancel := bounded(2 * time.Minute)
		d, image, err := runTestContainer(tctx, rt, cfg, testImage)
		cancel()
		if image != "" {
			testImage = image
		}
		if err != nil {
			add("test container", checkFail, "%s: %v", testImage, err)
		} else {
			add("test container", checkOK, "%s ran /bin/sh in %s", testImage, d.Round(10*time.Millisecond))
		}
		rt.Close()
	}
	// How GPUs would reach a job's container (CDI, the NVIDIA hook, AMD
	// device nodes), per vendor, without starting one.
	switch {
	case len(specs.GPUs) == 0:
		add("GPU in container", checkSkip, "no GPU on this machine")
	case cfg.GPUInventory != "" && (cfg.GPUHostRoot == "" || filepath.Clean(cfg.GPUHostRoot) == "/"):
		add("GPU in container", checkSkip, "GPU_INVENTORY describes another machine's GPUs; none is given to jobs")
	default:
		host := runtime.GPUHost{Root: cfg.GPUHostRoot}
		for _, v := range hardware.VendorsOf(specs.GPUs) {
			n := 0
			for _, g := range specs.GPUs {
				if g.Vendor == v {
					n++
				}
			}
			if how, err := host.Passthrough(v); err != nil {
				add("GPU in container", checkFail, "%d %s GPU(s): %v", n, v, err)
			} else {
				add("GPU in container", checkOK, "%d %s GPU(s): %s", n, v, how)
			}
		}
	}

	// Keypair, chain and gateways.
	checkChain(ctx, cfg, add)
	return rep
}

// runTestContainer imports IMPORT_IMAGES, makes image present (when "",
// the first imported image, else defaultTestImage), and runs /bin/sh -c
// 'echo …' in a hardened container like a job's, then removes it. It
// returns how long that took and the image it ran.
func runTestContainer(ctx context.Context, rt *runtime.Runtime, cfg *Config, image string) (time.Duration, string, error) {
	for _, archive := range cfg.ImportImages {
		names, err := rt.ImportArchive(ctx, archive)
		if err != nil {
			return 0, image, fmt.Errorf("import %s: %w", archive, err)
		}
		if image == "" && len(names) > 0 {
			image = names[0]
		}
	}
	if image == "" {
		image = defaultTestImage
	}
	d, err := runProbe(ctx, rt, image)
	return d, image, err
}

func runProbe(ctx context.Context, rt *runtime.Runtime, image string) (time.Duration, error) {
	if err := rt.EnsureImage(ctx, image); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "hn-selftest-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ws := filepath.Join(dir, "workspace")
	if err := os.Mkdir(ws, 0o700); err != nil {
		return 0, err
	}
	job := fmt.Sprintf("selftest-%d", os.Getpid())
	id := runtime.ContainerID(job, 1)
	const word = "hypernode-selftest-ok"
	start := time.Now()
	if err := rt.Create(ctx, runtime.ContainerSpec{ID: id, Job: job, Attempt: 1, Image: image, Workspace: ws}); err != nil {
		return 0, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		rt.Remove(rctx, id)
	}()
	logPath := filepath.Join(dir, "op.log")
	exit, err := rt.RunOp(ctx, id, 0, runtime.Op{Argv: []string{"/bin/sh", "-c", "echo " + word}}, logPath)
	if err != nil {
		return 0, err
	}
	if exit.Code != 0 {
		return 0, fmt.Errorf("exit code %d", exit.Code)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, fmt.Errorf("read its log: %w", err)
	}
	if !strings.Contains(string(b), word) {
		return 0, fmt.Errorf("its log does not hold what it printed")
	}
	return time.Since(start), nil
}

// checkChain checks the keypair, the RPC, the market, the stake and the
// gateways. With the embedded localnet they exist only while `start` runs:
// the running daemon's are checked, or the checks are skipped.
func checkChain(ctx context.Context, cfg *Config, add func(name, result, format string, args ...any)) {
	rpc, market := cfg.RPCURL, cfg.Market
	gateways := cfg.Gateways
	if cfg.Embedded() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := statusapi.Get(sctx, filepath.Join(cfg.DataDir, "worker.sock"))
		cancel()
		if err != nil {
			if _, err := os.Stat(cfg.KeypairPath); err == nil {
				add("keypair", checkSkip, "embedded localnet: %s exists; `start` funds it on its own chain", cfg.KeypairPath)
			} else {
				add("keypair", checkSkip, "embedded localnet: %s is created by `start`", cfg.KeypairPath)
			}
			for _, name := range []string{"RPC", "market", "stake", "gateways"} {
				add(name, checkSkip, "embedded localnet: runs inside `start`, which is not running on %s", cfg.DataDir)
			}
			return
		}
		rpc = st.RPC
		if m, err := solana.PublicKeyFromBase58(st.Market); err == nil {
			market = m
		}
		if len(gateways) == 0 {
			gateways = []string{st.RPC}
		}
	}
	key, err := chain.LoadKeypair(cfg.KeypairPath)
	if err != nil {
		add("keypair", checkFail, "%v", err)
		for _, name := range []string{"RPC", "market", "stake"} {
			add(name, checkSkip, "no keypair")
		}
	} else {
		add("keypair", checkOK, "node %s", key.PublicKey())
		c := chain.NewClient(rpc, key, cfg.Program, cfg.Staking, market, cfg.ChainOptions()...)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if bal, err := c.Balance(cctx); err != nil {
			add("RPC", checkFail, "%s: %v", redactSetting("SOLANA_RPC_URL", rpc), err)
		} else {
			add("RPC", checkOK, "%s: balance %.4f SOL", redactSetting("SOLANA_RPC_URL", rpc), float64(bal)/float64(solana.LAMPORTS_PER_SOL))
		}
		m, err := c.GetMarket(cctx)
		if err != nil {
			add("market", checkFail, "%s: %v", market, err)
		} else {
			add("market", checkOK, "%s: %d job(s) done, job price %d lamports", market, m.TotalJobs, m.JobPrice)
		}
		switch st, err := c.Stake(cctx); {
		case errors.Is(err, chain.ErrAccountNotFound):
			add("stake", checkFail, "node %s has no xHYPER stake account", key.PublicKey())
		case err != nil:
			add("stake", checkFail, "%v", err)
		case !st.Active():
			add("stake", checkFail, "%s xHYPER, unstaking", st.Xhyper.BigInt())
		case m != nil && st.Xhyper.BigInt().Cmp(m.NodeXhyperMinimum.BigInt()) < 0:
			add("stake", checkFail, "%s xHYPER; the market requires %s", st.Xhyper.BigInt(), m.NodeXhyperMinimum.BigInt())
		default:
			add("stake", checkOK, "%s xHYPER, active", st.Xhyper.BigInt())
		}
	}
	if len(gateways) == 0 {
		add("gateways", checkSkip, "none configured")
		return
	}
	var ok, bad []string
	for _, gw := range gateways {
		if err := gatewayReachable(ctx, gw); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", redactURL(gw), err))
		} else {
			ok = append(ok, redactURL(gw))
		}
	}
	switch {
	case len(ok) == 0:
		add("gateways", checkFail, "none reachable: %s", strings.Join(bad, "; "))
	case len(bad) > 0:
		add("gateways", checkWarn, "%s reachable; %s", strings.Join(ok, ", "), strings.Join(bad, "; "))
	default:
		add("gateways", checkOK, "%s reachable", strings.Join(ok, ", "))
	}
}

// emptyCID is the identity CID of zero bytes: a gateway answers it from the
// CID alone, without fetching anything.
const emptyCID = "bafkqaaa"

// gatewayReachable asks gw for /ipfs/<emptyCID>: any HTTP answer below 500
// means the gateway is there (one that only serves CIDv0 says 400).
func gatewayReachable(ctx context.Context, gw string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, strings.TrimSuffix(gw, "/")+"/ipfs/"+emptyCID, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) {
			return uerr.Unwrap() // drop the URL, which may carry credentials
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// existingParent returns dir, or its nearest existing parent (the data
// directory may not exist before the first start).
func existingParent(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			return d
		}
	}
}
