package main

import (
	"strings"
	"testing"
)

const sampleOutput = `goos: linux
BenchmarkAppend-2            	    1350	   2884158 ns/op
BenchmarkConcurrentJobs/jobs=64-2        	   16375	    170860 ns/op	        32.25 records/commit	      5833 transitions/s
BenchmarkReplayVerify1M-2   	       1	3182176465 ns/op	         0.09246 bolt-scan_s	         3.090 verify_s
--- BENCH: BenchmarkReplayVerify1M-2
    bench_test.go:104: journal of 100000 records: 83 MiB
BenchmarkBroken-2   	       1	 notanumber ns/op
PASS
`

func TestParseBench(t *testing.T) {
	m := parseBench(sampleOutput)
	want := map[figure]float64{
		{"BenchmarkAppend", "ns/op"}:                          2884158,
		{"BenchmarkConcurrentJobs/jobs=64", "transitions/s"}:  5833,
		{"BenchmarkConcurrentJobs/jobs=64", "records/commit"}: 32.25,
		{"BenchmarkReplayVerify1M", "verify_s"}:               3.090,
		{"BenchmarkReplayVerify1M", "bolt-scan_s"}:            0.09246,
	}
	for f, v := range want {
		if m[f] != v {
			t.Errorf("%v = %v, want %v", f, m[f], v)
		}
	}
	if _, ok := m[figure{"BenchmarkBroken", "ns/op"}]; ok {
		t.Error("a malformed value was read")
	}
}

func TestMakeRowGoals(t *testing.T) {
	r := &run{metrics: parseBench(sampleOutput)}
	e := entry{Name: "64", Value: figure{"BenchmarkConcurrentJobs/jobs=64", "transitions/s"},
		Baseline: &figure{"BenchmarkConcurrentJobs/jobs=64", "records/commit"}, Goal: goal{"ratio>=", 20, "≥ 20×"}}
	row := makeRow(e, r)
	if row.Ratio == nil || row.Met == nil || !*row.Met || row.Status != "ok" {
		t.Errorf("ratio goal: %+v", row)
	}
	e = entry{Name: "replay", Value: figure{"BenchmarkReplayVerify1M", "verify_s"}, Goal: goal{"<=", 2, "≤ 2 s"}}
	if row := makeRow(e, r); row.Met == nil || *row.Met {
		t.Errorf("3.09 s against ≤ 2 s: %+v", row)
	}
	e = entry{Name: "idle", Value: figure{"BenchmarkIdle", "rss-MiB"}}
	if row := makeRow(e, r); row.Status != "not built yet" || row.Value != nil {
		t.Errorf("absent benchmark: %+v", row)
	}
	if row := makeRow(e, &run{missing: true}); row.Status != "not built yet" {
		t.Errorf("absent package: %+v", row)
	}
	if row := makeRow(e, &run{err: "exit status 1"}); !strings.HasPrefix(row.Status, "failed") {
		t.Errorf("failed run: %+v", row)
	}
	if got := format(1.5e6, "ns/op"); got != "1.5ms" {
		t.Errorf("format ns/op: %q", got)
	}
	if got := format(0.791, "recovery_s"); got != "0.791 s" {
		t.Errorf("format _s: %q", got)
	}
	for _, c := range []struct {
		v          float64
		unit, want string
	}{{312.4, "ours-ms/op", "312 ms"}, {35.25, "rss-max-MiB", "35.25 MiB"}, {0.0412, "cpu-%-of-core", "0.0412 %"}, {812, "hash_MBps", "812 MB/s"}} {
		if got := format(c.v, c.unit); got != c.want {
			t.Errorf("format(%g, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

// FuzzParseBench: any go test output parses without panicking, and every
// figure read comes from a line starting with its benchmark's name.
func FuzzParseBench(f *testing.F) {
	f.Add(sampleOutput)
	f.Add("Benchmark-2 1 2 ns/op")
	f.Add("BenchmarkX 1 1e308 a 1e309 b")
	f.Fuzz(func(t *testing.T, out string) {
		for fig := range parseBench(out) {
			if !strings.Contains(out, fig.Bench) || !strings.Contains(out, fig.Metric) {
				t.Fatalf("figure %v not in the output", fig)
			}
		}
	})
}
