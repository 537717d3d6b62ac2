// Package runtime runs a job's operations in one hardened containerd container.
//
// It owns everything the worker does with containerd: importing or pulling the image
// (registry credentials, progress, an LRU-pruned disk budget: EnsureImage, Prune),
// building the hardened OCI spec (see SpecOpts) with the job's GPUs (GPUSpecOpts: CDI,
// the NVIDIA hook, AMD device nodes), creating the container named from the
// job (ContainerID), running each operation as a task whose output a log writer owned
// by the shim appends to a file (RunLoggerIfInvoked), re-attaching to a task that
// outlived the worker process, killing, inspecting, listing and removing the containers
// it labelled.
//
// Crash model: every fact needed to resume lives in containerd, not in this process.
// The container's labels record which operation its task belongs to (LabelOp), whether
// that task was created (LabelOpStarted) and, once it exited, its exit status
// (LabelOpExit); the shim owns the running task and its log writer.
// A new Runtime on a restarted worker therefore finds a running operation and waits
// for it instead of starting it again, and finds a finished one's exit status (see
// RunOp).
//
// Works with containerd 1.6 and later (the v2 Go client), cgroup v1 and v2, runc.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	clog "github.com/containerd/log"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/runtime/logwriter"
)

// Defaults applied by New to a zero Config field.
const (
	DefaultAddress      = defaults.DefaultAddress // /run/containerd/containerd.sock
	DefaultNamespace    = "hypernode"
	DefaultSnapshotter  = "overlayfs"
	FallbackSnapshotter = "native"
	DefaultRuntime      = "io.containerd.runc.v2"

	// DefaultLogLimitBytes is how much output of one operation its log keeps.
	DefaultLogLimitBytes = logwriter.DefaultLimitBytes

	// connectTimeout bounds how long New waits for the daemon to answer Version.
	connectTimeout = 10 * time.Second
)

// Labels set on every container this package creates. Callers may add their own
// labels (ContainerSpec.Labels) but cannot override these.
const (
	LabelManaged = "hypernode.managed" // "true": List and reapers select on it
	LabelJob     = "hypernode.job"     // the job, as given to ContainerID
	LabelAttempt = "hypernode.attempt" // the attempt, decimal
	// LabelOp is the index (decimal, from 0) of the operation whose task the container
	// holds or last held. It is written before that task is created.
	LabelOp = "hypernode.op"
	// LabelOpStarted equals LabelOp once the operation's task has been created, just
	// before it is started. With no task left, it means the operation may have run and
	// its exit status is lost (ErrTaskLost).
	LabelOpStarted = "hypernode.op.started"
	// LabelOpExit records how operation LabelOp exited, written before its task is
	// deleted: "<op>/<code>/<exited at, Unix ns>/<1 if OOM-killed else 0>".
	LabelOpExit = "hypernode.op.exit"
)

// Errors callers branch on. Every error this package returns wraps at most one of
// them, plus the underlying containerd error where there is one.
var (
	// ErrUnavailable: the containerd daemon does not answer on its socket.
	ErrUnavailable = errors.New("containerd unavailable")
	// ErrInvalid: a ContainerSpec, Op, path or Config value is malformed.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: the container (or image) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: Create found a container with the same ID but another image.
	ErrExists = errors.New("container exists with another image")
	// ErrBusy: RunOp found another operation's task still running in the container.
	ErrBusy = errors.New("container busy with another operation")
	// ErrOpOrder: RunOp was asked for an operation older than the one the container
	// last prepared (LabelOp).
	ErrOpOrder = errors.New("operation out of order")
	// ErrTaskLost: the operation's task was started but no longer exists (host reboot,
	// or deleted behind our back): its exit status is unknown and it will not be run
	// again by RunOp.
	ErrTaskLost = errors.New("task lost")
	// ErrCannotStart: the OCI runtime refused to start the operation's process
	// (its executable or working directory does not exist in the image, say).
	// Running it again cannot succeed.
	ErrCannotStart = errors.New("operation cannot start")
)

// Config says which containerd to use and how. Zero fields take the Default* values.
type Config struct {
	// Address is the containerd gRPC socket path (DefaultAddress).
	Address string
	// Namespace is the containerd namespace holding images and containers
	// (DefaultNamespace).
	Namespace string
	// Snapshotter unpacks images and holds container root filesystems. Empty means
	// DefaultSnapshotter, falling back to FallbackSnapshotter when the daemon reports
	// overlayfs unusable; a snapshotter named here explicitly must work.
	Snapshotter string
	// Runtime is the containerd runtime (shim) name (DefaultRuntime).
	Runtime string
	// Logger is the absolute path of the executable the shim runs to write an
	// operation's log; its main must call RunLoggerIfInvoked first (New runs it once
	// to check). Empty means this process's own executable (os.Executable).
	Logger string
	// LogLimitBytes is how many bytes of one operation's output its log keeps
	// (DefaultLogLimitBytes when 0); the rest is dropped with a note.
	LogLimitBytes int64
	// Egress is the network policy of containers whose ContainerSpec.Egress is
	// empty: EgressNone (default) or EgressAllow. New checks that it can be
	// applied (CheckEgress).
	Egress string
	// GPU says where the host's CDI specs, NVIDIA hook and device nodes are (the real
	// host when zero). See GPUSpecOpts.
	GPU GPUHost
	// Images configures pulls (credentials, progress) and the image cache budget.
	Images ImageConfig
}

// Runtime is a connection to one containerd daemon, scoped to one namespace. It is
// safe for concurrent use by several goroutines, but the caller must not run two
// operations of the same container at once.
type Runtime struct {
	client      *client.Client
	address     string
	namespace   string
	snapshotter string
	runtime     string
	version     string
	logger      string
	logLimit    int64
	egress      string
	clientLog   *clog.Entry
	gpu         GPUHost
	images      ImageConfig
	// unpacked holds the targets (digest.Digest) of images this Runtime found or
	// made unpacked for its snapshotter; cleared when Prune removes an image.
	unpacked sync.Map
}

// New connects to containerd at cfg.Address and checks that it answers (Version)
// within ten seconds or ctx's deadline, whichever is sooner. The returned error wraps
// ErrUnavailable and names the socket when it does not answer, or ErrInvalid when the
// namespace, log writer or snapshotter is malformed, missing or broken. Warnings the
// containerd client logs later go to ctx's zerolog logger (zerolog.Ctx).
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	r := &Runtime{
		clientLog:   clientLogger(*zerolog.Ctx(ctx)),
		address:     cfg.Address,
		namespace:   cfg.Namespace,
		snapshotter: cfg.Snapshotter,
		runtime:     cfg.Runtime,
		egress:      cfg.Egress,
		gpu:         cfg.GPU,
		images:      cfg.Images,
	}
	if r.egress == "" {
		r.egress = EgressNone
	}
	if err := CheckEgress(r.egress); err != nil {
		return nil, err
	}
	if r.address == "" {
		r.address = DefaultAddress
	}
	if r.namespace == "" {
		r.namespace = DefaultNamespace
	}
	if r.runtime == "" {
		r.runtime = DefaultRuntime
	}
	if err := r.setLogger(cfg); err != nil {
		return nil, err
	}
	if err := identifiers.Validate(r.namespace); err != nil {
		return nil, fmt.Errorf("containerd namespace %q: %w: %w", r.namespace, ErrInvalid, err)
	}
	c, err := client.New(r.address,
		client.WithDefaultNamespace(r.namespace),
		client.WithDefaultRuntime(r.runtime),
		client.WithTimeout(connectTimeout))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w: %w", r.address, ErrUnavailable, err)
	}
	r.client = c

	vctx, cancel := context.WithTimeout(r.ctx(ctx), connectTimeout)
	defer cancel()
	v, err := c.Version(vctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("containerd at %s does not answer: %w: %w", r.address, ErrUnavailable, err)
	}
	r.version = v.Version

	if err := r.pickSnapshotter(vctx, cfg.Snapshotter); err != nil {
		c.Close()
		return nil, err
	}
	return r, nil
}

// setLogger resolves and checks the log writer executable and the log limit.
func (r *Runtime) setLogger(cfg Config) error {
	r.logger, r.logLimit = cfg.Logger, cfg.LogLimitBytes
	if r.logLimit == 0 {
		r.logLimit = DefaultLogLimitBytes
	}
	if r.logLimit < 0 {
		return fmt.Errorf("log limit %d bytes is negative: %w", r.logLimit, ErrInvalid)
	}
	if r.logger == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("log writer: own executable: %w", err)
		}
		r.logger = exe
	}
	if !filepath.IsAbs(r.logger) {
		return fmt.Errorf("log writer %q is not an absolute path: %w", r.logger, ErrInvalid)
	}
	fi, err := os.Stat(r.logger)
	if err != nil {
		return fmt.Errorf("log writer: %w: %w", ErrInvalid, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("log writer %s is not an executable file: %w", r.logger, ErrInvalid)
	}
	return checkLogger(r.logger)
}

// pickSnapshotter resolves r.snapshotter from the daemon's plugin list.
func (r *Runtime) pickSnapshotter(ctx context.Context, want string) error {
	resp, err := r.client.IntrospectionService().Plugins(ctx, `type=="io.containerd.snapshotter.v1"`)
	if err != nil {
		return fmt.Errorf("containerd at %s: list snapshotters: %w: %w", r.address, ErrUnavailable, err)
	}
	usable := map[string]error{}
	for _, p := range resp.Plugins {
		if p.InitErr != nil {
			usable[p.ID] = errors.New(p.InitErr.Message)
		} else {
			usable[p.ID] = nil
		}
	}
	check := func(name string) error {
		initErr, ok := usable[name]
		if !ok {
			return fmt.Errorf("snapshotter %q is not loaded in containerd at %s: %w", name, r.address, ErrInvalid)
		}
		if initErr != nil {
			return fmt.Errorf("snapshotter %q failed in containerd at %s: %w: %w", name, r.address, ErrInvalid, initErr)
		}
		return nil
	}
	if want != "" {
		r.snapshotter = want
		return check(want)
	}
	r.snapshotter = DefaultSnapshotter
	if err := check(DefaultSnapshotter); err != nil {
		if err2 := check(FallbackSnapshotter); err2 != nil {
			return fmt.Errorf("%w; fallback: %w", err, err2)
		}
		zerolog.Ctx(ctx).Warn().Err(err).Str("snapshotter", FallbackSnapshotter).
			Msg("overlayfs unusable, falling back")
		r.snapshotter = FallbackSnapshotter
	}
	return nil
}

// Close closes the connection. Containers and tasks are not touched: they keep running
// in their shims and a later Runtime re-attaches to them.
func (r *Runtime) Close() error {
	return r.client.Close()
}

// Snapshotter is the snapshotter in use (after the overlayfs→native fallback). A
// container's snapshot key equals its ID.
func (r *Runtime) Snapshotter() string { return r.snapshotter }

// Namespace is the containerd namespace in use.
func (r *Runtime) Namespace() string { return r.namespace }

// Address is the containerd socket path in use.
func (r *Runtime) Address() string { return r.address }

// DaemonVersion is the version string the daemon reported at New, e.g. "1.6.20~ds1".
func (r *Runtime) DaemonVersion() string { return r.version }

// ctx scopes ctx to the runtime's namespace (the OCI spec generator reads it there) and
// routes the containerd client's logs to the worker's logger.
func (r *Runtime) ctx(ctx context.Context) context.Context {
	return withClientLogger(namespaces.WithNamespace(ctx, r.namespace), r.clientLog)
}

// notFound wraps a containerd not-found error into ErrNotFound, other errors as is.
func notFound(what string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
