// Command bench runs the product's Go benchmarks and prints one table: each
// figure next to its baseline measured in the same run, the ratio, and the
// goal it is held to. It writes the same rows as JSON to bench/results.json.
//
// Run it from the repository root (make bench, or go run ./bench). The rows
// are the entries list below: to add a benchmark, add an entry naming its
// package, its -bench pattern and the metrics it reports. An entry whose
// benchmark does not exist (yet) prints "not built yet".
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// figure names one metric of one benchmark: its full name without the
// -GOMAXPROCS suffix ("BenchmarkConcurrentJobs/jobs=64") and the unit it
// reports ("ns/op", "transitions/s").
type figure struct {
	Bench, Metric string
}

// goal is what a row is held to.
type goal struct {
	// Kind: "ratio<=" or "ratio>=" compare value/baseline with Limit;
	// "<=" and "<" compare the value itself; "" is no goal.
	Kind  string
	Limit float64
	Text  string // as the table shows it: "≤ 1.2× bare bbolt"
}

// entry is one row of the table.
type entry struct {
	Name      string
	Pkg       string // go test package, relative to the repository root
	Run       string // -bench pattern
	Benchtime string // -benchtime
	Value     figure
	Baseline  *figure // measured in the same go test run; nil: none
	BaseName  string  // what the baseline is
	Goal      goal
	Env       []string // KEY=VALUE added to go test's environment
}

// entries is the table, in order. Benchmarks are run once per distinct
// (Pkg, Run, Benchtime, Env).
var entries = []entry{
	{Name: "journal append (fsync)", Pkg: "./journal", Run: "^(BenchmarkAppend|BenchmarkBareBoltUpdate)$", Benchtime: "2s",
		Value: figure{"BenchmarkAppend", "ns/op"}, Baseline: &figure{"BenchmarkBareBoltUpdate", "ns/op"}, BaseName: "bare bbolt Update, same bytes",
		Goal: goal{"ratio<=", 1.2, "≤ 1.2× bare bbolt"}},
	{Name: "journal append, job-shaped records (fsync)", Pkg: "./journal", Run: "^(BenchmarkAppendLives|BenchmarkBareBoltLives)$", Benchtime: "2s",
		Value: figure{"BenchmarkAppendLives", "ns/op"}, Baseline: &figure{"BenchmarkBareBoltLives", "ns/op"}, BaseName: "bare bbolt Update, same bytes",
		Goal: goal{"ratio<=", 1.2, "≤ 1.2× bare bbolt"}},
	{Name: "transitions/s, 1 job", Pkg: "./journal", Run: "^BenchmarkConcurrentJobs$", Benchtime: "2s",
		Value: figure{"BenchmarkConcurrentJobs/jobs=1", "transitions/s"}},
	{Name: "transitions/s, 8 jobs", Pkg: "./journal", Run: "^BenchmarkConcurrentJobs$", Benchtime: "2s",
		Value: figure{"BenchmarkConcurrentJobs/jobs=8", "transitions/s"}, Baseline: &figure{"BenchmarkConcurrentJobs/jobs=1", "transitions/s"}, BaseName: "1 job"},
	{Name: "transitions/s, 64 jobs", Pkg: "./journal", Run: "^BenchmarkConcurrentJobs$", Benchtime: "2s",
		Value: figure{"BenchmarkConcurrentJobs/jobs=64", "transitions/s"}, Baseline: &figure{"BenchmarkConcurrentJobs/jobs=1", "transitions/s"}, BaseName: "1 job",
		Goal: goal{"ratio>=", 20, "≥ 20× 1 job"}},
	{Name: "replay --verify, 1M records", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkReplayVerify1M$", Benchtime: "1x",
		Value: figure{"BenchmarkReplayVerify1M", "verify_s"}, Baseline: &figure{"BenchmarkReplayVerify1M", "bolt-scan_s"}, BaseName: "bare bbolt scan",
		Goal: goal{"<=", 2, "≤ 2 s"}},
	{Name: "restart → 100 in-flight jobs reconciled", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkRecovery100$", Benchtime: "1x",
		Value: figure{"BenchmarkRecovery100", "recovery_s"}, Baseline: &figure{"BenchmarkRecovery100", "startup_s"}, BaseName: "of it, start-up",
		Goal: goal{"<=", 1, "≤ 1 s"}},
	{Name: "container start (create+run+remove) vs ctr run", Pkg: "./runtime", Run: "^BenchmarkContainerStart$", Benchtime: "5x",
		Value: figure{"BenchmarkContainerStart", "ns/op"}, Baseline: &figure{"BenchmarkContainerStart", "ctr-ns/op"}, BaseName: "ctr run --rm",
		Goal: goal{"ratio<=", 1.15, "≤ 1.15× ctr run"}},
	{Name: "fetched → first process running, warm image", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkFetchedToRunning$", Benchtime: "10x",
		Value: figure{"BenchmarkFetchedToRunning/warm", "ours-ms/op"}, Baseline: &figure{"BenchmarkFetchedToRunning/warm", "ctr-ms/op"}, BaseName: "ctr run",
		Goal: goal{"ratio<=", 1.15, "≤ 1.15× ctr run"}},
	{Name: "fetched → first process running, cold image (local registry)", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkFetchedToRunning$", Benchtime: "10x",
		Value: figure{"BenchmarkFetchedToRunning/cold", "ours-ms/op"}, Baseline: &figure{"BenchmarkFetchedToRunning/cold", "ctr-ms/op"}, BaseName: "ctr pull + run",
		Goal: goal{"ratio<=", 1.15, "≤ 1.15× ctr pull + run"}},
	{Name: "1 GiB upload, peak RSS", Pkg: "./ipfs", Run: "^BenchmarkUpload1GiB$", Benchtime: "1x",
		Value: figure{"BenchmarkUpload1GiB", "peak_rss_MiB"}, Goal: goal{"<", 64, "< 64 MiB"}},
	{Name: "1 GiB output hashing (CIDv0) vs sha256sum", Pkg: "./ipfs", Run: "^BenchmarkUpload1GiB$", Benchtime: "1x",
		Value: figure{"BenchmarkUpload1GiB", "hash_MBps"}, Baseline: &figure{"BenchmarkUpload1GiB", "sha256sum_MBps"}, BaseName: "sha256sum, same file"},
	{Name: "CIDv0 hashing vs in-process sha256 (64 MiB)", Pkg: "./ipfs", Run: "^(BenchmarkComputeCID|BenchmarkSHA256)$", Benchtime: "3x",
		Value: figure{"BenchmarkComputeCID", "MB/s"}, Baseline: &figure{"BenchmarkSHA256", "MB/s"}, BaseName: "sha256 of the same bytes"},
	// BenchmarkIdle watches an idle worker for IDLE_SECONDS (300 s by
	// default); make bench shortens it to 120 s to stay under 15 minutes.
	{Name: "idle RSS, max (shortened: 120 s idle)", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkIdle$", Benchtime: "1x", Env: []string{"IDLE_SECONDS=120"},
		Value: figure{"BenchmarkIdle", "rss-max-MiB"}, Goal: goal{"<", 40, "< 40 MiB"}},
	{Name: "idle CPU, share of a core (shortened: 120 s idle)", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkIdle$", Benchtime: "1x", Env: []string{"IDLE_SECONDS=120"},
		Value: figure{"BenchmarkIdle", "cpu-%-of-core"}, Goal: goal{"<", 0.5, "< 0.5 %"}},
	{Name: "end-to-end jobs/min, 1 slot", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkJobsPerMinute$", Benchtime: "1x",
		Value: figure{"BenchmarkJobsPerMinute/slots=1", "jobs/min"}},
	{Name: "end-to-end jobs/min, 4 slots", Pkg: "./cmd/hypernode-worker", Run: "^BenchmarkJobsPerMinute$", Benchtime: "1x",
		Value: figure{"BenchmarkJobsPerMinute/slots=4", "jobs/min"}, Baseline: &figure{"BenchmarkJobsPerMinute/slots=1", "jobs/min"}, BaseName: "1 slot"},
}

// run is the outcome of one go test invocation.
type run struct {
	metrics map[figure]float64
	err     string // go test failed: its last lines
	skipped string // the benchmark skipped itself: why
	missing bool   // the package does not exist
	took    time.Duration
}

// row is one line of the table and of results.json.
type row struct {
	Name     string   `json:"name"`
	Value    *float64 `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline,omitempty"`
	BaseUnit string   `json:"baseline_unit,omitempty"`
	BaseName string   `json:"baseline_name,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Goal     string   `json:"goal,omitempty"`
	Met      *bool    `json:"met,omitempty"`
	Status   string   `json:"status"` // "ok", "not built yet", "skipped: …", "failed: …"
	Bench    string   `json:"bench"`
	Pkg      string   `json:"package"`
}

func main() {
	out := flag.String("o", filepath.Join("bench", "results.json"), "JSON results file")
	only := flag.String("only", "", "run only the entries whose name contains this")
	flag.Parse()

	runs := map[string]*run{}
	var rows []row
	began := time.Now()
	for _, e := range entries {
		if *only != "" && !strings.Contains(e.Name, *only) {
			continue
		}
		key := e.Pkg + "\x00" + e.Run + "\x00" + e.Benchtime + "\x00" + strings.Join(e.Env, "\x00")
		r, ok := runs[key]
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: %s%s -bench '%s' -benchtime %s ... ", strings.Join(append(e.Env, ""), " "), e.Pkg, e.Run, e.Benchtime)
			r = goTest(e.Pkg, e.Run, e.Benchtime, e.Env)
			runs[key] = r
			fmt.Fprintf(os.Stderr, "%s\n", r.took.Round(time.Second))
		}
		rows = append(rows, makeRow(e, r))
	}
	printTable(os.Stdout, rows)
	fmt.Printf("\n(%s in all)\n", time.Since(began).Round(time.Second))
	b, _ := json.MarshalIndent(map[string]any{"at": time.Now().UTC(), "rows": rows}, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s\n", *out)
}

// benchLine is a result line of go test -bench: name, iterations, then
// value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// goTest runs one go test -bench and collects every metric it reports.
func goTest(pkg, pattern, benchtime string, env []string) *run {
	r := &run{metrics: map[figure]float64{}}
	if _, err := os.Stat(pkg); err != nil {
		r.missing = true
		return r
	}
	start := time.Now()
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", "1", "-timeout", "12m", pkg)
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	r.took = time.Since(start)
	r.metrics = parseBench(buf.String())
	if m := regexp.MustCompile(`(?m)^\s*\S+\.go:\d+: (.+)\n--- SKIP`).FindStringSubmatch(buf.String()); m != nil {
		r.skipped = m[1]
	} else if i := strings.Index(buf.String(), "--- SKIP"); i >= 0 && len(r.metrics) == 0 {
		r.skipped = "skipped"
	}
	if err != nil {
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) > 6 {
			lines = lines[len(lines)-6:]
		}
		r.err = strings.Join(lines, " | ")
	}
	return r
}

// parseBench reads the metrics of every result line of go test -bench output.
func parseBench(out string) map[figure]float64 {
	m := map[figure]float64{}
	for _, line := range strings.Split(out, "\n") {
		sm := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if sm == nil {
			continue
		}
		f := strings.Fields(sm[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			m[figure{sm[1], f[i+1]}] = v
		}
	}
	return m
}

func makeRow(e entry, r *run) row {
	w := row{Name: e.Name, Unit: e.Value.Metric, BaseName: e.BaseName, Goal: e.Goal.Text, Bench: e.Value.Bench, Pkg: e.Pkg}
	v, ok := r.metrics[e.Value]
	switch {
	case ok:
		w.Status = "ok"
	case r.missing:
		w.Status = "not built yet"
	case r.err != "":
		w.Status = "failed: " + r.err
	case r.skipped != "":
		w.Status = "skipped: " + r.skipped
	default:
		w.Status = "not built yet" // the pattern matched no benchmark
	}
	if !ok {
		return w
	}
	w.Value = &v
	if e.Baseline != nil {
		if b, ok := r.metrics[*e.Baseline]; ok {
			w.Baseline, w.BaseUnit = &b, e.Baseline.Metric
			if b != 0 {
				ratio := v / b
				w.Ratio = &ratio
			}
		}
	}
	var met *bool
	check := func(b bool) { met = &b }
	switch e.Goal.Kind {
	case "ratio<=":
		if w.Ratio != nil {
			check(*w.Ratio <= e.Goal.Limit)
		}
	case "ratio>=":
		if w.Ratio != nil {
			check(*w.Ratio >= e.Goal.Limit)
		}
	case "<=":
		check(v <= e.Goal.Limit)
	case "<":
		check(v < e.Goal.Limit)
	}
	w.Met = met
	return w
}

// format shows a metric in a readable unit: ns/op as a duration, "<x>_s"
// as seconds, "<x>-%" and "<x>-%-<y>" as a percentage, "<x>ms/op" as ms,
// "<x>MiB" as MiB, "<x>MBps" as MB/s, others with their unit, to three
// significant digits.
func format(v float64, unit string) string {
	if strings.HasSuffix(unit, "ns/op") {
		return time.Duration(v).Round(time.Duration(math.Pow(10, math.Max(0, math.Floor(math.Log10(v))-2)))).String()
	}
	var s string
	switch {
	case v >= 100:
		s = strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(v, 'g', 3, 64)
	}
	switch {
	case strings.HasSuffix(unit, "_s"):
		return s + " s"
	case strings.HasSuffix(unit, "-%"), strings.Contains(unit, "-%-"):
		return s + " %"
	case strings.HasSuffix(unit, "ms/op"):
		return s + " ms"
	case strings.HasSuffix(unit, "MiB"):
		return s + " MiB"
	case strings.HasSuffix(unit, "MBps"):
		return s + " MB/s"
	}
	return s + " " + unit
}

func printTable(w *os.File, rows []row) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tbaseline (same run)\tratio\tgoal\t")
	fmt.Fprintln(tw, "------\t-----\t-------------------\t-----\t----\t")
	var missed []string
	for _, r := range rows {
		val, base, ratio, verdict := r.Status, "", "", ""
		if r.Value != nil {
			val = format(*r.Value, r.Unit)
		}
		if r.Baseline != nil {
			base = format(*r.Baseline, r.BaseUnit) + " (" + r.BaseName + ")"
		}
		if r.Ratio != nil {
			ratio = strconv.FormatFloat(*r.Ratio, 'f', 2, 64) + "×"
		}
		if r.Goal != "" {
			verdict = r.Goal
			if r.Met != nil {
				if *r.Met {
					verdict += "  ✔"
				} else {
					verdict += "  ✘ missed"
					missed = append(missed, r.Name)
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Name, val, base, ratio, verdict)
	}
	tw.Flush()
	if len(missed) > 0 {
		fmt.Fprintf(w, "\ngoals missed: %s\n", strings.Join(missed, "; "))
	}
}
