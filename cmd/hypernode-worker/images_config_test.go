package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigImageSettings: registry credentials from a config.json and from
// REGISTRY_HOST/USER/PASSWORD, the cache budget and the prepull list reach the
// effective configuration; `config` names the registries, never a password.
func TestConfigImageSettings(t *testing.T) {
	dir := t.TempDir()
	authFile := filepath.Join(dir, "config.json")
	doc := `{"auths":{"registry.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("bob:file-pw-123")) + `"}}}`
	if err := os.WriteFile(authFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HYPERNODE_DATA_DIR", dir)
	t.Setenv("REGISTRY_PASSWORD", "env-pw-456")
	var stdout, stderr bytes.Buffer
	code := run([]string{"config", "--env-file", "", "--registry-auth", authFile, "--registry-host", "https://GHCR.io/",
		"--registry-user", "alice", "--image-cache-limit-mb", "2048", "--prepull-images", "frameworks,127.0.0.1:5000/x:1"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"ghcr.io,registry.example.com", "IMAGE_CACHE_LIMIT_MB", "2048",
		"pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime,huggingface/transformers-pytorch-gpu:latest,stabilityai/stable-diffusion:latest,ollama/ollama:latest,127.0.0.1:5000/x:1"} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+stderr.String(), "pw-") {
		t.Errorf("a password is printed:\n%s", out)
	}
}
