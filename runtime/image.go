package runtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/rs/zerolog"
)

// LabelLastUsed is the image label holding when the worker last needed the image
// (RFC 3339, UTC): EnsureImage sets it, Prune removes the least recently used first.
const LabelLastUsed = "hypernode.last-used"

// Defaults of ImageConfig.
const (
	DefaultProgressInterval = 500 * time.Millisecond
	DefaultProgressLogEvery = 10 * time.Second
	DefaultPruneGrace       = 10 * time.Minute
)

// ErrUnauthorized: the registry refused the pull for lack of (valid) credentials.
var ErrUnauthorized = errors.New("registry refused the credentials")

// ImageConfig configures pulls and the image cache.
type ImageConfig struct {
	// Auth holds credentials per registry host (LoadDockerConfig). They are sent only
	// to their host and never logged.
	Auth RegistryAuth
	// Progress, when set, is called about every ProgressInterval while a pull runs
	// and once at its end (Done set), from one goroutine at a time; TerminalProgress
	// draws it as one line on a terminal. When nil, progress goes to the log every
	// ProgressLogEvery instead.
	Progress         func(PullProgress)
	ProgressInterval time.Duration // DefaultProgressInterval when 0
	ProgressLogEvery time.Duration // DefaultProgressLogEvery when 0
	// CacheLimitBytes is the disk budget of the namespace's images (each image's
	// content plus its unpacked snapshots, as containerd counts them; layers shared
	// by several images count for each). After a pull takes the total above it,
	// Prune removes the least recently used images no container uses. 0: no budget.
	CacheLimitBytes int64
	// PruneGrace protects images used this recently from pruning, so that an image
	// pulled for a job that has not created its container yet stays
	// (DefaultPruneGrace when 0; negative: no grace).
	PruneGrace time.Duration
}

// ImportArchive imports an OCI image layout packed as a tar (index.json, oci-layout,
// blobs/; docker-archive tars work too) and unpacks every imported image for the
// runtime's snapshotter. It returns the image names, taken from the index's
// io.containerd.image.name or org.opencontainers.image.ref.name annotations
// (testdata/image/build.sh writes "hypernode.local/test:latest").
func (r *Runtime) ImportArchive(ctx context.Context, path string) ([]string, error) {
	return importRetrying(r.ctx(ctx), path, r.importOnce)
}

// importRetrying runs once (an import and unpack of the archive at path) until it
// succeeds, fails otherwise than on a collision, or has been tried importAttempts
// times, waiting 100 ms × the attempt number between tries.
func importRetrying(ctx context.Context, path string, once func(context.Context, string) ([]string, error)) ([]string, error) {
	for attempt := 1; ; attempt++ {
		names, err := once(ctx, path)
		if err == nil {
			return names, nil
		}
		// Another importer of the same archive into the same containerd (several
		// workers starting together) holds or has just written the same blobs,
		// image record or unpacked snapshot: containerd answers "already exists"
		// or "locked" (unavailable). Importing again finds the content present.
		// containerd's client absorbs most of these itself (a blob already
		// written, a locked ingest ref, a snapshot already committed); what
		// reaches here is mostly the image record another importer created
		// between this import's Update (not found) and its Create, a race
		// of one round trip.
		if attempt >= importAttempts || !(errdefs.IsAlreadyExists(err) || errdefs.IsUnavailable(err)) || ctx.Err() != nil {
			return nil, fmt.Errorf("import image archive %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("import image archive %s: %w", path, ctx.Err())
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
}

// importAttempts bounds ImportArchive's tries when concurrent imports of the
// same content collide.
const importAttempts = 5

func (r *Runtime) importOnce(ctx context.Context, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := r.client.Import(ctx, f)
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("no named image in its index: %w", ErrInvalid)
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		if err := r.unpack(ctx, client.NewImage(r.client, img)); err != nil {
			return nil, err
		}
		names = append(names, img.Name)
	}
	return names, nil
}

// EnsureImage makes ref present and unpacked, and records the use (LabelLastUsed, to
// the minute: a use within a minute of the recorded one is not written again): an
// image already in the namespace is only unpacked if needed (no network; not even
// checked when this Runtime unpacked or checked it before and pruned nothing since:
// should its snapshots go behind the worker's back, Create unpacks it again);
// otherwise it is pulled, with progress reported as ImageConfig says and the
// registry's credential from ImageConfig.Auth. Short names are normalised the Docker way ("busybox" →
// "docker.io/library/busybox:latest"). Registries on loopback (localhost,
// 127.0.0.0/8, ::1) are reached over plain HTTP, all others over HTTPS. After a pull,
// the cache is pruned to ImageConfig.CacheLimitBytes (ref itself is kept).
//
// Errors wrap ErrInvalid for a malformed ref, ErrNotFound when the registry has no
// such image, ErrUnauthorized when it refuses the credentials (or their absence).
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	ctx = r.ctx(ctx)
	name, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	img, err := r.client.GetImage(ctx, name)
	switch {
	case err == nil:
		if _, ok := r.unpacked.Load(img.Target().Digest); !ok {
			if err := r.unpack(ctx, img); err != nil {
				return err
			}
		}
		r.touchIfStale(ctx, img)
		return nil
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("image %s: %w", name, err)
	}
	if err := r.pull(ctx, name); err != nil {
		return err
	}
	r.touch(ctx, name)
	if r.images.CacheLimitBytes > 0 {
		if _, err := r.Prune(ctx, r.images.CacheLimitBytes, name); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("image cache prune")
		}
	}
	return nil
}

// resolver is the registry resolver of pulls: plain HTTP on loopback, HTTPS
// elsewhere, ImageConfig.Auth's credential for each host.
func (r *Runtime) resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithPlainHTTP(isLoopbackHost),
			docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(r.images.Auth.lookup))),
		),
	})
}

func (r *Runtime) pull(ctx context.Context, name string) error {
	log := zerolog.Ctx(ctx)
	log.Info().Str("image", name).Msg("pulling image")
	tr := newPullTracker(r.client.ContentStore(), name)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.reportProgress(pctx, tr)
	}()
	_, err := r.client.Pull(ctx, name,
		client.WithResolver(r.resolver()),
		client.WithImageHandler(tr.handler()),
		client.WithPullUnpack,
		client.WithPullSnapshotter(r.snapshotter))
	cancel()
	<-done
	if err != nil {
		if refused(err) {
			return fmt.Errorf("pull image %s: %w: %w", name, ErrUnauthorized, err)
		}
		return notFound("pull image "+name, err)
	}
	p := tr.snapshot(context.WithoutCancel(ctx))
	p.Done = true
	if r.images.Progress != nil {
		r.images.Progress(p)
	}
	log.Info().Str("image", name).Int("layers", p.Layers).Int64("bytes", p.Total).Int64("fetched_bytes", p.Fetched).
		Dur("elapsed", p.Elapsed).Float64("rate_bytes_per_s", p.Rate).Msg("image pulled")
	return nil
}

// reportProgress calls ImageConfig.Progress every ProgressInterval, or logs every
// ProgressLogEvery, until ctx ends.
func (r *Runtime) reportProgress(ctx context.Context, tr *pullTracker) {
	every := r.images.ProgressInterval
	if every <= 0 {
		every = DefaultProgressInterval
	}
	cb := r.images.Progress
	if cb == nil {
		every = r.images.ProgressLogEvery
		if every <= 0 {
			every = DefaultProgressLogEvery
		}
		log := zerolog.Ctx(ctx)
		cb = func(p PullProgress) {
			log.Info().Str("image", p.Image).Int("layers_done", p.LayersDone).Int("layers", p.Layers).
				Int64("bytes_done", p.Bytes).Int64("bytes", p.Total).Float64("rate_bytes_per_s", p.Rate).
				Msg("pulling image: " + p.String())
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cb(tr.snapshot(ctx))
		}
	}
}

// refused reports whether a pull failed on the registry's authorization: no or
// wrong credentials (401), or not allowed (403).
func refused(err error) bool {
	var st remoteerrors.ErrUnexpectedStatus
	if errors.As(err, &st) && (st.StatusCode == http.StatusUnauthorized || st.StatusCode == http.StatusForbidden) {
		return true
	}
	return errors.Is(err, docker.ErrInvalidAuthorization) || errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err)
}

// touch records that name was just needed (LabelLastUsed). A failure only weakens the
// LRU order, so it is logged, not returned.
func (r *Runtime) touch(ctx context.Context, name string) {
	r.setLastUsed(ctx, name, time.Now())
}

// touchIfStale is touch for an image whose LabelLastUsed (read with img) is missing
// or at least lastUsedResolution old: an image used again and again costs no write
// to containerd's metadata on each job's start.
func (r *Runtime) touchIfStale(ctx context.Context, img client.Image) {
	if t, err := time.Parse(time.RFC3339Nano, img.Labels()[LabelLastUsed]); err == nil {
		if age := time.Since(t); age >= 0 && age < lastUsedResolution {
			return
		}
	}
	r.touch(ctx, img.Name())
}

// lastUsedResolution is how stale an image's LabelLastUsed may be while the image is
// used: far below DefaultPruneGrace.
const lastUsedResolution = time.Minute

func (r *Runtime) setLastUsed(ctx context.Context, name string, t time.Time) {
	_, err := r.client.ImageService().Update(ctx, images.Image{Name: name,
		Labels: map[string]string{LabelLastUsed: t.UTC().Format(time.RFC3339Nano)}}, "labels."+LabelLastUsed)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("image", name).Msg("record image use")
	}
}

// SetImageLastUsed sets ref's LabelLastUsed to t (for tests and tools that seed the
// LRU order). The error wraps ErrNotFound when there is no such image.
func (r *Runtime) SetImageLastUsed(ctx context.Context, ref string, t time.Time) error {
	ctx = r.ctx(ctx)
	name, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	_, err = r.client.ImageService().Update(ctx, images.Image{Name: name,
		Labels: map[string]string{LabelLastUsed: t.UTC().Format(time.RFC3339Nano)}}, "labels."+LabelLastUsed)
	if err != nil {
		return notFound("image "+name, err)
	}
	return nil
}

// ImageUse is one image of the namespace as Images and Prune see it.
type ImageUse struct {
	Name     string
	Bytes    int64     // content plus unpacked snapshots
	LastUsed time.Time // LabelLastUsed, or when the image was last updated when unlabelled
	InUse    bool      // a container of the namespace (running or not) uses it
}

// Images lists the namespace's images, least recently used first.
func (r *Runtime) Images(ctx context.Context) ([]ImageUse, error) {
	ctx = r.ctx(ctx)
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	ctrs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range ctrs {
		if info, err := c.Info(ctx, client.WithoutRefreshedMetadata); err == nil {
			used[info.Image] = true
		}
	}
	out := make([]ImageUse, 0, len(imgs))
	for _, im := range imgs {
		u := ImageUse{Name: im.Name, LastUsed: im.UpdatedAt, InUse: used[im.Name]}
		if t, err := time.Parse(time.RFC3339Nano, im.Labels[LabelLastUsed]); err == nil {
			u.LastUsed = t
		}
		size, err := client.NewImage(r.client, im).Usage(ctx, client.WithSnapshotUsage())
		if err != nil {
			return nil, fmt.Errorf("image %s: usage: %w", im.Name, err)
		}
		u.Bytes = size
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed.Before(out[j].LastUsed) })
	return out, nil
}

// PruneReport says what Prune did.
type PruneReport struct {
	Removed      []string // image names, in removal order
	FreedBytes   int64    // their ImageUse.Bytes
	BytesBefore  int64
	BytesAfter   int64
	OverBudgetBy int64 // > 0 when only images in use or within PruneGrace were left
}

// Prune removes images until the namespace's images take at most limitBytes: least
// recently used first, never one a container uses, one named in keep, or one used
// within ImageConfig.PruneGrace. Removal is synchronous (containerd's garbage
// collector frees the content and snapshots before Prune returns).
func (r *Runtime) Prune(ctx context.Context, limitBytes int64, keep ...string) (PruneReport, error) {
	var rep PruneReport
	list, err := r.Images(ctx)
	if err != nil {
		return rep, err
	}
	ctx = r.ctx(ctx)
	for _, u := range list {
		rep.BytesBefore += u.Bytes
	}
	grace := r.images.PruneGrace
	if grace == 0 {
		grace = DefaultPruneGrace
	}
	kept := make([]string, 0, len(keep))
	for _, k := range keep {
		if n, err := normalizeRef(k); err == nil {
			kept = append(kept, n)
		}
	}
	total := rep.BytesBefore
	now := time.Now()
	for _, u := range list {
		if total <= limitBytes {
			break
		}
		if u.InUse || slices.Contains(kept, u.Name) || (grace > 0 && now.Sub(u.LastUsed) < grace) {
			continue
		}
		r.unpacked.Clear() // its layers' snapshots may go with it
		err := r.client.ImageService().Delete(ctx, u.Name, images.SynchronousDelete())
		if err != nil && !errdefs.IsNotFound(err) {
			return rep, fmt.Errorf("remove image %s: %w", u.Name, err)
		}
		zerolog.Ctx(ctx).Info().Str("image", u.Name).Int64("bytes", u.Bytes).Time("last_used", u.LastUsed).
			Msg("image removed: cache over budget")
		rep.Removed = append(rep.Removed, u.Name)
		rep.FreedBytes += u.Bytes
		total -= u.Bytes
	}
	rep.BytesAfter = total
	if total > limitBytes {
		rep.OverBudgetBy = total - limitBytes
	}
	return rep, nil
}

// image returns the local image called ref (normalised), or an error wrapping
// ErrNotFound.
func (r *Runtime) image(ctx context.Context, ref string) (client.Image, error) {
	name, err := normalizeRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := r.client.GetImage(ctx, name)
	if err != nil {
		return nil, notFound("image "+name+" (import or pull it first)", err)
	}
	return img, nil
}

// unpack unpacks img for the runtime's snapshotter unless it is already, and
// remembers that it is (Runtime.unpacked).
func (r *Runtime) unpack(ctx context.Context, img client.Image) error {
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return fmt.Errorf("image %s: check unpacked for %s: %w", img.Name(), r.snapshotter, err)
	}
	if !ok {
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return fmt.Errorf("image %s: unpack for %s: %w", img.Name(), r.snapshotter, err)
		}
	}
	r.unpacked.Store(img.Target().Digest, struct{}{})
	return nil
}

// normalizeRef turns an image reference into containerd's full name.
func normalizeRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w: %w", ref, ErrInvalid, err)
	}
	return named.String(), nil
}
