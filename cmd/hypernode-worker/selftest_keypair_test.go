package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSelfTestKeypairWithoutDaemon: with the embedded localnet and no
// running worker, `test` says the keypair will be created by `start` only
// when it does not exist yet.
func TestSelfTestKeypairWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{Network: "localnet", DataDir: dir, KeypairPath: filepath.Join(dir, "id.json")}
	keypairLine := func() string {
		var line string
		checkChain(context.Background(), cfg, func(name, result, format string, args ...any) {
			if name == "keypair" {
				line = result + " " + fmt.Sprintf(format, args...)
			}
		})
		return line
	}
	if got := keypairLine(); !strings.Contains(got, "is created by `start`") {
		t.Errorf("missing keypair: %q", got)
	}
	if err := os.WriteFile(cfg.KeypairPath, []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := keypairLine(); strings.Contains(got, "is created by") || !strings.Contains(got, "exists") {
		t.Errorf("existing keypair: %q", got)
	}
}
