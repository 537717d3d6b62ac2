package main

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/joho/godotenv"
	"github.com/spf13/pflag"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/ipfs"
)

// errUsage marks a configuration or usage error: one clear line, exit code 2.
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// Networks the worker knows. localnet is the embedded local market.
var networkRPC = map[string]string{
	"localnet": "",
	"devnet":   "https://api.devnet.solana.com",
	"testnet":  "https://api.testnet.solana.com",
	"mainnet":  "https://api.mainnet-beta.solana.com",
}

// Config is the worker's configuration after env, .env and flags.
type Config struct {
	Network             string
	RPCURL              string // SOLANA_RPC_URL; empty with localnet = embedded
	KeypairPath         string // KEYPAIR_PATH
	Market              solana.PublicKey
	MarketSet           bool
	Program             solana.PublicKey // PROGRAM_ID
	Staking             solana.PublicKey // STAKING_PROGRAM_ID
	Gateways            []string         // IPFS_GATEWAY
	UploadURL           string           // IPFS_UPLOAD_URL (kubo RPC API base)
	ContainerRuntime    string           // CONTAINER_RUNTIME
	ContainerdAddress   string           // CONTAINERD_ADDRESS
	AutoAccept          bool             // AUTO_ACCEPT
	PollInterval        time.Duration    // POLLING_INTERVAL (ms)
	HealthInterval      time.Duration    // HEALTH_CHECK_INTERVAL (ms)
	DataDir             string           // HYPERNODE_DATA_DIR
	LocalnetAddr        string           // LOCALNET_ADDR
	GPUInventory        string           // GPU_INVENTORY
	Slots               int              // MAX_PARALLEL_JOBS (or the deprecated PARALLEL_JOBS); 0 with SlotsAuto
	SlotsAuto           bool             // MAX_PARALLEL_JOBS=auto: one slot per GPU, resolved at start
	SlotsAlias          bool             // the slots came from the deprecated PARALLEL_JOBS
	DeviceRoot          string           // GPU_DEVICE_ROOT
	ImportImages        []string         // IMPORT_IMAGES: OCI archives imported at start
	LogFormat           string           // LOG_FORMAT: auto, console, json
	QuarantineJournal   bool             // --quarantine-corrupt-journal
	KeypairDefault      bool             // KEYPAIR_PATH was not given: the local market's node key, created when missing
	WorkspaceLimitBytes int64            // WORKSPACE_LIMIT_MB
}

// regularFile checks that path names a readable regular file.
func regularFile(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// setting is one configuration key: its environment name, flag name, default
// and help.
type setting struct {
	env, flag, def, help string
}

var settings = []setting{
	{"NETWORK", "network", "localnet", "localnet (embedded market), devnet, testnet or mainnet"},
	{"SOLANA_RPC_URL", "rpc-url", "", "Solana JSON-RPC URL (default: the network's; with localnet, the embedded one)"},
	{"KEYPAIR_PATH", "keypair", "", "node keypair, Solana CLI format (default with localnet: DATA_DIR/node-keypair.json, created)"},
	{"MARKET_PUBKEY", "market", "", "market account (default with the embedded localnet: its market)"},
	{"PROGRAM_ID", "program-id", chain.DefaultMarketsProgramID.String(), "Markets program ID"},
	{"STAKING_PROGRAM_ID", "staking-program-id", chain.DefaultStakingProgramID.String(), "staking program ID"},
	{"IPFS_GATEWAY", "ipfs-gateway", "", "IPFS gateway URLs, comma-separated (default with localnet: its gateway)"},
	{"IPFS_UPLOAD_URL", "ipfs-upload-url", "", "kubo RPC API base URL for uploads (default with localnet: its store)"},
	{"CONTAINER_RUNTIME", "container-runtime", "containerd", "container runtime (containerd)"},
	{"CONTAINERD_ADDRESS", "containerd-address", "/run/containerd/containerd.sock", "containerd socket"},
	{"AUTO_ACCEPT", "auto-accept", "true", "claim queued jobs automatically"},
	{"POLLING_INTERVAL", "polling-interval", "10000", "milliseconds between market polls"},
	{"HEALTH_CHECK_INTERVAL", "health-check-interval", "60000", "milliseconds between health samples"},
	{"HYPERNODE_DATA_DIR", "data-dir", "", "data directory: journal, job workspaces, logs (default ~/.hypernode)"},
	{"LOCALNET_ADDR", "localnet-addr", "127.0.0.1:8899", "listen address of the embedded localnet"},
	{"GPU_INVENTORY", "gpu-inventory", "", "read GPUs from this captured nvidia-smi/rocm-smi output instead of the machine"},
	{"MAX_PARALLEL_JOBS", "max-parallel-jobs", "", `jobs run at once, 1 to 256, or "auto" (one per GPU); default 1`},
	{"PARALLEL_JOBS", "parallel-jobs", "", "deprecated alias of MAX_PARALLEL_JOBS"},
	{"GPU_DEVICE_ROOT", "gpu-device-root", "/dev", "directory holding the GPU device nodes given to containers"},
	{"IMPORT_IMAGES", "import-image", "", "OCI image archives to import at start, comma-separated"},
	{"LOG_FORMAT", "log-format", "auto", "auto (console on a terminal, else JSON), console or json"},
	{"WORKSPACE_LIMIT_MB", "workspace-limit-mb", "10240", "MiB a job may write under /workspace before it is stopped and failed"},
}

// addConfigFlags registers every setting as a flag of fs, plus --env-file.
func addConfigFlags(fs *pflag.FlagSet) {
	fs.String("env-file", ".env", "file of KEY=VALUE settings read when present")
	fs.Bool("quarantine-corrupt-journal", false, "when the journal is corrupt, move it aside and start with an empty one")
	for _, s := range settings {
		fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def))
	}
}

// loadConfig resolves each setting: flag, then environment, then the .env
// file, then the default. Errors wrap errUsage and name the setting.
func loadConfig(fs *pflag.FlagSet) (*Config, error) {
	envFile, _ := fs.GetString("env-file")
	fileVals := map[string]string{}
	if envFile != "" {
		vals, err := godotenv.Read(envFile)
		switch {
		case err == nil:
			fileVals = vals
		case errors.Is(err, os.ErrNotExist) && !fs.Changed("env-file"):
		default:
			// godotenv's message quotes the rest of the file, which may hold
			// secrets: name the file only.
			return nil, usageErr("env file %s is not a list of KEY=VALUE lines", envFile)
		}
	}
	raw := map[string]string{}
	for _, s := range settings {
		v := s.def
		if fv, ok := fileVals[s.env]; ok {
			v = fv
		}
		if ev, ok := os.LookupEnv(s.env); ok {
			v = ev
		}
		if fs.Changed(s.flag) {
			v, _ = fs.GetString(s.flag)
		}
		raw[s.env] = strings.TrimSpace(v)
	}
	c, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	c.QuarantineJournal, _ = fs.GetBool("quarantine-corrupt-journal")
	return c, nil
}

// parseConfig validates the resolved settings (keyed by environment name).
func parseConfig(raw map[string]string) (*Config, error) {
	c := &Config{Network: raw["NETWORK"], RPCURL: raw["SOLANA_RPC_URL"], KeypairPath: raw["KEYPAIR_PATH"],
		UploadURL: raw["IPFS_UPLOAD_URL"], ContainerRuntime: raw["CONTAINER_RUNTIME"],
		ContainerdAddress: raw["CONTAINERD_ADDRESS"], DataDir: raw["HYPERNODE_DATA_DIR"],
		LocalnetAddr: raw["LOCALNET_ADDR"], GPUInventory: raw["GPU_INVENTORY"], LogFormat: raw["LOG_FORMAT"]}
	def, ok := networkRPC[c.Network]
	if !ok {
		return nil, usageErr("unknown network %q (want localnet, devnet, testnet or mainnet)", c.Network)
	}
	if c.RPCURL == "" {
		c.RPCURL = def
	}
	if c.RPCURL != "" && !strings.HasPrefix(c.RPCURL, "http://") && !strings.HasPrefix(c.RPCURL, "https://") {
		return nil, usageErr("SOLANA_RPC_URL %q is not an http(s) URL", c.RPCURL)
	}
	var err error
	pub := func(name string) (solana.PublicKey, error) {
		k, err := solana.PublicKeyFromBase58(raw[name])
		if err != nil {
			return k, usageErr("%s %q is not a base58 public key", name, raw[name])
		}
		return k, nil
	}
	if raw["MARKET_PUBKEY"] != "" {
		if c.Market, err = pub("MARKET_PUBKEY"); err != nil {
			return nil, err
		}
		c.MarketSet = true
	} else if !c.Local() {
		return nil, usageErr("MARKET_PUBKEY is required on %s (get it from Hypernode)", c.Network)
	}
	if c.Program, err = pub("PROGRAM_ID"); err != nil {
		return nil, err
	}
	if c.Staking, err = pub("STAKING_PROGRAM_ID"); err != nil {
		return nil, err
	}
	if raw["IPFS_GATEWAY"] != "" {
		if c.Gateways, err = ipfs.ParseGatewayList(raw["IPFS_GATEWAY"]); err != nil {
			return nil, usageErr("IPFS_GATEWAY: %v", err)
		}
	} else if c.Local() && c.RPCURL != "" {
		c.Gateways = []string{c.RPCURL} // a standalone localnet serves its store
	} else if !c.Local() {
		return nil, usageErr("IPFS_GATEWAY is required on %s", c.Network)
	}
	if c.UploadURL == "" && c.Local() {
		c.UploadURL = c.RPCURL
	} else if c.UploadURL == "" {
		return nil, usageErr("IPFS_UPLOAD_URL is required on %s (a kubo RPC API base URL)", c.Network)
	} else if u, err := url.Parse(c.UploadURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("IPFS_UPLOAD_URL %q is not an http(s) URL", c.UploadURL)
	}
	if c.ContainerRuntime != "containerd" {
		return nil, usageErr("CONTAINER_RUNTIME %q is not supported: the worker runs jobs with containerd (Docker's engine uses containerd too: point CONTAINERD_ADDRESS at its socket)", c.ContainerRuntime)
	}
	if c.AutoAccept, err = strconv.ParseBool(raw["AUTO_ACCEPT"]); err != nil {
		return nil, usageErr("AUTO_ACCEPT %q is not true or false", raw["AUTO_ACCEPT"])
	}
	ms := func(name string, min int) (time.Duration, error) {
		n, err := strconv.Atoi(raw[name])
		if err != nil || n < min || n > 24*3600*1000 {
			return 0, usageErr("%s %q is not a number of milliseconds between %d and 86400000", name, raw[name], min)
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	if c.PollInterval, err = ms("POLLING_INTERVAL", 100); err != nil {
		return nil, err
	}
	if c.HealthInterval, err = ms("HEALTH_CHECK_INTERVAL", 1000); err != nil {
		return nil, err
	}
	slotsKey := "MAX_PARALLEL_JOBS"
	if raw[slotsKey] == "" && raw["PARALLEL_JOBS"] != "" {
		slotsKey = "PARALLEL_JOBS" // deprecated alias
		c.SlotsAlias = true
	}
	switch v := raw[slotsKey]; v {
	case "":
		c.Slots = 1
	case "auto":
		c.SlotsAuto = true
	default:
		if c.Slots, err = strconv.Atoi(v); err != nil || c.Slots < 1 || c.Slots > 256 {
			return nil, usageErr(`%s %q is not a number from 1 to 256 nor "auto"`, slotsKey, v)
		}
	}
	c.DeviceRoot = raw["GPU_DEVICE_ROOT"]
	if !filepath.IsAbs(c.DeviceRoot) {
		return nil, usageErr("GPU_DEVICE_ROOT %q is not an absolute path", c.DeviceRoot)
	}
	if ap, err := netip.ParseAddrPort(c.LocalnetAddr); err != nil || !ap.Addr().IsLoopback() {
		return nil, usageErr("LOCALNET_ADDR %q is not a loopback address and port (e.g. 127.0.0.1:8899)", c.LocalnetAddr)
	}
	if raw["IMPORT_IMAGES"] != "" {
		for _, p := range strings.Split(raw["IMPORT_IMAGES"], ",") {
			if p = strings.TrimSpace(p); p != "" {
				if err := regularFile(p); err != nil {
					return nil, usageErr("IMPORT_IMAGES: %v", err)
				}
				c.ImportImages = append(c.ImportImages, p)
			}
		}
	}
	if c.GPUInventory != "" {
		if err := regularFile(c.GPUInventory); err != nil {
			return nil, usageErr("GPU_INVENTORY: %v", err)
		}
	}
	mb, err := strconv.ParseInt(raw["WORKSPACE_LIMIT_MB"], 10, 64)
	if err != nil || mb < 1 || mb > 1<<24 {
		return nil, usageErr("WORKSPACE_LIMIT_MB %q is not a number of MiB from 1 to 16777216", raw["WORKSPACE_LIMIT_MB"])
	}
	c.WorkspaceLimitBytes = mb << 20
	switch c.LogFormat {
	case "auto", "console", "json":
	default:
		return nil, usageErr("LOG_FORMAT %q is not auto, console or json", c.LogFormat)
	}
	if c.DataDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, usageErr("HYPERNODE_DATA_DIR is not set and there is no home directory")
		}
		c.DataDir = filepath.Join(home, ".hypernode")
	}
	if c.DataDir, err = filepath.Abs(c.DataDir); err != nil {
		return nil, usageErr("HYPERNODE_DATA_DIR: %v", err)
	}
	if c.KeypairPath == "" {
		if !c.Local() {
			return nil, usageErr("KEYPAIR_PATH is required on %s (create one with `solana-keygen new` or `hypernode-worker keygen`)", c.Network)
		}
		c.KeypairPath = filepath.Join(c.DataDir, "node-keypair.json")
		c.KeypairDefault = true
	}
	return c, nil
}

// Embedded reports whether the worker runs the local market in-process.
func (c *Config) Embedded() bool { return c.Local() && c.RPCURL == "" }

// Local reports whether the network is a local market (embedded or
// standalone): the market, gateway and upload URL default to its own, and a
// missing node keypair is created in the data directory.
func (c *Config) Local() bool { return c.Network == "localnet" }

// JournalPath is the journal file in the data directory.
func (c *Config) JournalPath() string { return filepath.Join(c.DataDir, "journal.db") }
