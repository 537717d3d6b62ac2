package localnet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	bin "github.com/gagliardetto/binary"
	"github.com/gagliardetto/solana-go"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/chain"
)

// Defaults of Config.
const (
	DefaultAddr         = "127.0.0.1:0"
	DefaultSlotInterval = 400 * time.Millisecond
	DefaultJobPrice     = 10_000_000 // lamports (0.01 SOL)
	DefaultJobTimeout   = 3600       // seconds
)

// ErrConfig is wrapped by every configuration error of Start.
var ErrConfig = errors.New("invalid localnet config")

// Config configures a localnet. Market parameters (JobPrice, JobTimeout,
// NodeXhyperMinimum, Authority) apply on the first start with an empty
// DataDir; a restart loads the market from the ledger.
type Config struct {
	// Addr is the loopback host:port to listen on; DefaultAddr picks a free
	// port.
	Addr string
	// DataDir holds the ledger (ledger.db, bbolt), the faucet and market
	// authority keypairs (0600). Required; created 0700 when absent.
	DataDir string
	// MarketsProgram and StakingProgram default to chain.DefaultMarketsProgramID
	// and chain.DefaultStakingProgramID.
	MarketsProgram, StakingProgram solana.PublicKey
	// SlotInterval is the block time; default DefaultSlotInterval.
	SlotInterval time.Duration
	// Authority signs create_market; when empty a keypair is generated and
	// written to DataDir/market-authority.json (0600).
	Authority solana.PrivateKey
	// JobPrice in lamports (default DefaultJobPrice), JobTimeout in seconds
	// (default DefaultJobTimeout), NodeXhyperMinimum the stake a node needs.
	JobPrice          uint64
	JobTimeout        int64
	NodeXhyperMinimum bin.Uint128
	// StakedNodes get an active stake account (xhyper = NodeXhyperMinimum)
	// at every start unless they already have one.
	StakedNodes []solana.PublicKey
	// ContentStore, when set, is mounted at /ipfs/ and /api/v0/.
	ContentStore http.Handler
	// Now is the Clock sysvar's time source; default time.Now.
	Now func() time.Time
	// Log receives the server's logs; nil discards them.
	Log *zerolog.Logger
	// Faults are injected from the start (faults.go); zero injects none.
	Faults Faults
}

// Server is a running localnet.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	store   *store
	bank    *bank
	hub     *hub
	methods map[string]methodFunc
	market  solana.PublicKey
	ln      net.Listener
	http    *http.Server

	faults  faults
	traffic trafficCounters

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

func (c *Config) withDefaults() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("%w: Addr %q: %v", ErrConfig, c.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%w: Addr %q is not a loopback address (the localnet faucet is open to anyone who can reach it)", ErrConfig, c.Addr)
	}
	if c.MarketsProgram.IsZero() {
		c.MarketsProgram = chain.DefaultMarketsProgramID
	}
	if c.StakingProgram.IsZero() {
		c.StakingProgram = chain.DefaultStakingProgramID
	}
	if c.MarketsProgram == c.StakingProgram {
		return fmt.Errorf("%w: MarketsProgram and StakingProgram are both %s", ErrConfig, c.MarketsProgram)
	}
	if c.SlotInterval == 0 {
		c.SlotInterval = DefaultSlotInterval
	}
	if c.SlotInterval < 0 {
		return fmt.Errorf("%w: SlotInterval %s is negative", ErrConfig, c.SlotInterval)
	}
	if c.JobPrice == 0 {
		c.JobPrice = DefaultJobPrice
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = DefaultJobTimeout
	}
	if c.JobTimeout < 0 {
		return fmt.Errorf("%w: JobTimeout %d is negative", ErrConfig, c.JobTimeout)
	}
	if len(c.Authority) > 0 && (len(c.Authority) != 64 || !c.Authority.IsValid()) {
		return fmt.Errorf("%w: Authority is not a valid ed25519 keypair", ErrConfig)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := c.Faults.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Start opens (or creates) the ledger in cfg.DataDir, creates the market on
// a first start, seeds stake accounts and serves JSON-RPC and WebSocket on
// one loopback port. The server runs until Close or until ctx is done.
// Errors wrap ErrConfig or ErrLedger where they classify.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: zerolog.Nop(), stop: make(chan struct{})}
	if cfg.Log != nil {
		s.log = cfg.Log.With().Str("component", "localnet").Logger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("localnet data dir: %w", err)
	}
	st, err := openStore(filepath.Join(cfg.DataDir, ledgerFile))
	if err != nil {
		return nil, err
	}
	s.store = st
	if err := s.open(ctx); err != nil {
		st.close()
		return nil, err
	}
	s.registerMethods()
	s.methods["sendTransaction"] = s.faultySend(s.methods["sendTransaction"])
	s.hub = newHub(s.bank, s.log)
	if err := s.SetFaults(cfg.Faults); err != nil {
		st.close()
		return nil, err
	}
	s.bank.mu.Lock()
	s.bank.events = s.hub
	s.bank.mu.Unlock()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("localnet listen %s: %w", cfg.Addr, err)
	}
	s.ln = countingListener{Listener: ln, t: &s.traffic}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.withFaults(s.serveRPC))
	mux.HandleFunc("/admin/faults", s.adminFaults)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	if cfg.ContentStore != nil {
		mux.Handle("/ipfs/", cfg.ContentStore)
		mux.Handle("/api/v0/", cfg.ContentStore)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("http serve")
		}
	}()
	go func() {
		defer s.wg.Done()
		s.tick()
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			go s.Close()
		case <-s.stop:
		}
	}()
	s.log.Info().Str("url", s.URL()).Str("market", s.market.String()).Msg("localnet started")
	return s, nil
}

// open loads the ledger, or creates it (genesis) when it holds no market.
func (s *Server) open(ctx context.Context) error {
	cfg := &s.cfg
	state, err := s.store.load()
	if err != nil {
		return err
	}
	faucetPath := filepath.Join(cfg.DataDir, faucetFile)
	if state.market == nil {
		// Fresh, or a first start that did not finish: start over.
		if err := s.store.reset(); err != nil {
			return fmt.Errorf("reset ledger: %w", err)
		}
		state = &ledgerState{accounts: map[solana.PublicKey]*Account{}, statuses: map[solana.Signature]*statusRecord{}}
		if err := s.genesis(ctx, state, faucetPath); err != nil {
			return fmt.Errorf("localnet genesis: %w", err)
		}
	} else {
		if state.chain == nil {
			return fmt.Errorf("%w: market recorded but no chain state", ErrLedger)
		}
		faucet, err := readKeypair(faucetPath)
		if err != nil {
			return fmt.Errorf("%w: faucet keypair: %v", ErrLedger, err)
		}
		if state.lastSeq, err = s.store.indexLegacy(state.statuses); err != nil {
			return err
		}
		s.bank = newBank(s.store, state, cfg.Now, cfg.MarketsProgram, cfg.StakingProgram)
		s.bank.faucet = faucet
		s.bank.airdropNonce = randomUint64()
		s.market = *state.market
		_, acct := s.bank.account(s.market)
		if acct == nil || acct.Owner != cfg.MarketsProgram {
			return fmt.Errorf("%w: market %s is missing or not owned by the configured Markets program %s", ErrLedger, s.market, cfg.MarketsProgram)
		}
	}
	return s.seedStakes()
}

func (s *Server) genesis(ctx context.Context, state *ledgerState, faucetPath string) error {
	cfg := &s.cfg
	faucet, err := loadOrCreateKeypair(faucetPath)
	if err != nil {
		return err
	}
	authority := cfg.Authority
	if len(authority) == 0 {
		if authority, err = loadOrCreateKeypair(filepath.Join(cfg.DataDir, authorityFile)); err != nil {
			return err
		}
	}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return err
	}
	c := genesisChain(seed)
	state.chain = &c
	s.bank = newBank(s.store, state, cfg.Now, cfg.MarketsProgram, cfg.StakingProgram)
	s.bank.faucet = faucet
	s.bank.airdropNonce = randomUint64()
	accts := programAccounts(cfg.MarketsProgram, cfg.StakingProgram)
	accts[faucet.PublicKey()] = &Account{Lamports: faucetLamports, Owner: solana.SystemProgramID}
	if err := s.bank.genesisAccounts(accts); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	min := cfg.NodeXhyperMinimum
	market, err := s.bank.createMarket(authority, cfg.JobPrice, cfg.JobTimeout, min)
	if err != nil {
		return err
	}
	if err := s.store.saveMarket(market); err != nil {
		return fmt.Errorf("record market: %w", err)
	}
	s.market = market
	return nil
}

// seedStakes gives every configured staked node an active stake account
// unless it has one.
func (s *Server) seedStakes() error {
	accts := map[solana.PublicKey]*Account{}
	now := s.cfg.Now().Unix()
	for _, node := range s.cfg.StakedNodes {
		key, a, err := stakeAccount(s.cfg.StakingProgram, node, s.cfg.NodeXhyperMinimum, true, now)
		if err != nil {
			return err
		}
		if _, existing := s.bank.account(key); existing == nil {
			accts[key] = a
		}
	}
	if len(accts) == 0 {
		return nil
	}
	return s.bank.genesisAccounts(accts)
}

// SeedStake writes node's stake account (the staking program's PDA) with
// xhyper, active or unstaking, replacing any existing one. It lets tests
// and demos set up nodes whose stake is insufficient or inactive.
func (s *Server) SeedStake(node solana.PublicKey, xhyper bin.Uint128, active bool) error {
	key, a, err := stakeAccount(s.cfg.StakingProgram, node, xhyper, active, s.cfg.Now().Unix())
	if err != nil {
		return err
	}
	return s.bank.genesisAccounts(map[solana.PublicKey]*Account{key: a})
}

// tick produces a block every SlotInterval until Close.
func (s *Server) tick() {
	t := time.NewTicker(s.cfg.SlotInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.bank.advance(); err != nil {
				s.log.Error().Err(err).Msg("advance slot")
			}
		}
	}
}

// URL is the JSON-RPC endpoint, http://127.0.0.1:port.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// WSURL is the WebSocket endpoint on the same port, ws://127.0.0.1:port.
func (s *Server) WSURL() string { return "ws://" + s.ln.Addr().String() }

// Market is the market account's address.
func (s *Server) Market() solana.PublicKey { return s.market }

// MarketsProgram and StakingProgram are the program IDs the localnet runs.
func (s *Server) MarketsProgram() solana.PublicKey { return s.cfg.MarketsProgram }

// StakingProgram is the staking program ID whose stake accounts list_node
// and work_job read.
func (s *Server) StakingProgram() solana.PublicKey { return s.cfg.StakingProgram }

// Close stops serving, drops websocket clients, stops the slot clock and
// closes the ledger. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := s.http.Shutdown(ctx)
		s.hub.close()
		s.wg.Wait()
		if cerr := s.store.close(); err == nil {
			err = cerr
		}
		s.closeErr = err
		s.log.Info().Msg("localnet stopped")
	})
	return s.closeErr
}
