package workspacefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A Pool keeps a few spare workspace filesystems, formatted and loop-mounted ahead of
// need in a directory of its own, so that giving a job its capped workspace costs a
// rename and a bind mount instead of mkfs.ext4 and a loop mount on the job's start.
//
// A spare belongs to no job: it is an image file "spare-<n>.img" and its mount point
// "spare-<n>" in the pool directory (0700, root only), made by this process and never
// written to. Mount hands one over by renaming its image to the job's image path
// first (from then on it is the job's, and only that job's), then binding its root
// onto the job's workspace directory (nosuid, nodev, noatime) and detaching the
// spare's own mount point. An image never comes back into the pool, so no job can be
// given a filesystem another job used.
//
// Crash safety: whatever a crash leaves in the pool directory (spares, a half-made
// image, a spare still mounted, even after its image went to a job) is unmounted and
// removed by the next OpenPool; the pool starts empty and is filled again. A job's
// image renamed just before a crash is the job's own fresh filesystem, mounted
// again from its image like any other (Mount).
type Pool struct {
	cfg PoolConfig

	fillMu sync.Mutex   // held by Refill
	useMu  sync.RWMutex // read-held by a hand-over, held by Close's clearing
	mu     sync.Mutex
	spares []string // mount points of ready spares, oldest first
	seq    int      // the next spare's number
	err    error    // why the last refill stopped, nil when it filled up

	wake chan struct{} // a spare was taken: refill
	stop chan struct{}
	done chan struct{}
}

// PoolConfig sizes a Pool.
type PoolConfig struct {
	// Dir is the pool's directory (created 0700). It must be on the same filesystem
	// as the job images given to Mount, so that a spare's image can be renamed there;
	// when it is not, Mount formats the job's image as workspacefs.Mount does.
	Dir string
	// Bytes is the size of each spare filesystem: the workspace cap. Mount takes a
	// spare only for this size.
	Bytes int64
	// Count is how many spares the pool keeps ready (at least 1).
	Count int
	// FloorBytes: no spare is made while the pool directory's filesystem has less
	// than FloorBytes plus Reserve(Bytes) free for unprivileged users, so spares
	// never bring the disk under the worker's floor (DISK_FLOOR_MB). 0: no floor.
	FloorBytes uint64
	// RefillDelay is how long after a spare is taken the pool waits before making
	// the next, so that the formatting does not compete with the start of the job
	// that took it (default 300 ms).
	RefillDelay time.Duration
	// OnError, when set, is told why making a spare failed (the pool then stays
	// short until the next Mount takes a spare or Fill is called). It must not block.
	OnError func(error)
}

// Reserve is the disk a spare of bytes may hold before any job writes to it: ext4
// metadata (a fresh image allocates well under 1/256 of its size; 1/64 is kept as a
// margin) and at least 16 MiB.
func Reserve(bytes int64) uint64 { return uint64(max(bytes/64, 16<<20)) }

// DefaultRefillDelay is PoolConfig.RefillDelay's default.
const DefaultRefillDelay = 300 * time.Millisecond

const (
	spareName = "spare-" // spare-<n> (mount point) and spare-<n>.img
	imageExt  = ".img"
	// remountCap gives a bind mount the flags of a workspace mount (loopMount).
	remountCap = unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOATIME
)

// OpenPool clears what a previous process left in cfg.Dir (unmounting and removing
// every entry), then starts filling the pool in the background. Errors: an invalid
// config (relative Dir, Bytes under MinBytes, Count under 1), a Dir that cannot be
// created or cleared, or ErrUnsupported from Check. Close stops it.
func OpenPool(cfg PoolConfig) (*Pool, error) {
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("workspace pool %q must be an absolute path", cfg.Dir)
	}
	if cfg.Bytes < MinBytes {
		return nil, fmt.Errorf("workspace pool: cap %d bytes is below %d", cfg.Bytes, MinBytes)
	}
	if cfg.Count < 1 {
		return nil, fmt.Errorf("workspace pool: count %d is below 1", cfg.Count)
	}
	if cfg.RefillDelay <= 0 {
		cfg.RefillDelay = DefaultRefillDelay
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace pool: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace pool: %w", err)
	}
	if err := clearPool(cfg.Dir); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	p.Fill()
	return p, nil
}

// ClearPool unmounts and removes what a pool left in dir (spares still mounted
// after a SIGKILL, their images, half-made ones), for a process that keeps no pool
// there now (WORKSPACE_SPARES=0): OpenPool does the same before filling. A dir that
// does not exist is nothing to clear. Errors: a spare that cannot be unmounted or an
// entry that cannot be removed.
func ClearPool(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return clearPool(dir)
}

// clearPool unmounts and removes every entry of dir.
func clearPool(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("workspace pool: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if err := detach(path); err != nil {
				return fmt.Errorf("workspace pool: %w", err)
			}
		}
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("workspace pool: %w", err)
		}
	}
	return nil
}

// detach lazily unmounts everything stacked on dir.
func detach(dir string) error {
	for range 16 {
		mounted, err := IsMountPoint(dir)
		if err != nil || !mounted {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", dir)
}

// Fill asks the pool to make spares up to its count (in the background, at once).
func (p *Pool) Fill() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Spares is how many spares are ready now.
func (p *Pool) Spares() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.spares)
}

// Err is why the pool last stopped short of its count, nil when it filled up.
func (p *Pool) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close stops filling, waits for a spare being made, and unmounts and removes the
// spares (every entry of the pool directory). The pool's Mount still works after Close, formatting each image itself.
func (p *Pool) Close() error {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.fillMu.Lock() // a Refill of the caller's own may still run
	defer p.fillMu.Unlock()
	p.useMu.Lock() // and a hand-over
	defer p.useMu.Unlock()
	p.mu.Lock()
	p.spares = nil
	p.mu.Unlock()
	return clearPool(p.cfg.Dir)
}

func (p *Pool) closed() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// run makes spares when woken, until Close.
func (p *Pool) run() {
	defer close(p.done)
	first := true
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		}
		if !first {
			// Let the job that took a spare start first.
			select {
			case <-p.stop:
				return
			case <-time.After(p.cfg.RefillDelay):
			}
		}
		first = false
		_ = p.Refill() // recorded in p.err and told to OnError

	}
}

// Refill makes spares now, in the caller's goroutine, until the pool holds Count,
// the disk floor is near (an error wrapping ErrDiskFloor), Close is called, or making
// one fails (an error wrapping ErrUnsupported when mkfs.ext4 or the loop mount
// failed). The background filling calls it too; calls are serialized.
func (p *Pool) Refill() error {
	p.fillMu.Lock()
	defer p.fillMu.Unlock()
	for !p.closed() {
		p.mu.Lock()
		short := len(p.spares) < p.cfg.Count
		n := p.seq
		if short {
			p.seq++
		}
		p.mu.Unlock()
		if !short {
			break
		}
		if err := p.roomFor(); err != nil {
			return p.setErr(err)
		}
		dir, err := p.makeSpare(n)
		if err != nil {
			return p.setErr(err)
		}
		p.mu.Lock()
		p.spares = append(p.spares, dir)
		p.mu.Unlock()
	}
	return p.setErr(nil)
}

// setErr records err as the pool's state, tells OnError of a new one, and returns
// it.
func (p *Pool) setErr(err error) error {
	p.mu.Lock()
	changed := err != nil && (p.err == nil || p.err.Error() != err.Error())
	p.err = err
	p.mu.Unlock()
	if changed && p.cfg.OnError != nil {
		p.cfg.OnError(err)
	}
	return err
}

// ErrDiskFloor: the pool made no spare because the disk is near its floor.
var ErrDiskFloor = errors.New("workspace pool: disk near its floor")

// roomFor says whether one more spare fits above the disk floor.
func (p *Pool) roomFor() error {
	if p.cfg.FloorBytes == 0 {
		return nil
	}
	var s unix.Statfs_t
	if err := unix.Statfs(p.cfg.Dir, &s); err != nil {
		return fmt.Errorf("workspace pool: statfs %s: %w", p.cfg.Dir, err)
	}
	free := s.Bavail * uint64(s.Bsize)
	if need := p.cfg.FloorBytes + Reserve(p.cfg.Bytes); free < need {
		return fmt.Errorf("%w: %d MiB free, a spare needs %d MiB above the floor of %d MiB",
			ErrDiskFloor, free>>20, Reserve(p.cfg.Bytes)>>20, p.cfg.FloorBytes>>20)
	}
	return nil
}

// makeSpare formats spare n's image and mounts it on its directory.
func (p *Pool) makeSpare(n int) (string, error) {
	dir := filepath.Join(p.cfg.Dir, spareName+strconv.Itoa(n))
	img := dir + imageExt
	if err := format(img, p.cfg.Bytes); err != nil {
		return "", fmt.Errorf("workspace pool: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		os.Remove(img)
		return "", fmt.Errorf("workspace pool: %w", err)
	}
	if err := loopMount(img, dir); err != nil {
		os.Remove(dir)
		os.Remove(img)
		return "", fmt.Errorf("workspace pool: %w", err)
	}
	return dir, nil
}

// take removes the oldest ready spare from the pool; "" when there is none.
func (p *Pool) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.spares) == 0 {
		return ""
	}
	dir := p.spares[0]
	p.spares = p.spares[1:]
	return dir
}

// Mount is workspacefs.Mount, taking a spare instead of formatting when it can: when
// image does not exist yet, dir is not a mount point, bytes is the pool's size and a
// spare is ready. The spare's image becomes image, and dir the root of its
// filesystem (mounted nosuid, nodev, noatime, as Mount does). Otherwise, or when
// handing the spare over fails before it reached dir, it formats and mounts as Mount
// does. The pool is refilled in the background after a spare is taken.
func (p *Pool) Mount(dir, image string, bytes int64) error {
	if !filepath.IsAbs(dir) || !filepath.IsAbs(image) || bytes != p.cfg.Bytes {
		return Mount(dir, image, bytes)
	}
	if _, err := os.Lstat(image); !errors.Is(err, os.ErrNotExist) {
		return Mount(dir, image, bytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if mounted, err := IsMountPoint(dir); err != nil || mounted {
		return err
	}
	p.useMu.RLock()
	spare := p.take()
	if spare == "" {
		p.useMu.RUnlock()
		return Mount(dir, image, bytes)
	}
	err := handOver(spare, dir, image)
	if derr := detach(spare); derr != nil && err == nil {
		err = derr
	}
	os.Remove(spare)
	p.useMu.RUnlock()
	p.Fill()
	if errors.Is(err, errNotHandedOver) {
		return Mount(dir, image, bytes)
	}
	return err
}

// errNotHandedOver: the spare never reached the job; the caller formats instead.
var errNotHandedOver = errors.New("spare not handed over")

// handOver gives the spare mounted on spare to a job: its image is renamed to image,
// and its root bound on dir with nosuid, nodev and noatime.
func handOver(spare, dir, image string) error {
	if err := os.Rename(spare+imageExt, image); err != nil {
		os.Remove(spare + imageExt)
		return fmt.Errorf("%w: %w", errNotHandedOver, err)
	}
	if err := unix.Mount(spare, dir, "", unix.MS_BIND, ""); err != nil {
		// The image is the job's now, unmounted: Mount mounts it as it is.
		return fmt.Errorf("%w: bind %s on %s: %w", errNotHandedOver, spare, dir, err)
	}
	if err := unix.Mount("", dir, "", remountCap, ""); err != nil {
		// Never leave a workspace without nosuid and nodev.
		if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil {
			return fmt.Errorf("remount %s nosuid,nodev: %w (then unmount: %w)", dir, err, uerr)
		}
		return fmt.Errorf("%w: remount %s nosuid,nodev: %w", errNotHandedOver, dir, err)
	}
	return nil
}
