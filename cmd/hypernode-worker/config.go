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

	"github.com/distribution/reference"
	"github.com/gagliardetto/solana-go"
	"github.com/joho/godotenv"
	"github.com/spf13/pflag"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/statusapi"
)

// errUsage marks a configuration or usage error: one clear line, exit code 2.
var errUsage = errors.New("usage")

// settingErr is a bad value of setting (its environment name); the message
// names it too.
func settingErr(setting, format string, args ...any) error {
	return &settingError{Setting: setting, Msg: fmt.Sprintf(format, args...)}
}

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
	RPCURL              string  // SOLANA_RPC_URL: one URL or several, comma-separated (failover order); empty with localnet = embedded
	WSURL               string  // SOLANA_WS_URL: WebSocket endpoint; "" = derived from the first RPC URL, "none" = poll only
	RateLimit           float64 // RPC_RATE_LIMIT: RPC requests per second, 0 = no limit
	PriorityFee         uint64  // PRIORITY_FEE_MICROLAMPORTS: compute-unit price, micro-lamports
	PriorityFeeCap      uint64  // PRIORITY_FEE_CAP_LAMPORTS: most priority fee per transaction, lamports
	KeypairPath         string  // KEYPAIR_PATH
	Market              solana.PublicKey
	MarketSet           bool
	Program             solana.PublicKey     // PROGRAM_ID
	Staking             solana.PublicKey     // STAKING_PROGRAM_ID
	Gateways            []string             // IPFS_GATEWAY
	UploadURL           string               // IPFS_UPLOAD_URL (kubo RPC API base)
	Upload              string               // IPFS_UPLOAD: kubo or pinata (see parseUpload)
	PinataJWT           ipfs.Secret          // PINATA_JWT (env or .env only; never logged)
	PinataURL           string               // PINATA_API_URL
	ContainerRuntime    string               // CONTAINER_RUNTIME
	ContainerdAddress   string               // CONTAINERD_ADDRESS
	AutoAccept          bool                 // AUTO_ACCEPT
	PollInterval        time.Duration        // POLLING_INTERVAL (ms)
	HealthInterval      time.Duration        // HEALTH_CHECK_INTERVAL (ms)
	DataDir             string               // HYPERNODE_DATA_DIR
	LocalnetAddr        string               // LOCALNET_ADDR
	GPUInventory        string               // GPU_INVENTORY
	Slots               int                  // MAX_PARALLEL_JOBS (or the deprecated PARALLEL_JOBS); 0 with SlotsAuto
	SlotsAuto           bool                 // MAX_PARALLEL_JOBS=auto: one slot per GPU, resolved at start
	SlotsAlias          bool                 // the slots came from the deprecated PARALLEL_JOBS
	GPUHostRoot         string               // GPU_HOST_ROOT: runtime.GPUHost.Root
	ImportImages        []string             // IMPORT_IMAGES: OCI archives imported at start
	LogFormat           string               // LOG_FORMAT: auto, console, json
	QuarantineJournal   bool                 // --quarantine-corrupt-journal
	KeypairDefault      bool                 // KEYPAIR_PATH was not given: the local market's node key, created when missing
	WorkspaceLimitBytes int64                // WORKSPACE_LIMIT_MB
	APIAddr             string               // API_ADDR: loopback address of the local API and dashboard; empty = unix socket only
	Sandbox             SandboxConfig        // EGRESS_POLICY, LOG_LIMIT_MB, MODEL_CACHE_*
	RegistryAuth        runtime.RegistryAuth // REGISTRY_AUTH file plus REGISTRY_HOST/USER/PASSWORD; secrets
	RegistryAuthFile    string               // REGISTRY_AUTH
	ImageCacheBytes     int64                // IMAGE_CACHE_LIMIT_MB; 0 = no budget
	PrepullImages       []string             // PREPULL_IMAGES, normalised refs
	DiskFloorBytes      uint64               // DISK_FLOOR_MB: claiming pauses while the data directory has less free
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
	{"SOLANA_WS_URL", "ws-url", "", "Solana WebSocket URL for push (default: the first RPC URL with ws(s)://; none = poll only)"},
	{"RPC_RATE_LIMIT", "rpc-rate-limit", "auto", "RPC requests per second, retries included (auto: none on localnet, 10 elsewhere; 0 = none)"},
	{"PRIORITY_FEE_MICROLAMPORTS", "priority-fee", "0", "compute-unit price of every transaction, micro-lamports (0 = no priority fee)"},
	{"PRIORITY_FEE_CAP_LAMPORTS", "priority-fee-cap", "100000", "most priority fee one transaction may pay, lamports"},
	{"KEYPAIR_PATH", "keypair", "", "node keypair, Solana CLI format (default with localnet: DATA_DIR/node-keypair.json, created)"},
	{"MARKET_PUBKEY", "market", "", "market account (default with the embedded localnet: its market)"},
	{"PROGRAM_ID", "program-id", chain.DefaultMarketsProgramID.String(), "Markets program ID"},
	{"STAKING_PROGRAM_ID", "staking-program-id", chain.DefaultStakingProgramID.String(), "staking program ID"},
	{"IPFS_GATEWAY", "ipfs-gateway", "", "IPFS gateway URLs, comma-separated (default with localnet: its gateway)"},
	{"IPFS_UPLOAD_URL", "ipfs-upload-url", "", "kubo RPC API base URL for uploads (default with localnet: its store)"},
	{"IPFS_UPLOAD", "ipfs-upload", "", "upload service: kubo or pinata (default: pinata when only PINATA_JWT is set, else kubo)"},
	{"PINATA_JWT", "", "", "Pinata API JWT (environment or env file only)"},
	{"PINATA_API_URL", "pinata-api-url", ipfs.DefaultPinataURL, "Pinata API base URL"},
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
	{"GPU_HOST_ROOT", "gpu-host-root", "/", "root under which the host's GPU device nodes (/dev), sysfs (/sys), groups (/etc/group) and CDI specs (/etc/cdi, /var/run/cdi) are read"},
	{"IMPORT_IMAGES", "import-image", "", "OCI image archives to import at start, comma-separated"},
	{"LOG_FORMAT", "log-format", "auto", "auto (console on a terminal, else JSON), console or json"},
	{"WORKSPACE_LIMIT_MB", "workspace-limit-mb", "10240", "MiB a job may write under /workspace before it is stopped and failed"},
	{"API_ADDR", "api-addr", "", "loopback address (e.g. 127.0.0.1:9090) serving the local API and web dashboard; empty: only DATA_DIR/worker.sock"},
	{"REGISTRY_AUTH", "registry-auth", "", "Docker config.json with private-registry credentials (auths), mode 0600"},
	{"REGISTRY_HOST", "registry-host", "", "registry host that REGISTRY_USER/REGISTRY_PASSWORD are for (e.g. ghcr.io, 127.0.0.1:5000)"},
	{"REGISTRY_USER", "registry-user", "", "user name for REGISTRY_HOST"},
	{"REGISTRY_PASSWORD", "registry-password", "", "password or token for REGISTRY_HOST (prefer the environment or .env to a flag)"},
	{"IMAGE_CACHE_LIMIT_MB", "image-cache-limit-mb", "0", "MiB the worker's images may take; least recently used unused images are removed past it (0: no limit)"},
	{"PREPULL_IMAGES", "prepull-images", "", "images pulled in the background at start: comma-separated refs, or 'frameworks' for the market's default images"},
	{"DISK_FLOOR_MB", "disk-floor-mb", "2048", "MiB of free disk in the data directory under which claiming pauses (0: no floor)"},
}

// addConfigFlags registers every setting as a flag of fs, plus --env-file.
func addConfigFlags(fs *pflag.FlagSet) {
	fs.String("env-file", ".env", "file of KEY=VALUE settings read when present")
	fs.Bool("quarantine-corrupt-journal", false, "when the journal is corrupt: rebuild its snapshots and index from the log or, when the log itself is damaged, move it aside and start with an empty one")
	for _, s := range settings {
		if s.flag == "" {
			continue // a secret: never on the command line
		}
		fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def))
	}
}

// Sources of a setting's value, as `config` shows them.
const (
	sourceFlag    = "flag"
	sourceEnv     = "env"
	sourceEnvFile = ".env"
	sourceDefault = "default"
)

// resolved is every setting's raw value (keyed by environment name) and
// where it came from.
type resolved struct {
	raw    map[string]string
	source map[string]string
}

// resolveSettings resolves each setting: flag, then environment, then the
// .env file, then the default. Only an unreadable --env-file is an error.
func resolveSettings(fs *pflag.FlagSet) (*resolved, error) {
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
	r := &resolved{raw: map[string]string{}, source: map[string]string{}}
	for _, s := range settings {
		v, src := s.def, sourceDefault
		if fv, ok := fileVals[s.env]; ok {
			v, src = fv, sourceEnvFile
		}
		if ev, ok := os.LookupEnv(s.env); ok {
			v, src = ev, sourceEnv
		}
		if s.flag != "" && fs.Changed(s.flag) {
			v, _ = fs.GetString(s.flag)
			src = sourceFlag
		}
		r.raw[s.env] = strings.TrimSpace(v)
		r.source[s.env] = src
	}
	return r, nil
}

// loadConfig resolves and validates the settings. Errors wrap errUsage and
// name the setting (the first bad one).
func loadConfig(fs *pflag.FlagSet) (*Config, error) {
	r, err := resolveSettings(fs)
	if err != nil {
		return nil, err
	}
	c, err := parseConfig(r.raw)
	if err != nil {
		return nil, err
	}
	c.QuarantineJournal, _ = fs.GetBool("quarantine-corrupt-journal")
	return c, nil
}

// settingError is a bad configuration value; Setting is its environment
// name. It wraps errUsage.
type settingError struct {
	Setting string
	Msg     string // names the setting too: one line for the operator
}

func (e *settingError) Error() string { return e.Msg }
func (e *settingError) Unwrap() error { return errUsage }

// parseConfig validates the resolved settings (keyed by environment name)
// and returns the first bad one's error, on one line; when others are bad
// too it says how many and that `config` lists them all.
func parseConfig(raw map[string]string) (*Config, error) {
	c, errs := checkConfig(raw)
	switch len(errs) {
	case 0:
		return c, nil
	case 1:
		return nil, errs[0]
	}
	more := "1 more invalid setting"
	if len(errs) > 2 {
		more = fmt.Sprintf("%d more invalid settings", len(errs)-1)
	}
	return nil, &settingError{Setting: errs[0].Setting, Msg: fmt.Sprintf("%s (and %s: `hypernode-worker config` lists them all)", errs[0].Msg, more)}
}

// checkConfig validates every setting and returns all the bad ones, each
// naming its setting; the Config holds what could be read.
func checkConfig(raw map[string]string) (*Config, []*settingError) {
	var errs []*settingError
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &settingError{Setting: setting, Msg: fmt.Sprintf(format, args...)})
	}
	// sub records the error of a group's parser, which names its setting.
	sub := func(err error) {
		var se *settingError
		if errors.As(err, &se) {
			errs = append(errs, se)
		} else if err != nil {
			bad("", "%v", err)
		}
	}
	c := &Config{Network: raw["NETWORK"], RPCURL: raw["SOLANA_RPC_URL"], KeypairPath: raw["KEYPAIR_PATH"],
		UploadURL: raw["IPFS_UPLOAD_URL"], ContainerRuntime: raw["CONTAINER_RUNTIME"],
		ContainerdAddress: raw["CONTAINERD_ADDRESS"], DataDir: raw["HYPERNODE_DATA_DIR"],
		LocalnetAddr: raw["LOCALNET_ADDR"], GPUInventory: raw["GPU_INVENTORY"], LogFormat: raw["LOG_FORMAT"]}
	def, ok := networkRPC[c.Network]
	if !ok {
		bad("NETWORK", "unknown network %q (want localnet, devnet, testnet or mainnet)", c.Network)
	}
	if c.RPCURL == "" {
		c.RPCURL = def
	}
	if c.RPCURL != "" {
		urls, err := chain.ParseRPCURLs(c.RPCURL)
		if err != nil {
			bad("SOLANA_RPC_URL", "SOLANA_RPC_URL: %v", err)
		}
		list := make([]string, len(urls))
		for i, u := range urls {
			list[i] = u.String()
		}
		c.RPCURL = strings.Join(list, ",")
	}
	c.WSURL = raw["SOLANA_WS_URL"]
	if c.WSURL != "" && c.WSURL != "none" {
		if u, err := url.Parse(c.WSURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			bad("SOLANA_WS_URL", "SOLANA_WS_URL %q is not a ws(s) URL or none", redactURL(c.WSURL))
		}
	}
	switch rl := raw["RPC_RATE_LIMIT"]; {
	case rl == "auto" && c.Network == "localnet":
	case rl == "auto":
		c.RateLimit = 10
	default:
		v, err := strconv.ParseFloat(rl, 64)
		if err != nil || !(v >= 0 && v <= 100000) {
			bad("RPC_RATE_LIMIT", "RPC_RATE_LIMIT %q is not auto or a number of requests per second from 0 to 100000", rl)
		}
		c.RateLimit = v
	}
	for name, dst := range map[string]*uint64{"PRIORITY_FEE_MICROLAMPORTS": &c.PriorityFee, "PRIORITY_FEE_CAP_LAMPORTS": &c.PriorityFeeCap} {
		v, err := strconv.ParseUint(raw[name], 10, 64)
		if err != nil || v > 1<<40 {
			bad(name, "%s %q is not a whole number from 0 to %d", name, raw[name], uint64(1)<<40)
		}
		*dst = v
	}
	pub := func(name string) solana.PublicKey {
		k, err := solana.PublicKeyFromBase58(raw[name])
		if err != nil {
			bad(name, "%s %q is not a base58 public key", name, raw[name])
		}
		return k
	}
	if raw["MARKET_PUBKEY"] != "" {
		c.Market = pub("MARKET_PUBKEY")
		c.MarketSet = true
	} else if ok && !c.Local() {
		bad("MARKET_PUBKEY", "MARKET_PUBKEY is required on %s (get it from Hypernode)", c.Network)
	}
	c.Program = pub("PROGRAM_ID")
	c.Staking = pub("STAKING_PROGRAM_ID")
	if raw["IPFS_GATEWAY"] != "" {
		gws, err := ipfs.ParseGatewayList(raw["IPFS_GATEWAY"])
		if err != nil {
			bad("IPFS_GATEWAY", "IPFS_GATEWAY: %v", err)
		}
		c.Gateways = gws
	} else if c.Local() && c.RPCURL != "" {
		c.Gateways = []string{c.PrimaryRPC()} // a standalone localnet serves its store
	} else if ok && !c.Local() {
		bad("IPFS_GATEWAY", "IPFS_GATEWAY is required on %s", c.Network)
	}
	if ok || raw["IPFS_UPLOAD_URL"] != "" || raw["PINATA_JWT"] != "" || raw["IPFS_UPLOAD"] != "" {
		// (on an unknown network, what it requires is unknown too: only
		// the NETWORK error, not one per setting that network would need)
		sub(c.parseUpload(raw))
	}
	if c.ContainerRuntime != "containerd" {
		bad("CONTAINER_RUNTIME", "CONTAINER_RUNTIME %q is not supported: the worker runs jobs with containerd (Docker's engine uses containerd too: point CONTAINERD_ADDRESS at its socket)", c.ContainerRuntime)
	}
	var err error
	if c.AutoAccept, err = strconv.ParseBool(raw["AUTO_ACCEPT"]); err != nil {
		bad("AUTO_ACCEPT", "AUTO_ACCEPT %q is not true or false", raw["AUTO_ACCEPT"])
	}
	ms := func(name string, min int) time.Duration {
		n, err := strconv.Atoi(raw[name])
		if err != nil || n < min || n > 24*3600*1000 {
			bad(name, "%s %q is not a number of milliseconds between %d and 86400000", name, raw[name], min)
			return 0
		}
		return time.Duration(n) * time.Millisecond
	}
	c.PollInterval = ms("POLLING_INTERVAL", 100)
	c.HealthInterval = ms("HEALTH_CHECK_INTERVAL", 1000)
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
			bad(slotsKey, `%s %q is not a number from 1 to 256 nor "auto"`, slotsKey, v)
		}
	}
	c.GPUHostRoot = raw["GPU_HOST_ROOT"]
	if !filepath.IsAbs(c.GPUHostRoot) {
		bad("GPU_HOST_ROOT", "GPU_HOST_ROOT %q is not an absolute path", c.GPUHostRoot)
	}
	if ap, err := netip.ParseAddrPort(c.LocalnetAddr); err != nil || !ap.Addr().IsLoopback() {
		bad("LOCALNET_ADDR", "LOCALNET_ADDR %q is not a loopback address and port (e.g. 127.0.0.1:8899)", c.LocalnetAddr)
	}
	if raw["IMPORT_IMAGES"] != "" {
		for _, p := range strings.Split(raw["IMPORT_IMAGES"], ",") {
			if p = strings.TrimSpace(p); p != "" {
				if err := regularFile(p); err != nil {
					bad("IMPORT_IMAGES", "IMPORT_IMAGES: %v", err)
				}
				c.ImportImages = append(c.ImportImages, p)
			}
		}
	}
	if c.GPUInventory != "" {
		if err := regularFile(c.GPUInventory); err != nil {
			bad("GPU_INVENTORY", "GPU_INVENTORY: %v", err)
		}
	}
	mb, err := strconv.ParseInt(raw["WORKSPACE_LIMIT_MB"], 10, 64)
	if err != nil || mb < 1 || mb > 1<<24 {
		bad("WORKSPACE_LIMIT_MB", "WORKSPACE_LIMIT_MB %q is not a number of MiB from 1 to 16777216", raw["WORKSPACE_LIMIT_MB"])
	}
	c.WorkspaceLimitBytes = mb << 20
	floor, err := strconv.ParseUint(raw["DISK_FLOOR_MB"], 10, 64)
	if err != nil || floor > 1<<30 {
		bad("DISK_FLOOR_MB", "DISK_FLOOR_MB %q is not a number of MiB from 0 to 1073741824", raw["DISK_FLOOR_MB"])
	}
	c.DiskFloorBytes = floor << 20
	if c.APIAddr = raw["API_ADDR"]; c.APIAddr != "" {
		if err := statusapi.CheckLoopback(c.APIAddr); err != nil {
			bad("API_ADDR", "API_ADDR %q is not a loopback address and port (e.g. 127.0.0.1:9090): the API has no authentication", c.APIAddr)
		}
	}
	sub(parseSandboxConfig(c, raw))
	sub(c.parseImages(raw))
	switch c.LogFormat {
	case "auto", "console", "json":
	default:
		bad("LOG_FORMAT", "LOG_FORMAT %q is not auto, console or json", c.LogFormat)
	}
	if c.DataDir == "" {
		if home, err := os.UserHomeDir(); err != nil {
			bad("HYPERNODE_DATA_DIR", "HYPERNODE_DATA_DIR is not set and there is no home directory")
		} else {
			c.DataDir = filepath.Join(home, ".hypernode")
		}
	}
	if c.DataDir != "" {
		if abs, err := filepath.Abs(c.DataDir); err != nil {
			bad("HYPERNODE_DATA_DIR", "HYPERNODE_DATA_DIR: %v", err)
		} else {
			c.DataDir = abs
		}
	}
	if c.KeypairPath == "" {
		if ok && !c.Local() {
			bad("KEYPAIR_PATH", "KEYPAIR_PATH is required on %s (create one with `solana-keygen new` or `hypernode-worker keygen`)", c.Network)
		} else if c.DataDir != "" {
			c.KeypairPath = filepath.Join(c.DataDir, "node-keypair.json")
			c.KeypairDefault = true
		}
	}
	if c.Sandbox.ModelCacheDir == "" {
		c.Sandbox.ModelCacheDir = filepath.Join(c.DataDir, "models")
	}
	return c, errs
}

// redactURL hides what a URL may carry of secrets: its user information
// and its query values ("https://rpc.example/?api-key=…").
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		if strings.ContainsAny(s, "@?") {
			return "(redacted)"
		}
		return s
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q.Set(k, "redacted")
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// PrimaryRPC is the first RPC URL ("" with the embedded localnet).
func (c *Config) PrimaryRPC() string {
	first, _, _ := strings.Cut(c.RPCURL, ",")
	return first
}

// ChainOptions are the chain client's options this configuration asks for.
func (c *Config) ChainOptions() []chain.Option {
	opts := []chain.Option{chain.WithRateLimit(c.RateLimit), chain.WithPriorityFee(c.PriorityFee, c.PriorityFeeCap)}
	switch c.WSURL {
	case "":
	case "none":
		opts = append(opts, chain.WithWebSocket(""))
	default:
		opts = append(opts, chain.WithWebSocket(c.WSURL))
	}
	return opts
}

// Embedded reports whether the worker runs the local market in-process.
func (c *Config) Embedded() bool { return c.Local() && c.RPCURL == "" }

// Local reports whether the network is a local market (embedded or
// standalone): the market, gateway and upload URL default to its own, and a
// missing node keypair is created in the data directory.
func (c *Config) Local() bool { return c.Network == "localnet" }

// JournalPath is the journal file in the data directory.
func (c *Config) JournalPath() string { return filepath.Join(c.DataDir, "journal.db") }

// parseImages reads the registry and image cache settings. Errors name the setting,
// never a password.
func (c *Config) parseImages(raw map[string]string) error {
	c.RegistryAuth = runtime.RegistryAuth{}
	if p := raw["REGISTRY_AUTH"]; p != "" {
		a, err := runtime.LoadDockerConfig(p)
		if err != nil {
			return settingErr("REGISTRY_AUTH", "REGISTRY_AUTH: %v", err)
		}
		c.RegistryAuth, c.RegistryAuthFile = a, p
	}
	host, user, pass := raw["REGISTRY_HOST"], raw["REGISTRY_USER"], raw["REGISTRY_PASSWORD"]
	switch {
	case host == "" && user == "" && pass == "":
	case host == "" || user == "" || pass == "":
		return settingErr("REGISTRY_HOST", "REGISTRY_HOST, REGISTRY_USER and REGISTRY_PASSWORD go together (host %q, user %q, password set: %v)", host, user, pass != "")
	default:
		h := runtime.RegistryHost(host)
		if h == "" || strings.ContainsAny(h, " \t") {
			return settingErr("REGISTRY_HOST", "REGISTRY_HOST %q is not a registry host", host)
		}
		c.RegistryAuth[h] = runtime.Credential{Username: user, Secret: pass}
	}
	mb, err := strconv.ParseInt(raw["IMAGE_CACHE_LIMIT_MB"], 10, 64)
	if err != nil || mb < 0 || mb > 1<<30 {
		return settingErr("IMAGE_CACHE_LIMIT_MB", "IMAGE_CACHE_LIMIT_MB %q is not a number of MiB from 0 (no limit) to 1073741824", raw["IMAGE_CACHE_LIMIT_MB"])
	}
	c.ImageCacheBytes = mb << 20
	c.PrepullImages = nil
	for _, ref := range strings.Split(raw["PREPULL_IMAGES"], ",") {
		ref = strings.TrimSpace(ref)
		switch ref {
		case "":
		case "frameworks":
			for _, f := range []string{jobdef.FrameworkPyTorch, jobdef.FrameworkHuggingFace, jobdef.FrameworkStableDiffusion, jobdef.FrameworkOllama} {
				img, _ := jobdef.DefaultImage(f)
				c.PrepullImages = append(c.PrepullImages, img)
			}
		default:
			if _, err := reference.ParseDockerRef(ref); err != nil {
				return settingErr("PREPULL_IMAGES", "PREPULL_IMAGES: %q is not an image reference (%v)", ref, err)
			}
			c.PrepullImages = append(c.PrepullImages, ref)
		}
	}
	return nil
}
