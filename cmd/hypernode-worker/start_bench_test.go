package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// BenchmarkFetchedToRunning measures, through the real worker (embedded
// localnet, containerd, the fsm driver), the time from a job's `fetched`
// transition (its journal record) to its first operation's process running,
// and compares it with `ctr run` of the same image on the same daemon in the
// same run (from invoking ctr to its process running). Both processes report
// when they run by reading /proc/uptime (10 ms resolution), mapped to the
// host's clock.
//
//   - warm: the image is already in containerd (imported at start);
//   - cold: the image is pulled from a local registry (docker-registry on
//     127.0.0.1) at every iteration, and removed after it; the baseline is
//     `ctr pull` + `ctr run`.
//
// Metrics: ours-ms/op, ctr-ms/op, ratio (ours / ctr).
func BenchmarkFetchedToRunning(b *testing.B) {
	b.Run("warm", func(b *testing.B) { benchFetchedToRunning(b, false) })
	b.Run("cold", func(b *testing.B) { benchFetchedToRunning(b, true) })
}

func benchFetchedToRunning(b *testing.B, cold bool) {
	ctd := runtimetest.StartContainerd(b)
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		b.Fatal(err)
	}
	ctr := func(ns string, args ...string) string {
		b.Helper()
		out, err := exec.Command("ctr", append([]string{"--address", ctd, "--namespace", ns}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("ctr %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	ref := runtimetest.ImageRef
	var extra []string
	if cold {
		host := runtimetest.StartRegistry(b)
		ref = host + "/hypernode/bench:latest"
		ctr("seed", "images", "import", archive)
		ctr("seed", "images", "tag", "--force", runtimetest.ImageRef, ref)
		ctr("seed", "images", "push", "--plain-http", ref)
		ctr("seed", "images", "rm", "--sync", runtimetest.ImageRef, ref)
		extra = []string{"--import-image", ""}
	}
	w := spawnWorkerIn(b, ctd, freeAddr(b), b.TempDir(), extra...)
	def := map[string]any{"image": ref, "operations": []map[string]any{{"type": "run", "command": "cat /proc/uptime"}}, "timeout": 60}
	var ours, base time.Duration
	runningAt := map[solana.PublicKey]time.Time{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := w.postDefinition(b, def)
		acc := w.waitJobs(b, []solana.PublicKey{k})[k]
		res := w.result(b, acc)
		if res.Status != jobdef.StatusSucceeded {
			b.Fatalf("job %+v", res)
		}
		runningAt[k] = fromUptime(b, res.Operations[0].LogTail)
		if cold {
			ctr("hypernode", "images", "rm", "--sync", ref)
		}

		// Warm: the worker's own namespace, where the image is. Cold: a
		// namespace of its own, the image removed again after.
		ns := "hypernode"
		if cold {
			ns = "bench"
		}
		id := "bench-" + runtimetest.UniqueJob(b)
		t0 := time.Now()
		if cold {
			ctr(ns, "images", "pull", "--plain-http", ref)
		}
		out := ctr(ns, "run", "--rm", ref, id, "/bin/sh", "-c", "cat /proc/uptime")
		base += fromUptime(b, out).Sub(t0)
		if cold {
			ctr(ns, "images", "rm", "--sync", ref)
		}
	}
	b.StopTimer()
	// The journal can be read once the worker has stopped.
	w.stop(b)
	for k, running := range runningAt {
		ours += running.Sub(fetchedAt(b, w, k))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(ours), "ours-ms/op")
	b.ReportMetric(ms(base), "ctr-ms/op")
	b.ReportMetric(float64(ours)/float64(base), "ratio")
}

// fromUptime maps the first /proc/uptime reading in out (seconds since boot)
// to the host's clock.
func fromUptime(b *testing.B, out string) time.Time {
	b.Helper()
	f := strings.Fields(out)
	if len(f) < 1 {
		b.Fatalf("no uptime in %q", out)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		b.Fatalf("uptime %q: %v", f[0], err)
	}
	raw, err := os.ReadFile("/proc/uptime")
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	hostUp, _ := strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	boot := now.Add(-time.Duration(hostUp * float64(time.Second)))
	return boot.Add(time.Duration(up * float64(time.Second)))
}

// fetchedAt is when the journal recorded job's transition to fetched.
func fetchedAt(b *testing.B, w *workerProc, job solana.PublicKey) time.Time {
	b.Helper()
	out := w.cli(b, "replay", "--data-dir", w.data, "--json", "--job", job.String())
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Kind string    `json:"kind"`
			To   string    `json:"to"`
			At   time.Time `json:"at"`
		}
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.To == string(fsm.Fetched) {
			return r.At
		}
	}
	b.Fatalf("no fetched transition for %s in:\n%s", job, out)
	return time.Time{}
}
