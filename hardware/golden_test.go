package hardware

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites the golden files from the current parsers:
//
//	go test ./hardware -run 'Golden' -update
var update = flag.Bool("update", false, "rewrite testdata golden files")

// goldenDir holds one <capture>.json per capture in gpuDir: what
// ParseInventory makes of it.
const goldenDir = "testdata/golden"

// parsedCapture is the golden form of one capture's parse.
type parsedCapture struct {
	Format   InventoryFormat `json:"format"`
	GPUs     []GPU           `json:"gpus,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// checkGolden compares got with the file testdata/golden/name, or writes it
// with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join(goldenDir, name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update after checking the change)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestCaptureGolden parses every capture under testdata/gpu and compares the
// full result (every field, warnings, errors) with its golden JSON.
func TestCaptureGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(gpuDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasSuffix(name, ".md") || strings.HasSuffix(name, ".txt") {
			continue
		}
		seen[name+".json"] = true
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			gpus, warns, err := ParseInventory(b)
			pc := parsedCapture{Format: DetectInventoryFormat(b), GPUs: gpus, Warnings: warns}
			if err != nil {
				pc.Error = err.Error()
			}
			out, err := json.MarshalIndent(pc, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, name+".json", append(out, '\n'))
		})
	}
	if len(seen) == 0 {
		t.Fatal("no captures")
	}
	// Every golden file belongs to a capture (a renamed capture leaves none behind).
	golden, _ := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	for _, g := range golden {
		if !seen[filepath.Base(g)] && !*update {
			t.Errorf("golden file %s has no capture in %s", g, gpuDir)
		}
	}
}
