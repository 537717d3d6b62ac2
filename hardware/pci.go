package hardware

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jaypipes/ghw"
	"github.com/jaypipes/pcidb"
)

// PCIDevice is a display controller (PCI base class 0x03) as the kernel lists
// it under /sys/bus/pci/devices: found whether or not its vendor tool is
// installed.
type PCIDevice struct {
	Address  string `json:"address"`           // "0000:81:00.0"
	VendorID string `json:"vendor_id"`         // "10de" (NVIDIA), "1002" (AMD)
	DeviceID string `json:"device_id"`         // "2231"
	Vendor   string `json:"vendor,omitempty"`  // from the local pci.ids, when there is one
	Product  string `json:"product,omitempty"` // from the local pci.ids, when there is one
	Driver   string `json:"driver,omitempty"`  // bound kernel driver: "nvidia", "amdgpu", "nouveau"
}

// PCI vendor IDs of GPU makers.
const (
	PCIVendorNVIDIA = "10de"
	PCIVendorAMD    = "1002"
)

// pciDB opens the local pci.ids under root with network fetching forced off,
// whatever PCIDB_ENABLE_NETWORK_FETCH says: the worker never downloads the
// database. Without a local file it returns an empty database, so devices
// keep their numeric IDs and ghw does not look for one itself.
func pciDB(root string) *pcidb.PCIDB {
	off := false
	opts := []*pcidb.WithOption{{EnableNetworkFetch: &off}}
	if root != "/" {
		opts = append(opts, pcidb.WithChroot(root))
	}
	db, err := pcidb.New(opts...)
	if err != nil {
		return &pcidb.PCIDB{Classes: map[string]*pcidb.Class{}, Vendors: map[string]*pcidb.Vendor{}, Products: map[string]*pcidb.Product{}}
	}
	return db
}

// detectPCIGPUs lists the display controllers ghw finds under root's sysfs.
func detectPCIGPUs(root string) ([]PCIDevice, error) {
	opts := append(ghwOptions(root), ghw.WithPCIDB(pciDB(root)))
	info, err := ghw.PCI(opts...)
	if err != nil {
		return nil, err
	}
	if info == nil {
		return nil, errors.New("ghw returned no PCI information")
	}
	var out []PCIDevice
	for _, d := range info.Devices {
		if d == nil {
			continue
		}
		vendor, device, class, ok := parseModalias(d.Modalias)
		if !ok || class != "03" {
			continue
		}
		p := PCIDevice{Address: d.Address, VendorID: vendor, DeviceID: device, Driver: d.Driver}
		if d.Vendor != nil && d.Vendor.Name != "unknown" {
			p.Vendor = d.Vendor.Name
		}
		if d.Product != nil && d.Product.Name != "unknown" {
			p.Product = d.Product.Name
		}
		out = append(out, p)
	}
	return out, nil
}

// parseModalias reads vendor, device and base class from a PCI modalias
// ("pci:v000010DEd00002231sv000010DEsd0000147Ebc03sc00i00").
func parseModalias(m string) (vendor, device, class string, ok bool) {
	if len(m) < 53 || !strings.HasPrefix(m, "pci:v") {
		return "", "", "", false
	}
	vendor, device, class = m[9:13], m[18:22], m[44:46]
	if !isHex(vendor) || !isHex(device) || !isHex(class) {
		return "", "", "", false
	}
	return strings.ToLower(vendor), strings.ToLower(device), strings.ToLower(class), true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// pciGPUWarnings explains PCI display controllers of a vendor whose tool
// reported no GPUs: the card is there but cannot be used.
func pciGPUWarnings(pci []PCIDevice, gpus []GPU) []string {
	count := map[Vendor]int{}
	for _, g := range gpus {
		count[g.Vendor]++
	}
	var warns []string
	for _, v := range []struct {
		id, tool string
		vendor   Vendor
	}{{PCIVendorNVIDIA, "nvidia-smi", VendorNVIDIA}, {PCIVendorAMD, "rocm-smi", VendorAMD}} {
		n := 0
		for _, p := range pci {
			if p.VendorID == v.id {
				n++
			}
		}
		if n > count[v.vendor] {
			warns = append(warns, fmt.Sprintf("GPU detection: the PCI bus lists %d %s display device(s) but %s reports %d: install or repair the driver and %s", n, strings.ToUpper(string(v.vendor)), v.tool, count[v.vendor], v.tool))
		}
	}
	return warns
}
