package runtime_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// BenchmarkContainerStart compares one hardened operation through this package
// (Create + RunOp of `true` + Remove) with `ctr run --rm` of the same image and command
// on the same daemon, in the same run. Metrics: ns/op (ours, whole cycle), create-ns/op,
// run-ns/op, remove-ns/op, and ctr-ns/op.
func BenchmarkContainerStart(b *testing.B) {
	addr := runtimetest.StartContainerd(b)
	ctx := context.Background()
	r, err := runtime.New(ctx, runtime.Config{Address: addr})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	img := runtimetest.TestImage(b, r)
	ctrBin, err := exec.LookPath("ctr")
	if err != nil {
		b.Skip("ctr not found: nothing to compare with")
	}
	ws, logDir := b.TempDir(), b.TempDir()
	op := runtime.Op{Argv: []string{"true"}}
	var create, run, remove, ctr time.Duration

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		job := runtimetest.UniqueJob(b)
		s := runtime.ContainerSpec{ID: runtime.ContainerID(job, 1), Job: job, Attempt: 1, Image: img,
			Workspace: ws, MemoryBytes: 256 << 20}
		t0 := time.Now()
		if err := r.Create(ctx, s); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		exit, err := r.RunOp(ctx, s.ID, 0, op, filepath.Join(logDir, job+".log"))
		if err != nil || exit.Code != 0 {
			b.Fatalf("RunOp = %+v, %v", exit, err)
		}
		t2 := time.Now()
		if err := r.Remove(ctx, s.ID); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		cmd := exec.Command(ctrBin, "--address", addr, "--namespace", r.Namespace(), "run", "--rm",
			"--snapshotter", r.Snapshotter(), img, "ctr-"+job, "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("ctr run: %v\n%s", err, out)
		}
		t4 := time.Now()
		create += t1.Sub(t0)
		run += t2.Sub(t1)
		remove += t3.Sub(t2)
		ctr += t4.Sub(t3)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(per(create+run+remove), "ns/op")
	b.ReportMetric(per(create), "create-ns/op")
	b.ReportMetric(per(run), "run-ns/op")
	b.ReportMetric(per(remove), "remove-ns/op")
	b.ReportMetric(per(ctr), "ctr-ns/op")
}
