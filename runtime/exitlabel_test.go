package runtime_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hypernode-sol/worker/runtime"
)

func TestParseExitLabel(t *testing.T) {
	at := time.Date(2026, 11, 29, 18, 0, 0, 123456789, time.UTC)
	tests := []struct {
		in      string
		op      int
		exit    runtime.Exit
		wantErr bool
	}{
		{in: "0/0/0/0", op: 0, exit: runtime.Exit{}},
		{in: "3/137/" + itoa(at.UnixNano()) + "/1", op: 3, exit: runtime.Exit{Code: 137, ExitedAt: at, OOMKilled: true}},
		{in: "63/4294967295/1/0", op: 63, exit: runtime.Exit{Code: 4294967295, ExitedAt: time.Unix(0, 1).UTC()}},
		{in: "", wantErr: true},
		{in: "1/2/3", wantErr: true},
		{in: "1/2/3/0/5", wantErr: true},
		{in: "-1/0/0/0", wantErr: true},
		{in: "+1/0/0/0", wantErr: true},
		{in: "01/0/0/0", wantErr: true},
		{in: "1/4294967296/0/0", wantErr: true},
		{in: "1/-1/0/0", wantErr: true},
		{in: "1/0/-5/0", wantErr: true},
		{in: "1/0/x/0", wantErr: true},
		{in: "1/0/0/2", wantErr: true},
		{in: "1/0/0/true", wantErr: true},
		{in: "99999999999999999999/0/0/0", wantErr: true},
	}
	for _, tt := range tests {
		op, exit, err := runtime.ParseExitLabel(tt.in)
		if tt.wantErr {
			if !errors.Is(err, runtime.ErrInvalid) {
				t.Errorf("ParseExitLabel(%q) = %v, want ErrInvalid", tt.in, err)
			}
			continue
		}
		if err != nil || op != tt.op || exit.Code != tt.exit.Code || exit.OOMKilled != tt.exit.OOMKilled ||
			!exit.ExitedAt.Equal(tt.exit.ExitedAt) {
			t.Errorf("ParseExitLabel(%q) = %d, %+v, %v; want %d, %+v", tt.in, op, exit, err, tt.op, tt.exit)
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// FuzzParseExitLabel: a label is read back from containerd, where anyone with access
// could have written it; parsing must never panic, and what parses is canonical.
func FuzzParseExitLabel(f *testing.F) {
	for _, seed := range []string{"0/0/0/0", "3/137/1764439200123456789/1", "1/2/3", "-1/0/0/0",
		"01/0/0/0", "1/4294967296/0/0", "//", "1/0/0/2", "\x00/\xff/0/0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		op, exit, err := runtime.ParseExitLabel(s)
		if err != nil {
			if !errors.Is(err, runtime.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if op < 0 || exit.Code < 0 {
			t.Fatalf("ParseExitLabel(%q) = %d, %+v: negative", s, op, exit)
		}
		op2, exit2, err := runtime.ParseExitLabel(runtime.FormatExitLabel(op, exit))
		if err != nil || op2 != op || exit2 != exit {
			t.Fatalf("round trip of %q: %d %+v %v, want %d %+v", s, op2, exit2, err, op, exit)
		}
		if runtime.FormatExitLabel(op, exit) != s {
			t.Fatalf("%q parsed but is not canonical (%q)", s, runtime.FormatExitLabel(op, exit))
		}
	})
}
