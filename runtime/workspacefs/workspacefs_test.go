package workspacefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hypernode-sol/worker/runtime/workspacefs"
)

// TestCapHolds: writing past the cap fails with ENOSPC, the host file stays at most
// the cap, Full reports it, and a remount of the same image keeps the files.
func TestCapHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("loop-mounts a filesystem (skipped with -short)")
	}
	if err := workspacefs.Check(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	ws, img := filepath.Join(dir, "workspace"), filepath.Join(dir, "workspace.img")
	const limit = 16 << 20
	if err := workspacefs.Mount(ws, img, limit); errors.Is(err, workspacefs.ErrUnsupported) {
		t.Skip(err) // no free loop device on a busy machine
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacefs.Unmount(ws) })
	if err := workspacefs.Mount(ws, img, limit); err != nil {
		t.Fatalf("second Mount of a mounted workspace: %v", err)
	}
	if full, err := workspacefs.Full(ws); err != nil || full {
		t.Fatalf("fresh workspace Full = %v, %v", full, err)
	}
	f, err := os.Create(filepath.Join(ws, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var written int64
	for i := 0; i < 64; i++ {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write: %v, want ENOSPC", err)
			}
			break
		}
	}
	f.Close()
	if written > limit || written < limit/2 {
		t.Errorf("wrote %d bytes into a %d-byte workspace", written, limit)
	}
	if full, err := workspacefs.Full(ws); err != nil || !full {
		used, size, _ := workspacefs.Usage(ws)
		t.Errorf("after filling %d bytes, Full = %v, %v (used %d of %d)", written, full, err, used, size)
	}
	if st, err := os.Stat(img); err != nil || st.Size() != limit {
		t.Errorf("image %v, %v: want %d bytes", st, err, limit)
	}
	if err := workspacefs.Unmount(ws); err != nil {
		t.Fatal(err)
	}
	if m, _ := workspacefs.IsMountPoint(ws); m {
		t.Fatal("still mounted after Unmount")
	}
	if _, err := os.Stat(filepath.Join(ws, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file shows through the unmounted directory: %v", err)
	}
	if err := workspacefs.Mount(ws, img, limit); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(ws, "big")); err != nil || st.Size() != written {
		t.Errorf("after remount: %v, %v; want %d bytes", st, err, written)
	}
	if err := workspacefs.Unmount(filepath.Join(dir, "none")); err != nil {
		t.Errorf("Unmount of a missing directory: %v", err)
	}
}

func TestMountRejects(t *testing.T) {
	if err := workspacefs.Mount("rel", "/x.img", 1<<30); err == nil {
		t.Error("relative workspace accepted")
	}
	if err := workspacefs.Mount(t.TempDir(), filepath.Join(t.TempDir(), "x.img"), 1<<20); err == nil {
		t.Error("a 1 MiB cap accepted")
	}
}
