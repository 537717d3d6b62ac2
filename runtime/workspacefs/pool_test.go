package workspacefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hypernode-sol/worker/runtime/workspacefs"
)

const poolCap = 16 << 20

// openPool opens a pool of count spares of poolCap bytes in a new directory, and
// makes them (Refill) before returning. It skips where loop mounts cannot work.
func openPool(t *testing.T, cfg workspacefs.PoolConfig) *workspacefs.Pool {
	t.Helper()
	if testing.Short() {
		t.Skip("loop-mounts filesystems (skipped with -short)")
	}
	if err := workspacefs.Check(); err != nil {
		t.Skip(err)
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "pool")
	}
	if cfg.Bytes == 0 {
		cfg.Bytes = poolCap
	}
	p, err := workspacefs.OpenPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := p.Refill(); errors.Is(err, workspacefs.ErrUnsupported) {
		t.Skip(err) // no free loop device on a busy machine
	} else if err != nil && !errors.Is(err, workspacefs.ErrDiskFloor) {
		t.Fatal(err)
	}
	return p
}

// mountWorkspace mounts a job's workspace from p and unmounts it on cleanup.
func mountWorkspace(t *testing.T, p *workspacefs.Pool, dir string, bytes int64) (ws, img string) {
	t.Helper()
	ws, img = filepath.Join(dir, "workspace"), filepath.Join(dir, "workspace.img")
	if err := p.Mount(ws, img, bytes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacefs.Unmount(ws) })
	return ws, img
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// TestPoolHandsOverAFreshSpare: a job's Mount takes the ready spare (the pool is
// short of it until refilled), and gets an empty filesystem of the cap, mounted
// nosuid and nodev, whose image is now the job's: writing past the cap fails with
// ENOSPC, and the files survive an unmount and a Mount of the same image.
func TestPoolHandsOverAFreshSpare(t *testing.T) {
	pool := filepath.Join(t.TempDir(), "pool")
	p := openPool(t, workspacefs.PoolConfig{Dir: pool, Count: 1, RefillDelay: 1 << 40})
	if n := p.Spares(); n != 1 {
		t.Fatalf("Spares = %d after Refill, want 1", n)
	}
	before := names(t, pool)
	ws, img := mountWorkspace(t, p, t.TempDir(), poolCap)
	if n := p.Spares(); n != 0 {
		t.Errorf("Spares = %d after a Mount took one, want 0", n)
	}
	// The spare's entries are gone (the background filling may have begun
	// the next spare meanwhile).
	for _, n := range names(t, pool) {
		if slices.Contains(before, n) {
			t.Errorf("pool directory still holds %s after the hand-over (before: %v)", n, before)
		}
	}
	if m, err := workspacefs.IsMountPoint(ws); err != nil || !m {
		t.Fatalf("workspace mounted = %v, %v", m, err)
	}
	if st, err := os.Stat(img); err != nil || st.Size() != poolCap {
		t.Fatalf("job image %v, %v: want %d bytes", st, err, poolCap)
	}
	if got := names(t, ws); !slices.Equal(got, []string{"lost+found"}) {
		t.Errorf("fresh workspace holds %v, want only lost+found", got)
	}
	used, size, err := workspacefs.Usage(ws)
	if err != nil || size > poolCap || size < poolCap/2 || used > size/4 {
		t.Errorf("Usage = %d of %d, %v: want an empty filesystem of about %d bytes", used, size, err, poolCap)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(ws, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("workspace mount flags %#x lack nosuid or nodev", st.Flags)
	}

	written := fill(t, filepath.Join(ws, "big"))
	if written > poolCap || written < poolCap/2 {
		t.Errorf("wrote %d bytes into a %d-byte workspace", written, poolCap)
	}
	if err := workspacefs.Unmount(ws); err != nil {
		t.Fatal(err)
	}
	if err := p.Mount(ws, img, poolCap); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(ws, "big")); err != nil || st.Size() != written {
		t.Errorf("after remounting the job's image: %v, %v; want %d bytes", st, err, written)
	}
}

// fill writes 1 MiB chunks to path until ENOSPC (any other error fails the test) and
// returns the bytes written.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	for range 2 * poolCap >> 20 {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write: %v, want ENOSPC", err)
			}
			return written
		}
	}
	t.Fatalf("wrote %d bytes without ENOSPC", written)
	return 0
}

// TestPoolSparesAreNeverShared: two jobs get two distinct filesystems; what one
// writes, the other never sees, and a job's image never returns to the pool.
func TestPoolSparesAreNeverShared(t *testing.T) {
	p := openPool(t, workspacefs.PoolConfig{Count: 2, RefillDelay: 1 << 40})
	if n := p.Spares(); n != 2 {
		t.Fatalf("Spares = %d after Refill, want 2", n)
	}
	wsA, imgA := mountWorkspace(t, p, t.TempDir(), poolCap)
	if err := os.WriteFile(filepath.Join(wsA, "secret"), []byte("job A"), 0o600); err != nil {
		t.Fatal(err)
	}
	wsB, imgB := mountWorkspace(t, p, t.TempDir(), poolCap)
	if _, err := os.Stat(filepath.Join(wsB, "secret")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("job B sees job A's file: %v", err)
	}
	a, errA := os.Stat(imgA)
	b, errB := os.Stat(imgB)
	if errA != nil || errB != nil || os.SameFile(a, b) {
		t.Errorf("jobs share an image: %v %v", errA, errB)
	}
	// Job A ends; its workspace goes as the driver removes it. The pool refills
	// with new images only.
	if err := workspacefs.Unmount(wsA); err != nil {
		t.Fatal(err)
	}
	if err := p.Refill(); err != nil {
		t.Fatal(err)
	}
	wsC, _ := mountWorkspace(t, p, t.TempDir(), poolCap)
	if got := names(t, wsC); !slices.Equal(got, []string{"lost+found"}) {
		t.Errorf("job C's workspace holds %v, want only lost+found", got)
	}
}

// mountedLeftover is a pool directory holding what a killed worker left: the
// spare spare-0 still mounted (unmounted at cleanup). It skips the test where
// loop mounts are not available.
func mountedLeftover(t *testing.T) (pool, left string) {
	t.Helper()
	if err := workspacefs.Check(); err != nil {
		t.Skip(err)
	}
	pool = filepath.Join(t.TempDir(), "pool")
	left = filepath.Join(pool, "spare-0")
	if err := workspacefs.Mount(left, left+".img", poolCap); errors.Is(err, workspacefs.ErrUnsupported) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { workspacefs.Unmount(left) })
	return pool, left
}

// TestPoolClearsCrashLeftovers: what a killed worker left in the pool directory (a
// spare still mounted and holding a file, a half-formatted image, a stray file) is
// unmounted and removed by OpenPool; no job is ever given it.
func TestPoolClearsCrashLeftovers(t *testing.T) {
	if testing.Short() {
		t.Skip("loop-mounts filesystems (skipped with -short)")
	}
	pool, left := mountedLeftover(t)
	if err := os.WriteFile(filepath.Join(left, "stale"), []byte("left by a crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"spare-1.img.tmp", "other"} {
		if err := os.WriteFile(filepath.Join(pool, junk), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	p := openPool(t, workspacefs.PoolConfig{Dir: pool, Count: 1, RefillDelay: 1 << 40})
	for _, n := range names(t, pool) {
		if n == "spare-1.img.tmp" || n == "other" {
			t.Errorf("leftover %s still in the pool", n)
		}
	}
	ws, _ := mountWorkspace(t, p, t.TempDir(), poolCap)
	if got := names(t, ws); !slices.Equal(got, []string{"lost+found"}) {
		t.Errorf("workspace after a crash holds %v, want only lost+found", got)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, pool); len(got) != 0 {
		t.Errorf("pool directory holds %v after Close, want nothing", got)
	}
}

// TestPoolFallsBack: a Mount the pool cannot serve (another size, an image that
// exists, no spare above the disk floor) formats and mounts as workspacefs.Mount
// does, with the size asked for.
func TestPoolFallsBack(t *testing.T) {
	p := openPool(t, workspacefs.PoolConfig{Count: 1, RefillDelay: 1 << 40})
	const other = 24 << 20
	_, img := mountWorkspace(t, p, t.TempDir(), other)
	if st, err := os.Stat(img); err != nil || st.Size() != other {
		t.Errorf("image %v, %v: want %d bytes", st, err, other)
	}
	if n := p.Spares(); n != 1 {
		t.Errorf("Spares = %d after a Mount of another size, want 1 (untouched)", n)
	}

	floor := openPool(t, workspacefs.PoolConfig{Count: 1, FloorBytes: 1 << 62})
	if err := floor.Refill(); !errors.Is(err, workspacefs.ErrDiskFloor) {
		t.Errorf("Refill above the disk = %v, want ErrDiskFloor", err)
	}
	if n := floor.Spares(); n != 0 {
		t.Errorf("Spares = %d with the disk under the floor, want 0", n)
	}
	ws, img := mountWorkspace(t, floor, t.TempDir(), poolCap)
	if m, err := workspacefs.IsMountPoint(ws); err != nil || !m {
		t.Errorf("workspace mounted = %v, %v without a spare", m, err)
	}
	if st, err := os.Stat(img); err != nil || st.Size() != poolCap {
		t.Errorf("image %v, %v: want %d bytes", st, err, poolCap)
	}
}

// TestClearPool: ClearPool empties a pool directory a killed process left (a spare
// still mounted, its image, a half-made one) without starting a pool, and a
// directory that does not exist is nothing to clear.
func TestClearPool(t *testing.T) {
	if err := workspacefs.ClearPool(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Errorf("ClearPool of a missing directory: %v, want nil", err)
	}
	if testing.Short() {
		t.Skip("loop-mounts filesystems (skipped with -short)")
	}
	pool, left := mountedLeftover(t)
	if err := os.WriteFile(filepath.Join(pool, "spare-1.img.tmp"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := workspacefs.ClearPool(pool); err != nil {
		t.Fatal(err)
	}
	if got := names(t, pool); len(got) != 0 {
		t.Errorf("pool directory holds %v after ClearPool, want nothing", got)
	}
	if _, err := workspacefs.IsMountPoint(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spare after ClearPool: %v, want it gone", err)
	}
}
