package runtime_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

func TestCheckEgress(t *testing.T) {
	if err := runtime.CheckEgress("bridge"); !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("CheckEgress(bridge) = %v, want ErrInvalid", err)
	}
	for _, p := range []string{"", runtime.EgressNone} {
		if err := runtime.CheckEgress(p); err != nil {
			t.Errorf("CheckEgress(%q) = %v", p, err)
		}
	}
	s := runtime.ContainerSpec{ID: "hn-j-1", Job: "j", Attempt: 1, Image: "busybox", Workspace: "/tmp/ws", Egress: "host"}
	if err := s.Validate(); !errors.Is(err, runtime.ErrInvalid) || !strings.Contains(err.Error(), "egress") {
		t.Errorf("Validate with egress host = %v", err)
	}
}

// TestEgressPolicies runs the same probes under both policies. none: loopback only,
// nothing reachable. allow: a tap0 interface through user-mode NAT, yet the host's
// loopback services, the cloud metadata address and private ranges stay unreachable;
// DNS through the NAT works when the host's resolver does.
func TestEgressPolicies(t *testing.T) {
	addr := runtimetest.StartContainerd(t)
	if err := runtime.CheckEgress(runtime.EgressAllow); err != nil {
		t.Skip(err)
	}
	r := newRuntime(t, addr)
	img := runtimetest.TestImage(t, r)
	// A service on the host's loopback, as the worker's status socket or a local
	// RPC node would be.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("host-secret-service")) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	probe := runtimetest.DNSProbeName()
	hostDNSErr := errors.New("no name to resolve")
	if probe != "" {
		_, hostDNSErr = net.DefaultResolver.LookupHost(ctxT(t), probe)
	} else {
		probe = "example.invalid"
	}

	run := func(t *testing.T, policy, cmd string) (int, string) {
		t.Helper()
		job := runtimetest.UniqueJob(t)
		s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: img,
			Workspace: t.TempDir(), MemoryBytes: 64 << 20, Egress: policy}
		if err := r.Create(ctxT(t), s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Remove(context.Background(), s.ID) })
		logPath := filepath.Join(t.TempDir(), "op.log")
		exit, err := r.RunOp(ctxT(t), s.ID, 0, sh(cmd), logPath)
		if err != nil {
			t.Fatalf("RunOp: %v", err)
		}
		return exit.Code, readFile(t, logPath)
	}
	// busybox's nc, not its wget: Debian's static wget crashes before it connects.
	get := func(host, port string) string {
		return "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + host + " " + port + " 2>&1; "
	}
	p := strconv.Itoa(port)
	hostLoopback := get("10.0.2.2", p) + get("127.0.0.1", p)
	t.Run("none", func(t *testing.T) {
		_, out := run(t, runtime.EgressNone, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo ---; "+hostLoopback+get("169.254.169.254", "80")+"nslookup "+probe+" 10.0.2.3 2>&1; echo end")
		ifaces, rest, _ := strings.Cut(out, "---")
		if strings.Fields(ifaces)[0] != "lo" || len(strings.Fields(ifaces)) != 1 {
			t.Errorf("interfaces %q, want lo only", ifaces)
		}
		if strings.Contains(rest, "host-secret-service") || strings.Count(rest, "Network is unreachable") != 3 || strings.Contains(rest, "Non-authoritative") {
			t.Errorf("want nothing reached, 3 'Network is unreachable':\n%s", rest)
		}
	})
	t.Run("allow", func(t *testing.T) {
		_, out := run(t, runtime.EgressAllow, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo ---; "+hostLoopback+"echo ---; "+get("169.254.169.254", "80")+get("192.168.1.1", "80")+get("10.1.2.3", "80")+"echo ---; nslookup "+probe+" 10.0.2.3 2>&1; echo end")
		parts := strings.Split(out, "---")
		if len(parts) != 4 {
			t.Fatalf("output %q", out)
		}
		if got := strings.Join(strings.Fields(parts[0]), ","); got != "lo,tap0" {
			t.Errorf("interfaces %s, want lo,tap0", got)
		}
		if strings.Contains(parts[1], "host-secret-service") || strings.Count(parts[1], "can't connect") != 2 {
			t.Errorf("the host's loopback service: want 2 refusals:\n%s", parts[1])
		}
		if strings.Count(parts[2], "No route to host") != 3 {
			t.Errorf("metadata, LAN and private ranges: want 3 'No route to host', got:\n%s", parts[2])
		}
		if hostDNSErr == nil && !strings.Contains(parts[3], "Address") {
			t.Errorf("the host resolves %s, the container through the NAT does not:\n%s", probe, parts[3])
		}
	})
}
