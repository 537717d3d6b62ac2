package runtime_test

import (
	"sync"
	"testing"

	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
)

// testImportConcurrentAndExisting: several workers starting together on one
// containerd import the same archive at once (IMPORT_IMAGES) into a namespace
// without it, then again while it is there: every import succeeds and names
// the image, none fails with containerd's "already exists", and the namespace
// holds the image once, unpacked (EnsureImage finds it without a registry).
//
// Whether two of these imports collide (ImportArchive's retry) is a race of
// one round trip that containerd's client mostly absorbs; TestImportRetrying
// drives the retry itself.
func (e *env) testImportConcurrentAndExisting(t *testing.T) {
	archive, err := runtimetest.ImageArchive(runtimetest.ImageRef, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	ns := "imports-" + runtimetest.UniqueJob(t) // a namespace without the image
	const importers = 4
	rts := make([]*runtime.Runtime, importers)
	for i := range rts {
		if rts[i], err = runtime.New(ctx, runtime.Config{Address: e.addr, Namespace: ns}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rts[i].Close() })
	}
	importAll := func(round string, n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		names := make([][]string, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				names[i], errs[i] = rts[i].ImportArchive(ctx, archive)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("%s: importer %d: %v", round, i, errs[i])
			} else if len(names[i]) != 1 || names[i][0] != runtimetest.ImageRef {
				t.Errorf("%s: importer %d named %v; want [%s]", round, i, names[i], runtimetest.ImageRef)
			}
		}
		imgs, err := rts[0].Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || imgs[0].Name != runtimetest.ImageRef || imgs[0].Bytes <= 0 {
			t.Errorf("%s: namespace %s holds %+v; want %s once", round, ns, imgs, runtimetest.ImageRef)
		}
	}
	importAll("into an empty namespace", importers)
	importAll("while the image is there", 2)
	if _, err := rts[1].ImportArchive(ctx, archive); err != nil {
		t.Errorf("import again, alone: %v", err)
	}
	// hypernode.local resolves nowhere: EnsureImage succeeds only on the
	// imported, unpacked image.
	if err := rts[2].EnsureImage(ctx, runtimetest.ImageRef); err != nil {
		t.Errorf("EnsureImage after the imports: %v", err)
	}
}
