package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/journal"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/statusapi"
)

func newStartCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Register this machine in the market and run jobs until stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return startWorker(ctx, cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

// worker holds what start wires together.
type worker struct {
	cfg     *Config
	log     zerolog.Logger
	out     io.Writer
	key     solana.PrivateKey
	journal *journal.Journal
	net     *localnet.Server // nil unless embedded
	chain   *chain.Client
	rt      *runtime.Runtime
	specs   *hardware.Specs
	monitor *hardware.Monitor // health samples and the claim gate (health.go)
	pool    *fsm.GPUPool      // which GPUs each job gets (newGPUPool)
	// rpcBase does the chain client's HTTP under its retrying transport; the
	// API's metrics hook into it once they exist (api.go instrumentRPC).
	rpcBase *swappableTransport
}

// daemonGCPercent is the daemon's GC target unless GOGC is set: its heap is
// small and mostly idle between jobs, and half the default growth keeps its
// resident memory about 2 MiB lower at the cost of more frequent, cheap
// collections.
const daemonGCPercent = 50

func startWorker(ctx context.Context, cfg *Config, stdout, stderr io.Writer) error {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(daemonGCPercent)
	}
	w := &worker{cfg: cfg, out: stdout, log: newLogger(stderr, cfg.LogFormat)}
	defer w.close()
	fmt.Fprint(stdout, banner)

	if err := w.openJournal(); err != nil {
		return err
	}
	var err error

	fmt.Fprintln(stdout, "📊 Detecting system specifications...")
	w.specs, err = hardware.Detect(ctx, hardware.Options{DiskPath: cfg.DataDir, InventoryFile: cfg.GPUInventory,
		ContainerRuntime: containerdVersion(cfg.ContainerdAddress)})
	if err != nil {
		return fmt.Errorf("detect hardware: %w", err)
	}
	printSpecs(stdout, w.specs)
	if cfg.SlotsAlias {
		w.log.Warn().Msg("PARALLEL_JOBS is deprecated: use MAX_PARALLEL_JOBS")
	}
	w.pool = newGPUPool(cfg, w.specs)
	fmt.Fprintf(stdout, "Parallel jobs: %d (GPUs handed out: %d)\n", cfg.Slots, len(w.pool.GPUs()))

	if err := w.connect(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\n🔗 Connecting to Solana...")
	fmt.Fprintf(stdout, "Wallet: %s\n", shortKey(w.key.PublicKey()))
	balance, err := w.chain.Balance(ctx)
	if err != nil {
		return fmt.Errorf("read balance from %s: %w", redactSetting("SOLANA_RPC_URL", cfg.RPCURL), err)
	}
	if cfg.Local() && balance < solana.LAMPORTS_PER_SOL {
		if err := w.chain.RequestAirdrop(ctx, 2*solana.LAMPORTS_PER_SOL); err != nil {
			return fmt.Errorf("localnet airdrop: %w", err)
		}
		if balance, err = w.chain.Balance(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "Balance: %.4f SOL\n", float64(balance)/float64(solana.LAMPORTS_PER_SOL))

	fmt.Fprintln(stdout, "\n💎 Checking xHYPER stake...")
	market, err := w.chain.GetMarket(ctx)
	if err != nil {
		return fmt.Errorf("read market %s: %w", cfg.Market, err)
	}
	stake, err := w.chain.Stake(ctx)
	if errors.Is(err, chain.ErrAccountNotFound) {
		return fmt.Errorf("node %s has no xHYPER stake account; stake at least the market minimum before starting", w.key.PublicKey())
	}
	if err != nil {
		return fmt.Errorf("read stake: %w", err)
	}
	if !stake.Active() || stake.Xhyper.BigInt().Cmp(market.NodeXhyperMinimum.BigInt()) < 0 {
		return fmt.Errorf("node stake is %s xHYPER (active %v); the market requires %s", stake.Xhyper.BigInt(), stake.Active(), market.NodeXhyperMinimum.BigInt())
	}
	fmt.Fprintln(stdout, "✅ Stake verified")

	fmt.Fprintln(stdout, "\n📝 Registering node in market...")
	switch err := w.chain.ListNode(ctx); {
	case err == nil:
		fmt.Fprintln(stdout, "✅ Node registered successfully!")
	case errors.Is(err, chain.ErrNodeAlreadyQueued):
		fmt.Fprintln(stdout, "✅ Node already registered")
	case errors.Is(err, chain.ErrQueueHasJobs):
		fmt.Fprintln(stdout, "✅ Jobs are waiting in the market: claiming instead of queueing")
	default:
		return fmt.Errorf("register node (list_node): %w", err)
	}

	driver := w.driver()
	defer w.openWorkspacePool(driver)()
	watch := w.chain.WatchMarket(ctx) // accountSubscribe on the market; polling covers it while down
	defer watch.Stop()
	loop := &fsm.Loop{Driver: driver, Market: w.chain, Fits: func(v uint8, g chain.GPUType) bool { return w.specs.Fits(v, uint8(g)) },
		Slots: cfg.Slots, PollInterval: cfg.PollInterval, AutoAccept: cfg.AutoAccept,
		Reaper: &fsm.Reaper{Driver: driver}, Notify: watch, PushPollInterval: max(cfg.PollInterval, 60*time.Second)}

	fmt.Fprintln(stdout, "\n🔄 Starting job polling...")
	fmt.Fprintln(stdout, "💓 Starting health monitoring...")
	started := time.Now()
	w.monitor = w.newMonitor(loop, started)
	loop.Gate = w.monitor.Gate
	api, err := w.serveAPI(loop, driver, started) // api.go: local API, dashboard, metrics
	if err != nil {
		return err
	}
	defer api.Close()
	// The health monitor and the prepull stop with the loop, also when the
	// loop fails at once (an unreadable journal) rather than at a signal.
	ctx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		w.monitor.Run(ctx, cfg.HealthInterval)
	}()
	prepullDone := make(chan struct{})
	go func() {
		defer close(prepullDone)
		w.prepull(ctx)
	}()
	fmt.Fprintln(stdout, "\n✨ Worker started successfully!")
	fmt.Fprintln(stdout, "👀 Watching for jobs...")
	w.log.Info().Str("node", w.key.PublicKey().String()).Str("market", cfg.Market.String()).Str("rpc", redactSetting("SOLANA_RPC_URL", cfg.RPCURL)).Msg("worker started")

	err = loop.Run(ctx)
	stopAll()
	<-healthDone
	<-prepullDone
	if errors.Is(err, journal.ErrCorrupt) {
		err = fmt.Errorf("journal %s: %w\nCheck it with `hypernode-worker replay --verify`; when it names jobs/, jobrecs/ or meta/derived, `hypernode-worker replay --repair` rebuilds them from the log (worker stopped)", cfg.JournalPath(), err)
	}
	w.log.Info().Msg("stopping: leaving the market's node queue")
	uctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if uerr := w.chain.UnlistNode(uctx); uerr != nil && !errors.Is(uerr, chain.ErrNodeNotQueued) {
		w.log.Warn().Err(uerr).Msg("unlist_node")
	}
	return err
}

// driver wires the job driver over the connected chain, IPFS and containerd.
func (w *worker) driver() *fsm.Driver {
	fetcher := w.cfg.fetcher(maxDefinitionBytes)
	fetcher.Log = &w.log
	store := &ipfsStore{fetcher: fetcher, uploader: w.cfg.uploader()}
	d := &fsm.Driver{Journal: w.journal, Chain: w.chain, Store: store, Runtime: runtimeAdapter{rt: w.rt, log: w.log}, DataDir: w.cfg.DataDir,
		GPUs: w.pool,
		Log:  w.log, WatchInterval: max(w.cfg.PollInterval, time.Second),
		Limits: fsm.Limits{MaxWorkspaceBytes: w.cfg.WorkspaceLimitBytes, MaxLogBytes: w.cfg.Sandbox.LogLimitBytes}}
	w.sandbox(d)
	return d
}

// maxDefinitionBytes bounds a fetched job definition.
const maxDefinitionBytes = 2 << 20

func (w *worker) close() {
	if w.chain != nil {
		w.chain.Close()
	}
	if w.rt != nil {
		w.rt.Close()
	}
	if w.net != nil {
		w.net.Close()
	}
	if w.journal != nil {
		w.journal.Close()
	}
}

// openJournal creates the data directory and takes the journal's lock.
func (w *worker) openJournal() error {
	cfg := w.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return usageErr("HYPERNODE_DATA_DIR %s cannot be created: %v", cfg.DataDir, err)
	}
	if cfg.QuarantineJournal {
		err := journal.Check(cfg.JournalPath())
		if errors.Is(err, journal.ErrCorrupt) {
			// Derived data (snapshots, index) are rebuilt from the log,
			// which keeps every job; only a journal whose log or page
			// structure is damaged is moved aside.
			if rep, rerr := rebuildJournal(cfg.JournalPath()); rerr == nil {
				if err = journal.Check(cfg.JournalPath()); err == nil {
					w.log.Warn().Int("records", rep.Records).Int("jobs", rep.Jobs).Msg("journal's snapshots and index were damaged: rebuilt from its log")
					fmt.Fprintf(w.out, "⚠ journal's snapshots and index were damaged: rebuilt from its log (%d records, %d jobs)\n", rep.Records, rep.Jobs)
				}
			}
		}
		if errors.Is(err, journal.ErrCorrupt) {
			moved, qerr := journal.Quarantine(cfg.JournalPath())
			if qerr != nil {
				return fmt.Errorf("move the corrupt journal aside: %w", qerr)
			}
			w.log.Warn().Err(err).Str("moved_to", moved).Msg("corrupt journal moved aside; starting with an empty one")
			fmt.Fprintf(w.out, "⚠ corrupt journal moved aside to %s\n", moved)
		}
	}
	j, err := journal.Open(cfg.JournalPath(), journal.Options{})
	switch {
	case errors.Is(err, journal.ErrLocked):
		return fmt.Errorf("another worker owns the data directory %s: %w", cfg.DataDir, err)
	case errors.Is(err, journal.ErrNewerSchema):
		return fmt.Errorf("%w\nThe file was left untouched (--quarantine-corrupt-journal never moves a newer worker's journal aside)", err)
	case errors.Is(err, journal.ErrCorrupt):
		return fmt.Errorf("%w\nThe file was left untouched. Keep it for inspection. When only its snapshots or index are damaged, `hypernode-worker replay --repair` rebuilds them from the log and keeps every job. To start anyway, run start with --quarantine-corrupt-journal: it tries that repair first and, when the log itself is damaged, moves the file aside to %s.corrupt-<time> and starts with an empty journal", err, cfg.JournalPath())
	case err != nil:
		return err
	}
	if from := j.UpgradedFrom(); from != 0 {
		w.log.Info().Int("from", from).Int("to", j.Schema()).Str("path", cfg.JournalPath()).Msg("journal upgraded to this worker's format; an older worker cannot read it")
		fmt.Fprintf(w.out, "journal %s upgraded from schema %d to %d (an older worker cannot read it)\n", cfg.JournalPath(), from, j.Schema())
	}
	w.journal = j
	return nil
}

// connect loads the key, starts the embedded localnet when configured,
// connects containerd and makes the chain client.
func (w *worker) connect(ctx context.Context) error {
	cfg := w.cfg
	if err := w.loadKey(); err != nil {
		return err
	}
	if cfg.Embedded() {
		if err := w.startLocalnet(ctx); err != nil {
			return err
		}
	}
	if err := w.connectRuntime(ctx); err != nil {
		return err
	}
	if cfg.Local() && !cfg.MarketSet && w.net == nil {
		m, err := findMarket(ctx, cfg.RPCURL, cfg.Program)
		if err != nil {
			return err
		}
		cfg.Market = m
	}
	w.rpcBase = newSwappableTransport()
	opts := append(cfg.ChainOptions(), chain.WithTransport(func(t *chain.Transport) { t.Base = w.rpcBase }))
	w.chain = chain.NewClient(cfg.RPCURL, w.key, cfg.Program, cfg.Staking, cfg.Market, opts...)
	return nil
}

// loadKey loads the node keypair; with the embedded localnet a missing one
// is created in the data directory.
func (w *worker) loadKey() error {
	path := w.cfg.KeypairPath
	if w.cfg.Local() && w.cfg.KeypairDefault {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			key, err := solana.NewRandomPrivateKey()
			if err != nil {
				return err
			}
			if err := chain.WriteKeypair(path, key); err != nil {
				return err
			}
			w.log.Info().Str("path", path).Msg("created a node keypair for the local market")
		}
	}
	key, err := chain.LoadKeypair(path)
	if err != nil {
		return usageErr("%v", err)
	}
	w.key = key
	return nil
}

func (w *worker) startLocalnet(ctx context.Context) error {
	store, err := ipfs.NewStore(filepath.Join(w.cfg.DataDir, "localnet", "ipfs"))
	if err != nil {
		return err
	}
	// The localnet outlives the signal context: it must still answer the
	// unlist_node sent while stopping; close() stops it last.
	srv, err := localnet.Start(context.WithoutCancel(ctx), localnet.Config{
		Addr:           w.cfg.LocalnetAddr,
		DataDir:        filepath.Join(w.cfg.DataDir, "localnet"),
		MarketsProgram: w.cfg.Program,
		StakingProgram: w.cfg.Staking,
		StakedNodes:    []solana.PublicKey{w.key.PublicKey()},
		ContentStore:   ipfs.NewGatewayHandler(store, ipfs.WithLogger(w.log)),
		Log:            &w.log,
	})
	if err != nil {
		return fmt.Errorf("start the embedded localnet on %s: %w", w.cfg.LocalnetAddr, err)
	}
	w.net = srv
	w.cfg.RPCURL = srv.URL()
	if !w.cfg.MarketSet {
		w.cfg.Market = srv.Market()
	}
	if len(w.cfg.Gateways) == 0 {
		w.cfg.Gateways = []string{srv.URL()}
	}
	if w.cfg.UploadURL == "" && w.cfg.Upload == uploadKubo {
		w.cfg.UploadURL = srv.URL()
	}
	fmt.Fprintf(w.out, "\n🧪 Local market running at %s (market %s)\n", srv.URL(), w.cfg.Market)
	return nil
}

func (w *worker) connectRuntime(ctx context.Context) error {
	images := runtime.ImageConfig{Auth: w.cfg.RegistryAuth, CacheLimitBytes: w.cfg.ImageCacheBytes}
	if f, ok := w.out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		images.Progress = runtime.TerminalProgress(f) // a progress line on a terminal; log lines otherwise
	}
	rt, err := runtime.New(ctx, runtime.Config{Address: w.cfg.ContainerdAddress, Images: images,
		LogLimitBytes: w.cfg.Sandbox.LogLimitBytes, Egress: w.cfg.Sandbox.Egress, GPU: runtime.GPUHost{Root: w.cfg.GPUHostRoot}})
	if err != nil {
		return fmt.Errorf("containerd: %w (start one with `scripts/containerd.sh start DIR`, or set CONTAINERD_ADDRESS)", err)
	}
	w.rt = rt
	w.log.Info().Str("version", rt.DaemonVersion()).Str("address", rt.Address()).Msg("containerd connected")
	for _, archive := range w.cfg.ImportImages {
		names, err := rt.ImportArchive(ctx, archive)
		if err != nil {
			return err
		}
		w.log.Info().Strs("images", names).Str("archive", archive).Msg("image imported")
	}
	return nil
}

func shortKey(k solana.PublicKey) string {
	s := k.String()
	return s[:4] + "..." + s[len(s)-4:]
}

// ipfsStore implements fsm.Store over the ipfs package.
type ipfsStore struct {
	fetcher  *ipfs.Fetcher
	uploader ipfs.Adder
}

func (s *ipfsStore) Fetch(ctx context.Context, cid string) ([]byte, error) {
	return s.fetcher.Fetch(ctx, cid)
}

func (s *ipfsStore) ComputeCID(r io.Reader) (string, int64, error) {
	c, n, err := ipfs.ComputeCID(r)
	if err != nil {
		return "", 0, err
	}
	return c.String(), n, nil
}

func (s *ipfsStore) AddFile(ctx context.Context, path string) (string, int64, error) {
	return s.uploader.AddFile(ctx, path)
}

// prepull pulls the PREPULL_IMAGES one after another until done or ctx ends; a
// failure is logged and the next image tried.
func (w *worker) prepull(ctx context.Context) {
	for _, ref := range w.cfg.PrepullImages {
		if ctx.Err() != nil {
			return
		}
		if err := w.rt.EnsureImage(w.log.WithContext(ctx), ref); err != nil && ctx.Err() == nil {
			w.log.Warn().Err(err).Str("image", ref).Msg("prepull")
		}
	}
}

// runtimeAdapter implements fsm.Runtime over the runtime package.
type runtimeAdapter struct {
	rt  *runtime.Runtime
	log zerolog.Logger // pulls log their progress here
}

func (a runtimeAdapter) EnsureImage(ctx context.Context, ref string) error {
	return a.rt.EnsureImage(a.log.WithContext(ctx), ref)
}

func (a runtimeAdapter) Create(ctx context.Context, s fsm.ContainerSpec) error {
	return a.rt.Create(ctx, runtime.ContainerSpec{ID: s.ID, Job: s.Job, Attempt: s.Attempt,
		Image: s.Image, Workspace: s.Workspace, Env: s.Env, MemoryBytes: s.MemoryBytes, PidsLimit: s.PidsLimit, ShmBytes: s.ShmBytes,
		ModelDir: s.ModelDir, ModelReadOnly: s.ModelReadOnly, GPUs: s.GPUs, CPUs: s.CPUs,
		Labels: map[string]string{fsm.LabelNode: s.Node}})
}

func (a runtimeAdapter) Inspect(ctx context.Context, id string) (fsm.ContainerState, error) {
	st, err := a.rt.Inspect(ctx, id)
	if err != nil {
		return fsm.ContainerState{}, err
	}
	out := fsm.ContainerState{Exists: st.Exists, TaskStatus: st.TaskStatus, Op: st.Op, Labels: st.Labels}
	if st.Exit != nil {
		out.Exit = &fsm.Exit{Code: st.Exit.Code, ExitedAt: st.Exit.ExitedAt, OOMKilled: st.Exit.OOMKilled}
	}
	return out, nil
}

func (a runtimeAdapter) List(ctx context.Context) ([]string, error) { return a.rt.List(ctx) }

func (a runtimeAdapter) RunOp(ctx context.Context, id string, n int, op fsm.Op, logPath string) (fsm.Exit, error) {
	e, err := a.rt.RunOp(ctx, id, n, runtime.Op{Argv: op.Argv, Workdir: op.Workdir}, logPath)
	switch {
	case errors.Is(err, runtime.ErrCannotStart):
		err = fmt.Errorf("%w: %w", fsm.ErrOpCannotStart, err)
	case errors.Is(err, runtime.ErrTaskLost):
		err = fmt.Errorf("%w: %w", fsm.ErrOpLost, err)
	}
	return fsm.Exit{Code: e.Code, ExitedAt: e.ExitedAt, OOMKilled: e.OOMKilled}, err
}

func (a runtimeAdapter) Kill(ctx context.Context, id string) error   { return a.rt.Kill(ctx, id) }
func (a runtimeAdapter) Remove(ctx context.Context, id string) error { return a.rt.Remove(ctx, id) }

func (w *worker) status(ctx context.Context, loop *fsm.Loop, started time.Time) (*statusapi.Status, error) {
	st := &statusapi.Status{Running: true, Node: w.key.PublicKey().String(), Market: w.cfg.Market.String(), RPC: redactSetting("SOLANA_RPC_URL", w.cfg.RPCURL),
		StartedAt: started.UTC(), ActiveJobs: loop.Active(), Slots: w.cfg.Slots, Jobs: []statusapi.Job{}}
	if b, err := w.chain.Balance(ctx); err == nil {
		st.BalanceLamports = &b
	}
	snaps, err := w.journal.Snapshots()
	if err != nil {
		return nil, err
	}
	for _, s := range snaps {
		st.Jobs = append(st.Jobs, statusapi.JobFromSnapshot(s))
	}
	return st, nil
}

// newGPUPool makes the pool of the GPUs jobs may be given and resolves
// MAX_PARALLEL_JOBS=auto to one slot per GPU it hands out (at least one).
// A captured inventory (GPU_INVENTORY) describes another machine: its GPUs
// are handed out only when GPU_HOST_ROOT points at a tree standing in for
// that machine's /dev, /sys and CDI specs (tests), else none is.
func newGPUPool(cfg *Config, specs *hardware.Specs) *fsm.GPUPool {
	gpus := specs.GPUs
	if cfg.GPUInventory != "" && (cfg.GPUHostRoot == "" || filepath.Clean(cfg.GPUHostRoot) == "/") {
		gpus = nil
	}
	if cfg.SlotsAuto {
		cfg.Slots = max(len(fsm.NewGPUPool(gpus, 1, 0, 0).GPUs()), 1)
	}
	return fsm.NewGPUPool(gpus, cfg.Slots, specs.CPU.Threads, specs.RAMBytes)
}
