package runtime

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/rs/zerolog"
)

// ImportArchive imports an OCI image layout packed as a tar (index.json, oci-layout,
// blobs/; docker-archive tars work too) and unpacks every imported image for the
// runtime's snapshotter. It returns the image names, taken from the index's
// io.containerd.image.name or org.opencontainers.image.ref.name annotations
// (testdata/image/build.sh writes "hypernode.local/test:latest").
func (r *Runtime) ImportArchive(ctx context.Context, path string) ([]string, error) {
	ctx = r.ctx(ctx)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	defer f.Close()
	imgs, err := r.client.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import image archive %s: %w", path, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("import image archive %s: no named image in its index: %w", path, ErrInvalid)
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		if err := r.unpack(ctx, client.NewImage(r.client, img)); err != nil {
			return nil, fmt.Errorf("import image archive %s: %w", path, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}

// EnsureImage makes ref present and unpacked: an image already in the namespace is only
// unpacked if needed (no network); otherwise it is pulled. Short names are normalised
// the Docker way ("busybox" → "docker.io/library/busybox:latest"). Registries on
// loopback (localhost, 127.0.0.0/8, ::1) are reached over plain HTTP, all others over
// HTTPS. Registry credentials are not supported yet. Returns an error wrapping
// ErrInvalid for a malformed ref.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	ctx = r.ctx(ctx)
	name, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	img, err := r.client.GetImage(ctx, name)
	switch {
	case err == nil:
		return r.unpack(ctx, img)
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("image %s: %w", name, err)
	}
	zerolog.Ctx(ctx).Info().Str("image", name).Msg("pulling image")
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(isLoopbackHost)),
	})
	if _, err := r.client.Pull(ctx, name,
		client.WithResolver(resolver),
		client.WithPullUnpack,
		client.WithPullSnapshotter(r.snapshotter)); err != nil {
		return notFound("pull image "+name, err)
	}
	return nil
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

func (r *Runtime) unpack(ctx context.Context, img client.Image) error {
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return fmt.Errorf("image %s: check unpacked for %s: %w", img.Name(), r.snapshotter, err)
	}
	if ok {
		return nil
	}
	if err := img.Unpack(ctx, r.snapshotter); err != nil {
		return fmt.Errorf("image %s: unpack for %s: %w", img.Name(), r.snapshotter, err)
	}
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

// isLoopbackHost says whether a registry host ("host" or "host:port") is on loopback,
// where plain HTTP is allowed.
func isLoopbackHost(hostport string) (bool, error) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	if ip == nil && len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		ip = net.ParseIP(host[1 : len(host)-1])
	}
	return ip != nil && ip.IsLoopback(), nil
}
