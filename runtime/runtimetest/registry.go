package runtimetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// StartRegistry starts Debian's docker-registry (distribution 2.x) on a free
// 127.0.0.1 port with its storage under a temporary directory, waits until /v2/
// answers, stops it on cleanup, and returns its host:port. It skips the test under
// -short or when docker-registry is not installed (apt-get install docker-registry).
func StartRegistry(t testing.TB) (host string) {
	t.Helper()
	return startRegistry(t, "", "")
}

// StartRegistryAuth is StartRegistry for a registry that demands HTTP basic
// authentication (distribution's auth.htpasswd, with a bcrypt htpasswd file holding
// user and password): pulls and pushes without them get 401.
func StartRegistryAuth(t testing.TB, user, password string) (host string) {
	t.Helper()
	return startRegistry(t, user, password)
}

func startRegistry(t testing.TB, user, password string) (host string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a registry (skipped with -short)")
	}
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("integration test: docker-registry not found (Debian: apt-get install docker-registry)")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host = l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "config.yml")
	auth := ""
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: hypernode-test\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
%s`, filepath.Join(dir, "data"), host, auth)), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			t.Logf("docker-registry log:\n%s", tail(logf.Name(), 20))
		}
	})

	// Readiness: poll /v2/ (the registry has no other signal) until the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || (user != "" && resp.StatusCode == http.StatusUnauthorized) {
				return host
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("docker-registry exited at start: %v\n%s", err, tail(logf.Name(), 20))
		case <-ctx.Done():
			t.Fatalf("docker-registry on %s did not answer within 30s\n%s", host, tail(logf.Name(), 20))
		case <-tick.C:
		}
	}
}
