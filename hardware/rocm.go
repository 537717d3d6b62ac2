package hardware

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ParseROCmSMIJSON reads the output of `rocm-smi ... --json`: an object
// with one "cardN" member per GPU (Index N) and an optional "system" member.
// Keys are matched case-insensitively, as rocm-smi's spelling changed across
// releases ("Card series" in 5.x/6.0, "Card Series" in 6.1+). Name is
// "Card Series", else "Device Name", else "Card Model"; VRAM is "VRAM Total
// Memory (B)"; UUID "Unique ID"; PCIBusID "PCI Bus"; Driver the system's
// "Driver version"; UtilizationPct "GPU use (%)"; VRAMUsedBytes "VRAM Total
// Used Memory (B)". A narrow query without VRAM gives VRAMBytes 0 (Detect
// warns about it). Leading lines before the JSON object (rocm-smi warnings)
// and trailing text are skipped. It returns an error wrapping ErrFormat when
// there is no JSON object.
func ParseROCmSMIJSON(b []byte) ([]GPU, error) {
	gpus, _, err := parseROCmSMIJSON(b)
	return gpus, err
}

func parseROCmSMIJSON(b []byte) ([]GPU, []string, error) {
	start := bytes.TrimLeft(b, " \t\r\n")
	if len(start) > 0 && start[0] != '{' {
		i := bytes.Index(start, []byte("\n{"))
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: not rocm-smi --json output: no JSON object", ErrFormat)
		}
		start = start[i+1:]
	}
	var doc map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(start)).Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("%w: not rocm-smi --json output: %w", ErrFormat, err)
	}
	if doc == nil {
		return nil, nil, fmt.Errorf("%w: not rocm-smi --json output: null", ErrFormat)
	}
	var driver string
	type card struct {
		n      int
		fields map[string]string // lower-cased key → value
	}
	var cards []card
	var warns []string
	for key, raw := range doc {
		lk := strings.ToLower(strings.TrimSpace(key))
		if lk == "system" {
			if f, ok := stringFields(raw); ok {
				driver = f["driver version"]
			}
			continue
		}
		num, ok := strings.CutPrefix(lk, "card")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 || n > maxGPUs {
			continue
		}
		f, ok := stringFields(raw)
		if !ok {
			warns = append(warns, fmt.Sprintf("rocm-smi: %s is not an object of fields; skipped", clip(key)))
			continue
		}
		cards = append(cards, card{n: n, fields: f})
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i].n < cards[j].n })
	gpus := make([]GPU, 0, len(cards))
	for i, c := range cards {
		if i > 0 && cards[i-1].n == c.n {
			continue // "card0" and "Card0": keep one
		}
		f := c.fields
		g := GPU{
			Index:    c.n,
			Vendor:   VendorAMD,
			Name:     first(f["card series"], f["device name"], f["card model"]),
			UUID:     rocmValue(f["unique id"]),
			PCIBusID: rocmValue(f["pci bus"]),
			Driver:   rocmValue(driver),
		}
		if g.Name == "" {
			g.Name = fmt.Sprintf("card%d", c.n)
		}
		if v := rocmValue(f["vram total memory (b)"]); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				warns = append(warns, fmt.Sprintf("rocm-smi: card%d: VRAM Total Memory (B) %q is not a whole number", c.n, clip(v)))
			}
			g.VRAMBytes = n
		}
		if v := rocmValue(f["gpu use (%)"]); v != "" {
			if p, err := strconv.ParseFloat(v, 64); err == nil && p >= 0 && p <= 100 {
				g.UtilizationPct = &p
			} else {
				warns = append(warns, fmt.Sprintf("rocm-smi: card%d: GPU use (%%) %q is not a percentage", c.n, clip(v)))
			}
		}
		if v := rocmValue(f["vram total used memory (b)"]); v != "" {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				g.VRAMUsedBytes = &n
			} else {
				warns = append(warns, fmt.Sprintf("rocm-smi: card%d: VRAM Total Used Memory (B) %q is not a whole number", c.n, clip(v)))
			}
		}
		gpus = append(gpus, g)
	}
	return gpus, warns, nil
}

// stringFields decodes a JSON object, keeping its string members under
// lower-cased, trimmed keys (the first spelling wins).
func stringFields(raw json.RawMessage) (map[string]string, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, false
	}
	out := make(map[string]string, len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic choice between "Card Series" and "Card series"
	for _, k := range keys {
		var s string
		if json.Unmarshal(m[k], &s) != nil {
			continue
		}
		lk := strings.ToLower(strings.TrimSpace(k))
		if _, seen := out[lk]; !seen {
			out[lk] = strings.TrimSpace(s)
		}
	}
	return out, true
}

func rocmValue(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "n/a", "unknown", "unsupported":
		return ""
	}
	return strings.TrimSpace(v)
}

func first(vals ...string) string {
	for _, v := range vals {
		if v = rocmValue(v); v != "" {
			return v
		}
	}
	return ""
}
