package runtime

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PullProgress is how far a pull is. Byte counts cover every blob of the image seen so
// far (index, manifest, config, layers): the total grows while manifests are read.
type PullProgress struct {
	Image      string
	Layers     int   // layers of the image seen so far
	LayersDone int   // of those, present in the content store
	Bytes      int64 // bytes present (already there, or fetched) of Total
	Total      int64
	Fetched    int64         // bytes downloaded by this pull (Bytes less what was already there)
	Elapsed    time.Duration // since the pull started
	Rate       float64       // Fetched / Elapsed, bytes per second
	Done       bool          // the pull finished (the last report)
}

// String is a compact line: "docker.io/library/x:1: layers 2/5, 31.2/80.0 MiB, 12.5 MiB/s".
func (p PullProgress) String() string {
	return fmt.Sprintf("%s: layers %d/%d, %s/%s MiB, %s MiB/s", p.Image, p.LayersDone, p.Layers,
		mib(p.Bytes), mib(p.Total), mib(int64(p.Rate)))
}

func mib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// TerminalProgress returns an ImageConfig.Progress that redraws one line on w (a
// terminal): "pulling <String>", ended by a newline when the pull is done.
func TerminalProgress(w io.Writer) func(PullProgress) {
	var mu sync.Mutex
	return func(p PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		end := ""
		if p.Done {
			end = "\n"
		}
		fmt.Fprintf(w, "\r\x1b[K⬇ %s%s", p, end)
	}
}

// pullTracker follows one pull: an image handler records every blob the pull walks;
// snapshot reads the content store for what is present and what is being written.
type pullTracker struct {
	cs    content.Store
	image string
	start time.Time

	mu      sync.Mutex
	blobs   []ocispec.Descriptor
	seen    map[digest.Digest]bool
	had     map[digest.Digest]bool // present before this pull fetched it
	present map[digest.Digest]bool // known present now
}

func newPullTracker(cs content.Store, image string) *pullTracker {
	return &pullTracker{cs: cs, image: image, start: time.Now(),
		seen: map[digest.Digest]bool{}, had: map[digest.Digest]bool{}, present: map[digest.Digest]bool{}}
}

// handler runs before the pull fetches each blob (containerd's base handlers do).
func (t *pullTracker) handler() images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		t.mu.Lock()
		dup := t.seen[desc.Digest]
		t.seen[desc.Digest] = true
		if !dup {
			t.blobs = append(t.blobs, desc)
		}
		t.mu.Unlock()
		if !dup {
			if _, err := t.cs.Info(ctx, desc.Digest); err == nil {
				t.mu.Lock()
				t.had[desc.Digest], t.present[desc.Digest] = true, true
				t.mu.Unlock()
			}
		}
		return nil, nil
	})
}

// snapshot computes the progress now.
func (t *pullTracker) snapshot(ctx context.Context) PullProgress {
	t.mu.Lock()
	blobs := append([]ocispec.Descriptor(nil), t.blobs...)
	t.mu.Unlock()
	// Ingests in flight, by the ref key the fetch handler writes under.
	offsets := map[string]int64{}
	if sts, err := t.cs.ListStatuses(ctx); err == nil {
		for _, st := range sts {
			offsets[st.Ref] = st.Offset
		}
	}
	p := PullProgress{Image: t.image, Elapsed: time.Since(t.start)}
	for _, d := range blobs {
		layer := images.IsLayerType(d.MediaType)
		if layer {
			p.Layers++
		}
		p.Total += d.Size
		t.mu.Lock()
		present, had := t.present[d.Digest], t.had[d.Digest]
		t.mu.Unlock()
		if !present {
			if _, err := t.cs.Info(ctx, d.Digest); err == nil {
				present = true
				t.mu.Lock()
				t.present[d.Digest] = true
				t.mu.Unlock()
			}
		}
		switch {
		case present:
			p.Bytes += d.Size
			if layer {
				p.LayersDone++
			}
			if !had {
				p.Fetched += d.Size
			}
		default:
			off := offsets[remotes.MakeRefKey(ctx, d)]
			p.Bytes += off
			p.Fetched += off
		}
	}
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(p.Fetched) / s
	}
	return p
}
