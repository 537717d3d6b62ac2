package hardware

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const gpuDir = "../testdata/gpu"

const MiB = 1 << 20

// want is the golden expectation for one GPU of a capture.
type want struct {
	index  int
	name   string
	vramMi uint64 // VRAM in MiB; for AMD captures, vramB is used
	vramB  uint64
	mig    bool
	bus    string
	uuid   string
	driver string
}

var goldenCaptures = map[string]struct {
	format InventoryFormat
	gpus   []want
	warns  []string
	err    string // non-empty: the parse must fail with this text
}{
	"nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		// minor_number is 1 then 0: Index follows document (PCI) order, not minor_number.
		{0, "NVIDIA RTX A5000", 24564, 0, false, "00000000:81:00.0", "GPU-00000000-0000-0000-0000-000000000001", "590.44.01"},
		{1, "NVIDIA RTX A5000", 24564, 0, false, "00000000:C1:00.0", "GPU-00000000-0000-0000-0000-000000000002", "590.44.01"},
	}},
	"nvidia-smi-q-x_a100-sxm4-80gb_mig-enabled_535.54.03_v12.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		// VRAM is the GPU's 81920 MiB, not one MIG device's 19968 MiB.
		{0, "NVIDIA A100-SXM4-80GB", 81920, 0, true, "00000000:01:00.0", "GPU-00000000-0000-0000-0000-000000000001", "535.54.03"},
	}, warns: []string{"nvidia-smi: attached_gpus says 4 but 1 <gpu> elements are listed"}},
	"nvidia-smi-q-x_gtx1070ti_v10_trimmed.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		// Trimmed: no driver_version, no pci_bus_id: the id attribute stands in.
		{0, "GeForce GTX 1070 Ti", 4096, 0, false, "00000000:01:00.0", "GPU-00000000-0000-0000-0000-000000000001", ""},
	}},
	"nvidia-smi-q-x_gtx1660ti-as-graphics-device_418.43_no-doctype.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		{0, "Graphics Device", 5912, 0, false, "00000000:43:00.0", "GPU-00000000-0000-0000-0000-000000000001", "418.43"},
	}},
	"nvidia-smi-q-x_rtx3080_linux_595.58.03_v13.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		{0, "NVIDIA GeForce RTX 3080", 10240, 0, false, "00000000:0C:00.0", "GPU-00000000-0000-0000-0000-000000000001", "595.58.03"},
	}},
	"nvidia-smi-q-x_rtx3080_wsl2-wddm_536.40_v12.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		{0, "NVIDIA GeForce RTX 3080", 10240, 0, false, "00000000:04:00.0", "GPU-00000000-0000-0000-0000-000000000001", "536.40"},
	}},
	"nvidia-smi-q-x_tesla-t4_515.105.01_v11.xml": {format: FormatNvidiaSMIXML, gpus: []want{
		{0, "Tesla T4", 15360, 0, false, "00000000:00:1E.0", "GPU-00000000-0000-0000-0000-000000000001", "515.105.01"},
	}},
	"nvidia-smi-query-gpu-csv_h100-80gb-hbm3_590.48.01.csv": {format: FormatNvidiaSMICSV, gpus: []want{
		{0, "NVIDIA H100 80GB HBM3", 81559, 0, false, "00000000:00:09.0", "GPU-00000000-0000-0000-0000-000000000000", "590.48.01"},
	}},
	"nvidia-smi-query-gpu-csv_h200-mig-enabled_590.48.01.csv": {format: FormatNvidiaSMICSV, gpus: []want{
		{0, "NVIDIA H200", 143771, 0, true, "00000000:83:00.0", "GPU-00000000-0000-0000-0000-000000000000", "590.48.01"},
	}},
	"nvidia-smi-query-gpu-csv_rtx2080super_windows_591.86.csv": {format: FormatNvidiaSMICSV, gpus: []want{
		{0, "NVIDIA GeForce RTX 2080 SUPER", 8192, 0, false, "00000000:0C:00.0", "GPU-00000000-0000-0000-0000-000000000000", "591.86"},
	}},
	"nvidia-smi-query-gpu-csv_rtx4080super_linux_595.71.05.csv": {format: FormatNvidiaSMICSV, gpus: []want{
		{0, "NVIDIA GeForce RTX 4080 SUPER", 16376, 0, false, "00000000:01:00.0", "GPU-00000000-0000-0000-0000-000000000000", "595.71.05"},
	}},
	// A process list, not a GPU list: rejected with a clear reason.
	"nvidia-smi-query-compute-apps-csv_rtx2080super_windows_591.86.csv": {format: FormatNvidiaSMICSV,
		err: `unrecognised GPU tool output: not nvidia-smi --query-gpu CSV with a header: no "name" column (query at least name,memory.total)`},
	"rocm-smi-json_4x-mi100_rocm6.0.2.json": {format: FormatROCmSMIJSON, gpus: []want{
		{0, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:83:00.0", "0x0000000000000001", "6.3.6"},
		{1, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:A3:00.0", "0x000000000000002", "6.3.6"},
		{2, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:C3:00.0", "0x0000000000000003", "6.3.6"},
		{3, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:E3:00.0", "0x0000000000000004", "6.3.6"},
	}},
	"rocm-smi-json_6x-mi100_rocm5.7.1.json": {format: FormatROCmSMIJSON, gpus: []want{
		{0, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:1E:00.0", "", "6.2.4"},
		{1, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:22:00.0", "", "6.2.4"},
		{2, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:3F:00.0", "", "6.2.4"},
		{3, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:43:00.0", "", "6.2.4"},
		{4, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:46:00.0", "", "6.2.4"},
		{5, "Arcturus GL-XL [Instinct MI100]", 0, 34342961152, false, "0000:49:00.0", "", "6.2.4"},
	}},
	"rocm-smi-json_rx6700xt_rocm6.1.2.json": {format: FormatROCmSMIJSON, gpus: []want{
		{0, "Navi 22 [Radeon RX 6700/6700 XT / 6800M]", 0, 12868124672, false, "0000:07:00.0", "", "6.3.6"},
	}},
	"rocm-smi-json_rx7800xt_rocm6.2.4_narrow-query.json": {format: FormatROCmSMIJSON, gpus: []want{
		// The narrow query has no --showbus and no system section.
		{0, "Navi 32 [Radeon RX 7700 XT / 7800 XT]", 0, 17163091968, false, "", "0x0000000000000001", ""},
	}},
}

func TestParseEveryCapture(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(gpuDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var names, pinned []string
	for _, f := range files {
		switch filepath.Ext(f) {
		case ".md", ".txt":
			continue
		}
		names = append(names, filepath.Base(f))
	}
	for n := range goldenCaptures {
		pinned = append(pinned, n)
	}
	slices.Sort(names)
	slices.Sort(pinned)
	if !slices.Equal(names, pinned) {
		t.Fatalf("captures in %s and the golden table differ:\n files %q\ntable %q", gpuDir, names, pinned)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			g := goldenCaptures[name]
			b, err := os.ReadFile(filepath.Join(gpuDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if f := DetectInventoryFormat(b); f != g.format {
				t.Errorf("DetectInventoryFormat = %q; want %q", f, g.format)
			}
			gpus, warns, err := ParseInventory(b)
			// The format's own exported parser agrees with ParseInventory.
			var direct []GPU
			var derr error
			switch g.format {
			case FormatNvidiaSMIXML:
				direct, derr = ParseNvidiaSMIXML(b)
			case FormatNvidiaSMICSV:
				direct, derr = ParseNvidiaSMICSV(b)
			case FormatROCmSMIJSON:
				direct, derr = ParseROCmSMIJSON(b)
			}
			if (err == nil) != (derr == nil) || !reflect.DeepEqual(gpus, direct) {
				t.Errorf("exported parser disagrees: %v %v / %v %v", direct, derr, gpus, err)
			}
			if g.err != "" {
				if err == nil || err.Error() != g.err {
					t.Fatalf("error %v; want %q", err, g.err)
				}
				if !errors.Is(err, ErrFormat) {
					t.Errorf("error does not wrap ErrFormat")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseInventory: %v", err)
			}
			if !slices.Equal(warns, g.warns) {
				t.Errorf("warnings %q; want %q", warns, g.warns)
			}
			if len(gpus) != len(g.gpus) {
				t.Fatalf("%d GPUs; want %d: %+v", len(gpus), len(g.gpus), gpus)
			}
			vendor := VendorNVIDIA
			if g.format == FormatROCmSMIJSON {
				vendor = VendorAMD
			}
			for i, w := range g.gpus {
				vram := w.vramB
				if vram == 0 {
					vram = w.vramMi * MiB
				}
				// The hand-checked identity fields; usage and versions are
				// pinned by the golden JSON (TestCaptureGolden).
				wantGPU := GPU{Index: w.index, Vendor: vendor, Name: w.name, VRAMBytes: vram, UUID: w.uuid, PCIBusID: w.bus, Driver: w.driver, MIG: w.mig}
				got := gpus[i]
				got.CUDA, got.ROCm, got.UtilizationPct, got.VRAMUsedBytes = "", "", nil, nil
				if got != wantGPU {
					t.Errorf("GPU %d\n got %+v\nwant %+v", i, got, wantGPU)
				}
			}
		})
	}
}

// TestCSVHeadersMatchCommands reads each capture's *.cmd.txt (the exact
// nvidia-smi command that produced it) and checks that the CSV header names
// the same fields in the same order once units are stripped — the mapping
// the CSV parser relies on.
func TestCSVHeadersMatchCommands(t *testing.T) {
	cmds, err := filepath.Glob(filepath.Join(gpuDir, "*.cmd.txt"))
	if err != nil || len(cmds) == 0 {
		t.Fatalf("no command files: %v", err)
	}
	for _, cmdFile := range cmds {
		t.Run(filepath.Base(cmdFile), func(t *testing.T) {
			cmd, err := os.ReadFile(cmdFile)
			if err != nil {
				t.Fatal(err)
			}
			var fields []string
			for _, arg := range strings.Fields(string(cmd)) {
				if q, ok := strings.CutPrefix(arg, "--query-gpu="); ok {
					fields = strings.Split(q, ",")
				} else if q, ok := strings.CutPrefix(arg, "--query-compute-apps="); ok {
					fields = strings.Split(q, ",")
				}
			}
			if len(fields) == 0 {
				t.Fatalf("no --query-* in %q", cmd)
			}
			csvb, err := os.ReadFile(strings.TrimSuffix(cmdFile, ".cmd.txt") + ".csv")
			if err != nil {
				t.Fatal(err)
			}
			header, _, _ := strings.Cut(string(csvb), "\n")
			var got []string
			for _, h := range strings.Split(header, ",") {
				name, _ := splitHeader(h)
				got = append(got, name)
			}
			if !slices.Equal(got, fields) {
				t.Errorf("header fields differ from the query:\n got %q\nwant %q", got, fields)
			}
		})
	}
}

func TestParseEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		gpus  []GPU
		warns []string
		err   string
	}{
		{name: "xml no GPUs", in: `<?xml version="1.0" ?><nvidia_smi_log><driver_version>550.1</driver_version><attached_gpus>0</attached_gpus></nvidia_smi_log>`, gpus: []GPU{}},
		{name: "xml N/A memory", in: `<nvidia_smi_log><gpu id="0"><product_name>X</product_name><fb_memory_usage><total>N/A</total></fb_memory_usage></gpu></nvidia_smi_log>`,
			gpus: []GPU{{Index: 0, Vendor: VendorNVIDIA, Name: "X", PCIBusID: "0"}}},
		{name: "xml odd memory", in: `<nvidia_smi_log><gpu><product_name>X</product_name><fb_memory_usage><total>12 parsecs</total></fb_memory_usage></gpu></nvidia_smi_log>`,
			gpus: []GPU{{Index: 0, Vendor: VendorNVIDIA, Name: "X"}}, warns: []string{`nvidia-smi: GPU 0: fb_memory_usage/total "12 parsecs": unknown unit "parsecs"`}},
		{name: "xml wrong root", in: `<foo/>`, err: "unrecognised GPU tool output: not nvidia-smi -q -x XML: expected element type <nvidia_smi_log> but have <foo>"},
		{name: "xml truncated", in: `<nvidia_smi_log><gpu><product_name>X`, err: "unrecognised GPU tool output: not nvidia-smi -q -x XML: XML syntax error on line 1: unexpected EOF"},
		{name: "xml foreign encoding", in: `<?xml version="1.0" encoding="UTF-16"?><nvidia_smi_log/>`, err: `unrecognised GPU tool output: not nvidia-smi -q -x XML: xml: opening charset "UTF-16": unsupported XML encoding "UTF-16"`},
		{name: "csv nounits", in: "index, name, memory.total [MiB], mig.mode.current\n0, Tesla V100, 16160, Disabled\n1, Tesla V100, 16160, [N/A]\n",
			gpus: []GPU{{Index: 0, Vendor: VendorNVIDIA, Name: "Tesla V100", VRAMBytes: 16160 * MiB}, {Index: 1, Vendor: VendorNVIDIA, Name: "Tesla V100", VRAMBytes: 16160 * MiB}}},
		{name: "csv CRLF and N/A memory", in: "name, memory.total [MiB]\r\nNVIDIA L4, [N/A]\r\n",
			gpus: []GPU{{Index: 0, Vendor: VendorNVIDIA, Name: "NVIDIA L4"}}},
		{name: "csv header only", in: "name, memory.total [MiB]\n", gpus: []GPU{}},
		{name: "csv short row", in: "name, memory.total [MiB]\nA\n", err: "unrecognised GPU tool output: row 1: record on line 2: wrong number of fields"},
		{name: "csv noheader", in: "NVIDIA A10, 23028 MiB\n", err: `unrecognised GPU tool output: not nvidia-smi --query-gpu CSV with a header: no "name" column (query at least name,memory.total)`},
		{name: "rocm narrow without VRAM", in: `{"card0":{"Card Series":"Navi 31 [Radeon RX 7900 XTX]","Unique ID":"0x1"}}`,
			gpus: []GPU{{Index: 0, Vendor: VendorAMD, Name: "Navi 31 [Radeon RX 7900 XTX]", UUID: "0x1"}}},
		{name: "rocm warnings before JSON, cards out of order", in: "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status\n\n{\"card10\":{\"Device Name\":\"B\",\"VRAM Total Memory (B)\":\"1024\"},\"card2\":{\"Card model\":\"0x1\"},\"system\":{\"Driver version\":\"6.8.5\"}}\n",
			gpus: []GPU{{Index: 2, Vendor: VendorAMD, Name: "0x1", Driver: "6.8.5"}, {Index: 10, Vendor: VendorAMD, Name: "B", VRAMBytes: 1024, Driver: "6.8.5"}}},
		{name: "rocm card not an object", in: `{"card0":"x"}`, gpus: []GPU{}, warns: []string{"rocm-smi: card0 is not an object of fields; skipped"}},
		{name: "rocm bad VRAM", in: `{"card0":{"VRAM Total Memory (B)":"lots"}}`, gpus: []GPU{{Index: 0, Vendor: VendorAMD, Name: "card0"}},
			warns: []string{`rocm-smi: card0: VRAM Total Memory (B) "lots" is not a whole number`}},
		{name: "rocm no JSON", in: "ERROR: No AMD GPUs specified\n", err: "unrecognised GPU tool output: not nvidia-smi -q -x XML, nvidia-smi --query-gpu CSV with header, or rocm-smi --json"},
		{name: "empty", in: "", err: "unrecognised GPU tool output: not nvidia-smi -q -x XML, nvidia-smi --query-gpu CSV with header, or rocm-smi --json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpus, warns, err := ParseInventory([]byte(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v; want %q", err, tt.err)
				}
				if !errors.Is(err, ErrFormat) {
					t.Errorf("not ErrFormat: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseInventory: %v", err)
			}
			if !reflect.DeepEqual(gpus, tt.gpus) {
				t.Errorf("GPUs\n got %+v\nwant %+v", gpus, tt.gpus)
			}
			if !slices.Equal(warns, tt.warns) {
				t.Errorf("warnings %q; want %q", warns, tt.warns)
			}
		})
	}
}
