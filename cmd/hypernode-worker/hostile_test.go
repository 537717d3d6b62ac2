package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/runtime"
	"github.com/hypernode-sol/worker/runtime/runtimetest"
	"github.com/hypernode-sol/worker/runtime/workspacefs"
)

// Limits the hostile suite runs under (flags of the worker).
const (
	hostileWorkspaceMB = 32
	hostileLogMB       = 1
)

// hostileJob is one attack, run as a job through the real worker: the
// embedded localnet posts it, the worker claims, fetches, runs it in
// containerd, uploads the result and finishes it on chain.
type hostileJob struct {
	name   string
	attack string
	def    map[string]any
	// check inspects the job's result and full logs; it returns the observed
	// outcome for the table.
	check func(t *testing.T, res *jobdef.Result, log string) string
}

func shJob(timeout int, cmds ...string) map[string]any {
	ops := make([]map[string]any, len(cmds))
	for i, c := range cmds {
		ops[i] = map[string]any{"type": "run", "command": c}
	}
	return map[string]any{"image": runtimetest.ImageRef, "operations": ops, "timeout": timeout}
}

// postDefinition writes def to a file and posts it on the worker's localnet.
func (w *workerProc) postDefinition(t testing.TB, def map[string]any) solana.PublicKey {
	t.Helper()
	b, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := solana.PublicKeyFromBase58(w.cli(t, "localnet", "post", "--rpc", w.rpc, path))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fullLogs fetches every operation's uploaded log (verified against its CID).
func (w *workerProc) fullLogs(t *testing.T, res *jobdef.Result) string {
	t.Helper()
	f := &ipfs.Fetcher{Gateways: []string{w.rpc}, MaxBytes: 16 << 20, PerGatewayTimeout: 10 * time.Second}
	var all strings.Builder
	for _, op := range res.Operations {
		if op.Log == "" {
			continue
		}
		b, err := f.Fetch(context.Background(), op.Log)
		if err != nil {
			t.Fatalf("log of op %d: %v", op.Index, err)
		}
		all.Write(b)
	}
	return all.String()
}

func linesWith(log, prefix string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// wantBlocked fails t on any "ESCAPED" line and returns the "blocked" lines,
// at least min of them.
func wantBlocked(t *testing.T, log string, min int) []string {
	t.Helper()
	if esc := linesWith(log, "ESCAPED"); len(esc) > 0 {
		t.Errorf("the job escaped: %v", esc)
	}
	b := linesWith(log, "blocked")
	if len(b) < min {
		t.Errorf("want at least %d blocked attempts, got %d:\n%s", min, len(b), log)
	}
	return b
}

// TestHostileJobs runs hostile jobs through the whole worker (embedded
// localnet, real containerd, the fsm driver, IPFS upload, finish on chain)
// and checks, from inside the container and from the result each job got,
// that every attack failed and the worker kept working. -v prints the
// attack → outcome table.
func TestHostileJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	ctd := runtimetest.StartContainerd(t)
	w := spawnWorker(t, ctd, "--parallel-jobs", "4", "--workspace-limit-mb", strconv.Itoa(hostileWorkspaceMB),
		"--log-limit-mb", strconv.Itoa(hostileLogMB))
	key, err := os.ReadFile(filepath.Join(w.data, "node-keypair.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, localnetPort, _ := net.SplitHostPort(strings.TrimPrefix(w.rpc, "http://"))
	capped := workspacefs.Check() == nil
	data := w.data

	jobs := []hostileJob{
		{name: "keypair", attack: "read the node keypair, the journal, the data directory", def: shJob(30, `
for p in `+data+`/node-keypair.json `+data+`/journal.db `+data+` /root/.hypernode /proc/1/root`+data+`/node-keypair.json; do
  if cat $p >/dev/null 2>&1 || ls $p >/dev/null 2>&1; then echo "ESCAPED read $p"; else echo "blocked read $p"; fi
done
echo "keypair files visible: $(find / -xdev -name node-keypair.json 2>/dev/null | wc -l)"
echo "data dir in mountinfo: $(grep -c '`+data+`' /proc/self/mountinfo)"`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				b := wantBlocked(t, log, 5)
				if !strings.Contains(log, "keypair files visible: 0") || !strings.Contains(log, "data dir in mountinfo: 0") {
					t.Errorf("log:\n%s", log)
				}
				return fmt.Sprintf("%d/%d reads fail (no such file); no keypair file anywhere in the container; data dir not mounted", len(b), len(b))
			}},
		{name: "write", attack: "write outside /workspace (rootfs, /etc, /bin, /proc/sys, /sys)", def: shJob(30, `
for p in /x /etc/passwd /bin/sh /usr/x /var/x /root/x /proc/sys/kernel/hostname /sys/kernel/x; do
  if (echo pwned > $p) 2>/dev/null; then echo "ESCAPED write $p"; else echo "blocked write $p"; fi
done
echo ok > /workspace/w && echo ok > /tmp/t && echo "allowed write /workspace /tmp"
echo "rw mounts: $(awk '$6 ~ /^rw/ {print $5}' /proc/self/mountinfo | tr '\n' ' ')"
echo "root: $(awk '$5 == "/" {print $6}' /proc/self/mountinfo)"`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				b := wantBlocked(t, log, 8)
				if !strings.Contains(log, "allowed write /workspace /tmp") || !strings.Contains(log, "root: ro") {
					t.Errorf("log:\n%s", log)
				}
				// Container-private: proc, tmpfs (counted in the memory limit),
				// devpts, mqueue, the masks over /proc files; and the workspace.
				allowed := map[string]bool{"/workspace": true, "/tmp": true, "/run": true, "/dev": true, "/dev/shm": true, "/dev/pts": true, "/dev/mqueue": true, "/proc": true}
				rw := strings.Fields(strings.TrimPrefix(linesWith(log, "rw mounts:")[0], "rw mounts:"))
				for _, m := range rw {
					if !allowed[m] && !strings.HasPrefix(m, "/proc/") {
						t.Errorf("writable mount %s", m)
					}
				}
				return fmt.Sprintf("%d/%d writes fail (read-only file system); writable: only /workspace and container-private tmpfs/proc/dev mounts (%d)", len(b), len(b), len(rw))
			}},
		{name: "capabilities", attack: "gain capabilities, mount, mknod, chroot, unshare, setuid", def: shJob(30, `
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
try() { if "$@" >/dev/null 2>&1; then echo "ESCAPED $*"; else echo "blocked $*"; fi; }
try mount -t tmpfs none /tmp
try mount -o remount,rw /
try mknod /tmp/sda b 8 0
try chroot / true
try unshare -m true
try unshare -U -r true
try nsenter -t 1 -m true
try setpriv --reuid=0 --inh-caps=+all true
try chown 1:1 /workspace`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				b := wantBlocked(t, log, 8)
				for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
					if !strings.Contains(log, k+":\t0000000000000000") {
						t.Errorf("%s not zero:\n%s", k, log)
					}
				}
				if !strings.Contains(log, "NoNewPrivs:\t1") || !strings.Contains(log, "Seccomp:\t2") {
					t.Errorf("no_new_privs or seccomp missing:\n%s", log)
				}
				return fmt.Sprintf("CapEff/Prm/Bnd/Inh/Amb = 0, NoNewPrivs 1, seccomp filter; %d/%d privileged calls fail", len(b), len(b))
			}},
		{name: "processes", attack: "see or signal host processes", def: shJob(30, `
echo "processes visible: $(ls -d /proc/[0-9]* | wc -l)"
ps -o pid,comm
if kill -0 `+strconv.Itoa(w.cmd.Process.Pid)+` 2>/dev/null || test -e /proc/`+strconv.Itoa(w.cmd.Process.Pid)+`; then echo "ESCAPED worker pid visible"; else echo "blocked worker pid"; fi
echo "hostname: $(hostname)"`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				wantBlocked(t, log, 1)
				var n int
				fmt.Sscanf(linesWith(log, "processes visible:")[0], "processes visible: %d", &n)
				if n < 1 || n > 4 {
					t.Errorf("%d processes visible:\n%s", n, log)
				}
				if !strings.Contains(log, "hostname: "+runtime.Hostname) {
					t.Errorf("hostname leaked:\n%s", log)
				}
				return fmt.Sprintf("own pid namespace: %d processes visible (its own), worker pid not visible, hostname %q", n, runtime.Hostname)
			}},
		{name: "fork-bomb", attack: "fork bomb", def: shJob(4, `b(){ b|b & }; b; while :; do :; done`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				// The bomb hits the pids limit; the shell either dies of it or
				// spins until the deadline kills the container.
				if (res.Status != jobdef.StatusTimeout && res.Status != jobdef.StatusFailed) || !strings.Contains(log, "can't fork") {
					t.Errorf("result %s %q; want failed or timeout and 'can't fork' in the log:\n%.2000s", res.Status, res.Error, log)
				}
				return fmt.Sprintf("pids limit %d hit (\"can't fork\"); container killed, status %s (%s)", fsm.DefaultLimits.PidsLimit, res.Status, res.Error)
			}},
		{name: "memory", attack: "allocate past the memory limit", def: func() map[string]any {
			d := shJob(30, `dd if=/dev/zero of=/dev/null bs=128M count=1; echo survived`)
			d["resources"] = map[string]any{"memory_mb": 32}
			return d
		}(),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, "out of memory (OOM)") || !strings.Contains(log, "Killed") {
					t.Errorf("result %s %q %+v\n%s", res.Status, res.Error, res.Operations, log)
				}
				return fmt.Sprintf("dd OOM-killed at 32 MiB (the shell went on, exit %d): status %s, error %q", res.Operations[0].ExitCode, res.Status, res.Error)
			}},
		{name: "disk", attack: "fill the disk through /workspace", def: shJob(60, `dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>&1; echo "dd exit $?"; sleep 30`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				limit := fmt.Sprintf("%d-byte limit", hostileWorkspaceMB<<20)
				if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, limit) {
					t.Errorf("result %s %q, want failed naming the %s", res.Status, res.Error, limit)
				}
				if capped && !strings.Contains(log, "No space left on device") {
					t.Errorf("the hard cap did not stop dd:\n%s", log)
				}
				how := "periodic size check"
				if capped {
					how = "own 32 MiB filesystem: dd got ENOSPC"
				}
				return fmt.Sprintf("%s; stopped: status %s, error %q", how, res.Status, res.Error)
			}},
		{name: "log-flood", attack: "flood the log", def: shJob(60, `while :; do echo flood-flood-flood-flood-flood-flood-flood-flood; done`),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				limit := fmt.Sprintf("%d-byte log limit", hostileLogMB<<20)
				if res.Status != jobdef.StatusFailed || !strings.Contains(res.Error, limit) {
					t.Errorf("result %s %q, want failed naming the %s", res.Status, res.Error, limit)
				}
				if len(log) > hostileLogMB<<20+200 {
					t.Errorf("log holds %d bytes", len(log))
				}
				if d := res.FinishedAt.Sub(res.StartedAt); d > 30*time.Second {
					t.Errorf("ran %s: not stopped at the limit", d)
				}
				return fmt.Sprintf("log kept to %d bytes; job stopped after %s: status %s, error %q", len(log), res.FinishedAt.Sub(res.StartedAt).Round(time.Second), res.Status, res.Error)
			}},
		{name: "network", attack: "reach the network (egress none): the worker's RPC on host loopback, the host, metadata, DNS", def: shJob(30, networkProbe(localnetPort)),
			check: func(t *testing.T, res *jobdef.Result, log string) string {
				if got := strings.Join(strings.Fields(linesWith(log, "ifaces:")[0])[1:], ","); got != "lo" {
					t.Errorf("interfaces %s, want lo", got)
				}
				if strings.Contains(log, "HTTP/1.") || strings.Contains(log, "Non-authoritative") {
					t.Errorf("something answered:\n%s", log)
				}
				return "only lo; localnet RPC on host 127.0.0.1: refused (own loopback); 10.0.2.2, 169.254.169.254, 192.0.2.2: network unreachable; DNS: fails"
			}},
	}

	byKey := map[solana.PublicKey]*hostileJob{}
	var keys []solana.PublicKey
	for i := range jobs {
		k := w.postDefinition(t, jobs[i].def)
		byKey[k] = &jobs[i]
		keys = append(keys, k)
	}
	accs := w.waitJobs(t, keys)

	// The daemon is unharmed: it is still running and runs an ordinary job.
	ok := w.postDefinition(t, shJob(30, `echo still-serving`))
	okAcc := w.waitJobs(t, []solana.PublicKey{ok})[ok]
	if res := w.result(t, okAcc); res.Status != jobdef.StatusSucceeded || !strings.Contains(res.Operations[0].LogTail, "still-serving") {
		t.Errorf("after the hostile jobs an ordinary job got %+v", res)
	}
	if w.cmd.ProcessState != nil {
		t.Fatal("the worker exited")
	}

	table := []string{"| attack | observed outcome |", "|---|---|"}
	for _, k := range keys {
		j, acc := byKey[k], accs[k]
		t.Run(j.name, func(t *testing.T) {
			if acc.State != chain.JobCompleted {
				t.Fatalf("chain state %s", acc.State)
			}
			res := w.result(t, acc)
			log := w.fullLogs(t, res)
			doc, _ := json.Marshal(res)
			if strings.Contains(log+string(doc), strings.TrimSpace(string(key))) {
				t.Error("the node keypair appears in the job's log or result")
			}
			table = append(table, fmt.Sprintf("| %s | %s |", j.attack, j.check(t, res, log)))
		})
	}
	rt := newRuntimeAt(t, ctd)
	if ids, err := rt.List(context.Background()); err != nil || len(ids) != 0 {
		t.Errorf("containers left: %v %v", ids, err)
	}
	if ents, _ := filepath.Glob(filepath.Join(w.data, "jobs", "*", "workspace*")); len(ents) != 0 {
		t.Errorf("workspaces left: %v", ents)
	}
	t.Logf("hostile jobs (workspace cap: %v, egress none):\n%s", capped, strings.Join(table, "\n"))
}

// networkProbe tries the worker's RPC on the host's loopback, the slirp gateway,
// the cloud metadata address, the host's own address and DNS; it prints "ifaces:".
func networkProbe(localnetPort string) string {
	get := func(host, port string) string {
		return "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + host + " " + port + " 2>&1 | head -c 200; echo; "
	}
	return `echo "ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"; ` +
		get("127.0.0.1", localnetPort) + get("10.0.2.2", localnetPort) + get("169.254.169.254", "80") +
		get("192.0.2.2", localnetPort) + "nslookup -type=a " + dnsProbe() + " 2>&1; nslookup -type=a " + dnsProbe() + " 10.0.2.3 2>&1"
}

// nslookupAnswers counts the address records in busybox nslookup output:
// an answer's "Name:" line followed by "Address: <ip>" (the server header's
// "Address:" line is followed by a tab and the server, and has no Name: line
// before it).
func nslookupAnswers(out string) int {
	return len(nslookupAnswer.FindAllString(out, -1))
}

var nslookupAnswer = regexp.MustCompile(`(?m)^Name:\s+\S+\s*\nAddress: [0-9a-fA-F.:]+\s*$`)

// TestHostileNetworkAllow: with EGRESS_POLICY=allow a job gets the public
// internet through a user-mode NAT, but the worker's RPC on the host's
// loopback, the cloud metadata address and private ranges stay unreachable.
func TestHostileNetworkAllow(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs containerd (skipped with -short)")
	}
	if err := runtime.CheckEgress(runtime.EgressAllow); err != nil {
		t.Skip(err)
	}
	ctd := runtimetest.StartContainerd(t)
	w := spawnWorker(t, ctd, "--egress-policy", "allow")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(w.rpc, "http://"))
	k := w.postDefinition(t, shJob(30, networkProbe(port)))
	res := w.result(t, w.waitJobs(t, []solana.PublicKey{k})[k])
	log := w.fullLogs(t, res)
	if got := strings.Join(strings.Fields(linesWith(log, "ifaces:")[0])[1:], ","); got != "lo,tap0" {
		t.Errorf("interfaces %s, want lo,tap0", got)
	}
	if strings.Contains(log, "HTTP/1.") {
		t.Errorf("the worker's RPC answered the job:\n%s", log)
	}
	if strings.Count(log, "No route to host") < 2 {
		t.Errorf("metadata and the host's private address: want 'No route to host':\n%s", log)
	}
	if _, err := net.DefaultResolver.LookupHost(context.Background(), dnsProbe()); err == nil && dnsProbe() != "example.invalid" && nslookupAnswers(log) < 2 {
		t.Errorf("the host resolves %s, the job through the NAT does not (want an address from both lookups):\n%s", dnsProbe(), log)
	}
	t.Logf("egress allow: %s", strings.ReplaceAll(log, "\n", " | "))
}

// dnsProbe is a name the host resolves (runtimetest.DNSProbeName), or one
// that resolves nowhere.
func dnsProbe() string {
	if n := runtimetest.DNSProbeName(); n != "" {
		return n
	}
	return "example.invalid"
}

// TestNslookupAnswers pins the parser of the egress probe's DNS lines to
// busybox 1.35's real output: with `-type=a` the answer is printed after the
// server header; the old probe's `tail -n 3` kept only the empty AAAA section
// (the CI failure of 2026-11-30), which must not count as an answer.
func TestNslookupAnswers(t *testing.T) {
	answered := "Server:\t\t10.0.2.3\nAddress:\t10.0.2.3:53\n\nNon-authoritative answer:\nName:\tdeb.example\nAddress: 192.0.2.7\n\n"
	noAnswer := "Server:\t\t10.0.2.3\nAddress:\t10.0.2.3:53\n\n** server can't find deb.example: NXDOMAIN\n\n"
	emptyAAAA := "\nNon-authoritative answer:\n\n"
	for _, c := range []struct {
		out  string
		want int
	}{
		{answered, 1},
		{answered + answered, 2},
		{noAnswer, 0},
		{emptyAAAA + emptyAAAA, 0},
		{"Name:\tv6.example\nAddress: 2001:db8::1\n", 1},
	} {
		if got := nslookupAnswers(c.out); got != c.want {
			t.Errorf("nslookupAnswers(%q) = %d, want %d", c.out, got, c.want)
		}
	}
}
