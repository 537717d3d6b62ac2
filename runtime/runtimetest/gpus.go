package runtimetest

import (
	"os"
	"path/filepath"
	"strconv"
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

// GPUDeviceTree makes a directory holding the character device nodes a host
// with gpus has (nvidia<N>, nvidiactl, nvidia-uvm; kfd, dri/renderD<128+N>),
// for runtime.Config.DeviceRoot. It skips the test when mknod is refused
// (not root).
func GPUDeviceTree(t testing.TB, gpus []hardware.GPU) string {
	t.Helper()
	root := t.TempDir()
	mk := func(rel string, major, minor uint32) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); err == nil {
			return
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
			t.Skipf("mknod %s: %v (device nodes need root)", p, err)
		}
	}
	for _, g := range gpus {
		switch g.Vendor {
		case hardware.VendorNVIDIA:
			mk("nvidia"+strconv.Itoa(g.Index), MajorNVIDIA, uint32(g.Index))
			mk("nvidiactl", MajorNVIDIA, 255)
			mk("nvidia-uvm", MajorUVM, 0)
		case hardware.VendorAMD:
			mk("kfd", MajorKFD, 0)
			mk(filepath.Join("dri", "renderD"+strconv.Itoa(128+g.Index)), MajorDRM, uint32(128+g.Index))
		}
	}
	return root
}
