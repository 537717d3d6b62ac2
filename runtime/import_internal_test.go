package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestImportRetrying: an import that collides with a concurrent one
// (containerd's "already exists" or "unavailable") is tried again, up to
// importAttempts times; any other error, or a cancelled context, ends it at
// once. The import step is a fake here: with a real containerd the collision
// is a race of one round trip (see TestContainerd/ImportConcurrentAndExisting
// for the real imports).
func TestImportRetrying(t *testing.T) {
	const path = "/archives/img.tar"
	collide := func(kind error) error { return fmt.Errorf("image %q: %w", "hypernode.local/test:latest", kind) }
	for _, tt := range []struct {
		name      string
		errs      []error // the fake import's answers, in order; then success
		wantCalls int
		wantErr   func(error) bool
	}{
		{"already exists, then imported", []error{collide(errdefs.ErrAlreadyExists)}, 2, nil},
		{"locked twice, then imported", []error{collide(errdefs.ErrUnavailable), collide(errdefs.ErrUnavailable)}, 3, nil},
		{"locked every time", []error{
			collide(errdefs.ErrUnavailable), collide(errdefs.ErrUnavailable), collide(errdefs.ErrUnavailable),
			collide(errdefs.ErrUnavailable), collide(errdefs.ErrUnavailable), collide(errdefs.ErrUnavailable),
		}, importAttempts, errdefs.IsUnavailable},
		{"not a collision", []error{fmt.Errorf("no named image in its index: %w", ErrInvalid)}, 1,
			func(err error) bool { return errors.Is(err, ErrInvalid) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			names, err := importRetrying(context.Background(), path, func(_ context.Context, p string) ([]string, error) {
				if p != path {
					t.Errorf("import of %q; want %q", p, path)
				}
				calls++
				if calls <= len(tt.errs) {
					return nil, tt.errs[calls-1]
				}
				return []string{"hypernode.local/test:latest"}, nil
			})
			if calls != tt.wantCalls {
				t.Errorf("%d imports; want %d", calls, tt.wantCalls)
			}
			if tt.wantErr == nil {
				if err != nil || len(names) != 1 || names[0] != "hypernode.local/test:latest" {
					t.Errorf("= %v, %v; want the image's name", names, err)
				}
				return
			}
			if !tt.wantErr(err) || !strings.Contains(fmt.Sprint(err), path) || names != nil {
				t.Errorf("= %v, %v; want the kind of error, naming %s", names, err, path)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		_, err := importRetrying(ctx, path, func(context.Context, string) ([]string, error) {
			calls++
			cancel() // the worker is stopping while the imports collide
			return nil, collide(errdefs.ErrAlreadyExists)
		})
		if calls != 1 || err == nil {
			t.Errorf("%d imports, %v; want 1 and an error", calls, err)
		}
	})
}
