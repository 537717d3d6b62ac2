package hardware

import (
	"context"
	"testing"
)

func TestSampleReadsThisMachine(t *testing.T) {
	h, err := Sample(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if h.CPUPercent < 0 || h.CPUPercent > 100 || h.RAMPercent <= 0 || h.RAMPercent > 100 || h.DiskFreeBytes == 0 {
		t.Fatalf("implausible sample %+v", h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Sample(ctx, t.TempDir()); err == nil {
		t.Fatal("a cancelled sample returned no error")
	}
}
