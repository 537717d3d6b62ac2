package statusapi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/journal"
)

func TestListenAndGet(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "worker.sock")
	// A stale socket file left by a crashed daemon is replaced.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bal := uint64(42)
	t0 := time.Unix(100, 0).UTC()
	srv, err := Listen(sock, func(context.Context) (*Status, error) {
		return &Status{Node: "N", BalanceLamports: &bal, ActiveJobs: 1, Slots: 2, Jobs: []Job{
			{Job: "B", State: "running", Updated: t0.Add(time.Second)},
			JobFromSnapshot(journal.Snapshot{Job: "A", State: "finished", Updated: t0,
				Fields: map[string]string{"status": "succeeded", "result_cid": "QmX"}, Container: &journal.ContainerIntent{ID: "hn-A-1"}}),
		}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(sock)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %o, want 600", info.Mode().Perm())
	}
	st, err := Get(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "N" || *st.BalanceLamports != 42 || len(st.Jobs) != 2 || st.Jobs[0].Job != "A" ||
		st.Jobs[0].Status != "succeeded" || st.Jobs[0].ResultCID != "QmX" || st.Jobs[0].Container != "hn-A-1" {
		t.Fatalf("status %+v", st)
	}
	srv.Close()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Error("socket left after Close")
	}
	if _, err := Get(context.Background(), sock); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Get with no daemon: %v", err)
	}
}
