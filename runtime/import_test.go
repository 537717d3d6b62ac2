package runtime_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// TestConcurrentImports: several workers starting together on one containerd
// import the same archive at once (IMPORT_IMAGES); every import succeeds and
// names the image, none fails with containerd's "already exists".
func TestConcurrentImports(t *testing.T) {
	addr := runtimetest.StartContainerd(t)
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		t.Fatal(err)
	}
	const importers = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rts := make([]*runtime.Runtime, importers)
	for i := range rts {
		if rts[i], err = runtime.New(ctx, runtime.Config{Address: addr}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rts[i].Close() })
	}
	var wg sync.WaitGroup
	errs := make([]error, importers)
	names := make([][]string, importers)
	start := make(chan struct{})
	for i := range rts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			names[i], errs[i] = rts[i].ImportArchive(ctx, archive)
		}()
	}
	close(start)
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Errorf("importer %d: %v", i, errs[i])
		} else if len(names[i]) != 1 || names[i][0] != runtimetest.ImageRef {
			t.Errorf("importer %d named %v; want [%s]", i, names[i], runtimetest.ImageRef)
		}
	}
}
