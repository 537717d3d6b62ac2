package kubotest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHTTPURL(t *testing.T) {
	if got, err := httpURL("/ip4/127.0.0.1/tcp/4321\n"); err != nil || got != "http://127.0.0.1:4321" {
		t.Errorf("httpURL = %q, %v", got, err)
	}
	for _, bad := range []string{"", "/ip6/::1/tcp/1", "/ip4/127.0.0.1/udp/1", "/dns/x/tcp/1/http"} {
		if _, err := httpURL(bad); err == nil {
			t.Errorf("httpURL(%q) accepted", bad)
		}
	}
}

func TestBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BinaryEnv, filepath.Join(dir, "missing"))
	if b, why := Binary(); b != "" || !strings.Contains(why, BinaryEnv) {
		t.Errorf("missing binary: %q, %q", b, why)
	}
	exe := filepath.Join(dir, "ipfs")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BinaryEnv, exe)
	if b, why := Binary(); b != exe {
		t.Errorf("Binary() = %q, %q; want %s", b, why, exe)
	}
	t.Setenv(BinaryEnv, "")
	t.Setenv("HYPERNODE_CACHE", dir)
	if got := DefaultBinary(); got != filepath.Join(dir, "kubo", Version, "ipfs") {
		t.Errorf("DefaultBinary() = %s", got)
	}
}
