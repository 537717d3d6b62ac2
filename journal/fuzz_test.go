package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// FuzzOpen writes arbitrary bytes as a journal file and opens, reads,
// appends to, closes and checks it: every step either works or fails with
// ErrCorrupt, and none panics or hangs.
//
//	go test ./journal -run '^$' -fuzz FuzzOpen -fuzztime 45s -fuzzminimizetime 0
//
// (minimising inputs of tens of KiB stalls the fuzzer for minutes; the two
// crashers kept under testdata/fuzz/FuzzOpen are therefore not minimised)
func FuzzOpen(f *testing.F) {
	for _, seed := range seedFiles(f) {
		f.Add(seed)
	}
	path := filepath.Join(f.TempDir(), "j.db") // one input at a time per process
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(path, Options{NoSync: true})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v (not ErrCorrupt)", err)
			}
			return
		}
		snaps, err := j.Snapshots()
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("snapshots: %v", err)
		}
		for _, s := range snaps {
			if _, err := j.Records(s.Job); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("records of %s: %v", s.Job, err)
			}
		}
		if err := j.Each(func(Record) error { return nil }); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("each: %v", err)
		}
		if _, err := j.Append(Record{Job: "fuzz", Kind: KindProgress}); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("append: %v (not ErrCorrupt)", err)
		}
		if err := j.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := Check(path); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("check: %v (not ErrCorrupt)", err)
		}
	})
}

// seedFiles: small journals (1 KiB pages, cut to their used pages) of
// schema 1, it upgraded to schema 2, a schema-2 journal with 4 KiB pages, an
// empty file and garbage. Small seeds keep the fuzzer fast; the committed
// 128 KiB testdata file is damaged byte by byte in TestDamagedFilesNeverPanic.
func seedFiles(f *testing.F) [][]byte {
	dir := f.TempDir()
	recs := []Record{
		{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "B", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindIntent, Intent: IntentTx, Tx: &TxIntent{Instruction: "work_job", Signature: "5sig", Raw: []byte{1, 2, 3, 4}, LastValidBlockHeight: 150}},
		{Job: "A", Kind: KindTransition, Event: "claim", From: "polled", To: "claimed", Fields: map[string]string{"claim_sig": "5sig"}},
		{Job: "B", Kind: KindTransition, Event: "lose", From: "polled", To: "lost", Fields: map[string]string{"reason": "JobNotQueued"}},
		{Job: "A", Kind: KindTransition, Event: "fetch", From: "claimed", To: "fetched", Fields: map[string]string{"definition": "QmDef"}},
		{Job: "A", Kind: KindIntent, Intent: IntentContainer, Container: &ContainerIntent{ID: "hn-A-1", Attempt: 1, Image: "busybox"}},
		{Job: "A", Kind: KindTransition, Event: "start", From: "fetched", To: "running"},
		{Job: "A", Kind: KindIntent, Intent: IntentOp, Op: &OpIntent{Index: 0}},
		{Job: "A", Kind: KindProgress, Fields: map[string]string{"op.0.exit": "0"}},
		{Job: "A", Kind: KindIntent, Intent: IntentUpload, Upload: &UploadIntent{What: "result", CID: "QmRes"}},
	}
	write := func(name string, pageSize, schema int) string {
		path := filepath.Join(dir, name)
		if pageSize != 0 {
			db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize})
			if err != nil {
				f.Fatal(err)
			}
			db.Close()
		}
		j, err := openSchema(path, Options{}, schema)
		if err != nil {
			f.Fatal(err)
		}
		for _, r := range recs {
			if _, err := j.Append(r); err != nil {
				f.Fatal(err)
			}
		}
		j.Close()
		return path
	}
	v1 := write("v1.db", 1024, 1)
	v2 := filepath.Join(dir, "v2.db")
	b, err := os.ReadFile(v1)
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(v2, b, 0o600); err != nil {
		f.Fatal(err)
	}
	j, err := Open(v2, Options{})
	if err != nil {
		f.Fatal(err)
	}
	j.Close()
	out := [][]byte{nil, []byte(strings.Repeat("not a bbolt file ", 300))}
	for _, p := range []string{v1, v2, write("v2-4k.db", 0, SchemaVersion)} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b[:usedBytes(f, p)])
	}
	return out
}
