package hardware

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ErrFormat classifies parse errors: the bytes are not the tool output the
// parser reads.
var ErrFormat = errors.New("unrecognised GPU tool output")

// maxGPUs bounds how many GPUs one document may list (defends the parsers
// against absurd input; real machines have at most a few dozen).
const maxGPUs = 1024

// smiLog is the part of `nvidia-smi -q -x` (nvsmi_device_v10..v13.dtd) that
// Detect reads. Elements a schema lacks stay "".
type smiLog struct {
	XMLName       xml.Name `xml:"nvidia_smi_log"`
	DriverVersion string   `xml:"driver_version"`
	CUDAVersion   string   `xml:"cuda_version"`
	AttachedGPUs  string   `xml:"attached_gpus"`
	GPUs          []smiGPU `xml:"gpu"`
}

type smiGPU struct {
	ID          string `xml:"id,attr"`
	ProductName string `xml:"product_name"`
	UUID        string `xml:"uuid"`
	PCIBusID    string `xml:"pci>pci_bus_id"`
	CurrentMIG  string `xml:"mig_mode>current_mig"`
	FBTotal     string `xml:"fb_memory_usage>total"` // the GPU's own, not a MIG device's
	FBUsed      string `xml:"fb_memory_usage>used"`
	GPUUtil     string `xml:"utilization>gpu_util"` // "3 %"
}

// ParseNvidiaSMIXML reads the output of `nvidia-smi -q -x`: one GPU per
// <gpu> element, Index in document order (nvidia-smi's index order), VRAM
// from fb_memory_usage/total, MIG from mig_mode/current_mig == "Enabled",
// PCIBusID from pci/pci_bus_id or the id attribute, CUDA from cuda_version,
// UtilizationPct from utilization/gpu_util and VRAMUsedBytes from
// fb_memory_usage/used. Schemas v10 to v13 are
// read, with or without DOCTYPE; "N/A" and missing elements leave fields
// zero. It returns an error wrapping ErrFormat when the document is not
// XML with an <nvidia_smi_log> root.
func ParseNvidiaSMIXML(b []byte) ([]GPU, error) {
	gpus, _, err := parseNvidiaSMIXML(b)
	return gpus, err
}

func parseNvidiaSMIXML(b []byte) ([]GPU, []string, error) {
	var doc smiLog
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.CharsetReader = func(charset string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(charset) {
		case "utf-8", "utf8", "us-ascii", "ascii":
			return r, nil
		}
		return nil, fmt.Errorf("unsupported XML encoding %q", charset)
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("%w: not nvidia-smi -q -x XML: %w", ErrFormat, err)
	}
	if len(doc.GPUs) > maxGPUs {
		return nil, nil, fmt.Errorf("%w: %d <gpu> elements; at most %d", ErrFormat, len(doc.GPUs), maxGPUs)
	}
	var warns []string
	driver := smiValue(doc.DriverVersion)
	cuda := smiValue(doc.CUDAVersion)
	gpus := make([]GPU, 0, len(doc.GPUs))
	for i, g := range doc.GPUs {
		gpu := GPU{
			Index:    i,
			Vendor:   VendorNVIDIA,
			Name:     smiValue(g.ProductName),
			UUID:     smiValue(g.UUID),
			PCIBusID: smiValue(g.PCIBusID),
			Driver:   driver,
			CUDA:     cuda,
			MIG:      strings.EqualFold(smiValue(g.CurrentMIG), "Enabled"),
		}
		warns = readUsage(&gpu, smiValue(g.GPUUtil), smiValue(g.FBUsed), "MiB", warns)
		if gpu.PCIBusID == "" {
			gpu.PCIBusID = smiValue(g.ID)
		}
		if v := smiValue(g.FBTotal); v != "" {
			n, err := parseSize(v, "MiB")
			if err != nil {
				warns = append(warns, fmt.Sprintf("nvidia-smi: GPU %d: fb_memory_usage/total %q: %v", i, clip(v), err))
			}
			gpu.VRAMBytes = n
		}
		gpus = append(gpus, gpu)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(doc.AttachedGPUs)); err == nil && n != len(gpus) {
		warns = append(warns, fmt.Sprintf("nvidia-smi: attached_gpus says %d but %d <gpu> elements are listed", n, len(gpus)))
	}
	return gpus, warns, nil
}

// ParseNvidiaSMICSV reads the output of
// `nvidia-smi --query-gpu=...,name,memory.total,... --format=csv` with its
// header (units or nounits). Columns are found by header name, ignoring the
// unit suffix ("memory.total [MiB]"); name and memory.total are required,
// index, uuid, pci.bus_id, driver_version and mig.mode.current are used when
// present, and so are utilization.gpu and memory.used (the health sample's
// query). "[N/A]" values leave fields zero. It returns an error wrapping
// ErrFormat when a required column is missing or a row does not fit the
// header.
func ParseNvidiaSMICSV(b []byte) ([]GPU, error) {
	gpus, _, err := parseNvidiaSMICSV(b)
	return gpus, err
}

func parseNvidiaSMICSV(b []byte) ([]GPU, []string, error) {
	r := csv.NewReader(bytes.NewReader(b))
	r.TrimLeadingSpace = true
	r.LazyQuotes = true
	r.ReuseRecord = false
	header, err := r.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not nvidia-smi --query-gpu CSV: header: %w", ErrFormat, err)
	}
	col := map[string]int{}
	units := map[string]string{}
	for i, h := range header {
		name, unit := splitHeader(h)
		if _, dup := col[name]; !dup {
			col[name], units[name] = i, unit
		}
	}
	for _, need := range []string{"name", "memory.total"} {
		if _, ok := col[need]; !ok {
			return nil, nil, fmt.Errorf("%w: not nvidia-smi --query-gpu CSV with a header: no %q column (query at least name,memory.total)", ErrFormat, need)
		}
	}
	get := func(rec []string, name string) string {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return ""
		}
		return smiValue(rec[i])
	}
	var gpus []GPU
	var warns []string
	for row := 1; ; row++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: row %d: %w", ErrFormat, row, err)
		}
		if len(rec) != len(header) {
			return nil, nil, fmt.Errorf("%w: row %d has %d fields; the header has %d", ErrFormat, row, len(rec), len(header))
		}
		if len(gpus) >= maxGPUs {
			return nil, nil, fmt.Errorf("%w: more than %d GPU rows", ErrFormat, maxGPUs)
		}
		gpu := GPU{
			Index:    len(gpus),
			Vendor:   VendorNVIDIA,
			Name:     get(rec, "name"),
			UUID:     get(rec, "uuid"),
			PCIBusID: get(rec, "pci.bus_id"),
			Driver:   get(rec, "driver_version"),
			MIG:      strings.EqualFold(get(rec, "mig.mode.current"), "Enabled"),
		}
		if v := get(rec, "index"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				gpu.Index = n
			}
		}
		warns = readUsage(&gpu, get(rec, "utilization.gpu"), get(rec, "memory.used"), orDefault(units["memory.used"], "MiB"), warns)
		if v := get(rec, "memory.total"); v != "" {
			n, err := parseSize(v, orDefault(units["memory.total"], "MiB"))
			if err != nil {
				warns = append(warns, fmt.Sprintf("nvidia-smi: GPU %d: memory.total %q: %v", gpu.Index, clip(v), err))
			}
			gpu.VRAMBytes = n
		}
		gpus = append(gpus, gpu)
	}
	if gpus == nil {
		gpus = []GPU{}
	}
	return gpus, warns, nil
}

// readUsage sets gpu's UtilizationPct from util ("37 %", "37") and
// VRAMUsedBytes from used (in defUnit unless it names its own); empty values
// leave them nil, unreadable ones add a warning.
func readUsage(gpu *GPU, util, used, defUnit string, warns []string) []string {
	if util != "" {
		v := strings.TrimSpace(strings.TrimSuffix(util, "%"))
		if p, err := strconv.ParseFloat(v, 64); err == nil && p >= 0 && p <= 100 {
			gpu.UtilizationPct = &p
		} else {
			warns = append(warns, fmt.Sprintf("nvidia-smi: GPU %d: utilization %q is not a percentage", gpu.Index, clip(util)))
		}
	}
	if used != "" {
		if n, err := parseSize(used, defUnit); err == nil {
			gpu.VRAMUsedBytes = &n
		} else {
			warns = append(warns, fmt.Sprintf("nvidia-smi: GPU %d: memory used %q: %v", gpu.Index, clip(used), err))
		}
	}
	return warns
}

// splitHeader turns "memory.total [MiB]" into ("memory.total", "MiB").
func splitHeader(h string) (name, unit string) {
	h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
	if i := strings.IndexByte(h, '['); i >= 0 && strings.HasSuffix(h, "]") {
		return strings.TrimSpace(h[:i]), strings.TrimSpace(h[i+1 : len(h)-1])
	}
	return h, ""
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// smiValue trims v and maps nvidia-smi's placeholders ("N/A", "[N/A]",
// "[Not Supported]", "Requested functionality has been deprecated", …) to "".
func smiValue(v string) string {
	v = strings.TrimSpace(v)
	switch strings.ToLower(strings.Trim(v, "[]")) {
	case "", "n/a", "not supported", "unknown error", "insufficient permissions", "requested functionality has been deprecated", "gpu requires reset":
		return ""
	}
	return v
}

// parseSize reads "24564 MiB", "16 GiB", "512 KiB", "1024 B" or a bare
// number in defUnit, returning bytes.
func parseSize(v, defUnit string) (uint64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
	unit = strings.TrimSpace(unit)
	if unit == "" {
		unit = defUnit
	}
	var mult uint64
	switch strings.ToLower(unit) {
	case "b", "bytes":
		mult = 1
	case "kib", "kb":
		mult = 1 << 10
	case "mib", "mb":
		mult = 1 << 20
	case "gib", "gb":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("unknown unit %q", clip(unit))
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a whole number")
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}

// clip bounds a value quoted in a warning.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
