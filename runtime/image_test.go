package runtime_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/rs/zerolog"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// push tags the test image as ref and pushes it with ctr (extra: e.g. --user).
func (e *env) push(t *testing.T, ref string, extra ...string) {
	t.Helper()
	ctx := ctxT(t)
	for _, args := range [][]string{
		{"images", "tag", "--force", e.img, ref},
		append(append([]string{"images", "push", "--plain-http"}, extra...), ref),
	} {
		cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", e.addr, "--namespace", e.r.Namespace()}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ctr %v: %v\n%s", args[:2], err, out)
		}
	}
}

// freshRuntime is a Runtime on the shared daemon in a namespace of its own (no
// images), logging into the returned buffer.
func (e *env) freshRuntime(t *testing.T, cfg runtime.Config) (*runtime.Runtime, context.Context, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	ctx := zerolog.New(logs).WithContext(ctxT(t))
	cfg.Address = e.addr
	cfg.Namespace = "hn-img-" + runtimetest.UniqueJob(t)
	r, err := runtime.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, ctx, logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testPullProgress pulls from a plain-HTTP registry on 127.0.0.1 and checks the
// progress reports: the last says done, every layer present, every byte fetched.
func (e *env) testPullProgress(t *testing.T) {
	host := runtimetest.StartRegistry(t)
	ref := host + "/hypernode/progress:1"
	e.push(t, ref)
	var mu sync.Mutex
	var reports []runtime.PullProgress
	r, ctx, logs := e.freshRuntime(t, runtime.Config{Images: runtime.ImageConfig{
		ProgressInterval: time.Millisecond,
		Progress: func(p runtime.PullProgress) {
			mu.Lock()
			reports = append(reports, p)
			mu.Unlock()
		}}})
	if err := r.EnsureImage(ctx, ref); err != nil {
		t.Fatalf("EnsureImage(%s): %v", ref, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) == 0 {
		t.Fatal("no progress report")
	}
	last := reports[len(reports)-1]
	if !last.Done || last.Image != ref || last.Layers < 1 || last.LayersDone != last.Layers ||
		last.Total <= 0 || last.Bytes != last.Total || last.Fetched != last.Total || last.Rate <= 0 {
		t.Errorf("last report %+v; want done, all layers and bytes fetched", last)
	}
	for i, p := range reports[:len(reports)-1] {
		if p.Done || p.Bytes > p.Total || p.LayersDone > p.Layers {
			t.Errorf("report %d inconsistent: %+v", i, p)
		}
	}
	if s := last.String(); !strings.Contains(s, fmt.Sprintf("layers %d/%d", last.Layers, last.Layers)) || !strings.Contains(s, "MiB/s") {
		t.Errorf("String() = %q", s)
	}
	if !strings.Contains(logs.String(), `"message":"image pulled"`) || !strings.Contains(logs.String(), `"fetched_bytes":`) {
		t.Errorf("log lacks the pulled line with figures:\n%s", logs)
	}
	// The image is recorded as used.
	imgs, err := r.Images(ctx)
	if err != nil || len(imgs) != 1 || time.Since(imgs[0].LastUsed) > time.Minute || imgs[0].Bytes <= 0 {
		t.Errorf("Images = %+v, %v; want the pulled image, just used", imgs, err)
	}

	// The terminal renderer redraws one line and ends it when done.
	var buf bytes.Buffer
	draw := runtime.TerminalProgress(&buf)
	draw(runtime.PullProgress{Image: "x", Layers: 2, LayersDone: 1, Bytes: 1 << 20, Total: 3 << 20, Rate: 1 << 20})
	draw(runtime.PullProgress{Image: "x", Layers: 2, LayersDone: 2, Bytes: 3 << 20, Total: 3 << 20, Done: true})
	if want := "\r\x1b[K⬇ x: layers 1/2, 1.0/3.0 MiB, 1.0 MiB/s\r\x1b[K⬇ x: layers 2/2, 3.0/3.0 MiB, 0.0 MiB/s\n"; buf.String() != want {
		t.Errorf("terminal line %q, want %q", buf.String(), want)
	}
}

// testPullCredentials: a registry with htpasswd auth refuses a pull without or with
// wrong credentials (ErrUnauthorized) and serves it with the credentials of a Docker
// config.json; the password appears in no log line and no error.
func (e *env) testPullCredentials(t *testing.T) {
	const user, password = "hnuser", "s3cret-Registry-pw-91c"
	host := runtimetest.StartRegistryAuth(t, user, password)
	ref := host + "/private/test:1"
	e.push(t, ref, "--user", user+":"+password)

	check := func(what string, texts ...string) {
		for _, s := range texts {
			if strings.Contains(s, password) || strings.Contains(s, base64.StdEncoding.EncodeToString([]byte(user+":"+password))) {
				t.Errorf("%s reveals the password: %s", what, s)
			}
		}
	}
	t.Run("no credentials", func(t *testing.T) {
		r, ctx, logs := e.freshRuntime(t, runtime.Config{})
		err := r.EnsureImage(ctx, ref)
		if !errors.Is(err, runtime.ErrUnauthorized) {
			t.Errorf("EnsureImage without credentials = %v; want ErrUnauthorized", err)
		}
		check("log", logs.String())
	})
	t.Run("wrong password", func(t *testing.T) {
		r, ctx, logs := e.freshRuntime(t, runtime.Config{Images: runtime.ImageConfig{
			Auth: runtime.RegistryAuth{host: {Username: user, Secret: password + "x"}}}})
		err := r.EnsureImage(ctx, ref)
		if !errors.Is(err, runtime.ErrUnauthorized) {
			t.Errorf("EnsureImage with a wrong password = %v; want ErrUnauthorized", err)
		}
		if err != nil {
			check("error", err.Error())
		}
		check("log", logs.String())
	})
	t.Run("docker config.json", func(t *testing.T) {
		cfgPath := filepath.Join(t.TempDir(), "config.json")
		doc := fmt.Sprintf(`{"auths":{"http://%s":{"auth":%q},"other.example":{"username":"u","password":"p"}}}`,
			host, base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
		if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		auth, err := runtime.LoadDockerConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		r, ctx, logs := e.freshRuntime(t, runtime.Config{Images: runtime.ImageConfig{Auth: auth}})
		if err := r.EnsureImage(ctx, ref); err != nil {
			check("error", err.Error())
			t.Fatalf("EnsureImage with credentials: %v", err)
		}
		check("log", logs.String(), fmt.Sprint(auth), fmt.Sprintf("%+v %#v", auth, auth))
	})
}

// testPrune: over budget, the least recently used images go first; one a container
// uses and one named to keep stay, whatever their age.
func (e *env) testPrune(t *testing.T) {
	r, ctx, _ := e.freshRuntime(t, runtime.Config{Images: runtime.ImageConfig{PruneGrace: -1}})
	base := runtimetest.TestImage(t, r)
	c, cctx := e.rawClient(t)
	cctx = namespaces.WithNamespace(cctx, r.Namespace())
	img, err := c.ImageService().Get(cctx, base)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"hypernode.local/a:1", "hypernode.local/b:1", "hypernode.local/c:1", "hypernode.local/d:1", "hypernode.local/e:1"}
	now := time.Now()
	for i, n := range names {
		if _, err := c.ImageService().Create(cctx, images.Image{Name: n, Target: img.Target}); err != nil {
			t.Fatal(err)
		}
		if err := r.SetImageLastUsed(ctx, n, now.Add(-time.Duration(10-i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.SetImageLastUsed(ctx, base, now); err != nil {
		t.Fatal(err)
	}
	// b is used by a container; c is kept by name.
	job := runtimetest.UniqueJob(t)
	s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: names[1], Workspace: t.TempDir()}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), s.ID) })

	list, err := r.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 6 || list[0].Name != names[0] || list[5].Name != base || !list[1].InUse || list[0].InUse {
		t.Fatalf("Images = %+v; want 6, least recently used first, b in use", list)
	}
	each := list[0].Bytes
	rep, err := r.Prune(ctx, 3*each, names[2])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{names[0], names[3], names[4]}
	if strings.Join(rep.Removed, " ") != strings.Join(want, " ") || rep.BytesBefore != 6*each || rep.BytesAfter != 3*each || rep.OverBudgetBy != 0 {
		t.Errorf("Prune = %+v; want %v removed, 6→3 images of %d bytes", rep, want, each)
	}
	left, err := r.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range left {
		got = append(got, u.Name)
	}
	if strings.Join(got, " ") != strings.Join([]string{names[1], names[2], base}, " ") {
		t.Errorf("left %v", got)
	}
	// Nothing more can go: in use, kept, and the rest within budget 0 → over budget.
	rep, err = r.Prune(ctx, 0, names[2], base)
	if err != nil || len(rep.Removed) != 0 || rep.OverBudgetBy != 3*each {
		t.Errorf("second Prune = %+v, %v; want nothing removed, over budget by 3 images", rep, err)
	}
	// The running job's container still starts from its image.
	if exit, err := r.RunOp(ctx, s.ID, 0, sh("true"), filepath.Join(t.TempDir(), "op.log")); err != nil || exit.Code != 0 {
		t.Errorf("RunOp after prune = %+v, %v", exit, err)
	}
}
