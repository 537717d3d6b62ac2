package hardware

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func addCaptureSeeds(f *testing.F, pattern string, extra ...string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(gpuDir, pattern))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// checkParsed is what every parser promises for any input: no panic, an
// error wrapping ErrFormat or a bounded list of GPUs of one vendor.
func checkParsed(t *testing.T, gpus []GPU, err error, vendor Vendor) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("error not classified: %v", err)
		}
		if gpus != nil {
			t.Fatalf("GPUs returned with an error")
		}
		return
	}
	if len(gpus) > maxGPUs {
		t.Fatalf("%d GPUs", len(gpus))
	}
	for _, g := range gpus {
		if g.Vendor != vendor || g.Index < 0 {
			t.Fatalf("bad GPU %+v", g)
		}
		if u := g.UtilizationPct; u != nil && (*u < 0 || *u > 100 || *u != *u) {
			t.Fatalf("utilisation %v out of 0..100", *u)
		}
	}
	s := &Specs{GPUs: gpus}
	_ = s.Fits(8, GPUTypeAny)
}

func FuzzParseNvidiaSMIXML(f *testing.F) {
	addCaptureSeeds(f, "*.xml", `<nvidia_smi_log><gpu><fb_memory_usage><total>1 GiB</total></fb_memory_usage></gpu></nvidia_smi_log>`)
	f.Fuzz(func(t *testing.T, b []byte) {
		gpus, err := ParseNvidiaSMIXML(b)
		checkParsed(t, gpus, err, VendorNVIDIA)
	})
}

func FuzzParseNvidiaSMICSV(f *testing.F) {
	addCaptureSeeds(f, "*.csv", "name, memory.total [MiB], index\nA, 1 MiB, 3\n", "name,memory.total\n\"a,b\",\"2\"\n")
	f.Fuzz(func(t *testing.T, b []byte) {
		gpus, err := ParseNvidiaSMICSV(b)
		checkParsed(t, gpus, err, VendorNVIDIA)
	})
}

func FuzzParseROCmSMIJSON(f *testing.F) {
	addCaptureSeeds(f, "*.json", "WARN\n{\"card1\":{\"VRAM Total Memory (B)\":\"5\"}}", `{"system":{"Driver version":1}}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		gpus, err := ParseROCmSMIJSON(b)
		checkParsed(t, gpus, err, VendorAMD)
	})
}

func FuzzParseInventory(f *testing.F) {
	addCaptureSeeds(f, "*")
	f.Fuzz(func(t *testing.T, b []byte) {
		gpus, _, err := ParseInventory(b)
		if err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("error not classified: %v", err)
		}
		if len(gpus) > maxGPUs {
			t.Fatalf("%d GPUs", len(gpus))
		}
	})
}

func FuzzParseCPUTimes(f *testing.F) {
	f.Add([]byte("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n"))
	f.Add([]byte("cpu 1 2 3"))
	f.Add([]byte("cpu 18446744073709551615 18446744073709551615 0 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseCPUTimes(b)
		if err == nil && v[0] > v[1] {
			t.Fatalf("busy %d > total %d", v[0], v[1])
		}
	})
}

func FuzzParseModalias(f *testing.F) {
	f.Add("pci:v000010DEd00002231sv000010DEsd0000147Ebc03sc00i00")
	f.Add("pci:v")
	f.Fuzz(func(t *testing.T, m string) {
		v, d, c, ok := parseModalias(m)
		if ok && (len(v) != 4 || len(d) != 4 || len(c) != 2) {
			t.Fatalf("%q -> %q %q %q", m, v, d, c)
		}
	})
}
