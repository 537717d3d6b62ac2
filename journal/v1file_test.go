package journal

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/mr-tron/base58"
)

// regenV1 rewrites testdata/journal-v1.db:
//
//	go test ./journal -run TestRegenerateV1File -args -regen-v1
var regenV1 = flag.Bool("regen-v1", false, "rewrite testdata/journal-v1.db with the schema-1 writer")

const v1File = "testdata/journal-v1.db"

func TestRegenerateV1File(t *testing.T) {
	if !*regenV1 {
		t.Skip("pass -args -regen-v1 to rewrite " + v1File)
	}
	if err := os.Remove(v1File); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := writeV1Journal(v1File); err != nil {
		t.Fatal(err)
	}
}

// openV1Writer opens a journal that writes the schema-1 layout: the same
// Append, without the jobrecs index.
func openV1Writer(path string) (*Journal, error) { return openSchema(path, Options{}, 1) }

// writeV1Journal writes, at a new file path, a schema-1 journal of five jobs
// whose records interleave the way the driver writes them: a job finished
// with two operations, one lost to another node, one running (open container
// and op intents), one whose definition was rejected with finish_job still
// in flight, and one abandoned after its deadline. Timestamps, signatures and
// raw transaction bytes are fixed (seeded), so the content is reproducible.
func writeV1Journal(path string) error {
	j, err := openV1Writer(path)
	if err != nil {
		return err
	}
	defer j.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() string {
		b := make([]byte, 32)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return base58.Encode(b)
	}
	sig := func() (string, []byte) {
		raw := make([]byte, 200+rng.IntN(100))
		for i := range raw {
			raw[i] = byte(rng.UintN(256))
		}
		raw[0] = 1 // one signature
		return base58.Encode(raw[1:65]), raw
	}
	txIntent := func(ix string, height uint64) *TxIntent {
		s, raw := sig()
		return &TxIntent{Instruction: ix, Signature: s, Raw: raw, LastValidBlockHeight: height}
	}
	cid := func() string {
		b := make([]byte, 32)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return base58.Encode(append([]byte{0x12, 0x20}, b...))
	}
	clock := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	var recs []Record
	add := func(r Record) {
		clock = clock.Add(time.Duration(300+rng.IntN(5000)) * time.Millisecond)
		r.At = clock
		recs = append(recs, r)
	}
	tr := func(job, event, from, to string, fields map[string]string) {
		add(Record{Job: job, Kind: KindTransition, Event: event, From: from, To: to, Fields: fields})
	}
	image := "docker.io/library/busybox@sha256:" + fmt.Sprintf("%064x", rng.Uint64())
	finished, lost, running, rejected, abandoned := key(), key(), key(), key(), key()

	// Seen in one poll.
	for _, job := range []string{finished, lost, running, rejected, abandoned} {
		tr(job, "poll", "", "polled", nil)
	}
	// Claims: work_job intents, then what landed.
	for _, job := range []string{finished, lost, running, rejected, abandoned} {
		add(Record{Job: job, Kind: KindIntent, Intent: IntentTx, Tx: txIntent("work_job", 2800150)})
	}
	tr(lost, "lose", "polled", "lost", map[string]string{"reason": "JobNotQueued"})
	for _, job := range []string{finished, running, rejected, abandoned} {
		s, _ := sig()
		tr(job, "claim", "polled", "claimed", map[string]string{"claim_sig": s})
	}
	// Definitions.
	for _, job := range []string{finished, running, abandoned} {
		tr(job, "fetch", "claimed", "fetched", map[string]string{"definition": cid(), "image": image})
	}
	resCID := cid()
	add(Record{Job: rejected, Kind: KindIntent, Intent: IntentUpload, Upload: &UploadIntent{What: "result", CID: resCID},
		Fields: map[string]string{"status": "rejected", "error": "definition: ops[0].args: want a list of strings"}})
	tr(rejected, "reject", "claimed", "uploaded", map[string]string{"result_cid": resCID, "status": "rejected"})
	add(Record{Job: rejected, Kind: KindIntent, Intent: IntentTx, Tx: txIntent("finish_job", 2800290)})
	// Containers.
	for _, job := range []string{finished, running, abandoned} {
		ci := &ContainerIntent{ID: "hn-" + job + "-1", Attempt: 1, Deadline: clock.Add(10 * time.Minute).Truncate(time.Second), Image: image}
		add(Record{Job: job, Kind: KindIntent, Intent: IntentContainer, Container: ci, Fields: map[string]string{"attempts": "1"}})
		tr(job, "start", "fetched", "running", map[string]string{"container": ci.ID, "deadline": ci.Deadline.Format(time.RFC3339)})
	}
	// Operations.
	op := func(job string, n int, exit string) {
		started := clock.Add(time.Millisecond)
		add(Record{Job: job, Kind: KindIntent, Intent: IntentOp, Op: &OpIntent{Index: n},
			Fields: map[string]string{"op." + strconv.Itoa(n) + ".started": started.Format(time.RFC3339Nano)}})
		if exit == "" {
			return
		}
		add(Record{Job: job, Kind: KindProgress, Fields: map[string]string{
			"op." + strconv.Itoa(n) + ".exit": exit,
			"op." + strconv.Itoa(n) + ".ms":   strconv.Itoa(1000 + rng.IntN(20000)),
		}})
	}
	op(finished, 0, "0")
	op(running, 0, "0")
	op(finished, 1, "0")
	op(abandoned, 0, "")
	op(running, 1, "") // still running: open op intent
	tr(abandoned, "abandon", "running", "abandoned", map[string]string{"reason": "deadline passed"})
	// Result and payment of the finished job.
	resCID = cid()
	add(Record{Job: finished, Kind: KindIntent, Intent: IntentUpload, Upload: &UploadIntent{What: "result", CID: resCID},
		Fields: map[string]string{"status": "succeeded", "error": ""}})
	tr(finished, "upload", "running", "uploaded", map[string]string{"result_cid": resCID, "status": "succeeded"})
	add(Record{Job: finished, Kind: KindIntent, Intent: IntentTx, Tx: txIntent("finish_job", 2800460)})
	s, _ := sig()
	tr(finished, "finish", "uploaded", "finished", map[string]string{"finish_sig": s})

	for _, r := range recs {
		if _, err := j.Append(r); err != nil {
			return err
		}
	}
	return j.Close()
}

// v1FileCopy copies the committed schema-1 journal into a temporary directory.
func v1FileCopy(t testing.TB) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "journal.db")
	copyFile(t, v1File, dst)
	return dst
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The generator still writes what the schema-1 code wrote into the committed
// file (the bytes differ: bbolt's page allocation is not deterministic).
func TestV1GeneratorReproducesCommittedFile(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	if err := writeV1Journal(fresh); err != nil {
		t.Fatal(err)
	}
	if got := schemaOf(t, fresh); got != "1" {
		t.Fatalf("generator wrote schema %q", got)
	}
	got, want := readV1(t, fresh), readV1(t, v1FileCopy(t))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("generator output differs from %s: %d/%d records, %d/%d snapshots", v1File, len(got.all), len(want.all), len(got.snaps), len(want.snaps))
	}
}
