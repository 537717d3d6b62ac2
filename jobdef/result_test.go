package jobdef

import (
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

const (
	cidA = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	cidB = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sampleResult() *Result {
	start := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("CET", 3600))
	return &Result{
		Version:    ResultVersion,
		Job:        "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
		Node:       "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
		Status:     StatusFailed,
		StartedAt:  start,
		FinishedAt: start.Add(1500 * time.Millisecond),
		Operations: []OpResult{
			{Index: 0, ExitCode: 0, DurationMS: 12, Log: cidA, LogTail: "first operation ok\n"},
			{Index: 1, ExitCode: 3, DurationMS: 8, Log: cidB, LogTail: "second <operation> fails & \"quotes\"\n"},
		},
		Outputs: []Output{{Path: "result.txt", CID: cidA, Size: 42}},
		Error:   "operation 1 exited with status 3",
	}
}

func TestResultMarshalGolden(t *testing.T) {
	b, err := sampleResult().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/result-failed.golden.json"
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(want) {
		t.Errorf("Marshal\n got %s\nwant %s", b, want)
	}
	again, _ := sampleResult().Marshal()
	if string(again) != string(b) {
		t.Errorf("Marshal is not deterministic")
	}
	r, err := ParseResult(b)
	if err != nil {
		t.Fatalf("ParseResult: %v", err)
	}
	if b2, _ := r.Marshal(); string(b2) != string(b) {
		t.Errorf("round trip differs:\n%s\n%s", b2, b)
	}
}

func TestResultMarshalEmptyLists(t *testing.T) {
	r := sampleResult()
	r.Status, r.Operations, r.Outputs = StatusRejected, nil, nil
	r.Error = "operations[0].workdir: must be an absolute path"
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"operations": [],`) || !strings.Contains(string(b), `"outputs": [],`) {
		t.Errorf("nil lists not written as []: %s", b)
	}
	if _, err := ParseResult(b); err != nil {
		t.Errorf("ParseResult: %v", err)
	}
}

func TestParseResultInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *Result)
		raw    string
		want   string
	}{
		{name: "version", mutate: func(r *Result) { r.Version = 2 }, want: "invalid result document: version 2; want 1"},
		{name: "status", mutate: func(r *Result) { r.Status = "done" }, want: `invalid result document: status "done"; want succeeded, failed, timeout or rejected`},
		{name: "no error", mutate: func(r *Result) { r.Error = "" }, want: "invalid result document: status failed needs an error"},
		{name: "no job", mutate: func(r *Result) { r.Job = "" }, want: "invalid result document: job and node are required"},
		{name: "index order", mutate: func(r *Result) { r.Operations[1].Index = 5 }, want: "invalid result document: operations[1].index is 5"},
		{name: "bad log cid", mutate: func(r *Result) { r.Operations[0].Log = "not-a-cid" }, want: "invalid result document: operations[0].log: not a CID: "},
		{name: "long tail", mutate: func(r *Result) { r.Operations[0].LogTail = strings.Repeat("x", MaxLogTail+1) }, want: "invalid result document: operations[0].log_tail is 4097 bytes; at most 4096 allowed"},
		{name: "output path escapes", mutate: func(r *Result) { r.Outputs[0].Path = "../etc/passwd" }, want: "invalid result document: outputs[0].path must be a relative path inside the outputs directory"},
		{name: "negative size", mutate: func(r *Result) { r.Outputs[0].Size = -1 }, want: "invalid result document: outputs[0].size is negative"},
		{name: "time order", mutate: func(r *Result) { r.FinishedAt = r.StartedAt.Add(-time.Second) }, want: "invalid result document: finished_at is before started_at"},
		{name: "unknown field", raw: `{"version":1,"bogus":true}`, want: `invalid result document: json: unknown field "bogus"`},
		{name: "not json", raw: `nope`, want: "invalid result document: invalid character 'o' in literal null (expecting 'u')"},
		{name: "trailing", raw: "{}\n{}", want: "invalid result document: trailing data after the JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.raw)
			if tt.mutate != nil {
				r := sampleResult()
				tt.mutate(r)
				var err error
				if b, err = r.Marshal(); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ParseResult(b)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("ParseResult error %v; want prefix %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidResult) {
				t.Errorf("not ErrInvalidResult: %v", err)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes, 2-byte runes
	tail := LogTail([]byte(long))
	if len(tail) > MaxLogTail || !strings.HasSuffix(long, tail) || len(tail) < MaxLogTail-1 {
		t.Errorf("tail of %d bytes", len(tail))
	}
	if got := LogTail([]byte("ok\xffdone")); got != "ok\uFFFDdone" {
		t.Errorf("invalid UTF-8 not replaced: %q", got)
	}
	if got := LogTail([]byte("short")); got != "short" {
		t.Errorf("got %q", got)
	}
	bad := []byte(strings.Repeat("\xff", 5000))
	if got := LogTail(bad); len(got) > MaxLogTail {
		t.Errorf("tail of invalid bytes is %d bytes", len(got))
	}
}
