package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestCanarySecretAppearsNowhere: a job whose env holds a canary secret prints
// it to stdout and stderr, writes it into its outputs and fails with it. The
// canary must then appear in no worker log line, no journal record (the raw
// bbolt file and `replay --json`), not in the result document, its error, its
// log tails, any uploaded blob, nor any file left in the data directory.
func TestCanarySecretAppearsNowhere(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	const canary = "hn-canary-5e1f9b7c0d2a"
	ctd := runtimetest.StartContainerd(t)
	w := spawnWorker(t, ctd)
	def := shJob(30,
		`echo "token is $HF_TOKEN"; echo "$HF_TOKEN" >&2; printf '%s' "$HF_TOKEN"; mkdir -p /workspace/output; `+
			`echo "leak $HF_TOKEN" > /workspace/output/leak.txt; printf '%s' "$HF_TOKEN" > /workspace/output/raw.bin; `+
			`echo "$HF_TOKEN$HF_TOKEN" > /workspace/output/twice.txt`,
		`echo "fatal: bad token $HF_TOKEN" >&2; exec "$HF_TOKEN"`)
	def["env"] = map[string]string{"HF_TOKEN": canary}
	def["model"] = "canary/model"
	k := w.postDefinition(t, def)
	acc := w.waitJobs(t, []solana.PublicKey{k})[k]
	res := w.result(t, acc)
	blobs := map[string][]byte{}
	f := &ipfs.Fetcher{Gateways: []string{w.rpc}, MaxBytes: 16 << 20, PerGatewayTimeout: 10 * time.Second}
	var cids []string
	for _, op := range res.Operations {
		cids = append(cids, op.Log)
	}
	for _, o := range res.Outputs {
		cids = append(cids, o.CID)
	}
	for _, cid := range cids {
		b, err := f.Fetch(context.Background(), cid)
		if err != nil {
			t.Fatalf("blob %s: %v", cid, err)
		}
		if len(b) == 0 {
			t.Errorf("blob %s is empty", cid)
		}
		blobs[cid] = b
	}
	w.stop(t)

	found := func(where string, b []byte) {
		t.Helper()
		if bytes.Contains(b, []byte(canary)) {
			i := bytes.Index(b, []byte(canary))
			t.Errorf("the canary appears in %s: …%q…", where, b[max(0, i-60):min(len(b), i+len(canary)+20)])
		}
	}
	for cid, b := range blobs {
		found("uploaded blob "+cid, b)
	}
	// The job did what it was asked: failed, with output files and logs.
	if res.Status != jobdef.StatusFailed || len(res.Operations) != 2 || len(res.Outputs) != 3 {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(res.Operations[0].LogTail, "token is "+jobdef.Redacted) {
		t.Errorf("log tail %q: want the secret replaced by %s", res.Operations[0].LogTail, jobdef.Redacted)
	}

	found("the worker's stderr log", w.log.Bytes())
	found("the worker's stdout", []byte(w.stdout()))
	if w.log.Len() == 0 || !strings.Contains(w.log.String(), k.String()) {
		t.Fatal("the worker log is empty or never names the job: nothing was checked")
	}
	found("the journal file", mustRead(t, filepath.Join(w.data, "journal.db")))
	replay := w.cli(t, "replay", "--data-dir", w.data, "--json")
	if !strings.Contains(replay, k.String()) {
		t.Fatalf("replay --json does not show the job:\n%.500s", replay)
	}
	found("replay --json", []byte(replay))
	found("replay", []byte(w.cli(t, "replay", "--data-dir", w.data)))
	found("status", []byte(w.cli(t, "status", "--data-dir", w.data)))

	doc, err := res.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	found("the result document", doc)
	found("the result's error", []byte(res.Error))
	// Every file the worker left, the embedded IPFS store and market state
	// included, but the definition the poster stored there: it holds the
	// env in clear by the spec's design, before any worker sees it.
	posted, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	defCID, _, err := ipfs.ComputeCID(bytes.NewReader(posted))
	if err != nil {
		t.Fatal(err)
	}
	defPath := filepath.Join(w.data, "localnet", "ipfs", defCID.String())
	if _, err := os.Stat(defPath); err != nil {
		t.Fatalf("the posted definition is not where expected: %v", err)
	}
	n := 0
	err = filepath.WalkDir(w.data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n++
		if p != defPath {
			found("file "+p, mustRead(t, p))
		}
		return nil
	})
	if err != nil || n < 5 {
		t.Fatalf("walked %d files of the data directory: %v", n, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
