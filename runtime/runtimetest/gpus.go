package runtimetest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hypernode-sol/worker/hardware"
)

// Device numbers GPUDeviceTree gives its nodes: NVIDIA's fixed major 195
// (nvidia<N> is minor N, nvidiactl 255), DRM's 226 (renderD<128+N>); kfd and
// nvidia-uvm have dynamic majors on real hosts, here 511 and 510.
const (
	MajorNVIDIA = 195
	MajorDRM    = 226
	MajorKFD    = 511
	MajorUVM    = 510
)

// GPU groups GPUDeviceTree writes to its etc/group.
const (
	GIDVideo  = 44
	GIDRender = 109
)

// GPUDeviceTree makes a directory standing in for the root of a host with
// gpus, for runtime.GPUHost.Root (GPU_HOST_ROOT):
//
//   - NVIDIA: dev/nvidia<N>, dev/nvidiactl, dev/nvidia-uvm, and
//     etc/cdi/nvidia.json, a CDI spec naming each GPU by index and by UUID
//     (as `nvidia-ctk cdi generate` does) with those nodes;
//   - AMD: dev/kfd, dev/dri/renderD<128+N>, and the sysfs links to it
//     (sys/bus/pci/devices/<PCI bus ID>/drm and sys/class/drm/card<N>/device/drm);
//   - etc/group with the video and render groups (GIDVideo, GIDRender).
//
// It skips the test when mknod is refused (not root).
func GPUDeviceTree(t testing.TB, gpus []hardware.GPU) string {
	t.Helper()
	root := t.TempDir()
	mkdir := func(rel string) {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(rel string, major, minor uint32) {
		p := filepath.Join(root, rel)
		mkdir(filepath.Dir(rel))
		if _, err := os.Stat(p); err == nil {
			return
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
			t.Skipf("mknod %s: %v (device nodes need root)", p, err)
		}
		if err := unix.Chmod(p, 0o666); err != nil { // mknod's mode went through the umask
			t.Fatal(err)
		}
	}
	type node struct {
		Path     string `json:"path"`
		HostPath string `json:"hostPath"`
		Type     string `json:"type"`
		Major    int64  `json:"major"`
		Minor    int64  `json:"minor"`
	}
	type edits struct {
		Env         []string `json:"env,omitempty"`
		DeviceNodes []node   `json:"deviceNodes,omitempty"`
	}
	type device struct {
		Name           string `json:"name"`
		ContainerEdits edits  `json:"containerEdits"`
	}
	nvNode := func(name string, major, minor uint32) node { // name under dev/
		mk(filepath.Join("dev", name), major, minor)
		return node{Path: "/dev/" + name, HostPath: filepath.Join(root, "dev", name), Type: "c", Major: int64(major), Minor: int64(minor)}
	}
	var cdiDevices []device
	var cdiCommon []node
	for _, g := range gpus {
		switch g.Vendor {
		case hardware.VendorNVIDIA:
			if cdiCommon == nil {
				cdiCommon = []node{nvNode("nvidiactl", MajorNVIDIA, 255), nvNode("nvidia-uvm", MajorUVM, 0)}
			}
			n := nvNode("nvidia"+strconv.Itoa(g.Index), MajorNVIDIA, uint32(g.Index))
			cdiDevices = append(cdiDevices, device{Name: strconv.Itoa(g.Index), ContainerEdits: edits{DeviceNodes: []node{n}}})
			if g.UUID != "" {
				cdiDevices = append(cdiDevices, device{Name: g.UUID, ContainerEdits: edits{DeviceNodes: []node{n}}})
			}
		case hardware.VendorAMD:
			render := "renderD" + strconv.Itoa(128+g.Index)
			mk("dev/kfd", MajorKFD, 0)
			mk(filepath.Join("dev", "dri", render), MajorDRM, uint32(128+g.Index))
			mkdir(filepath.Join("sys", "class", "drm", "card"+strconv.Itoa(g.Index), "device", "drm", render))
			if bus := strings.ToLower(g.PCIBusID); bus != "" {
				if d, rest, ok := strings.Cut(bus, ":"); ok && len(d) > 4 {
					bus = d[len(d)-4:] + ":" + rest
				}
				mkdir(filepath.Join("sys", "bus", "pci", "devices", bus, "drm", render))
			}
		}
	}
	if len(cdiDevices) > 0 {
		spec := map[string]any{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": cdiDevices,
			"containerEdits": edits{Env: []string{"NVIDIA_VISIBLE_DEVICES=void"}, DeviceNodes: cdiCommon}}
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		mkdir("etc/cdi")
		if err := os.WriteFile(filepath.Join(root, "etc", "cdi", "nvidia.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("etc")
	group := "root:x:0:\nvideo:x:" + strconv.Itoa(GIDVideo) + ":\nrender:x:" + strconv.Itoa(GIDRender) + ":\n"
	if err := os.WriteFile(filepath.Join(root, "etc", "group"), []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}
