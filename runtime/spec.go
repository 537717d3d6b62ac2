package runtime

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypernode-sol/worker/hardware"
)

// Defaults for the zero values of ContainerSpec's limits.
const (
	DefaultMemoryBytes = 1 << 30 // 1 GiB
	DefaultPidsLimit   = 1024
	DefaultTmpBytes    = 64 << 20 // /tmp tmpfs
	DefaultShmBytes    = 64 << 20 // /dev/shm tmpfs

	// WorkspaceDir is where ContainerSpec.Workspace appears in the container, and the
	// default working directory of an Op.
	WorkspaceDir = "/workspace"
	// ModelsDir is where ContainerSpec.ModelDir appears in the container.
	ModelsDir = "/models"
	// Hostname is the container's host name (its own UTS namespace): the host's name is
	// not leaked.
	Hostname = "hypernode"
)

// ContainerSpec describes the container of one attempt at one job.
type ContainerSpec struct {
	// ID is the container ID, ContainerID(job, attempt): 1..76 characters of
	// [A-Za-z0-9] separated by single '.', '_' or '-'.
	ID string
	// Job and Attempt become the LabelJob and LabelAttempt labels.
	Job     string
	Attempt int
	// Image is the image reference, present locally (ImportArchive or EnsureImage).
	Image string
	// Workspace is an absolute host directory, bind-mounted read-write (nosuid, nodev)
	// at /workspace: the only host path the container sees. Create makes it and its
	// contents owned by the container's user when that user is not root.
	Workspace string
	// Env holds KEY=VALUE entries added to the image's environment. Values may be
	// secrets: they are never logged nor put in an error.
	Env []string
	// MemoryBytes limits the container's memory, tmpfs pages included
	// (DefaultMemoryBytes when 0).
	MemoryBytes int64
	// PidsLimit caps the number of processes and threads (DefaultPidsLimit when 0).
	PidsLimit int64
	// TmpBytes sizes the /tmp tmpfs (DefaultTmpBytes when 0); ShmBytes sizes /dev/shm
	// (DefaultShmBytes when 0). Both count against MemoryBytes.
	TmpBytes int64
	ShmBytes int64
	// Labels are extra container labels; the hypernode.* labels are set by Create and
	// cannot be overridden.
	Labels map[string]string
	// Egress is the container's network policy, EgressNone or EgressAllow; empty
	// means the Runtime's (Config.Egress).
	Egress string
	// ModelDir, when set, is an absolute host directory bound at ModelsDir (nosuid,
	// nodev): read-only when ModelReadOnly (a sealed model of the cache), else
	// read-write and given to the container's user like the workspace (the job
	// populating the cache).
	ModelDir      string
	ModelReadOnly bool
	// ResolvConf is a host file bound read-only at /etc/resolv.conf; with EgressAllow
	// Create writes one naming the NAT's DNS forwarder (resolv.conf beside the
	// workspace) when this is empty.
	ResolvConf string
	// GPUs are the GPUs this container alone may use, all of one vendor, as the
	// hardware package describes them (vendor, index, UUID, PCI bus ID). The
	// caller chooses them (fsm.GPUPool), so that containers running at the same
	// time get disjoint GPUs; GPUSpecOpts gives them to the container. None: no
	// GPU at all.
	GPUs []hardware.GPU
	// CPUs is the container's CFS quota in logical CPUs (0: none).
	CPUs float64
}

// ContainerID names the container of one attempt at a job: "hn-<job>-<attempt>".
func ContainerID(job string, attempt int) string {
	return "hn-" + job + "-" + strconv.Itoa(attempt)
}

// Validate checks s and returns an error wrapping ErrInvalid that names the first bad
// field. An Env problem is named by index and key, never by value.
func (s ContainerSpec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("container spec: "+format+": %w", append(args, ErrInvalid)...)
	}
	if err := identifiers.Validate(s.ID); err != nil {
		return fmt.Errorf("container spec: ID %q: %w: %w", s.ID, ErrInvalid, err)
	}
	if s.Job != "" && s.ID != ContainerID(s.Job, s.Attempt) {
		return bad("ID %q is not ContainerID(%q, %d)", s.ID, s.Job, s.Attempt)
	}
	if s.Image == "" {
		return bad("image is empty")
	}
	if _, err := normalizeRef(s.Image); err != nil {
		return fmt.Errorf("container spec: %w", err)
	}
	if s.Workspace == "" || !filepath.IsAbs(s.Workspace) {
		return bad("workspace %q is not an absolute path", s.Workspace)
	}
	if filepath.Clean(s.Workspace) == "/" {
		return bad("workspace must not be /")
	}
	if s.ModelDir != "" && (!filepath.IsAbs(s.ModelDir) || filepath.Clean(s.ModelDir) == "/") {
		return bad("model directory %q is not an absolute path below /", s.ModelDir)
	}
	for i, kv := range s.Env {
		key, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return bad("env[%d] has no '='", i)
		case !validEnvKey(key):
			return bad("env[%d] key %q is not [A-Za-z_][A-Za-z0-9_]*", i, key)
		}
	}
	for name, v := range map[string]int64{"memory": s.MemoryBytes, "pids limit": s.PidsLimit,
		"tmp size": s.TmpBytes, "shm size": s.ShmBytes} {
		if v < 0 {
			return bad("%s %d is negative", name, v)
		}
	}
	if s.Egress != "" && s.Egress != EgressNone && s.Egress != EgressAllow {
		return bad("egress %q is not %s or %s", s.Egress, EgressNone, EgressAllow)
	}
	if err := validateGPUs(s.GPUs); err != nil {
		return bad("%s", err.Error())
	}
	if s.CPUs < 0 {
		return bad("cpus %g is negative", s.CPUs)
	}
	if s.MemoryBytes > 0 && s.MemoryBytes < 4<<20 {
		return bad("memory %d bytes is below the 4 MiB a container needs to start", s.MemoryBytes)
	}
	return nil
}

func validEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// SpecOpts returns the hardening applied on top of the image's config (entrypoint,
// env, working dir, user):
//
//   - no new privileges; every capability set (bounding, effective, permitted,
//     inheritable, ambient) empty; containerd's default seccomp profile;
//   - read-only root filesystem; the only host path is s.Workspace, bound at /workspace
//     rw,nosuid,nodev; /tmp is a tmpfs (nosuid,nodev, s.TmpBytes); /dev/shm is sized
//     s.ShmBytes; containerd's default masked and read-only paths (/proc/kcore,
//     /proc/sys, …) are kept;
//   - memory limit s.MemoryBytes and pids limit s.PidsLimit (cgroup v1 and v2), and a
//     CFS quota of s.CPUs logical CPUs when set (period 100 ms);
//   - its own network namespace with no interface but lo (no egress; with EgressAllow
//     RunOp connects it to the public internet only, see EgressAllow), and its own pid,
//     ipc, uts ("hypernode") and mount namespaces;
//   - s.Env added to the image's environment.
//
// The process runs as the image's user (root when the image sets none). Root here has
// no capabilities, so it can write only where file modes or ownership allow it; the
// workspace is owned by that user (Create chowns it when the user is not root).
// Zero limits take the Default* values. s is not validated here (see Validate).
func SpecOpts(s ContainerSpec) []oci.SpecOpts {
	memory := orDefault(s.MemoryBytes, DefaultMemoryBytes)
	pids := orDefault(s.PidsLimit, DefaultPidsLimit)
	tmp := orDefault(s.TmpBytes, DefaultTmpBytes)
	shm := orDefault(s.ShmBytes, DefaultShmBytes)
	return []oci.SpecOpts{
		oci.WithNoNewPrivileges,
		withNoCapabilities,
		seccomp.WithDefaultProfile(),
		oci.WithRootFSReadonly(),
		oci.WithMounts([]specs.Mount{
			{
				Destination: WorkspaceDir,
				Type:        "bind",
				Source:      filepath.Clean(s.Workspace),
				Options:     []string{"bind", "rw", "nosuid", "nodev", "rprivate"},
			},
			{
				Destination: "/tmp",
				Type:        "tmpfs",
				Source:      "tmpfs",
				Options:     []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(tmp, 10)},
			},
		}),
		withResolvConf(s.ResolvConf),
		withModels(s.ModelDir, s.ModelReadOnly),
		oci.WithDevShmSize((shm + 1023) / 1024),
		oci.WithMemoryLimit(uint64(memory)),
		oci.WithPidsLimit(pids),
		withCPUs(s.CPUs),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.UTSNamespace}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.MountNamespace}),
		oci.WithHostname(Hostname),
		oci.WithEnv(s.Env),
	}
}

// withCPUs sets a CFS quota of cpus logical CPUs (period 100 ms); 0 sets none.
func withCPUs(cpus float64) oci.SpecOpts {
	if cpus <= 0 {
		return func(context.Context, oci.Client, *containers.Container, *oci.Spec) error { return nil }
	}
	const period = 100_000 // µs
	quota := int64(cpus * period)
	return oci.WithCPUCFS(max(quota, 1000), period)
}

// withModels binds dir at ModelsDir, read-only when ro; "" adds nothing.
func withModels(dir string, ro bool) oci.SpecOpts {
	if dir == "" {
		return func(context.Context, oci.Client, *containers.Container, *oci.Spec) error { return nil }
	}
	mode := "rw"
	if ro {
		mode = "ro"
	}
	return oci.WithMounts([]specs.Mount{{Destination: ModelsDir, Type: "bind", Source: filepath.Clean(dir),
		Options: []string{"bind", mode, "nosuid", "nodev", "rprivate"}}})
}

// withResolvConf binds path read-only at /etc/resolv.conf; "" adds nothing.
func withResolvConf(path string) oci.SpecOpts {
	if path == "" {
		return func(context.Context, oci.Client, *containers.Container, *oci.Spec) error { return nil }
	}
	return oci.WithMounts([]specs.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: path,
		Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "rprivate"}}})
}

func orDefault(v, d int64) int64 {
	if v == 0 {
		return d
	}
	return v
}

// withNoCapabilities empties all five capability sets.
func withNoCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:    []string{},
		Effective:   []string{},
		Permitted:   []string{},
		Inheritable: []string{},
		Ambient:     []string{},
	}
	return nil
}

// Create creates the container s describes, with its snapshot (key s.ID) and the spec
// of SpecOpts, and no task: RunOp starts operations. The image must be present
// (ImportArchive, EnsureImage); otherwise the error wraps ErrNotFound. The workspace
// must be an existing directory (ErrInvalid otherwise); it and its contents are given
// to the container's user (uid and gid of the image's User) without following
// symlinks and without leaving the workspace.
//
// Create is idempotent: when a container with s.ID already exists with the same image
// it returns nil after only the ownership step (a worker that crashed between its
// intent and this call just calls it again); with another image the error wraps
// ErrExists.
func (r *Runtime) Create(ctx context.Context, s ContainerSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Egress == "" {
		s.Egress = r.egress
	}
	if err := CheckEgress(s.Egress); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	gpuOpts, err := GPUSpecOpts(s, r.gpu)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	ctx = r.ctx(ctx)
	img, err := r.image(ctx, s.Image)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	ws, err := filepath.EvalSymlinks(s.Workspace)
	if err != nil {
		return fmt.Errorf("create %s: workspace: %w: %w", s.ID, ErrInvalid, err)
	}
	if fi, err := os.Stat(ws); err != nil || !fi.IsDir() {
		return fmt.Errorf("create %s: workspace %s is not a directory: %w", s.ID, ws, ErrInvalid)
	}
	s.Workspace = ws
	if s.Egress == EgressAllow && s.ResolvConf == "" {
		s.ResolvConf = filepath.Join(filepath.Dir(ws), "resolv.conf")
		if err := os.WriteFile(s.ResolvConf, []byte("nameserver "+egressDNS+"\n"), 0o644); err != nil {
			return fmt.Errorf("create %s: resolv.conf: %w", s.ID, err)
		}
	}

	user, err := r.createOrLoad(ctx, s, img, gpuOpts)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	uid, gid := int(user.UID), int(user.GID)
	if err := chownTree(ws, uid, gid); err != nil {
		return fmt.Errorf("create %s: give the workspace to %d:%d: %w", s.ID, uid, gid, err)
	}
	if s.ModelDir != "" && !s.ModelReadOnly {
		if err := chownTree(s.ModelDir, uid, gid); err != nil {
			return fmt.Errorf("create %s: give the model directory to %d:%d: %w", s.ID, uid, gid, err)
		}
	}
	return nil
}

// createOrLoad creates the container s describes, or loads it when it already
// exists with s's image, and returns the user its processes run as. The common case
// (a new container of an unpacked image) costs the create alone; an image not yet
// unpacked for the snapshotter is unpacked, and a snapshot left without its
// container by a crash inside an earlier create is removed, each once, when the
// create fails for that reason.
func (r *Runtime) createOrLoad(ctx context.Context, s ContainerSpec, img client.Image, gpuOpts []oci.SpecOpts) (specs.User, error) {
	var user specs.User
	unpacked, cleared := false, false
	for {
		err := r.newContainer(ctx, s, img, gpuOpts, &user)
		switch {
		case err == nil:
			return user, nil
		case errdefs.IsAlreadyExists(err):
			c, lerr := r.existing(ctx, s.ID, img.Name())
			if lerr == nil {
				spec, err := c.Spec(ctx)
				if err != nil {
					return user, fmt.Errorf("read spec: %w", err)
				}
				return spec.Process.User, nil
			}
			if !errdefs.IsNotFound(lerr) || cleared {
				return user, lerr
			}
			// A snapshot without its container is what a crash inside
			// NewContainer leaves behind (its lease outlives the process).
			cleared = true
			sn := r.client.SnapshotService(r.snapshotter)
			if err := sn.Remove(ctx, s.ID); err != nil && !errdefs.IsNotFound(err) {
				return user, fmt.Errorf("remove stale snapshot: %w", err)
			}
		case errdefs.IsNotFound(err) && !unpacked:
			// The image's layers are not unpacked for this snapshotter (yet,
			// or no more).
			unpacked = true
			r.unpacked.Delete(img.Target().Digest)
			if err := r.unpack(ctx, img); err != nil {
				return user, err
			}
		default:
			return user, err
		}
	}
}

// newContainer creates the container with its snapshot (key s.ID) and spec, and
// stores the spec's process user in user.
func (r *Runtime) newContainer(ctx context.Context, s ContainerSpec, img client.Image, gpuOpts []oci.SpecOpts, user *specs.User) error {
	labels := make(map[string]string, len(s.Labels)+3)
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[LabelJob] = s.Job
	labels[LabelAttempt] = strconv.Itoa(s.Attempt)
	labels[LabelEgress] = s.Egress

	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img)}, SpecOpts(s)...)
	specOpts = append(specOpts, gpuOpts...) // last: CDI edits and the GPU env win
	specOpts = append(specOpts, func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		if sp.Process != nil {
			*user = sp.Process.User
		}
		return nil
	})
	_, err := r.client.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithSnapshotter(r.snapshotter),
		client.WithNewSnapshot(s.ID, img),
		client.WithRuntime(r.runtime, nil),
		client.WithContainerLabels(labels),
		client.WithNewSpec(specOpts...),
	)
	return err
}

// existing loads container id when it exists with image; with another image the error
// wraps ErrExists, and a missing container is containerd's not-found error.
func (r *Runtime) existing(ctx context.Context, id, image string) (client.Container, error) {
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Image != image {
		return nil, fmt.Errorf("has image %s, want %s: %w", info.Image, image, ErrExists)
	}
	return c, nil
}

// chownTree makes dir and everything under it owned by uid:gid. It works inside an
// os.Root: no symlink, even one a running container swaps in, leads it out of dir.
// Files already owned so are left alone.
func chownTree(dir string, uid, gid int) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
			return nil
		}
		return root.Lchown(path, uid, gid)
	})
}
