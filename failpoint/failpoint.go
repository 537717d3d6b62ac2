// Package failpoint holds the worker's named crash points: places in the
// job lifecycle where a test can make the process die abruptly (SIGKILL, as
// kill -9 or a power loss would), to prove that a restart resumes exactly.
//
// Failpoints are compiled in but inert unless the environment variable
// HYPERNODE_FAILPOINT names them when the process starts:
//
//	HYPERNODE_FAILPOINT=claim-after-intent          die at the first hit
//	HYPERNODE_FAILPOINT=op-after-exit:2             die at the second hit
//	HYPERNODE_FAILPOINT=claim-after-intent,op-after-exit
//
// An unarmed Hit costs one atomic load.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Env is the environment variable that arms failpoints.
const Env = "HYPERNODE_FAILPOINT"

// The failpoints, in lifecycle order. Each names the step and where in the
// intent → effect → transition sequence it fires.
const (
	ClaimBeforeIntent     = "claim-before-intent"
	ClaimAfterIntent      = "claim-after-intent"
	WorkJobAfterSend      = "work_job-after-send" // in chain.Client: sent, not yet confirmed
	ClaimAfterLanded      = "claim-after-landed"
	ClaimAfterTransition  = "claim-after-transition"
	FetchAfterTransition  = "fetch-after-transition"
	StartBeforeIntent     = "start-before-container-intent"
	StartAfterIntent      = "start-after-container-intent"
	StartAfterCreate      = "start-after-create"
	StartAfterTransition  = "start-after-transition"
	OpAfterIntent         = "op-after-intent"
	OpAfterTaskStart      = "op-after-task-start" // in runtime: the task runs
	OpAfterExit           = "op-after-exit"
	OpAfterProgress       = "op-after-progress"
	UploadBeforeIntent    = "upload-before-intent"
	UploadAfterIntent     = "upload-after-intent"
	UploadAfterAdd        = "upload-after-add"
	UploadAfterTransition = "upload-after-transition"
	FinishBeforeIntent    = "finish-before-intent"
	FinishAfterIntent     = "finish-after-intent"
	FinishJobAfterSend    = "finish_job-after-send" // in chain.Client
	FinishAfterLanded     = "finish-after-landed"
	FinishAfterTransition = "finish-after-transition"
)

// All lists every failpoint, in lifecycle order.
var All = []string{
	ClaimBeforeIntent, ClaimAfterIntent, WorkJobAfterSend, ClaimAfterLanded, ClaimAfterTransition,
	FetchAfterTransition,
	StartBeforeIntent, StartAfterIntent, StartAfterCreate, StartAfterTransition,
	OpAfterIntent, OpAfterTaskStart, OpAfterExit, OpAfterProgress,
	UploadBeforeIntent, UploadAfterIntent, UploadAfterAdd, UploadAfterTransition,
	FinishBeforeIntent, FinishAfterIntent, FinishJobAfterSend, FinishAfterLanded, FinishAfterTransition,
}

type point struct {
	at   int64 // die at this hit
	hits atomic.Int64
}

var (
	once   sync.Once
	armed  map[string]*point
	active atomic.Bool
)

func load() {
	armed = map[string]*point{}
	for _, spec := range strings.Split(os.Getenv(Env), ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		name, count, _ := strings.Cut(spec, ":")
		at := int64(1)
		if count != "" {
			n, err := strconv.ParseInt(count, 10, 64)
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "%s: ignoring %q: the count must be a positive number\n", Env, spec)
				continue
			}
			at = n
		}
		armed[name] = &point{at: at}
	}
	active.Store(len(armed) > 0)
}

// Armed reports whether any failpoint is armed.
func Armed() bool {
	once.Do(load)
	return active.Load()
}

// Hit kills the process with SIGKILL when name is armed and this is its
// armed hit; otherwise it does nothing.
func Hit(name string) {
	if !Armed() {
		return
	}
	p, ok := armed[name]
	if !ok || p.hits.Add(1) != p.at {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint %s: killing the process (SIGKILL)\n", name)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late; never return
}
