package main

import (
	"errors"
	"path/filepath"
	"strconv"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/modelcache"
	"github.com/hypernode-sol/worker/runtime/workspacefs"
)

// SandboxConfig is how jobs are confined beyond the hardened container spec.
type SandboxConfig struct {
	Egress        string // EGRESS_POLICY: runtime.EgressNone or runtime.EgressAllow
	LogLimitBytes int64  // LOG_LIMIT_MB: output one operation may write before the job is stopped
	// ModelCacheDir and ModelCacheLimitBytes configure the shared model cache
	// (MODEL_CACHE_DIR, default DATA_DIR/models; MODEL_CACHE_LIMIT_MB, 0 = off).
	ModelCacheDir        string
	ModelCacheLimitBytes int64
	// WorkspaceSpares is how many capped workspace filesystems are kept formatted
	// and mounted ahead of need (WORKSPACE_SPARES; 0: each job's is made when it
	// starts).
	WorkspaceSpares int
}

func init() {
	settings = append(settings,
		setting{"EGRESS_POLICY", "egress-policy", runtime.EgressNone, "network of job containers: none (loopback only) or allow (public internet through a user-mode NAT; never the host's loopback, LAN or cloud metadata)"},
		setting{"LOG_LIMIT_MB", "log-limit-mb", "64", "MiB of output one operation may write; at the limit the job is stopped and failed"},
		setting{"MODEL_CACHE_DIR", "model-cache-dir", "", "shared model cache directory (default DATA_DIR/models)"},
		setting{"MODEL_CACHE_LIMIT_MB", "model-cache-limit-mb", "0", "MiB the model cache may hold, least recently used models evicted past it; 0 turns the cache off"},
		setting{"WORKSPACE_SPARES", "workspace-spares", "1", "capped job workspaces kept formatted and mounted ahead of need, 0 to 16 (0: made when each job starts)"},
	)
}

// parseSandboxConfig fills c.Sandbox from raw; errors wrap errUsage and name the setting.
func parseSandboxConfig(c *Config, raw map[string]string) error {
	s := &c.Sandbox
	s.Egress = raw["EGRESS_POLICY"]
	if err := runtime.CheckEgress(s.Egress); errors.Is(err, runtime.ErrInvalid) {
		return settingErr("EGRESS_POLICY", "EGRESS_POLICY %q is not none or allow", s.Egress)
	} else if err != nil {
		return settingErr("EGRESS_POLICY", "EGRESS_POLICY allow: %v", err)
	}
	mb, err := strconv.ParseInt(raw["LOG_LIMIT_MB"], 10, 64)
	if err != nil || mb < 1 || mb > 1<<20 {
		return settingErr("LOG_LIMIT_MB", "LOG_LIMIT_MB %q is not a number of MiB from 1 to 1048576", raw["LOG_LIMIT_MB"])
	}
	s.LogLimitBytes = mb << 20
	mb, err = strconv.ParseInt(raw["MODEL_CACHE_LIMIT_MB"], 10, 64)
	if err != nil || mb < 0 || mb > 1<<30 {
		return settingErr("MODEL_CACHE_LIMIT_MB", "MODEL_CACHE_LIMIT_MB %q is not a number of MiB from 0 to 1073741824", raw["MODEL_CACHE_LIMIT_MB"])
	}
	s.ModelCacheLimitBytes = mb << 20
	s.ModelCacheDir = raw["MODEL_CACHE_DIR"]
	n, err := strconv.Atoi(raw["WORKSPACE_SPARES"])
	if err != nil || n < 0 || n > 16 {
		return settingErr("WORKSPACE_SPARES", "WORKSPACE_SPARES %q is not a number from 0 to 16", raw["WORKSPACE_SPARES"])
	}
	s.WorkspaceSpares = n
	return nil
}

// sandbox gives d the hard workspace cap when this machine can loop-mount
// (runtime/workspacefs), and says so once in the log either way.
func (w *worker) sandbox(d *fsm.Driver) {
	if err := workspacefs.Check(); err != nil {
		w.log.Warn().Err(err).Msg("workspace cap: no filesystem of its own per job; WORKSPACE_LIMIT_MB is enforced by a periodic size check only")
	} else {
		d.Workspaces = workspaceFS{}
	}
	if lim := w.cfg.Sandbox.ModelCacheLimitBytes; lim > 0 {
		c, err := modelcache.Open(w.cfg.Sandbox.ModelCacheDir, lim)
		if err != nil {
			w.log.Warn().Err(err).Msg("model cache off")
		} else {
			d.Models = modelCache{c}
		}
	}
	w.log.Info().Str("egress", w.cfg.Sandbox.Egress).Bool("model_cache", d.Models != nil).Int64("workspace_limit_bytes", w.cfg.WorkspaceLimitBytes).
		Int64("log_limit_bytes", w.cfg.Sandbox.LogLimitBytes).Bool("workspace_cap", d.Workspaces != nil).Msg("sandbox")
}

// openWorkspacePool keeps WORKSPACE_SPARES capped workspaces ready for d's jobs
// (DATA_DIR/workspace-pool) when d caps workspaces; the returned function closes
// the pool, unmounting and removing the spares. Without a pool, jobs format
// their own, and what a killed worker's pool left mounted there is cleared.
func (w *worker) openWorkspacePool(d *fsm.Driver) (closePool func()) {
	n := w.cfg.Sandbox.WorkspaceSpares
	log := w.log.With().Str("component", "workspace-pool").Logger()
	dir := filepath.Join(w.cfg.DataDir, "workspace-pool")
	if d.Workspaces == nil || n == 0 {
		w.clearWorkspacePool()
		return func() {}
	}
	p, err := workspacefs.OpenPool(workspacefs.PoolConfig{Dir: dir,
		Bytes: w.cfg.WorkspaceLimitBytes, Count: n, FloorBytes: w.cfg.DiskFloorBytes,
		OnError: func(err error) { log.Warn().Err(err).Msg("no spare workspace made; jobs format their own meanwhile") }})
	if err != nil {
		log.Warn().Err(err).Msg("workspace pool off")
		return func() {}
	}
	d.Workspaces = workspaceFS{pool: p}
	log.Info().Int("spares", n).Msg("workspace pool")
	return func() {
		if err := p.Close(); err != nil {
			log.Warn().Err(err).Msg("close workspace pool")
		}
	}
}

// clearWorkspacePool unmounts and removes the spare workspaces a killed
// worker left in DATA_DIR/workspace-pool (nothing when there are none). Only
// a process holding the journal's lock calls it: no other worker then uses
// that pool. A failure is logged, not returned: the spares only take space.
func (w *worker) clearWorkspacePool() {
	if err := workspacefs.ClearPool(filepath.Join(w.cfg.DataDir, "workspace-pool")); err != nil {
		w.log.Warn().Err(err).Str("component", "workspace-pool").Msg("clear a previous worker's spare workspaces")
	}
}

// workspaceFS implements fsm.WorkspaceFS over runtime/workspacefs, taking a
// spare from pool when there is one.
type workspaceFS struct{ pool *workspacefs.Pool }

func (f workspaceFS) Mount(dir, image string, bytes int64) error {
	if f.pool != nil {
		return f.pool.Mount(dir, image, bytes)
	}
	return workspacefs.Mount(dir, image, bytes)
}
func (workspaceFS) Unmount(dir string) error      { return workspacefs.Unmount(dir) }
func (workspaceFS) Full(dir string) (bool, error) { return workspacefs.Full(dir) }
