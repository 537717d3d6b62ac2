package hardware

import (
	"bytes"
	"fmt"
)

// InventoryFormat names a captured GPU inventory's format.
type InventoryFormat string

// Inventory formats ParseInventory recognises.
const (
	FormatNvidiaSMIXML InventoryFormat = "nvidia-smi-xml"
	FormatNvidiaSMICSV InventoryFormat = "nvidia-smi-csv"
	FormatROCmSMIJSON  InventoryFormat = "rocm-smi-json"
)

// DetectInventoryFormat recognises a captured inventory by its content: XML
// (starts with "<") is nvidia-smi -q -x, JSON (an object, possibly after
// rocm-smi warning lines) is rocm-smi --json, and text whose first line has
// a comma is nvidia-smi --query-gpu CSV. It returns "" when none fits.
func DetectInventoryFormat(b []byte) InventoryFormat {
	t := bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\ufeff")), " \t\r\n")
	switch {
	case len(t) == 0:
		return ""
	case t[0] == '<':
		return FormatNvidiaSMIXML
	case t[0] == '{' || bytes.Contains(t, []byte("\n{")):
		return FormatROCmSMIJSON
	}
	if line, _, _ := bytes.Cut(t, []byte("\n")); bytes.ContainsRune(line, ',') {
		return FormatNvidiaSMICSV // the CSV parser says what is missing
	}
	return ""
}

// ParseInventory reads a captured GPU inventory in any format
// DetectInventoryFormat recognises. Warnings describe fields that could not
// be read. It returns an error wrapping ErrFormat for anything else.
func ParseInventory(b []byte) ([]GPU, []string, error) {
	return parseInventory(b)
}

func parseInventory(b []byte) ([]GPU, []string, error) {
	b = bytes.TrimPrefix(b, []byte("\ufeff"))
	switch DetectInventoryFormat(b) {
	case FormatNvidiaSMIXML:
		return parseNvidiaSMIXML(b)
	case FormatROCmSMIJSON:
		return parseROCmSMIJSON(b)
	case FormatNvidiaSMICSV:
		return parseNvidiaSMICSV(b)
	}
	return nil, nil, fmt.Errorf("%w: not nvidia-smi -q -x XML, nvidia-smi --query-gpu CSV with header, or rocm-smi --json", ErrFormat)
}
