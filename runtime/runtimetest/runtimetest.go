// Package runtimetest starts a private containerd daemon and provides the busybox test
// image, for integration tests of package runtime and of the packages that use it.
//
// Every helper skips the test (t.Skip, with the reason) under -short, when not running
// as root, or when containerd, runc or containerd-shim-runc-v2 is missing.
//
// A package whose tests run operations must let its test binary act as the shim's log
// writer: func TestMain(m *testing.M) { runtimetest.Main(m) }.
//
// Daemons started here are isolated from the host's (own root, state and socket), but
// they share the host's runc state (/run/containerd/runc/<namespace>) and cgroup tree
// (/<namespace>/<container>): tests running at the same time must not use the same
// container ID in the same namespace. Derive job names from the test name plus a
// random suffix (UniqueJob).
package runtimetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/hypernode-sol/worker/runtime"
)

// ImageRef is the name of the test image built by testdata/image/build.sh.
const ImageRef = "hypernode.local/test:latest"

// startTimeout bounds how long StartContainerd waits for the daemon to answer.
const startTimeout = 60 * time.Second

// Skip skips t unless the real containerd can run here.
func Skip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real containerd (skipped with -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test: containerd needs root (run go test as root)")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("integration test: %s not found in PATH (Debian: apt-get install containerd runc)", bin)
		}
	}
}

// StartContainerd starts a private containerd (its config, root, state and socket in a
// fresh directory under /tmp, short enough for the 108-byte socket limit), waits until
// it answers, and returns its socket path. On cleanup it SIGKILLs and deletes every
// task and container it holds, stops the daemon and removes the directory.
func StartContainerd(t testing.TB) (address string) {
	t.Helper()
	Skip(t)
	dir, err := os.MkdirTemp("/tmp", "hnctd-")
	if err != nil {
		t.Fatalf("containerd dir: %v", err)
	}
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(ConfigTOML(dir, sock)), 0o600); err != nil {
		t.Fatalf("containerd config: %v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatalf("containerd log: %v", err)
	}
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		Reap(t, sock)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			t.Logf("containerd log (%s):\n%s", sock, tail(filepath.Join(dir, "containerd.log"), 40))
		}
		UnmountUnder(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove containerd dir: %v", err)
		}
	}
	t.Cleanup(stop)

	if err := waitAnswers(sock, exited); err != nil {
		stop()
		t.Fatalf("containerd at %s: %v\n%s", sock, err, tail(filepath.Join(dir, "containerd.log"), 40))
	}
	return sock
}

// ConfigTOML is a minimal containerd 1.6+ config (version 2): cri off (slow to start,
// unused), the opt plugin kept out of /opt, no debug socket.
func ConfigTOML(dir, sock string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
}

// waitAnswers blocks until containerd answers Version on sock, it exits, or
// startTimeout passes. gRPC's wait-for-ready does the retrying.
func waitAnswers(sock string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := client.New(sock,
		client.WithTimeout(startTimeout),
		client.WithExtraDialOpts([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})}),
		client.WithCallOpts([]grpc.CallOption{grpc.WaitForReady(true)}))
	if err != nil {
		return err
	}
	defer c.Close()
	answered := make(chan error, 1)
	go func() {
		_, err := c.Version(ctx)
		answered <- err
	}()
	select {
	case err := <-answered:
		return err
	case err := <-exited:
		cancel()
		<-answered
		return fmt.Errorf("containerd exited at start: %v", err)
	}
}

// Reap SIGKILLs and deletes every task and container of every namespace of the
// containerd at sock, so that no shim outlives the daemon.
func Reap(t testing.TB, sock string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(sock, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Logf("reap %s: %v", sock, err)
		return
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		t.Logf("reap %s: list namespaces: %v", sock, err)
		return
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		cs, err := c.Containers(nctx)
		if err != nil {
			t.Logf("reap %s/%s: %v", sock, ns, err)
			continue
		}
		for _, ctr := range cs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				if exitC, err := task.Wait(nctx); err == nil {
					if err := task.Kill(nctx, syscall.SIGKILL, client.WithKillAll); err == nil {
						<-exitC
					}
				}
				if _, err := task.Delete(nctx); err != nil {
					t.Logf("reap %s: delete task: %v", ctr.ID(), err)
				}
			}
			if err := ctr.Delete(nctx, client.WithSnapshotCleanup); err != nil {
				t.Logf("reap %s: delete container: %v", ctr.ID(), err)
			}
		}
	}
}

// UnmountUnder lazily unmounts whatever is still mounted below dir (a snapshot of a
// task that could not be deleted), deepest first, so RemoveAll can proceed.
func UnmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// NewRuntime starts a private containerd (StartContainerd) and returns a Runtime
// connected to it in namespace runtime.DefaultNamespace, closed on cleanup.
func NewRuntime(t testing.TB) *runtime.Runtime {
	t.Helper()
	addr := StartContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := runtime.New(ctx, runtime.Config{Address: addr})
	if err != nil {
		t.Fatalf("runtime.New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// UniqueJob returns a job name unique to this test run, usable in ContainerID:
// "t" + 12 random hex digits.
func UniqueJob(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random: %v", err)
	}
	return "t" + hex.EncodeToString(b[:])
}

// Main is a TestMain for packages whose tests run containers: the test binary is the
// shim's log writer by default (runtime.Config.Logger), so it must answer as one.
//
//	func TestMain(m *testing.M) { runtimetest.Main(m) }
func Main(m *testing.M) {
	runtime.RunLoggerIfInvoked()
	os.Exit(m.Run())
}

var imageMu sync.Mutex

// NonRootImageRef is the test image whose config runs processes as 65534:65534.
const NonRootImageRef = "hypernode.local/test-nobody:latest"

// TestImage builds the test image archive with testdata/image/build.sh (once per
// build.sh content and busybox binary, cached under os.TempDir()), imports it into r and
// returns its ref (ImageRef). Its processes run as root.
func TestImage(t testing.TB, r *runtime.Runtime) string {
	t.Helper()
	return importImage(t, r, ImageRef, "")
}

// TestImageNonRoot is TestImage for NonRootImageRef, whose config sets User
// 65534:65534.
func TestImageNonRoot(t testing.TB, r *runtime.Runtime) string {
	t.Helper()
	return importImage(t, r, NonRootImageRef, "65534:65534")
}

func importImage(t testing.TB, r *runtime.Runtime, name, user string) string {
	t.Helper()
	path, err := ImageArchive(name, user)
	if err != nil {
		t.Fatalf("test image: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names, err := r.ImportArchive(ctx, path)
	if err != nil {
		t.Fatalf("import test image: %v", err)
	}
	if !slices.Contains(names, name) {
		t.Fatalf("import test image: got names %v, want %s", names, name)
	}
	return name
}

// ImageArchive returns the path of the test image archive called name whose config
// User is user ("" for none), building it when the cache has none for the current
// build.sh and busybox.
func ImageArchive(name, user string) (string, error) {
	imageMu.Lock()
	defer imageMu.Unlock()
	script, err := buildScript()
	if err != nil {
		return "", err
	}
	src, err := os.ReadFile(script)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(src)
	fmt.Fprintf(h, "\x00%s\x00%s", name, user)
	if fi, err := os.Stat("/bin/busybox"); err == nil {
		fmt.Fprintf(h, "\x00%d\x00%d", fi.Size(), fi.ModTime().UnixNano())
	}
	out := filepath.Join(os.TempDir(), "hypernode-test-image-"+hex.EncodeToString(h.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	// build.sh writes to a temporary file and renames it, so concurrent test processes
	// at worst build twice.
	cmd := exec.Command("bash", script, out)
	cmd.Env = append(os.Environ(), "IMAGE_NAME="+name, "IMAGE_USER="+user)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
	}
	return out, nil
}

// buildScript finds testdata/image/build.sh from this source file's location, or by
// walking up from the working directory to the module root.
func buildScript() (string, error) {
	const rel = "testdata/image/build.sh"
	if _, file, _, ok := goruntime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("module root %s has no %s: %w", dir, rel, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the module root (go.mod) holding " + rel)
		}
		dir = parent
	}
}

// DNSProbeName is a name this host can resolve, for checking DNS through the
// egress NAT: $HYPERNODE_DNS_PROBE, else the host of the machine's first APT
// source (a machine that installs packages resolves it); "" when neither.
func DNSProbeName() string { return dnsProbeName() }

var dnsProbeName = sync.OnceValue(func() string {
	if v := os.Getenv("HYPERNODE_DNS_PROBE"); v != "" {
		return v
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			for _, field := range strings.Fields(line) {
				if u, err := url.Parse(field); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" &&
					!strings.HasPrefix(strings.TrimSpace(line), "#") {
					return u.Hostname()
				}
			}
		}
	}
	return ""
})
