package main

// A private containerd that a test can SIGKILL and start again on the same
// root, state and socket (runtimetest.StartContainerd gives no handle on its
// process). Its config mirrors runtimetest's.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// restartableContainerd is a containerd daemon run by the test.
type restartableContainerd struct {
	dir, sock, cfg string
	log            *os.File
	cmd            *exec.Cmd
	exited         chan struct{}
}

// startRestartableContainerd starts a private containerd under a fresh
// directory in /tmp (short enough for the socket path limit) and waits until
// it answers. On cleanup it kills and deletes every task and container, stops
// the daemon and removes the directory. It skips like runtimetest does.
func startRestartableContainerd(tb testing.TB) *restartableContainerd {
	tb.Helper()
	runtimetest.Skip(tb)
	dir, err := os.MkdirTemp("/tmp", "hnrctd-")
	if err != nil {
		tb.Fatal(err)
	}
	c := &restartableContainerd{dir: dir, sock: filepath.Join(dir, "c.sock"), cfg: filepath.Join(dir, "config.toml")}
	cfg := runtimetest.ConfigTOML(dir, c.sock)
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	if c.log, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.cleanup(tb) })
	if err := c.start(); err != nil {
		tb.Fatalf("containerd: %v\n%s", err, c.logTail())
	}
	return c
}

// start runs the daemon and waits until it answers Version.
func (c *restartableContainerd) start() error {
	c.cmd = exec.Command("containerd", "--config", c.cfg)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	// Its own process group: a signal meant for the test does not reach it,
	// and the shims it starts are not its children once daemonized.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	c.exited = exited
	go func(cmd *exec.Cmd) {
		_ = cmd.Wait()
		close(exited)
	}(c.cmd)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cl, err := client.New(c.sock, client.WithTimeout(time.Second))
		if err == nil {
			_, err = cl.Version(ctx)
			cl.Close()
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("containerd exited at start")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd at %s does not answer after 60s: %v", c.sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 SIGKILLs the daemon's process only (its shims, and the tasks they
// hold, keep running) and waits until it is gone.
func (c *restartableContainerd) kill9() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

func (c *restartableContainerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	return lastLines(string(b), 40)
}

func (c *restartableContainerd) cleanup(tb testing.TB) {
	if c.cmd != nil {
		select {
		case <-c.exited:
			// Killed and not restarted: start it once more to reap the shims.
			if err := c.start(); err != nil {
				tb.Logf("containerd restart for cleanup: %v", err)
			}
		default:
		}
		runtimetest.Reap(tb, c.sock)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	c.log.Close()
	if tb.Failed() {
		tb.Logf("containerd log (%s):\n%s", c.sock, c.logTail())
	}
	runtimetest.UnmountUnder(c.dir)
	if err := os.RemoveAll(c.dir); err != nil {
		tb.Errorf("remove containerd dir: %v", err)
	}
}
