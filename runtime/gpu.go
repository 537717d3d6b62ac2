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

	"github.com/hypernode-sol/worker/hardware"
)

// NvidiaCDIKind is the CDI kind of NVIDIA GPUs as nvidia-ctk writes it: devices are
// "nvidia.com/gpu=0", "nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=all". A GPU is
// named by its UUID when the spec has that name, else by its index.
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
// NVIDIA hook, a GPU the CDI spec does not know, no /dev/kfd or render node).
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

// Host paths GPUSpecOpts reads under GPUHost.Root: sysfs directories listing a
// PCI device's or a DRM card's DRM nodes (renderD<N>).
const (
	sysPCIDevices = "/sys/bus/pci/devices"
	sysDRM        = "/sys/class/drm"
)

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

// gpuUUIDRE is what a GPU UUID may look like ("GPU-…", "MIG-…" for NVIDIA).
var gpuUUIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// validateGPUs checks the GPUs of a ContainerSpec: NVIDIA or AMD, all of one vendor,
// a valid index and UUID, none twice.
func validateGPUs(gpus []hardware.GPU) error {
	for i, g := range gpus {
		if g.Vendor != hardware.VendorNVIDIA && g.Vendor != hardware.VendorAMD {
			return fmt.Errorf("GPUs[%d]: vendor %q is not %q or %q", i, g.Vendor, hardware.VendorNVIDIA, hardware.VendorAMD)
		}
		if g.Vendor != gpus[0].Vendor {
			return fmt.Errorf("GPUs[%d]: vendor %s differs from GPUs[0]'s %s: a container's GPUs are of one vendor", i, g.Vendor, gpus[0].Vendor)
		}
		if g.Index < 0 || g.Index > 1<<16 {
			return fmt.Errorf("GPUs[%d]: index %d out of range", i, g.Index)
		}
		if g.UUID != "" && (!gpuUUIDRE.MatchString(g.UUID) || g.UUID == "all") {
			return fmt.Errorf("GPUs[%d]: UUID %q is not a GPU UUID", i, g.UUID)
		}
		for j, o := range gpus[:i] {
			if o.Index == g.Index || (g.UUID != "" && o.UUID == g.UUID) {
				return fmt.Errorf("GPUs[%d] (%s %d) is GPUs[%d] again", i, g.Vendor, g.Index, j)
			}
		}
	}
	return nil
}

// GPUSpecOpts returns the spec options that give s.GPUs to the container, to be
// applied after SpecOpts(s):
//
//   - NVIDIA with a CDI spec (CDISpecDirs) naming the devices: the CDI edits of
//     "nvidia.com/gpu=<UUID>" for each GPU, or "nvidia.com/gpu=<index>" when the spec
//     has no device of that UUID (device nodes with their cgroup rules, the driver's
//     library mounts, nvidia-cdi-hook hooks, env), applied with the CDI library;
//   - NVIDIA without a CDI spec: the NVIDIA Container Toolkit's prestart hook
//     (nvidia-container-runtime-hook prestart) with NVIDIA_VISIBLE_DEVICES set to the
//     GPUs' UUIDs (indices where unknown) and NVIDIA_DRIVER_CAPABILITIES to
//     compute,utility;
//   - AMD: /dev/kfd and each GPU's render node (/dev/dri/renderD*, found through
//     /sys/bus/pci/devices/<PCI bus ID>/drm, else /sys/class/drm/card<index>/device/drm),
//     as devices with the host's type, numbers, mode and owner and cgroup rules, and
//     the host's video and render groups (GIDs from Root/etc/group) as supplementary
//     groups of the process.
//
// Without CDI or the hook NVIDIA GPUs are refused rather than given as bare
// /dev/nvidia* nodes: CUDA in the container needs the host driver's libraries, which
// only those two mount.
//
// Every container, with GPUs or not, gets NVIDIA_VISIBLE_DEVICES=void unless the hook
// is in use, so that no NVIDIA runtime configured on the host hands it GPUs the image
// or the job asked for. The error wraps ErrInvalid for GPUs that fail validateGPUs, and
// ErrNoGPU when the host cannot provide what s asks for, naming what is missing.
func GPUSpecOpts(s ContainerSpec, h GPUHost) ([]oci.SpecOpts, error) {
	void := oci.WithEnv([]string{EnvNvidiaVisibleDevices + "=void"})
	if err := validateGPUs(s.GPUs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(s.GPUs) == 0 {
		return []oci.SpecOpts{void}, nil
	}
	switch s.GPUs[0].Vendor {
	case hardware.VendorNVIDIA:
		cache, err := cdi.NewCache(cdi.WithSpecDirs(h.cdiDirs()...), cdi.WithAutoRefresh(false))
		if err != nil && cache == nil {
			return nil, fmt.Errorf("CDI specs in %s: %w: %w", strings.Join(h.cdiDirs(), ", "), ErrNoGPU, err)
		}
		if hasKind(cache, NvidiaCDIKind) {
			names := make([]string, len(s.GPUs))
			for i, g := range s.GPUs {
				names[i] = NvidiaCDIKind + "=" + strconv.Itoa(g.Index)
				if g.UUID != "" && cache.GetDevice(NvidiaCDIKind+"="+g.UUID) != nil {
					names[i] = NvidiaCDIKind + "=" + g.UUID
				}
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
		ids := make([]string, len(s.GPUs))
		for i, g := range s.GPUs {
			ids[i] = g.UUID
			if ids[i] == "" {
				ids[i] = strconv.Itoa(g.Index)
			}
		}
		return []oci.SpecOpts{withNvidiaHook(hook, ids)}, nil
	default: // AMD (validateGPUs)
		opts, err := h.amdOpts(s.GPUs)
		if err != nil {
			return nil, err
		}
		return append([]oci.SpecOpts{void}, opts...), nil
	}
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

// amdOpts gives the container /dev/kfd and the render nodes of the AMD GPUs gpus.
func (h GPUHost) amdOpts(gpus []hardware.GPU) ([]oci.SpecOpts, error) {
	nodes := []string{"/dev/kfd"}
	for _, g := range gpus {
		node, err := h.amdRenderNode(g)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, node)
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

// amdRenderNode returns the render node (/dev/dri/renderDN) of AMD GPU g: the one
// sysfs lists for its PCI bus ID (rocm-smi's GPU index need not be the DRM card
// index: a server's BMC display is often card0), else the one of DRM card g.Index.
func (h GPUHost) amdRenderNode(g hardware.GPU) (string, error) {
	var dirs []string
	if bus := sysfsBusID(g.PCIBusID); bus != "" {
		dirs = append(dirs, h.path(filepath.Join(sysPCIDevices, bus, "drm")))
	}
	dirs = append(dirs, h.path(filepath.Join(sysDRM, "card"+strconv.Itoa(g.Index), "device", "drm")))
	var errs []error
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "renderD") {
				return "/dev/dri/" + e.Name(), nil
			}
		}
		errs = append(errs, fmt.Errorf("no render node in %s", dir))
	}
	return "", fmt.Errorf("AMD GPU %d (%s): %w: %w", g.Index, g.PCIBusID, ErrNoGPU, errors.Join(errs...))
}

// sysfsBusID turns a PCI bus ID as the vendor tools write it ("00000000:81:00.0",
// "0000:83:00.0") into sysfs's form ("0000:81:00.0"); "" when it is not one.
func sysfsBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	m := pciBusRE.FindStringSubmatch(id)
	if m == nil {
		return ""
	}
	return m[1] + ":" + m[2]
}

// pciBusRE: a PCI domain of 4 to 8 hex digits (sysfs keeps the last 4), then
// bus:device.function.
var pciBusRE = regexp.MustCompile(`^(?:[0-9a-f]{0,4})([0-9a-f]{4}):([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$`)

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
func (h GPUHost) Passthrough(vendor hardware.Vendor) (string, error) {
	switch vendor {
	case hardware.VendorNVIDIA:
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
	case hardware.VendorAMD:
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
