// Package workspacefs gives a job's workspace a hard size cap: an ext4 filesystem in a
// sparse file, loop-mounted (nosuid, nodev) on the workspace directory. A job that
// fills it gets ENOSPC; the host's disk is never filled past the cap, whatever the
// job writes and however fast.
//
// It uses mkfs.ext4 (e2fsprogs) and mount/umount (util-linux) and needs root and a
// free loop device; Check says whether this machine has them.
package workspacefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MinBytes is the smallest cap Mount accepts: ext4 needs room for its own metadata.
const MinBytes = 8 << 20

// FullMargin: a workspace with less than this many bytes free is full (Full): a
// writer in chunks of up to 1 MiB stops with ENOSPC with less than that left.
const FullMargin = 1 << 20

// ErrUnsupported: this machine cannot loop-mount a filesystem image (no mkfs.ext4,
// no loop device, not root).
var ErrUnsupported = errors.New("workspace filesystem unsupported")

// Check says whether Mount can work here; the error wraps ErrUnsupported and names
// what is missing.
func Check() error {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return fmt.Errorf("%w: mkfs.ext4 not found (install e2fsprogs)", ErrUnsupported)
	}
	if _, err := exec.LookPath("mount"); err != nil {
		return fmt.Errorf("%w: mount not found", ErrUnsupported)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("%w: no /dev/loop-control", ErrUnsupported)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnsupported)
	}
	return nil
}

// Mount makes dir (created 0755 when absent) the root of an ext4 filesystem of size
// bytes held in the sparse file image (created 0600 and formatted when absent; an
// existing image is mounted as it is, so a workspace survives a host reboot). A dir
// that is already a mount point is left as it is. Errors wrap ErrUnsupported when the
// loop mount itself fails (no free loop device, say), so a caller may fall back to a
// soft limit.
func Mount(dir, image string, bytes int64) error {
	if !filepath.IsAbs(dir) || !filepath.IsAbs(image) {
		return fmt.Errorf("workspace %q and image %q must be absolute paths", dir, image)
	}
	if bytes < MinBytes {
		return fmt.Errorf("workspace cap %d bytes is below %d", bytes, MinBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if mounted, err := IsMountPoint(dir); err != nil || mounted {
		return err
	}
	if _, err := os.Stat(image); errors.Is(err, os.ErrNotExist) {
		if err := format(image, bytes); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return loopMount(image, dir)
}

// loopMount mounts the ext4 filesystem in image on dir through a loop device that is
// freed when the last mount of it goes (mount's autoclear), nosuid, nodev, noatime.
func loopMount(image, dir string) error {
	out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", image, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: mount %s on %s: %v: %s", ErrUnsupported, image, dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// format writes a sparse file of size bytes and an ext4 filesystem in it with no
// blocks reserved for root, so the whole size is the job's. The inode tables and the
// journal are not zeroed (lazy_itable_init, lazy_journal_init): the file is new and
// sparse, so they read as zeros already, and the image takes a few MiB of disk
// instead of the journal's 64 MiB.
func format(image string, bytes int64) error {
	tmp := image + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(bytes)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: mkfs.ext4 %s: %v: %s", ErrUnsupported, tmp, err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, image)
}

// Unmount unmounts dir when it is a mount point (lazily: a process still inside,
// such as a container being killed, does not block it; the loop device is freed when
// the last user goes). dir not being a mount point, or not existing, is not an error.
func Unmount(dir string) error {
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
	return nil
}

// IsMountPoint says whether dir is the root of a mount (its device differs from its
// parent's, or it is / of its filesystem).
func IsMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, fmt.Errorf("%s: %w", dir, os.ErrNotExist)
		}
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Lstat(filepath.Dir(filepath.Clean(dir)), &parent); err != nil {
		return false, fmt.Errorf("stat parent of %s: %w", dir, err)
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino, nil
}

// Usage returns the bytes used and the bytes the filesystem holding dir offers in all
// (used + available to the job).
func Usage(dir string) (used, size int64, err error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(s.Bsize)
	used = (int64(s.Blocks) - int64(s.Bfree)) * bs
	return used, used + int64(s.Bavail)*bs, nil
}

// Full says whether the mounted workspace dir has less than FullMargin bytes left.
// It is false (with no error) when dir is not a mount point: only a capped
// workspace can be full.
func Full(dir string) (bool, error) {
	mounted, err := IsMountPoint(dir)
	if err != nil || !mounted {
		return false, err
	}
	used, size, err := Usage(dir)
	if err != nil {
		return false, err
	}
	return size-used < FullMargin, nil
}
