package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestHitKills runs this test binary as a child with a failpoint armed and
// checks that it dies by SIGKILL at the armed hit, not before.
func TestHitKills(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit(OpAfterExit) // first hit: armed for the second
		os.Stdout.WriteString("survived first hit\n")
		Hit(ClaimAfterIntent) // not armed
		Hit(OpAfterExit)
		os.Stdout.WriteString("survived second hit\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHitKills$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"="+OpAfterExit+":2")
	out, err := cmd.Output()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("child did not die: %v, output %q", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", ws)
	}
	if !strings.Contains(string(out), "survived first hit") || strings.Contains(string(out), "survived second hit") {
		t.Fatalf("child output %q", out)
	}
}

func TestUnarmedIsInert(t *testing.T) {
	if os.Getenv(Env) != "" {
		t.Skip(Env + " is set in this environment")
	}
	for _, name := range All {
		Hit(name)
	}
	if Armed() {
		t.Fatal("armed without the environment variable")
	}
}

func TestNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range All {
		if seen[n] {
			t.Fatalf("duplicate failpoint %s", n)
		}
		seen[n] = true
	}
	if len(All) < 12 {
		t.Fatalf("%d failpoints, want at least 12", len(All))
	}
}
