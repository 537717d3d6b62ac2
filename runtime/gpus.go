package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hypernode-sol/worker/hardware"
)

// GPU devices of a container. A container is given exactly the GPUs of its
// ContainerSpec.GPUs, and no other GPU's device node:
//
//   - NVIDIA: /dev/nvidia<index> of each GPU, the shared control nodes
//     /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-uvm-tools and
//     /dev/nvidia-modeset that exist on the host, and NVIDIA_VISIBLE_DEVICES
//     set to the GPUs' UUIDs (their indices when a UUID is unknown), which
//     the NVIDIA container runtime hook and CUDA read (a container without
//     an NVIDIA GPU gets NVIDIA_VISIBLE_DEVICES=void: the hook gives it
//     none, whatever the job's env asks);
//   - AMD: /dev/kfd when the host has it, and the render node of each GPU,
//     /dev/dri/renderD<N>, found from the GPU's PCI address in sysfs, else
//     renderD<128+index> (the DRM numbering of card<index>).
//
// Device nodes are looked up under Config.DeviceRoot (default /dev) for
// their type and major:minor numbers; the container sees them under /dev
// with mode 0666, and the device cgroup allows exactly them. A GPU whose
// node is missing fails Create with ErrInvalid.

// DefaultDeviceRoot is where the host's device nodes are.
const DefaultDeviceRoot = "/dev"

// sysfsPCI is where a GPU's DRM nodes are listed by PCI address.
var sysfsPCI = "/sys/bus/pci/devices"

// DeviceSpecOpts returns the spec options that give a container s.GPUs
// (device nodes looked up under deviceRoot, see above) and its CPU quota
// s.CPUs. Create applies them after SpecOpts. A GPU whose device node is
// missing or not a character device, or of a vendor without known nodes,
// gives an error wrapping ErrInvalid that names it.
func DeviceSpecOpts(deviceRoot string, s ContainerSpec) ([]oci.SpecOpts, error) {
	devs, env, err := gpuDevices(deviceRoot, s.GPUs)
	if err != nil {
		return nil, fmt.Errorf("container spec: %w", err)
	}
	return []oci.SpecOpts{withGPUDevices(devs, env), withCPUs(s.CPUs)}, nil
}

// gpuDevice is one device node to put in a container.
type gpuDevice struct {
	path         string // inside the container, and relative to the device root: "dri/renderD128"
	major, minor int64
}

// gpuDevices resolves the device nodes and environment for gpus under root.
func gpuDevices(root string, gpus []hardware.GPU) ([]gpuDevice, []string, error) {
	var devs []gpuDevice
	seen := map[string]bool{}
	add := func(rel string, required bool, what string) error {
		if seen[rel] {
			return nil
		}
		d, err := statDevice(root, rel)
		if err != nil {
			if !required {
				return nil
			}
			return fmt.Errorf("%s: %w: %w", what, ErrInvalid, err)
		}
		seen[rel] = true
		devs = append(devs, d)
		return nil
	}
	var nvidia []string
	for _, g := range gpus {
		what := fmt.Sprintf("GPU %s %d (%s)", g.Vendor, g.Index, g.Name)
		switch g.Vendor {
		case hardware.VendorNVIDIA:
			if err := add("nvidia"+strconv.Itoa(g.Index), true, what); err != nil {
				return nil, nil, err
			}
			id := g.UUID
			if id == "" {
				id = strconv.Itoa(g.Index)
			}
			nvidia = append(nvidia, id)
		case hardware.VendorAMD:
			if err := add("kfd", false, what); err != nil {
				return nil, nil, err
			}
			if err := add(filepath.Join("dri", amdRenderNode(g)), true, what); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("%s: %w: no device nodes known for vendor %q", what, ErrInvalid, g.Vendor)
		}
	}
	if len(nvidia) == 0 {
		// No NVIDIA GPU for this container: "void" makes the NVIDIA runtime
		// hook, where installed, give it none, whatever the job's env says.
		return devs, []string{"NVIDIA_VISIBLE_DEVICES=void"}, nil
	}
	for _, ctl := range []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"} {
		_ = add(ctl, false, ctl)
	}
	return devs, []string{"NVIDIA_VISIBLE_DEVICES=" + strings.Join(nvidia, ",")}, nil
}

// amdRenderNode is the render node's name under /dev/dri of an AMD GPU.
func amdRenderNode(g hardware.GPU) string {
	if g.PCIBusID != "" {
		entries, err := os.ReadDir(filepath.Join(sysfsPCI, strings.ToLower(g.PCIBusID), "drm"))
		if err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "renderD") {
					return e.Name()
				}
			}
		}
	}
	return "renderD" + strconv.Itoa(128+g.Index)
}

// statDevice reads the character device root/rel.
func statDevice(root, rel string) (gpuDevice, error) {
	path := filepath.Join(root, rel)
	fi, err := os.Stat(path)
	if err != nil {
		return gpuDevice{}, fmt.Errorf("device node %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeCharDevice == 0 {
		return gpuDevice{}, fmt.Errorf("%s is not a character device", path)
	}
	return gpuDevice{path: filepath.ToSlash(rel), major: int64(unix.Major(uint64(st.Rdev))), minor: int64(unix.Minor(uint64(st.Rdev)))}, nil
}

// withGPUDevices adds devs and env to the spec and allows exactly devs in
// the device cgroup.
func withGPUDevices(devs []gpuDevice, env []string) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		mode := os.FileMode(0o666)
		var zero uint32
		for _, d := range devs {
			major, minor := d.major, d.minor
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/" + d.path, Type: "c",
				Major: major, Minor: minor, FileMode: &mode, UID: &zero, GID: &zero})
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c",
				Major: &major, Minor: &minor, Access: "rwm"})
		}
		return oci.WithEnv(env)(ctx, c, ctr, s)
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
