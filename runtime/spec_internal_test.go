package runtime

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func owner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestChownTreeStaysInside: the workspace goes to the container's user; a symlink in it
// (which a job could plant) is changed itself, never its target outside.
func TestChownTreeStaysInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	outside := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	for _, d := range []string{"output", "output/deep"} {
		if err := os.Mkdir(filepath.Join(ws, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ws, "output/deep/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"link", "output/dirlink"} {
		target := outside
		if link == "output/dirlink" {
			target = filepath.Dir(outside)
		}
		if err := os.Symlink(target, filepath.Join(ws, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := chownTree(ws, 65534, 65533); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".", "output", "output/deep", "output/deep/f", "link", "output/dirlink"} {
		if uid, gid := owner(t, filepath.Join(ws, p)); uid != 65534 || gid != 65533 {
			t.Errorf("%s owned by %d:%d, want 65534:65533", p, uid, gid)
		}
	}
	for _, p := range []string{outside, filepath.Dir(outside)} {
		if uid, gid := owner(t, p); uid != 0 || gid != 0 {
			t.Errorf("chownTree followed a symlink out: %s is %d:%d", p, uid, gid)
		}
	}
}
