package journal

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// These tests kill -9 a child process (this test binary, re-run in child
// mode) while it writes the journal, then open what it left.

const childEnv = "JOURNAL_KILL_CHILD" // "<mode> <path>"

// runChild is the child's side; it never returns.
func runChild(mode, path string) {
	switch mode {
	case "upgrade":
		// Stop for good in the middle of the upgrade transaction.
		upgradeHook = func(n int) {
			if n == 5000 {
				fmt.Println("indexed 5000")
				io.ReadAll(os.Stdin) // the parent never writes: wait for SIGKILL
			}
		}
		_, err := Open(path, Options{})
		fmt.Println("upgrade ended:", err)
	case "append":
		checkpointEvery = 256 // several checkpoints before the kill
		j, err := Open(path, Options{})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(2)
		}
		for i := 0; ; i++ {
			rec, err := j.Append(Record{Job: fmt.Sprintf("job%d", i%7), Kind: KindProgress, Fields: map[string]string{"i": strconv.Itoa(i)}})
			if err != nil {
				fmt.Println("append:", err)
				os.Exit(2)
			}
			fmt.Println(rec.Seq) // durable: Append has fsynced
		}
	}
	os.Exit(3)
}

// killChildAt starts the child and kills it (SIGKILL) once it prints a line
// for which stop returns true.
func killChildAt(t *testing.T, mode, path string, stop func(line string) bool) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill")
	cmd.Env = append(os.Environ(), childEnv+"="+mode+" "+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil { // held open, never written
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if stop(sc.Text()) {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			return sc.Text()
		}
	}
	cmd.Wait()
	t.Fatalf("child (%s) ended without the line awaited", mode)
	return ""
}

func TestKillDuringUpgradeLeavesSchema1(t *testing.T) {
	if c := os.Getenv(childEnv); c != "" {
		mode, path, _ := strings.Cut(c, " ")
		runChild(mode, path)
	}
	if testing.Short() {
		t.Skip("kill -9 of a child process (skipped with -short)")
	}
	path := filepath.Join(t.TempDir(), "j.db")
	buildJournalSchema(t, path, 20_000, 50, 1).Close()
	before := fileSum(t, path)
	killChildAt(t, "upgrade", path, func(l string) bool { return l == "indexed 5000" })

	if fileSum(t, path) != before {
		t.Fatal("the killed upgrade changed the file")
	}
	if got := schemaOf(t, path); got != "1" {
		t.Fatalf("after the killed upgrade: schema %q", got)
	}
	if err := Check(path); err != nil {
		t.Fatalf("check after the killed upgrade: %v", err)
	}
	j := open(t, path) // the upgrade, this time to the end
	defer j.Close()
	recs, err := j.Records("job0017")
	if j.Schema() != SchemaVersion || err != nil || len(recs) != 400 {
		t.Fatalf("upgrade after the kill: schema %d, %d records of job0017, %v", j.Schema(), len(recs), err)
	}
}

func TestKillDuringAppendsKeepsEveryAcknowledgedRecord(t *testing.T) {
	if c := os.Getenv(childEnv); c != "" {
		mode, path, _ := strings.Cut(c, " ")
		runChild(mode, path)
	}
	if testing.Short() {
		t.Skip("kill -9 of a child process (skipped with -short)")
	}
	path := filepath.Join(t.TempDir(), "j.db")
	last := killChildAt(t, "append", path, func(l string) bool { return l == "1300" }) // past two checkpoints
	acked, _ := strconv.Atoi(last)

	if err := Check(path); err != nil {
		t.Fatalf("check after kill -9: %v", err)
	}
	j := open(t, path)
	defer j.Close()
	n := 0
	if err := j.Each(func(r Record) error {
		n++
		if r.Seq != uint64(n) {
			return fmt.Errorf("record %d has seq %d", n, r.Seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n < acked {
		t.Fatalf("%d records after kill -9; %d were acknowledged", n, acked)
	}
	total := 0
	for i := 0; i < 7; i++ {
		recs, err := j.Records(fmt.Sprint("job", i))
		if err != nil {
			t.Fatal(err)
		}
		total += len(recs)
	}
	if total != n {
		t.Fatalf("index holds %d records, log %d", total, n)
	}
	if rec, err := j.Append(Record{Job: "job0", Kind: KindProgress}); err != nil || rec.Seq != uint64(n+1) {
		t.Fatalf("append after kill -9: seq %d, %v", rec.Seq, err)
	}
}
