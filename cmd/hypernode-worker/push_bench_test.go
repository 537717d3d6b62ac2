package main

// What push (WebSocket accountSubscribe / signatureSubscribe) saves over
// polling: RPC traffic of an idle worker, and how soon a new job is claimed.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/chain/localnet"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// claimedAt waits until w's JSON log shows job's transition to claimed and
// returns when it saw it (the log is scanned every 5 ms).
func claimedAt(ctx context.Context, w *child, job solana.PublicKey) (time.Time, error) {
	want := fmt.Sprintf(`"job":"%s"`, job)
	for {
		for _, line := range strings.Split(w.stderr.String(), "\n") {
			if strings.Contains(line, want) && strings.Contains(line, `"to":"claimed"`) {
				return time.Now(), nil
			}
		}
		if w.exited() {
			return time.Time{}, fmt.Errorf("worker exited: %s", lastLines(w.stderr.String(), 20))
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("job %s never claimed: %w", job, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitListed waits until node is in the market's node queue (idle, ready
// for create_job to assign it the next job).
func waitListed(ctx context.Context, rpcURL string, market, node solana.PublicKey) error {
	cl := rpc.New(rpcURL)
	for {
		info, err := cl.GetAccountInfoWithOpts(ctx, market, &rpc.GetAccountInfoOpts{Encoding: solana.EncodingBase64})
		if err == nil {
			if m, err := chain.DecodeMarket(info.Value.Data.GetBinary()); err == nil && m.QueueType == chain.QueueNodes {
				for _, k := range m.Queue {
					if k == node {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s never back in the node queue: %w", node, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BenchmarkPushVsPolling runs one real worker (the binary, real containerd)
// against a standalone localnet, first polling only (SOLANA_WS_URL=none,
// POLLING_INTERVAL 5 s), then with push (backstop poll every 60 s). For each
// mode it reports the idle worker's RPC traffic counted at the localnet's
// port (HTTP requests, bytes both ways, WebSocket included) per minute, and
// the mean latency from sending create_job (with an idle worker in the node
// queue, create_job assigns it the job) to the worker's journal transition
// to claimed, create_job posted at 4 evenly spread phases of the poll timer.
// The poster's own requests fall outside the idle window. Run:
//
//	go test ./cmd/hypernode-worker -run '^$' -bench BenchmarkPushVsPolling -benchtime 1x -timeout 20m
func BenchmarkPushVsPolling(b *testing.B) {
	const (
		pollEvery  = 5 * time.Second
		pollWindow = 30 * time.Second // 6 polls
		pushWindow = 60 * time.Second // one backstop poll
		claims     = 4
	)
	runtimetest.Skip(b)
	ctd := runtimetest.StartContainerd(b)
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	n := startCrashNet(b, dir)
	market, err := findMarket(context.Background(), n.URL, chain.DefaultMarketsProgramID)
	if err != nil {
		b.Fatal(err)
	}
	def, _ := json.Marshal(map[string]any{"image": runtimetest.ImageRef,
		"operations": []map[string]any{{"type": "run", "command": "true"}}, "timeout": 60})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cid, _, err := (&ipfs.Uploader{APIURL: n.URL}).Add(ctx, "job.json", strings.NewReader(string(def)))
	if err != nil {
		b.Fatal(err)
	}
	digest, _ := ipfs.DigestFromCID(cid)
	poster, _ := solana.NewRandomPrivateKey()

	type result struct{ callsPerMin, bytesPerMin, latencyMs float64 }
	measure := func(name string, window time.Duration, extra ...string) result {
		run := workerRun{net: n, data: filepath.Join(dir, "data-"+name), ctd: ctd, archive: archive,
			extra: append([]string{"--polling-interval", fmt.Sprint(pollEvery.Milliseconds())}, extra...)}
		w := run.start(b)
		defer func() {
			if err := w.interrupt(30 * time.Second); err != nil {
				b.Error(err)
			}
		}()
		if err := w.ready(60 * time.Second); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		for i := 0; i < claims; i++ {
			if err := waitListed(ctx, n.URL, market, n.node); err != nil {
				b.Fatal(err)
			}
			// Post at evenly spread phases of the worker's poll timer (it
			// re-listed itself just now, right after a poll), so that polling
			// is not measured at its worst or best case only.
			time.Sleep(time.Duration((float64(i) + 0.5) / claims * float64(pollEvery)))
			posted := time.Now() // create_job is sent within PostJob, then confirmed
			job, _, err := localnet.PostJob(ctx, n.URL, poster, market, digest, 0, chain.GPUAny)
			if err != nil {
				b.Fatal(err)
			}
			at, err := claimedAt(ctx, w, job)
			if err != nil {
				b.Fatal(err)
			}
			total += at.Sub(posted)
		}
		// Idle: back in the node queue, nothing to run.
		if err := waitListed(ctx, n.URL, market, n.node); err != nil {
			b.Fatal(err)
		}
		before := faultReport(b, n.URL, nil)
		time.Sleep(window) // the quantity measured is what happens during this wall-clock window
		after := faultReport(b, n.URL, nil)
		per := float64(time.Minute) / float64(window)
		return result{
			callsPerMin: float64(after.Traffic.Requests-before.Traffic.Requests) * per, // /admin is not counted
			bytesPerMin: float64(after.Traffic.BytesIn+after.Traffic.BytesOut-before.Traffic.BytesIn-before.Traffic.BytesOut) * per,
			latencyMs:   float64(total.Milliseconds()) / claims,
		}
	}
	for i := 0; i < b.N; i++ {
		poll := measure("poll", pollWindow, "--ws-url", "none")
		push := measure("push", pushWindow)
		b.ReportMetric(poll.callsPerMin, "poll-calls/min")
		b.ReportMetric(poll.bytesPerMin, "poll-bytes/min")
		b.ReportMetric(poll.latencyMs, "poll-claim-ms")
		b.ReportMetric(push.callsPerMin, "push-calls/min")
		b.ReportMetric(push.bytesPerMin, "push-bytes/min")
		b.ReportMetric(push.latencyMs, "push-claim-ms")
		if push.bytesPerMin > 0 {
			b.ReportMetric(poll.bytesPerMin/push.bytesPerMin, "poll/push-bytes")
		}
		if push.latencyMs > 0 {
			b.ReportMetric(poll.latencyMs/push.latencyMs, "poll/push-latency")
		}
	}
}
