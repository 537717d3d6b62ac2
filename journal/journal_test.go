package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestAppendSnapshotAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	j := open(t, path)
	steps := []Record{
		{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindIntent, Intent: IntentTx, Tx: &TxIntent{Instruction: "work_job", Signature: "sig1", Raw: []byte{1, 2}, LastValidBlockHeight: 150}},
		{Job: "B", Kind: KindTransition, Event: "poll", To: "polled"},
		{Job: "A", Kind: KindTransition, Event: "claim", From: "polled", To: "claimed", Fields: map[string]string{"claim_sig": "sig1"}},
		{Job: "A", Kind: KindIntent, Intent: IntentContainer, Container: &ContainerIntent{ID: "hn-A-1", Attempt: 1, Deadline: time.Unix(100, 0).UTC()}},
	}
	for i, r := range steps {
		got, err := j.Append(r)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != uint64(i+1) || got.At.IsZero() {
			t.Fatalf("record %d: seq %d at %v", i, got.Seq, got.At)
		}
	}
	snap, err := j.Snapshot("A")
	if err != nil {
		t.Fatal(err)
	}
	if snap.State != "claimed" || snap.Tx != nil || snap.Container == nil || snap.Container.ID != "hn-A-1" || snap.Fields["claim_sig"] != "sig1" || snap.LastSeq != 5 {
		t.Fatalf("snapshot %+v", snap)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, path)
	defer j.Close()
	recs, err := j.Records("A")
	if err != nil || len(recs) != 4 || recs[1].Tx.Signature != "sig1" || string(recs[1].Tx.Raw) != "\x01\x02" {
		t.Fatalf("records after reopen: %+v %v", recs, err)
	}
	snaps, _ := j.Snapshots()
	if len(snaps) != 2 || snaps[0].Job != "A" || snaps[1].State != "polled" {
		t.Fatalf("snapshots %+v", snaps)
	}
	if _, err := j.Snapshot("C"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing job: %v", err)
	}
}

func TestAppendRejectsBadRecords(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if _, err := j.Append(Record{Kind: KindTransition}); err == nil {
		t.Fatal("record without job accepted")
	}
	if _, err := j.Append(Record{Job: "A", Kind: "bogus"}); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	defer j.Close()
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another hypernode-worker") {
		t.Fatalf("second open: %v", err)
	}
}

func TestCorruptFilesGiveClearErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	after, _ := os.ReadFile(garbage)
	if !strings.HasPrefix(string(after), "not a bbolt file") {
		t.Fatal("corrupt file was overwritten")
	}

	truncated := filepath.Join(dir, "truncated.db")
	j := open(t, truncated)
	j.Append(Record{Job: "A", Kind: KindTransition, Event: "poll", To: "polled"})
	j.Close()
	if err := os.Truncate(truncated, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(truncated, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}

	newer := filepath.Join(dir, "newer.db")
	db, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketLog, bucketJobs} {
			tx.CreateBucket(b)
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("99"))
	})
	db.Close()
	if _, err := Open(newer, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestReadOnlyOpenOfMissingFile(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open created a journal")
	}
}

func BenchmarkAppend(b *testing.B) {
	j, err := Open(filepath.Join(b.TempDir(), "j.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	rec := Record{Job: "J57Ypo8mm2AmFXtQSeNNG4ZRfdoSXsjmyqCGt94qJutd", Kind: KindProgress, Fields: map[string]string{"op.0.exit": "0"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := j.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
}
