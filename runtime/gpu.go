package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// GPUVendor says whose GPUs a container is given.
type GPUVendor string

// GPU vendors.
const (
	GPUNvidia GPUVendor = "nvidia"
	GPUAMD    GPUVendor = "amd"
)

// GPUAll in ContainerSpec.GPUs gives the container every GPU of its vendor.
const GPUAll = "all"

// NvidiaCDIKind is the CDI kind of NVIDIA GPUs as nvidia-ctk writes it: devices are
// "nvidia.com/gpu=0", "nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=all".
const NvidiaCDIKind = "nvidia.com/gpu"

// NvidiaHookName is the NVIDIA Container Toolkit's OCI prestart hook, used when no CDI
// spec describes the GPUs.
const NvidiaHookName = "nvidia-container-runtime-hook"

// Environment variables the GPU code sets last, over the image's and the job's values.
const (
	// EnvNvidiaVisibleDevices selects the GPUs the NVIDIA hook mounts; "void" (set in
	// every container not using the hook) makes any NVIDIA runtime leave the container
	// alone, whatever the image says (CUDA images set it to "all").
	EnvNvidiaVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	// EnvNvidiaDriverCapabilities says which driver libraries the hook mounts.
	EnvNvidiaDriverCapabilities = "NVIDIA_DRIVER_CAPABILITIES"
)

// ErrNoGPU: the container asks for GPUs this host cannot give it (no CDI spec and no
// NVIDIA hook, a device ID the CDI spec does not know, no /dev/kfd or render node).
var ErrNoGPU = errors.New("GPU unavailable")

// GPUHost says where the host's GPU plumbing is. The zero value is the real host.
type GPUHost struct {
	// Root is prefixed to every host path below (default "/"). Tests point it at a
	// device tree; a worker running in a container with the host's / mounted elsewhere
	// can too.
	Root string
	// CDISpecDirs are the directories searched for CDI specs, in rising priority
	// (default Root/etc/cdi, Root/var/run/cdi: where `nvidia-ctk cdi generate` writes).
	CDISpecDirs []string
	// NvidiaHook is the path of nvidia-container-runtime-hook; empty means looked up
	// in PATH, then Root/usr/bin. It is used only when no CDI spec names NVIDIA GPUs.
	NvidiaHook string
}

func (h GPUHost) path(p string) string {
	if h.Root == "" || h.Root == "/" {
		return p
	}
	return filepath.Join(h.Root, p)
}

func (h GPUHost) cdiDirs() []string {
	if len(h.CDISpecDirs) > 0 {
		return h.CDISpecDirs
	}
	return []string{h.path("/etc/cdi"), h.path("/var/run/cdi")}
}

// gpuIDRE is what a GPU device ID may look like: an index, a UUID ("GPU-…", "MIG-…")
// or GPUAll.
var gpuIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// validateGPUs checks the GPU fields of a ContainerSpec.
func validateGPUs(vendor GPUVendor, ids []string) error {
	if len(ids) == 0 {
		if vendor != "" {
			return fmt.Errorf("GPU vendor %q without GPUs", vendor)
		}
		return nil
	}
	if vendor != GPUNvidia && vendor != GPUAMD {
		return fmt.Errorf("GPU vendor %q is not %q or %q", vendor, GPUNvidia, GPUAMD)
	}
	for i, id := range ids {
		if !gpuIDRE.MatchString(id) {
			return fmt.Errorf("GPUs[%d] %q is not an index, a UUID or %q", i, id, GPUAll)
		}
		if id == GPUAll && len(ids) > 1 {
			return fmt.Errorf("GPUs[%d]: %q must be the only entry", i, GPUAll)
		}
		if slices.Contains(ids[:i], id) {
			return fmt.Errorf("GPUs[%d] %q appears twice", i, id)
		}
		if vendor == GPUAMD && id != GPUAll {
			if _, err := strconv.ParseUint(id, 10, 16); err != nil {
				return fmt.Errorf("GPUs[%d] %q: AMD GPUs are named by their card index", i, id)
			}
		}
	}
	return nil
}

// GPUSpecOpts returns the spec options that give s's GPUs (s.GPUVendor, s.GPUs) to
// the container, to be applied after SpecOpts(s):
//
//   - NVIDIA with a CDI spec (CDISpecDirs) naming the devices: the CDI edits of
//     "nvidia.com/gpu=<id>" for each ID (device nodes with their cgroup rules, the
//     driver's library mounts, nvidia-cdi-hook hooks, env), applied with the CDI
//     library;
//   - NVIDIA without a CDI spec: the NVIDIA Container Toolkit's prestart hook
//     (nvidia-container-runtime-hook prestart) with NVIDIA_VISIBLE_DEVICES set to the
//     IDs and NVIDIA_DRIVER_CAPABILITIES to compute,utility;
//   - AMD: /dev/kfd and each card's render node (/dev/dri/renderD*, found through
//     /sys/class/drm/card<index>/device/drm), as devices with cgroup rules, and the
//     host's video and render groups (GIDs from Root/etc/group) as supplementary
//     groups of the process.
//
// Every container, with GPUs or not, gets NVIDIA_VISIBLE_DEVICES=void unless the hook
// is in use, so that no NVIDIA runtime configured on the host hands it GPUs the image
// or the job asked for. The error wraps ErrNoGPU when the host cannot provide what s
// asks for, naming what is missing.
func GPUSpecOpts(s ContainerSpec, h GPUHost) ([]oci.SpecOpts, error) {
	void := oci.WithEnv([]string{EnvNvidiaVisibleDevices + "=void"})
	if err := validateGPUs(s.GPUVendor, s.GPUs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(s.GPUs) == 0 {
		return []oci.SpecOpts{void}, nil
	}
	switch s.GPUVendor {
	case GPUNvidia:
		cache, err := cdi.NewCache(cdi.WithSpecDirs(h.cdiDirs()...), cdi.WithAutoRefresh(false))
		if err != nil && cache == nil {
			return nil, fmt.Errorf("CDI specs in %s: %w: %w", strings.Join(h.cdiDirs(), ", "), ErrNoGPU, err)
		}
		if hasKind(cache, NvidiaCDIKind) {
			names := make([]string, len(s.GPUs))
			for i, id := range s.GPUs {
				names[i] = NvidiaCDIKind + "=" + id
				if cache.GetDevice(names[i]) == nil {
					return nil, fmt.Errorf("CDI device %s is not in the specs of %s (known: %s): %w",
						names[i], strings.Join(h.cdiDirs(), ", "), strings.Join(cache.ListDevices(), " "), ErrNoGPU)
				}
			}
			return []oci.SpecOpts{void, withCDIDevices(cache, names)}, nil
		}
		hook, err := h.nvidiaHook()
		if err != nil {
			return nil, err
		}
		return []oci.SpecOpts{withNvidiaHook(hook, s.GPUs)}, nil
	case GPUAMD:
		opts, err := h.amdOpts(s.GPUs)
		if err != nil {
			return nil, err
		}
		return append([]oci.SpecOpts{void}, opts...), nil
	}
	return nil, fmt.Errorf("GPU vendor %q: %w", s.GPUVendor, ErrInvalid)
}

func hasKind(c *cdi.Cache, kind string) bool {
	for _, d := range c.ListDevices() {
		if strings.HasPrefix(d, kind+"=") {
			return true
		}
	}
	return false
}

func withCDIDevices(cache *cdi.Cache, names []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if _, err := cache.InjectDevices(s, names...); err != nil {
			return fmt.Errorf("inject CDI devices %s: %w: %w", strings.Join(names, " "), ErrNoGPU, err)
		}
		return nil
	}
}

// nvidiaHook finds nvidia-container-runtime-hook.
func (h GPUHost) nvidiaHook() (string, error) {
	if h.NvidiaHook != "" {
		if err := executable(h.NvidiaHook); err != nil {
			return "", fmt.Errorf("NVIDIA hook: %w: %w", ErrNoGPU, err)
		}
		return h.NvidiaHook, nil
	}
	if h.Root == "" || h.Root == "/" {
		if p, err := exec.LookPath(NvidiaHookName); err == nil {
			return p, nil
		}
	}
	p := h.path("/usr/bin/" + NvidiaHookName)
	if err := executable(p); err != nil {
		return "", fmt.Errorf("no CDI spec for %s in %s and no %s (install the NVIDIA Container Toolkit and run `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`): %w",
			NvidiaCDIKind, strings.Join(h.cdiDirs(), ", "), NvidiaHookName, ErrNoGPU)
	}
	return p, nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// withNvidiaHook adds the NVIDIA Container Toolkit's prestart hook, which mounts the
// driver and the GPUs named by NVIDIA_VISIBLE_DEVICES into the container and allows
// them in its device cgroup.
func withNvidiaHook(hook string, ids []string) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		if err := oci.WithEnv([]string{
			EnvNvidiaVisibleDevices + "=" + strings.Join(ids, ","),
			EnvNvidiaDriverCapabilities + "=compute,utility",
		})(ctx, c, ctr, s); err != nil {
			return err
		}
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.Prestart = append(s.Hooks.Prestart, specs.Hook{ //nolint:staticcheck // the toolkit's hook runs as prestart only
			Path: hook,
			Args: []string{NvidiaHookName, "prestart"},
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		})
		return nil
	}
}

// amdOpts gives the container /dev/kfd and the render nodes of the AMD cards ids.
func (h GPUHost) amdOpts(ids []string) ([]oci.SpecOpts, error) {
	nodes := []string{"/dev/kfd"}
	if len(ids) == 1 && ids[0] == GPUAll {
		all, err := filepath.Glob(h.path("/dev/dri/renderD*"))
		if err != nil || len(all) == 0 {
			return nil, fmt.Errorf("no render node in %s: %w", h.path("/dev/dri"), ErrNoGPU)
		}
		slices.Sort(all)
		for _, p := range all {
			nodes = append(nodes, "/dev/dri/"+filepath.Base(p))
		}
	} else {
		for _, id := range ids {
			node, err := h.amdRenderNode(id)
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, node)
		}
	}
	devs := make([]specs.LinuxDevice, 0, len(nodes))
	for _, n := range nodes {
		d, err := h.device(n)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	gids, err := h.groupIDs("video", "render")
	if err != nil {
		return nil, err
	}
	return []oci.SpecOpts{withDevices(devs), withAdditionalGIDs(gids)}, nil
}

// amdRenderNode returns the render node (/dev/dri/renderDN) of DRM card index id.
func (h GPUHost) amdRenderNode(id string) (string, error) {
	dir := h.path("/sys/class/drm/card" + id + "/device/drm")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("AMD GPU %s: %w: %w", id, ErrNoGPU, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "renderD") {
			return "/dev/dri/" + e.Name(), nil
		}
	}
	return "", fmt.Errorf("AMD GPU %s: no render node in %s: %w", id, dir, ErrNoGPU)
}

// device describes the host's character device at container path p (read at
// Root+p): type, major, minor, mode, owner.
func (h GPUHost) device(p string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(h.path(p), &st); err != nil {
		return specs.LinuxDevice{}, fmt.Errorf("GPU device %s: %w: %w", h.path(p), ErrNoGPU, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return specs.LinuxDevice{}, fmt.Errorf("GPU device %s is not a character device: %w", h.path(p), ErrNoGPU)
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path: p, Type: "c",
		Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev))), //nolint:unconvert // Rdev's width differs by arch
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

// withDevices adds devices to the container and allows them (rwm) in its device
// cgroup.
func withDevices(devs []specs.LinuxDevice) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		for _, d := range devs {
			s.Linux.Devices = append(s.Linux.Devices, d)
			major, minor := d.Major, d.Minor
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
				Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: "rwm",
			})
		}
		return nil
	}
}

func withAdditionalGIDs(gids []uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		for _, g := range gids {
			if !slices.Contains(s.Process.User.AdditionalGids, g) {
				s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, g)
			}
		}
		return nil
	}
}

// groupIDs returns the GIDs of the named groups in Root/etc/group, in the order
// given; a group the file lacks is skipped (older distributions have no "render").
func (h GPUHost) groupIDs(names ...string) ([]uint32, error) {
	f, err := os.Open(h.path("/etc/group"))
	if err != nil {
		return nil, fmt.Errorf("host groups: %w", err)
	}
	defer f.Close()
	found := map[string]uint32{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 || !slices.Contains(names, fields[0]) {
			continue
		}
		if gid, err := strconv.ParseUint(fields[2], 10, 32); err == nil {
			if _, dup := found[fields[0]]; !dup {
				found[fields[0]] = uint32(gid)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("host groups: %w", err)
	}
	var out []uint32
	for _, n := range names {
		if g, ok := found[n]; ok {
			out = append(out, g)
		}
	}
	return out, nil
}

// Passthrough says how this host would give vendor's GPUs to a container, without
// creating one: for NVIDIA "CDI: nvidia.com/gpu=0 nvidia.com/gpu=1 … (dirs)" or
// "nvidia-container-runtime-hook at PATH"; for AMD "/dev/kfd and N render nodes,
// groups video/render GIDs". The error wraps ErrNoGPU and says what to install.
func (h GPUHost) Passthrough(vendor GPUVendor) (string, error) {
	switch vendor {
	case GPUNvidia:
		cache, _ := cdi.NewCache(cdi.WithSpecDirs(h.cdiDirs()...), cdi.WithAutoRefresh(false))
		if cache != nil && hasKind(cache, NvidiaCDIKind) {
			var devs []string
			for _, d := range cache.ListDevices() {
				if strings.HasPrefix(d, NvidiaCDIKind+"=") {
					devs = append(devs, d)
				}
			}
			return "CDI: " + strings.Join(devs, " ") + " (" + strings.Join(h.cdiDirs(), ", ") + ")", nil
		}
		hook, err := h.nvidiaHook()
		if err != nil {
			return "", err
		}
		return NvidiaHookName + " at " + hook + " (no CDI spec)", nil
	case GPUAMD:
		if _, err := h.device("/dev/kfd"); err != nil {
			return "", err
		}
		nodes, _ := filepath.Glob(h.path("/dev/dri/renderD*"))
		gids, err := h.groupIDs("video", "render")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("/dev/kfd and %d render node(s), supplementary GIDs %v", len(nodes), gids), nil
	}
	return "", fmt.Errorf("GPU vendor %q: %w", vendor, ErrInvalid)
}
