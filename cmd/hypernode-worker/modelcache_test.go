package main

import (
	"strings"
	"testing"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestModelCacheAcrossJobs: the first job of a model fills /models read-write;
// once it succeeds the model is sealed (digest, read-only) and the next job of
// the same model reads it and cannot change it; a failed population is
// discarded; `cache ls` and `cache prune --all` show and evict it.
func TestModelCacheAcrossJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	dir := t.TempDir()
	cacheFlags := []string{"--model-cache-limit-mb", "64", "--model-cache-dir", dir, "--env-file", ""}
	w := spawnWorker(t, ctd, cacheFlags...)
	job := func(model string, cmd string) *jobdef.Result {
		t.Helper()
		d := shJob(30, cmd)
		d["model"] = model
		k := w.postDefinition(t, d)
		return w.result(t, w.waitJobs(t, []solana.PublicKey{k})[k])
	}
	first := job("org/tiny", `echo weights-v1 > $HYPERNODE_MODEL_DIR/w.bin && mkdir /models/sub && echo cfg > /models/sub/c && echo populated`)
	if first.Status != jobdef.StatusSucceeded {
		t.Fatalf("populating job: %+v", first)
	}
	ls := w.cli(t, append([]string{"cache", "ls"}, cacheFlags...)...)
	if !strings.Contains(ls, "org/tiny") || !strings.Contains(ls, "sealed") || !strings.Contains(ls, "sha256:") || !strings.Contains(ls, " 15 ") {
		t.Fatalf("cache ls after populating:\n%s", ls)
	}
	second := job("org/tiny", `cat /models/w.bin /models/sub/c; `+
		`if (echo tamper > /models/w.bin) 2>/dev/null; then echo ESCAPED overwrite; else echo blocked overwrite; fi; `+
		`if touch /models/new 2>/dev/null; then echo ESCAPED create; else echo blocked create; fi; `+
		`if rm -f /models/sub/c 2>/dev/null && ! test -e /models/sub/c; then echo ESCAPED delete; else echo blocked delete; fi`)
	log := w.fullLogs(t, second)
	if second.Status != jobdef.StatusSucceeded || !strings.Contains(log, "weights-v1\ncfg\n") {
		t.Fatalf("reading job: %+v\n%s", second, log)
	}
	wantBlocked(t, log, 3)

	failed := job("org/bad", `echo partial > /models/x; exit 1`)
	if failed.Status != jobdef.StatusFailed {
		t.Fatalf("failing job: %+v", failed)
	}
	ls = w.cli(t, append([]string{"cache", "ls"}, cacheFlags...)...)
	if strings.Contains(ls, "org/bad") || !strings.Contains(ls, "0 job(s)") {
		t.Fatalf("cache ls after a failed population and the reader's end:\n%s", ls)
	}
	out := w.cli(t, append([]string{"cache", "prune", "--all"}, cacheFlags...)...)
	if !strings.Contains(out, "evicted org/tiny") {
		t.Fatalf("cache prune --all: %s", out)
	}
	if ls = w.cli(t, append([]string{"cache", "ls"}, cacheFlags...)...); strings.Contains(ls, "org/tiny") {
		t.Fatalf("after prune:\n%s", ls)
	}
}
