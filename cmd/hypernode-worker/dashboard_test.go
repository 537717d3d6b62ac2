package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
	"github.com/hypernode-sol/worker/statusapi"
)

// chromiumPath is Debian's headless-capable browser (scripts/ci/chromium.sh
// installs it in CI).
func chromiumPath(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("browser test: chromium is not installed (apt-get install chromium, or scripts/ci/chromium.sh)")
	return ""
}

// artifactDir is where test artifacts are kept: $HYPERNODE_ARTIFACTS, else
// a directory under the system's temporary directory that outlives the test.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("HYPERNODE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "hypernode-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// longJob waits for /workspace/marker, prints its content, then works a few
// seconds more, printing its secret (which must reach the page redacted).
const longJob = `{
  "model": "demo/dashboard",
  "image": "hypernode.local/test:latest",
  "operations": [
    { "type": "run", "command": "echo \"starting with token $DASH_TOKEN\"; i=0; while [ ! -f /workspace/marker ]; do echo waiting $i; i=$((i+1)); sleep 0.3; done; echo \"MARKER $(cat /workspace/marker)\"; j=0; while [ $j -lt 20 ]; do echo working $j; j=$((j+1)); sleep 0.2; done" }
  ],
  "env": { "DASH_TOKEN": "hn-dash-secret-41c9" },
  "timeout": 120
}`

// TestDashboardInBrowser runs the real worker (embedded localnet, private
// containerd) with API_ADDR set, finishes two jobs, starts a third that runs
// until the test writes a marker into its workspace, and drives headless
// chromium through the dashboard: the page shows the running job's ID and
// state, the ended jobs, earnings, health samples that keep coming, and a
// log line the job printed after the page loaded. A screenshot is kept.
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: needs containerd and chromium (skipped with -short)")
	}
	browser := chromiumPath(t)
	ctd := runtimetest.StartContainerd(t)
	// The GPUs of a captured two-GPU machine, so that the page and the
	// gauges have GPUs to show.
	inventory, _ := filepath.Abs(filepath.Join("..", "..", "testdata", "gpu", "nvidia-smi-q-x_2x-rtx-a5000_590.44.01_v13.xml"))
	w := spawnWorker(t, ctd, "--api-addr", "127.0.0.1:0", "--gpu-inventory", inventory)
	m := regexp.MustCompile(`Dashboard: (http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(w.stdout())
	if m == nil {
		t.Fatalf("no dashboard address in the output:\n%s", w.stdout())
	}
	base := m[1]

	post := func(path string) solana.PublicKey {
		out := w.cli(t, "localnet", "post", "--rpc", w.rpc, path)
		k, err := solana.PublicKeyFromBase58(out)
		if err != nil {
			t.Fatalf("post printed %q", out)
		}
		return k
	}
	done := []solana.PublicKey{post(filepath.Join("..", "..", "testdata", "jobs", "succeed.json")),
		post(filepath.Join("..", "..", "testdata", "jobs", "fail.json"))}
	w.waitJobs(t, done)
	defPath := filepath.Join(t.TempDir(), "long.json")
	os.WriteFile(defPath, []byte(longJob), 0o600)
	long := post(defPath)
	waitAPIState(t, base, long.String(), fsm.Running)

	ctx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1100))
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	// text is the rendered text of the first element sel selects ("" when
	// none does yet).
	text := func(sel string) string {
		q, _ := json.Marshal(sel)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+string(q)+`) || {}).innerText || ""`))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	// waitFor polls the page (the page itself updates by polling the API).
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("page never showed %s; jobs table:\n%s\nlog:\n%s", what, text("#jobs"), text("#log"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	samples := func() int {
		v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("health-chart").dataset.samples || "0"`))
		n, _ := strconv.Atoi(v)
		return n
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?poll=500")); err != nil {
		t.Fatal(err)
	}
	waitFor("the running job", func() bool {
		return strings.Contains(text("#jobs"), long.String()) && strings.Contains(text(`#jobs tr[data-job="`+long.String()+`"]`), "running")
	})
	for _, k := range done {
		row := text(`#jobs tr[data-job="` + k.String() + `"]`)
		if !strings.Contains(row, "finished") && !strings.Contains(row, "failed") {
			t.Errorf("ended job row %q", row)
		}
	}
	waitFor("the running job's log", func() bool { return strings.Contains(text("#log"), "waiting") })
	first := samples()
	// The chart keeps growing while the page is open.
	waitFor("new health samples", func() bool { return samples() >= max(first+2, 10) })
	// A line the job prints only after the page loaded and followed its log.
	nonce := fmt.Sprintf("dashboard-%d", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(w.data, "jobs", long.String(), "workspace", "marker"), []byte(nonce), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("the marker line streamed after load", func() bool { return strings.Contains(text("#log"), "MARKER "+nonce) })
	waitFor("earnings", func() bool { return strings.Contains(text("#earned-total"), "lamports") })
	waitFor("the paid jobs in the earnings table", func() bool {
		rows := text("#earnings tbody")
		return strings.Count(rows, "\n") >= 1 && strings.Contains(rows, "finished") && strings.Contains(rows, "failed")
	})
	// Every poll of the API succeeded: the page says it is live.
	if c := text("#conn"); c != "live" {
		t.Errorf("connection badge %q, want live (a request of the page failed)", c)
	}
	log := text("#log")
	if strings.Contains(log, "hn-dash-secret") || !strings.Contains(log, "starting with token [redacted]") {
		t.Errorf("log panel shows the secret or no redaction:\n%s", log)
	}
	if specs := text("#specs"); !strings.Contains(specs, "CPU") || !strings.Contains(specs, "cores") {
		t.Errorf("specs %q", specs)
	}
	if gpus := text("#gpus"); strings.Count(gpus, "RTX A5000") != 2 {
		t.Errorf("GPU list %q, want the capture's two RTX A5000", gpus)
	}
	if health := text("#health-now"); !strings.Contains(health, "CPU") || !strings.Contains(health, "active") {
		t.Errorf("health line %q", health)
	}
	earned := text("#earned-total")
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot (%d bytes): %s — jobs %s running, %v ended; earned %s", len(shot), path, long, done, earned)

	// The job ends: the page follows its state to finished.
	waitFor("the job finished", func() bool {
		return strings.Contains(text(`#jobs tr[data-job="`+long.String()+`"]`), "finished")
	})
	// The stream's closing frame arrives on its own connection, possibly
	// after the jobs table's next poll.
	waitFor("the log stream's end shown", func() bool { return strings.Contains(text("#log-state"), "job ") })
	checkMetrics(t, base)
}

// checkMetrics reads the daemon's /metrics after three jobs ended: every
// series the issue names is there, fed by the driver and the RPC client.
func checkMetrics(t *testing.T, base string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(raw)
	value := func(series string) float64 {
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		t.Errorf("/metrics has no %s", series)
		return -1
	}
	for series, min := range map[string]float64{
		`hypernode_jobs{state="finished"}`:                   2,
		`hypernode_jobs{state="failed"}`:                     1,
		`hypernode_transitions_total{event="finish"}`:        2,
		`hypernode_claim_latency_seconds_count`:              3,
		`hypernode_container_run_seconds_count`:              3,
		`hypernode_earned_lamports_total`:                    3 * 9_900_000,
		`hypernode_rpc_calls_total{method="getAccountInfo"}`: 1,
		`hypernode_health_disk_free_bytes`:                   1,
	} {
		if v := value(series); v < min {
			t.Errorf("%s = %v, want at least %v", series, v, min)
		}
	}
	// A job reaches the worker by its claim (work_job) or, while the worker
	// waits in the node queue, by create_job assigning it: one or the other
	// for each of the three jobs.
	got := 0.0
	for _, ev := range []string{"claim", "assigned"} {
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, `hypernode_transitions_total{event="`+ev+`"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				got += f
			}
		}
	}
	if got < 3 {
		t.Errorf("claim + assigned transitions = %v, want at least 3", got)
	}
	if !strings.Contains(body, "hypernode_rpc_errors_total") && !strings.Contains(body, "# HELP hypernode_rpc_calls_total") {
		t.Errorf("no RPC series:\n%s", body)
	}
}

// waitAPIState waits until the API lists job in state s.
func waitAPIState(t *testing.T, base, job string, s fsm.State) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(base + "/v1/jobs/" + job)
		if err == nil {
			var d statusapi.JobDetail
			json.NewDecoder(resp.Body).Decode(&d)
			resp.Body.Close()
			if d.State == string(s) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not %s within a minute", job, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
