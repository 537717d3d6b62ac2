package runtimetest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBuildScriptDeterministic: two builds of the test image give the same bytes, so
// its digest is stable across machines with the same busybox.
func TestBuildScriptDeterministic(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed (/bin/busybox)")
	}
	script, err := buildScript()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var archives [][]byte
	for _, name := range []string{"a.tar", "b.tar"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command("bash", script, out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build.sh: %v\n%s", err, msg)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, b)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("two builds of the test image differ")
	}
	list, err := exec.Command("tar", "-tf", filepath.Join(dir, "a.tar")).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"oci-layout\n", "index.json\n", "blobs/sha256/"} {
		if !bytes.Contains(list, []byte(want)) {
			t.Errorf("archive lacks %q:\n%s", want, list)
		}
	}
}

func TestConfigTOMLKeepsEverythingUnderDir(t *testing.T) {
	cfg := ConfigTOML("/tmp/hnctd-x", "/tmp/hnctd-x/c.sock")
	for _, want := range []string{`root = "/tmp/hnctd-x/root"`, `state = "/tmp/hnctd-x/state"`,
		`address = "/tmp/hnctd-x/c.sock"`, `path = "/tmp/hnctd-x/opt"`, `"io.containerd.grpc.v1.cri"`} {
		if !bytes.Contains([]byte(cfg), []byte(want)) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
}
