package runtime_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypernode-sol/worker/runtime"
)

// generate builds the OCI spec containerd would store for s, without a daemon.
func generate(t *testing.T, s runtime.ContainerSpec) *oci.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), runtime.DefaultNamespace)
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: s.ID}, runtime.SpecOpts(s)...)
	if err != nil {
		t.Fatalf("GenerateSpec: %v", err)
	}
	return spec
}

func mountAt(spec *oci.Spec, dest string) (specs.Mount, bool) {
	for _, m := range spec.Mounts {
		if m.Destination == dest {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func TestSpecOptsHardening(t *testing.T) {
	s := runtime.ContainerSpec{
		ID:          runtime.ContainerID("job1", 2),
		Image:       "hypernode.local/test:latest",
		Workspace:   "/var/lib/hypernode/jobs/job1/2/workspace",
		Env:         []string{"HF_TOKEN=hf_secret", "HYPERNODE_INPUT=/workspace/input.json"},
		MemoryBytes: 256 << 20,
		PidsLimit:   77,
		TmpBytes:    32 << 20,
		ShmBytes:    8 << 20,
	}
	spec := generate(t, s)
	ctx := namespaces.WithNamespace(context.Background(), runtime.DefaultNamespace)
	plain, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: s.ID})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("no new privileges", func(t *testing.T) {
		if !spec.Process.NoNewPrivileges {
			t.Error("NoNewPrivileges is false")
		}
	})
	t.Run("no capabilities", func(t *testing.T) {
		c := spec.Process.Capabilities
		if c == nil {
			t.Fatal("Capabilities is nil: runc would keep its defaults")
		}
		for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective,
			"permitted": c.Permitted, "inheritable": c.Inheritable, "ambient": c.Ambient} {
			if len(set) != 0 {
				t.Errorf("%s capabilities = %v, want none", name, set)
			}
		}
	})
	t.Run("seccomp", func(t *testing.T) {
		if spec.Linux.Seccomp == nil || spec.Linux.Seccomp.DefaultAction == specs.ActAllow {
			t.Errorf("seccomp = %+v, want containerd's default profile (deny by default)", spec.Linux.Seccomp)
		}
	})
	t.Run("read-only root", func(t *testing.T) {
		if spec.Root == nil || !spec.Root.Readonly {
			t.Errorf("Root = %+v, want Readonly", spec.Root)
		}
	})
	t.Run("workspace is the only host path", func(t *testing.T) {
		m, ok := mountAt(spec, "/workspace")
		if !ok {
			t.Fatal("no /workspace mount")
		}
		if m.Type != "bind" || m.Source != s.Workspace {
			t.Errorf("/workspace = %s from %s, want bind from %s", m.Type, m.Source, s.Workspace)
		}
		for _, o := range []string{"bind", "rw", "nosuid", "nodev"} {
			if !slices.Contains(m.Options, o) {
				t.Errorf("/workspace options %v lack %s", m.Options, o)
			}
		}
		if slices.Contains(m.Options, "rbind") {
			t.Errorf("/workspace options %v: rbind would carry the host's submounts", m.Options)
		}
		for _, m := range spec.Mounts {
			if m.Destination == "/workspace" {
				continue
			}
			if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") ||
				strings.HasPrefix(m.Source, "/") {
				t.Errorf("mount %s from host path %s (%s %v)", m.Destination, m.Source, m.Type, m.Options)
			}
		}
	})
	t.Run("tmp is a small tmpfs", func(t *testing.T) {
		m, ok := mountAt(spec, "/tmp")
		if !ok {
			t.Fatal("no /tmp mount")
		}
		if m.Type != "tmpfs" {
			t.Errorf("/tmp type %s, want tmpfs", m.Type)
		}
		for _, o := range []string{"nosuid", "nodev", "size=33554432"} {
			if !slices.Contains(m.Options, o) {
				t.Errorf("/tmp options %v lack %s", m.Options, o)
			}
		}
	})
	t.Run("shm size", func(t *testing.T) {
		m, ok := mountAt(spec, "/dev/shm")
		if !ok || !slices.Contains(m.Options, "size=8192k") {
			t.Errorf("/dev/shm = %+v, want size=8192k", m)
		}
	})
	t.Run("memory and pids limits", func(t *testing.T) {
		r := spec.Linux.Resources
		if r == nil || r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != s.MemoryBytes {
			t.Errorf("memory limit = %+v, want %d", r.Memory, s.MemoryBytes)
		}
		if r == nil || r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != s.PidsLimit {
			t.Errorf("pids limit = %+v, want %d", r.Pids, s.PidsLimit)
		}
	})
	t.Run("own namespaces, network included", func(t *testing.T) {
		for _, want := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.PIDNamespace,
			specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace} {
			i := slices.IndexFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == want })
			if i < 0 {
				t.Errorf("no %s namespace: the host's would be shared", want)
			} else if p := spec.Linux.Namespaces[i].Path; p != "" {
				t.Errorf("%s namespace joins %s, want a new one", want, p)
			}
		}
		if spec.Hostname != runtime.Hostname {
			t.Errorf("hostname %q, want %q", spec.Hostname, runtime.Hostname)
		}
	})
	t.Run("masked and read-only paths as containerd's defaults", func(t *testing.T) {
		if !slices.Equal(spec.Linux.MaskedPaths, plain.Linux.MaskedPaths) || len(spec.Linux.MaskedPaths) == 0 {
			t.Errorf("masked paths %v, want %v", spec.Linux.MaskedPaths, plain.Linux.MaskedPaths)
		}
		if !slices.Equal(spec.Linux.ReadonlyPaths, plain.Linux.ReadonlyPaths) || !slices.Contains(spec.Linux.ReadonlyPaths, "/proc/sys") {
			t.Errorf("read-only paths %v, want %v", spec.Linux.ReadonlyPaths, plain.Linux.ReadonlyPaths)
		}
	})
	t.Run("env", func(t *testing.T) {
		for _, kv := range s.Env {
			if !slices.Contains(spec.Process.Env, kv) {
				t.Errorf("env lacks %s", strings.SplitN(kv, "=", 2)[0])
			}
		}
	})
	t.Run("devices", func(t *testing.T) {
		if len(spec.Linux.Devices) != 0 {
			t.Errorf("devices %v, want none beyond runc's defaults", spec.Linux.Devices)
		}
		d := spec.Linux.Resources.Devices
		if len(d) == 0 || d[0].Allow || d[0].Access != "rwm" {
			t.Errorf("device cgroup %+v, want deny-all first", d)
		}
	})
}

func TestSpecOptsDefaults(t *testing.T) {
	spec := generate(t, runtime.ContainerSpec{ID: "hn-j-1", Workspace: "/w"})
	if got := *spec.Linux.Resources.Memory.Limit; got != runtime.DefaultMemoryBytes {
		t.Errorf("memory limit %d, want default %d", got, runtime.DefaultMemoryBytes)
	}
	if got := *spec.Linux.Resources.Pids.Limit; got != runtime.DefaultPidsLimit {
		t.Errorf("pids limit %d, want default %d", got, runtime.DefaultPidsLimit)
	}
	m, _ := mountAt(spec, "/tmp")
	if !slices.Contains(m.Options, "size=67108864") {
		t.Errorf("/tmp options %v, want the default size", m.Options)
	}
}

func TestContainerID(t *testing.T) {
	tests := []struct {
		job     string
		attempt int
		want    string
	}{
		{"4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T", 1, "hn-4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T-1"},
		{"job", 12, "hn-job-12"},
	}
	for _, tt := range tests {
		if got := runtime.ContainerID(tt.job, tt.attempt); got != tt.want {
			t.Errorf("ContainerID(%q, %d) = %q, want %q", tt.job, tt.attempt, got, tt.want)
		}
		s := runtime.ContainerSpec{ID: runtime.ContainerID(tt.job, tt.attempt), Job: tt.job, Attempt: tt.attempt,
			Image: "busybox", Workspace: "/w"}
		if err := s.Validate(); err != nil {
			t.Errorf("a Solana-pubkey-sized ID must be valid: %v", err)
		}
	}
}

func TestContainerSpecValidate(t *testing.T) {
	good := runtime.ContainerSpec{ID: "hn-job-1", Job: "job", Attempt: 1, Image: "hypernode.local/test:latest",
		Workspace: "/var/lib/hn/w", Env: []string{"A=1", "_B2=x=y", "EMPTY="}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	const secret = "s3cr3t-value"
	tests := []struct {
		name   string
		mutate func(*runtime.ContainerSpec)
		want   string // in the error
	}{
		{"empty ID", func(s *runtime.ContainerSpec) { s.ID = "" }, "ID"},
		{"ID with slash", func(s *runtime.ContainerSpec) { s.ID = "hn-a/b-1"; s.Job = "" }, "ID"},
		{"ID not from job", func(s *runtime.ContainerSpec) { s.ID = "hn-other-1" }, "ContainerID"},
		{"ID too long", func(s *runtime.ContainerSpec) { s.Job = ""; s.ID = strings.Repeat("a", 77) }, "ID"},
		{"no image", func(s *runtime.ContainerSpec) { s.Image = "" }, "image"},
		{"bad image", func(s *runtime.ContainerSpec) { s.Image = "UPPER/Case::x" }, "image"},
		{"relative workspace", func(s *runtime.ContainerSpec) { s.Workspace = "w" }, "workspace"},
		{"root workspace", func(s *runtime.ContainerSpec) { s.Workspace = "/" }, "workspace"},
		{"env without =", func(s *runtime.ContainerSpec) { s.Env = []string{secret} }, "env[0]"},
		{"env bad key", func(s *runtime.ContainerSpec) { s.Env = []string{"A=1", "1X=" + secret} }, "env[1]"},
		{"env empty key", func(s *runtime.ContainerSpec) { s.Env = []string{"=" + secret} }, "env[0]"},
		{"negative memory", func(s *runtime.ContainerSpec) { s.MemoryBytes = -1 }, "memory"},
		{"tiny memory", func(s *runtime.ContainerSpec) { s.MemoryBytes = 1 << 20 }, "memory"},
		{"negative pids", func(s *runtime.ContainerSpec) { s.PidsLimit = -5 }, "pids"},
		{"negative tmp", func(s *runtime.ContainerSpec) { s.TmpBytes = -5 }, "tmp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			s.Env = slices.Clone(good.Env)
			tt.mutate(&s)
			err := s.Validate()
			if !errors.Is(err, runtime.ErrInvalid) {
				t.Fatalf("Validate() = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks an env value", err)
			}
		})
	}
}
