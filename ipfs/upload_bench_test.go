package ipfs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/ipfs/kubotest"
)

// Environment of the upload benchmark.
const (
	// benchChildEnv carries the child's job ("<file>\t<API URL>") to TestUploadBenchChild.
	benchChildEnv = "HYPERNODE_IPFS_BENCH_CHILD"
	// benchUploadEnv chooses the upload target: "kubo" (the default when a kubo binary is
	// found) or "discard" (a server in the parent that hashes the body and answers its CID).
	benchUploadEnv = "HYPERNODE_BENCH_UPLOAD"
	// benchFillEnv chooses the file: "sparse" (default: a hole, read as zeros) or
	// "random" (pseudo-random bytes written to disk first).
	benchFillEnv = "HYPERNODE_BENCH_FILL"
	// benchSizeEnv overrides the file size in MiB (default 1024).
	benchSizeEnv = "HYPERNODE_BENCH_MIB"
)

// peakRSSLimitMiB is the bound the worker promises for hashing and uploading any output.
const peakRSSLimitMiB = 64

// benchChildReport is what the child prints on its "BENCHCHILD " line.
type benchChildReport struct {
	CID        string  `json:"cid"`
	Bytes      int64   `json:"bytes"`
	HashSec    float64 `json:"hash_s"`   // ComputeCID over the file
	UploadSec  float64 `json:"upload_s"` // AddFile: hash again, then stream the upload
	VmHWMKiB   int64   `json:"vmhwm_kib"`
	HeapSysKiB int64   `json:"-"`
}

// TestUploadBenchChild is the child process of BenchmarkUpload1GiB; it does nothing
// unless HYPERNODE_IPFS_BENCH_CHILD is set. It times ComputeCID over the file, then
// Uploader.AddFile of it (a second hash pass, then the streamed upload), and prints its
// own peak RSS (VmHWM).
func TestUploadBenchChild(t *testing.T) {
	job := os.Getenv(benchChildEnv)
	if job == "" {
		t.Skip("child process of BenchmarkUpload1GiB")
	}
	path, api, ok := strings.Cut(job, "\t")
	if !ok {
		t.Fatalf("%s=%q, want <file>\\t<API URL>", benchChildEnv, job)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, n, err := ComputeCID(bufio.NewReaderSize(f, 1<<20))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rep := benchChildReport{Bytes: n, HashSec: time.Since(start).Seconds()}
	start = time.Now()
	up := &Uploader{APIURL: api, Retry: NoRetry}
	got, _, err := up.AddFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	rep.UploadSec = time.Since(start).Seconds()
	if got != c.String() {
		t.Fatalf("AddFile CID %s, ComputeCID %s", got, c)
	}
	rep.CID = got
	rep.VmHWMKiB = vmHWM(t)
	b, _ := json.Marshal(rep)
	fmt.Printf("BENCHCHILD %s\n", b)
}

// vmHWM reads this process's peak resident set size (KiB) from /proc/self/status.
func vmHWM(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// BenchmarkUpload1GiB hashes and uploads a 1 GiB output in a child process (this test
// binary re-run as TestUploadBenchChild) and reports:
//
//   - peak_rss_MiB: the child's peak RSS (getrusage Maxrss), which must stay under 64 MiB
//     (the benchmark fails otherwise);
//   - hash_MBps: ComputeCID's throughput over the file (MB = 10^6 bytes);
//   - sha256sum_MBps and ratio_vs_sha256sum: `sha256sum` over the same file in the same
//     run, and hash_MBps divided by it;
//   - upload_MBps: Uploader.AddFile (second hash pass + streamed upload) end to end.
//
// Run: go test ./ipfs -run '^$' -bench BenchmarkUpload1GiB -benchtime 1x
// Target: kubo when a binary is found (see kubotest), else a discard server; see the
// HYPERNODE_BENCH_* variables above.
func BenchmarkUpload1GiB(b *testing.B) {
	if os.Getenv(benchChildEnv) != "" {
		b.Skip("child process")
	}
	size := int64(1 << 30)
	if v := os.Getenv(benchSizeEnv); v != "" {
		mib, err := strconv.ParseInt(v, 10, 64)
		if err != nil || mib <= 0 {
			b.Fatalf("%s=%q is not a positive number of MiB", benchSizeEnv, v)
		}
		size = mib << 20
	}
	path := filepath.Join(b.TempDir(), "output.bin")
	writeBenchFile(b, path, size)

	api, target := "", os.Getenv(benchUploadEnv)
	if target == "" {
		target = "discard"
		if bin, _ := kubotest.Binary(); bin != "" {
			target = "kubo"
		}
	}
	switch target {
	case "kubo":
		api = kubotest.Start(b).API
	case "discard":
		api = serve(b, http.HandlerFunc(discardAdd)).URL
	default:
		b.Fatalf("%s=%q, want kubo or discard", benchUploadEnv, target)
	}
	b.Logf("file %d MiB (%s), upload to %s", size>>20, fillMode(), target)

	for b.Loop() {
		sumSec := timeSHA256Sum(b, path)
		cmd := exec.Command(os.Args[0], "-test.run=^TestUploadBenchChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), benchChildEnv+"="+path+"\t"+api)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var rep benchChildReport
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if j, ok := strings.CutPrefix(line, "BENCHCHILD "); ok {
				found = json.Unmarshal([]byte(j), &rep) == nil
			}
		}
		if !found || rep.Bytes != size {
			b.Fatalf("child printed no report for %d bytes:\n%s", size, out)
		}
		ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if !ok {
			b.Fatal("no rusage for the child")
		}
		peakMiB := float64(ru.Maxrss) / 1024 // Linux: KiB
		hashMBps := float64(size) / 1e6 / rep.HashSec
		sumMBps := float64(size) / 1e6 / sumSec
		b.ReportMetric(peakMiB, "peak_rss_MiB")
		b.ReportMetric(hashMBps, "hash_MBps")
		b.ReportMetric(sumMBps, "sha256sum_MBps")
		b.ReportMetric(hashMBps/sumMBps, "ratio_vs_sha256sum")
		b.ReportMetric(float64(size)/1e6/rep.UploadSec, "upload_MBps")
		b.Logf("child: CID %s, VmHWM %d KiB, Maxrss %d KiB, hash %.2fs, AddFile %.2fs; sha256sum %.2fs",
			rep.CID, rep.VmHWMKiB, ru.Maxrss, rep.HashSec, rep.UploadSec, sumSec)
		if peakMiB >= peakRSSLimitMiB {
			b.Errorf("peak RSS %.1f MiB while hashing and uploading %d MiB, want < %d MiB", peakMiB, size>>20, peakRSSLimitMiB)
		}
	}
}

func fillMode() string {
	if m := os.Getenv(benchFillEnv); m != "" {
		return m
	}
	return "sparse"
}

// writeBenchFile makes the benchmark's file: a hole of size bytes, or pseudo-random bytes.
func writeBenchFile(b *testing.B, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	switch fillMode() {
	case "sparse":
		err = f.Truncate(size)
	case "random":
		block := pattern(4 << 20)
		w := bufio.NewWriterSize(f, 1<<20)
		for left := size; left > 0 && err == nil; left -= int64(len(block)) {
			block[0]++ // no two blocks alike
			_, err = w.Write(block[:min(int64(len(block)), left)])
		}
		if err == nil {
			err = w.Flush()
		}
	default:
		b.Fatalf("%s=%q, want sparse or random", benchFillEnv, fillMode())
	}
	if err != nil {
		b.Fatal(err)
	}
}

// timeSHA256Sum runs `sha256sum path` and returns its wall time in seconds.
func timeSHA256Sum(b *testing.B, path string) float64 {
	bin, err := exec.LookPath("sha256sum")
	if err != nil {
		b.Skip("no sha256sum for the baseline")
	}
	start := time.Now()
	if out, err := exec.Command(bin, path).CombinedOutput(); err != nil {
		b.Fatalf("sha256sum: %v\n%s", err, out)
	}
	return time.Since(start).Seconds()
}

// discardAdd is a kubo add endpoint that stores nothing: it hashes the one file part and
// answers its CID.
func discardAdd(w http.ResponseWriter, r *http.Request) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	part, err := multipart.NewReader(r.Body, params["boundary"]).NextPart()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, _, err := ComputeCID(part)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_ = json.NewEncoder(w).Encode(addEvent{Name: part.FileName(), Hash: c.String(), Size: "0"})
}
