package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/hypernode-sol/worker/chain"
	"github.com/hypernode-sol/worker/failpoint"
	"github.com/hypernode-sol/worker/ipfs"
	"github.com/hypernode-sol/worker/jobdef"
	"github.com/hypernode-sol/worker/journal"
)

// Journal field names recorded by the steps.
const (
	FieldDefinition = "definition" // CID of the job definition
	FieldImage      = "image"
	FieldResultCID  = "result_cid"
	FieldStatus     = "status" // result document status
	FieldError      = "error"  // why a result is not succeeded (never holds secrets)
	FieldAttempts   = "attempts"
)

func opField(n int, what string) string { return "op." + strconv.Itoa(n) + "." + what }

// definition fetches and parses the job's definition. A definition that can
// never be valid (bytes that do not match the CID on every gateway, too
// large, or failing validation) gives a *rejection.
func (d *Driver) definition(ctx context.Context, acc *chain.Job) (*jobdef.Definition, string, error) {
	if acc.IPFSJob == ([32]byte{}) {
		return nil, "", &rejection{"job account has no definition (ipfs_job is zero)"}
	}
	cid := ipfs.CIDFromDigest(ipfs.Digest(acc.IPFSJob))
	if def := d.cachedDefinition(cid); def != nil {
		return def, cid, nil
	}
	b, err := d.Store.Fetch(ctx, cid)
	if err != nil {
		if permanentFetchError(err) {
			return nil, cid, &rejection{fmt.Sprintf("job definition %s: %v", cid, err)}
		}
		return nil, cid, fmt.Errorf("fetch definition %s: %w", cid, err)
	}
	def, err := jobdef.Parse(b)
	if err != nil {
		return nil, cid, &rejection{"invalid job definition: " + err.Error()}
	}
	d.cacheDefinition(cid, def)
	return def, cid, nil
}

// maxCachedDefinitions bounds the parsed definitions the driver keeps; past it
// the cache starts again empty.
const maxCachedDefinitions = 64

// cachedDefinition is the definition parsed from cid's bytes when the driver
// still has it (fetched by an earlier step of a job that has not ended): the
// CID names the bytes, so the start and run steps reuse what fetch verified
// instead of fetching it again. nil otherwise.
func (d *Driver) cachedDefinition(cid string) *jobdef.Definition {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.definitions[cid]
}

func (d *Driver) cacheDefinition(cid string, def *jobdef.Definition) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.definitions == nil || len(d.definitions) >= maxCachedDefinitions {
		d.definitions = map[string]*jobdef.Definition{}
	}
	d.definitions[cid] = def
}

// forgetDefinition drops cid's definition (its job has ended).
func (d *Driver) forgetDefinition(cid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.definitions, cid)
}

// permanentFetchError: every gateway answered with bytes that can never be
// the definition (they do not hash to the CID, or exceed the size limit).
func permanentFetchError(err error) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var mm *ipfs.MismatchError
		var tl *ipfs.TooLargeError
		if !errors.As(e, &mm) && !errors.As(e, &tl) {
			return false
		}
	}
	return len(errs) > 0
}

type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }

func (d *Driver) fetch(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	key := job.String()
	acc, err := d.ours(ctx, job)
	if err != nil {
		return err
	}
	if snap.Upload != nil {
		// A rejected result was being uploaded when we stopped: finish that.
		return d.resumeUpload(ctx, key, Claimed, EvReject, snap)
	}
	def, cid, err := d.definition(ctx, acc)
	var rej *rejection
	if errors.As(err, &rej) {
		d.Log.Warn().Str("job", key).Str("reason", rej.reason).Msg("job definition rejected")
		return d.reject(ctx, job, rej.reason)
	}
	if err != nil {
		return err
	}
	if err := d.transition(key, Claimed, EvFetch, map[string]string{FieldDefinition: cid, FieldImage: def.ImageRef()}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.FetchAfterTransition)
	return nil
}

func (d *Driver) reject(ctx context.Context, job solana.PublicKey, reason string) error {
	now := d.now().UTC()
	res := &jobdef.Result{Version: jobdef.ResultVersion, Job: job.String(), Node: d.Chain.Node().String(),
		Status: jobdef.StatusRejected, StartedAt: now, FinishedAt: now, Error: reason}
	return d.uploadResult(ctx, job.String(), Claimed, EvReject, res)
}

// uploadResult writes the result document, journals its CID as an upload
// intent, uploads it and journals the transition.
func (d *Driver) uploadResult(ctx context.Context, job string, from State, event string, res *jobdef.Result) error {
	b, err := res.Marshal()
	if err != nil {
		return fmt.Errorf("result document: %w", err)
	}
	dir := d.JobDir(job)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, "result.json")
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return err
	}
	cid, _, err := d.Store.ComputeCID(bytes.NewReader(b))
	if err != nil {
		return err
	}
	failpoint.Hit(failpoint.UploadBeforeIntent)
	if err := d.intent(job, journal.Record{Intent: journal.IntentUpload, Upload: &journal.UploadIntent{What: "result", CID: cid},
		Fields: map[string]string{FieldStatus: res.Status, FieldError: res.Error}}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.UploadAfterIntent)
	got, _, err := d.Store.AddFile(ctx, path)
	if err != nil {
		return fmt.Errorf("upload result: %w", err)
	}
	if got != cid {
		return fmt.Errorf("upload result: store answered CID %s, computed %s", got, cid)
	}
	failpoint.Hit(failpoint.UploadAfterAdd)
	if err := d.transition(job, from, event, map[string]string{FieldResultCID: cid, FieldStatus: res.Status}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.UploadAfterTransition)
	return nil
}

func (d *Driver) start(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	key := job.String()
	acc, err := d.ours(ctx, job)
	if err != nil {
		return err
	}
	def, _, err := d.definition(ctx, acc)
	if err != nil {
		return err // a definition that passed fetch cannot become invalid
	}
	ci := snap.Container
	var prepared <-chan error // the workspace being made, until waited for
	waitPrepared := func() error {
		if prepared == nil {
			return nil
		}
		err := <-prepared
		prepared = nil
		return err
	}
	if ci == nil {
		attempt := 1
		if a, err := strconv.Atoi(snap.Fields[FieldAttempts]); err == nil {
			attempt = a + 1
		}
		deadline := time.Unix(acc.TimeStart+acc.Timeout, 0)
		if def.Timeout > 0 {
			if own := d.now().Add(def.Timeout); own.Before(deadline) {
				deadline = own
			}
		}
		ci = &journal.ContainerIntent{ID: ContainerID(key, attempt), Attempt: attempt, Deadline: deadline.UTC(), Image: def.ImageRef()}
		// The workspace is made while the image is checked (both local and
		// independent), and waited for before the intent.
		ws := make(chan error, 1)
		go func() { ws <- d.prepareWorkspace(key, def) }()
		prepared = ws
		defer waitPrepared()
	}
	if snap.Upload != nil {
		return d.resumeUpload(ctx, key, Fetched, EvFailStart, snap)
	}
	// A job asking for GPUs this machine can never give fails before its
	// image is pulled; one that must wait for GPUs waits below.
	need, err := d.gpuNeed(acc, def)
	if err == nil && snap.Container == nil {
		err = d.GPUs.Check(need)
	}
	if err != nil {
		d.Log.Warn().Err(err).Str("job", key).Msg("job cannot run here; failing it")
		now := d.now().UTC()
		res := &jobdef.Result{Version: jobdef.ResultVersion, Job: key, Node: d.Chain.Node().String(), Status: jobdef.StatusFailed,
			StartedAt: now, FinishedAt: now, Error: "resources.gpus: " + err.Error()}
		return d.uploadResult(ctx, key, Fetched, EvFailStart, res)
	}
	if err := d.Runtime.EnsureImage(ctx, ci.Image); err != nil {
		if n := d.countImageFailure(key); n >= d.limits().ImageAttempts {
			d.Log.Warn().Err(err).Str("job", key).Int("attempts", n).Msg("image unavailable; failing the job")
			now := d.now().UTC()
			res := &jobdef.Result{Version: jobdef.ResultVersion, Job: key, Node: d.Chain.Node().String(), Status: jobdef.StatusFailed,
				StartedAt: now, FinishedAt: now, Error: fmt.Sprintf("image %s could not be pulled (%d attempts): %v", ci.Image, n, err)}
			return d.uploadResult(ctx, key, Fetched, EvFailStart, res)
		}
		return fmt.Errorf("image %s: %w", ci.Image, err)
	}
	if err := waitPrepared(); err != nil {
		return err
	}
	if snap.Container == nil {
		// The job's GPUs and share of the host, waited for until its
		// deadline, then journaled with the container.
		actx, cancel := context.WithDeadline(ctx, ci.Deadline)
		err := d.assignHost(actx, key, acc, def, ci)
		cancel()
		if errors.Is(err, ErrGPUsNeverFit) {
			d.Log.Warn().Err(err).Str("job", key).Msg("job asks for GPUs this machine lacks; failing it")
			now := d.now().UTC()
			res := &jobdef.Result{Version: jobdef.ResultVersion, Job: key, Node: d.Chain.Node().String(), Status: jobdef.StatusFailed,
				StartedAt: now, FinishedAt: now, Error: "resources.gpus: " + err.Error()}
			return d.uploadResult(ctx, key, Fetched, EvFailStart, res)
		}
		if err != nil {
			return fmt.Errorf("GPUs for %s: %w", key, err)
		}
		failpoint.Hit(failpoint.StartBeforeIntent)
		if err := d.intent(key, journal.Record{Intent: journal.IntentContainer, Container: ci,
			Fields: map[string]string{FieldAttempts: strconv.Itoa(ci.Attempt)}}); err != nil {
			d.GPUs.Release(key)
			return err
		}
		failpoint.Hit(failpoint.StartAfterIntent)
	}
	gpus, err := d.GPUs.Lookup(ci.GPUs)
	if err != nil {
		return fmt.Errorf("job %s: %w", key, err)
	}
	lim := d.limits()
	mem := lim.MemoryBytes
	if def.Resources.MemoryMB > 0 && int64(def.Resources.MemoryMB)<<20 < mem {
		mem = int64(def.Resources.MemoryMB) << 20
	}
	if ci.MemoryBytes > 0 && ci.MemoryBytes < mem {
		mem = ci.MemoryBytes // this slot's share of the host
	}
	spec := ContainerSpec{ID: ci.ID, Image: ci.Image, Workspace: d.workspace(key), Env: def.EnvList(),
		MemoryBytes: mem, PidsLimit: lim.PidsLimit, ShmBytes: int64(def.Resources.ShmMB) << 20, GPUs: gpus, CPUs: ci.CPUs,
		Job: key, Attempt: ci.Attempt, Node: d.Chain.Node().String()}
	if d.Models != nil && def.Model != "" {
		dir, ro, err := d.Models.Acquire(def.Model, key)
		if err != nil {
			d.Log.Warn().Err(err).Str("job", key).Str("model", def.Model).Msg("model cache not mounted")
		} else {
			spec.ModelDir, spec.ModelReadOnly = dir, ro
			spec.Env = append(spec.Env, EnvModelDir+"="+ModelsDir)
			d.Log.Info().Str("job", key).Str("model", def.Model).Bool("read_only", ro).Msg("model cache mounted")
		}
	}
	if err := d.Runtime.Create(ctx, spec); err != nil {
		return fmt.Errorf("create container %s: %w", ci.ID, err)
	}
	failpoint.Hit(failpoint.StartAfterCreate)
	if err := d.transition(key, Fetched, EvStart, map[string]string{"container": ci.ID, "deadline": ci.Deadline.Format(time.RFC3339)}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.StartAfterTransition)
	return nil
}

// ContainerID is the deterministic container ID of a job's attempt.
func ContainerID(job string, attempt int) string { return fmt.Sprintf("hn-%s-%d", job, attempt) }

func (d *Driver) workspace(job string) string { return filepath.Join(d.JobDir(job), "workspace") }

// workspaceImage holds the filesystem of a capped workspace (Driver.Workspaces).
func (d *Driver) workspaceImage(job string) string {
	return filepath.Join(d.JobDir(job), "workspace.img")
}
func (d *Driver) logPath(job string, n int) string {
	return filepath.Join(d.JobDir(job), "logs", fmt.Sprintf("op-%d.log", n))
}

func (d *Driver) prepareWorkspace(job string, def *jobdef.Definition) error {
	ws := d.workspace(job)
	// A previous attempt's files are not carried over.
	if err := d.removeWorkspace(job); err != nil {
		return err
	}
	rel, err := filepath.Rel(jobdef.WorkspaceDir, def.Outputs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return err
	}
	d.mountWorkspace(job)
	for _, dir := range []string{filepath.Join(ws, rel), filepath.Join(d.JobDir(job), "logs")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return writeFileAtomic(filepath.Join(ws, filepath.Base(jobdef.InputPath)), def.InputJSON(), 0o644)
}

func (d *Driver) run(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	key := job.String()
	acc, err := d.ours(ctx, job)
	if err != nil {
		return err
	}
	if snap.Upload != nil {
		return d.resumeUpload(ctx, key, Running, EvUpload, snap)
	}
	def, _, err := d.definition(ctx, acc)
	if err != nil {
		return err
	}
	ci := snap.Container
	if ci == nil {
		return fmt.Errorf("%w: job %s is running without a container intent", journal.ErrCorrupt, key)
	}
	// After a host reboot the capped workspace is remounted from its image.
	d.mountWorkspace(key)
	status, reason := jobdef.StatusSucceeded, ""
	fields := snap.Fields
	for n, op := range def.Operations {
		if code, ok := fields[opField(n, "exit")]; ok {
			if code != "0" || fields[opField(n, "limit")] != "" || fields[opField(n, "oom")] == "1" {
				status, reason = failure(fields, n)
				break
			}
			continue
		}
		if snap.Op == nil || snap.Op.Index != n {
			if err := d.intent(key, journal.Record{Intent: journal.IntentOp, Op: &journal.OpIntent{Index: n},
				Fields: map[string]string{opField(n, "started"): d.now().UTC().Format(time.RFC3339Nano)}}); err != nil {
				return err
			}
			failpoint.Hit(failpoint.OpAfterIntent)
			snap.Op = &journal.OpIntent{Index: n}
			if s, err := d.Journal.Snapshot(key); err == nil {
				fields = s.Fields
			}
		}
		d.Log.Info().Str("job", key).Int("op", n).Str("container", ci.ID).Msg("operation running")
		opCtx, cancel := context.WithDeadline(ctx, ci.Deadline)
		stop, watched := make(chan struct{}), make(chan error, 1)
		go func() { watched <- d.watch(job, n, stop, cancel) }()
		exit, err := d.Runtime.RunOp(opCtx, ci.ID, n, Op{Argv: op.Argv, Workdir: op.Workdir}, d.logPath(key, n))
		close(stop)
		gone := <-watched
		timedOut := err != nil && ctx.Err() == nil && opCtx.Err() == context.DeadlineExceeded
		cancel()
		var over limitError
		if gone != nil && err != nil && !timedOut {
			// The chain took the job away, or the job broke a limit: stop
			// it there.
			if kerr := d.Runtime.Kill(ctx, ci.ID); kerr != nil {
				d.Log.Warn().Err(kerr).Str("container", ci.ID).Msg("kill")
			}
			if !errors.As(gone, &over) {
				return gone
			}
		}
		if err == nil {
			failpoint.Hit(failpoint.OpAfterExit)
			// The operation may have ended before the watcher saw it
			// break a limit.
			over = d.overLimit(key, n)
		}
		progress := map[string]string{}
		if over != nil && err != nil {
			progress[opField(n, "exit")] = "137"
			progress[opField(n, "limit")] = over.Error()
		} else if timedOut {
			if err := d.Runtime.Kill(ctx, ci.ID); err != nil {
				return fmt.Errorf("kill %s at its deadline: %w", ci.ID, err)
			}
			progress[opField(n, "exit")] = "137"
			progress[opField(n, "timeout")] = "1"
		} else if errors.Is(err, ErrOpCannotStart) || errors.Is(err, ErrOpLost) {
			code := "127"
			if errors.Is(err, ErrOpLost) {
				code = "255"
			}
			d.Log.Warn().Err(err).Str("job", key).Int("op", n).Msg("operation failed without an exit status")
			progress[opField(n, "exit")] = code
			progress[opField(n, "error")] = err.Error()
		} else if err != nil {
			return fmt.Errorf("operation %d of %s: %w", n, ci.ID, err)
		} else {
			progress[opField(n, "exit")] = strconv.Itoa(exit.Code)
			if exit.OOMKilled {
				progress[opField(n, "oom")] = "1"
			}
			if over != nil {
				progress[opField(n, "limit")] = over.Error()
			}
		}
		if started, err := time.Parse(time.RFC3339Nano, fields[opField(n, "started")]); err == nil {
			end := d.now()
			if !timedOut && !exit.ExitedAt.IsZero() {
				end = exit.ExitedAt
			}
			progress[opField(n, "ms")] = strconv.FormatInt(end.Sub(started).Milliseconds(), 10)
		}
		if _, err := d.Journal.Append(journal.Record{Job: key, Kind: journal.KindProgress, Fields: progress}); err != nil {
			return err
		}
		failpoint.Hit(failpoint.OpAfterProgress)
		for k, v := range progress {
			fields[k] = v
		}
		d.Log.Info().Str("job", key).Int("op", n).Str("exit", progress[opField(n, "exit")]).Msg("operation ended")
		// A process OOM-killed fails the job even when the operation's
		// main process carried on and exited 0: its work is incomplete.
		if progress[opField(n, "exit")] != "0" || progress[opField(n, "limit")] != "" || progress[opField(n, "oom")] == "1" {
			status, reason = failure(fields, n)
			break
		}
	}
	res, err := d.buildResult(ctx, key, def, fields, status, reason)
	if err != nil {
		return err
	}
	if err := d.uploadResult(ctx, key, Running, EvUpload, res); err != nil {
		return err
	}
	if err := d.Runtime.Remove(ctx, ci.ID); err != nil {
		d.Log.Warn().Err(err).Str("job", key).Str("container", ci.ID).Msg("remove container (the reaper will retry)")
	} else if d.Models != nil {
		// Sealed only once no process of the job can write to it any more.
		if err := d.Models.Finish(key, res.Status == jobdef.StatusSucceeded); err != nil {
			d.Log.Warn().Err(err).Str("job", key).Msg("model cache")
		}
	}
	return nil
}

// resumeUpload finishes an upload of the result document interrupted by a
// crash: the document on disk is the one whose CID the intent names.
func (d *Driver) resumeUpload(ctx context.Context, job string, from State, event string, snap journal.Snapshot) error {
	path := filepath.Join(d.JobDir(job), "result.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("result document of interrupted upload: %w", err)
	}
	res, err := jobdef.ParseResult(b)
	if err != nil {
		return fmt.Errorf("result document of interrupted upload: %w", err)
	}
	got, _, err := d.Store.AddFile(ctx, path)
	if err != nil {
		return fmt.Errorf("upload result: %w", err)
	}
	if got != snap.Upload.CID {
		return fmt.Errorf("%w: result document on disk has CID %s, journal says %s", journal.ErrCorrupt, got, snap.Upload.CID)
	}
	if err := d.transition(job, from, event, map[string]string{FieldResultCID: got, FieldStatus: res.Status}); err != nil {
		return err
	}
	if snap.Container != nil {
		_ = d.Runtime.Remove(ctx, snap.Container.ID)
	}
	return nil
}

func failure(fields map[string]string, n int) (status, reason string) {
	code := fields[opField(n, "exit")]
	switch {
	case fields[opField(n, "limit")] != "":
		return jobdef.StatusFailed, fmt.Sprintf("operation %d was stopped: %s", n, fields[opField(n, "limit")])
	case fields[opField(n, "timeout")] == "1":
		return jobdef.StatusTimeout, fmt.Sprintf("operation %d was killed at the job's deadline", n)
	case fields[opField(n, "oom")] == "1":
		return jobdef.StatusFailed, fmt.Sprintf("operation %d: a process was killed: out of memory (OOM)", n)
	case fields[opField(n, "error")] != "":
		return jobdef.StatusFailed, fmt.Sprintf("operation %d failed: %s", n, fields[opField(n, "error")])
	}
	return jobdef.StatusFailed, fmt.Sprintf("operation %d exited with code %s", n, code)
}

func (d *Driver) buildResult(ctx context.Context, job string, def *jobdef.Definition, fields map[string]string, status, reason string) (*jobdef.Result, error) {
	res := &jobdef.Result{Version: jobdef.ResultVersion, Job: job, Node: d.Chain.Node().String(), Status: status,
		Error: reason, FinishedAt: d.now().UTC(), Operations: []jobdef.OpResult{}, Outputs: []jobdef.Output{}}
	if t, err := time.Parse(time.RFC3339Nano, fields[opField(0, "started")]); err == nil {
		res.StartedAt = t.UTC()
	} else {
		res.StartedAt = res.FinishedAt
	}
	secrets := def.Secrets()
	for n := range def.Operations {
		code, ok := fields[opField(n, "exit")]
		if !ok {
			break
		}
		exit, _ := strconv.Atoi(code)
		ms, _ := strconv.ParseInt(fields[opField(n, "ms")], 10, 64)
		op := jobdef.OpResult{Index: n, ExitCode: exit, DurationMS: ms}
		cid, tail, err := d.uploadLog(ctx, d.logPath(job, n), secrets)
		if err != nil {
			return nil, err
		}
		op.Log, op.LogTail = cid, tail
		res.Operations = append(res.Operations, op)
	}
	outs, err := d.uploadOutputs(ctx, job, def)
	var limit *outputLimitError
	if errors.As(err, &limit) {
		// The job broke a limit: that is its result, not a reason to retry.
		res.Status, res.Error, outs = jobdef.StatusFailed, limit.Error(), []jobdef.Output{}
	} else if err != nil {
		return nil, err
	}
	res.Outputs = outs
	return res, nil
}

// outputLimitError: the job's outputs break a limit of Limits.
type outputLimitError struct{ what string }

func (e *outputLimitError) Error() string { return "outputs rejected: " + e.what }

// uploadLog scrubs secrets from an operation's log, uploads the scrubbed copy
// and returns its CID and tail. An empty or absent log gives "".
func (d *Driver) uploadLog(ctx context.Context, path string, secrets []jobdef.Secret) (string, string, error) {
	n, err := scrubInPlace(path, secrets)
	if errors.Is(err, os.ErrNotExist) || (err == nil && n == 0) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("scrub log %s: %w", path, err)
	}
	cid, _, err := d.Store.AddFile(ctx, path)
	if err != nil {
		return "", "", fmt.Errorf("upload log: %w", err)
	}
	tail, err := readTail(path, jobdef.MaxLogTail+8)
	if err != nil {
		return "", "", err
	}
	return cid, jobdef.LogTail(tail), nil
}

// uploadOutputs uploads the regular files under the job's outputs directory
// (symlinks and other special files are skipped: they could point at host
// paths), each scrubbed of the job's secrets first, and lists them sorted by
// path.
func (d *Driver) uploadOutputs(ctx context.Context, job string, def *jobdef.Definition) ([]jobdef.Output, error) {
	rel, err := filepath.Rel(jobdef.WorkspaceDir, def.Outputs)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(d.workspace(job), rel)
	lim := d.limits()
	secrets := def.Secrets()
	var outs []jobdef.Output
	var total int64
	err = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == root {
				return filepath.SkipAll
			}
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if len(outs) >= lim.MaxOutputFiles {
			return &outputLimitError{fmt.Sprintf("more than %d output files", lim.MaxOutputFiles)}
		}
		if total += info.Size(); total > lim.MaxOutputBytes {
			return &outputLimitError{fmt.Sprintf("output files exceed %d bytes", lim.MaxOutputBytes)}
		}
		if len(secrets) > 0 {
			// An output is the job's to write, but never the poster's
			// secrets in clear: they are scrubbed like the logs.
			if _, err := scrubInPlace(p, secrets); err != nil {
				return fmt.Errorf("scrub output %s: %w", p, err)
			}
		}
		cid, size, err := d.Store.AddFile(ctx, p)
		if err != nil {
			return fmt.Errorf("upload output %s: %w", p, err)
		}
		r, _ := filepath.Rel(root, p)
		outs = append(outs, jobdef.Output{Path: filepath.ToSlash(r), CID: cid, Size: size})
		return nil
	})
	sort.Slice(outs, func(a, b int) bool { return outs[a].Path < outs[b].Path })
	if outs == nil {
		outs = []jobdef.Output{}
	}
	return outs, err
}

func (d *Driver) finish(ctx context.Context, job solana.PublicKey, snap journal.Snapshot) error {
	key := job.String()
	cid := snap.Fields[FieldResultCID]
	digest, err := ipfs.DigestFromCID(cid)
	if err != nil {
		return fmt.Errorf("%w: result CID %q: %v", journal.ErrCorrupt, cid, err)
	}
	event := EvFail
	if snap.Fields[FieldStatus] == jobdef.StatusSucceeded {
		event = EvFinish
	}
	landed := func(acc *chain.Job) bool {
		return acc != nil && acc.State == chain.JobCompleted && acc.Node != nil && *acc.Node == d.Chain.Node() && acc.IPFSResult == [32]byte(digest)
	}
	// A finish that landed before a crash is recognised from the account,
	// even when the RPC no longer finds its signature.
	acc, err := d.Chain.Job(ctx, job)
	if err != nil && !errors.Is(err, chain.ErrAccountNotFound) {
		return err
	}
	if landed(acc) {
		return d.transition(key, Uploaded, event, nil)
	}
	if snap.Tx == nil || snap.Tx.Instruction != chain.IxFinishJob {
		if _, err := d.ours(ctx, job); err != nil {
			return err
		}
	}
	landedNow := func() bool {
		a, err := d.Chain.Job(ctx, job)
		return err == nil && landed(a)
	}
	tx, err := d.submitIntent(ctx, key, snap, chain.IxFinishJob, "finish", landedNow, func() (*chain.SignedTx, error) {
		if acc == nil {
			a, err := d.ours(ctx, job)
			if err != nil {
				return nil, err
			}
			acc = a
		}
		return d.Chain.SignFinishJob(ctx, acc, job, digest)
	})
	if errors.Is(err, errAlreadyLanded) {
		return d.transition(key, Uploaded, event, nil)
	}
	var txErr *chain.TxError
	if errors.As(err, &txErr) {
		// Refused: maybe it landed already (a re-sent copy), maybe the job
		// is no longer ours.
		now, rerr := d.Chain.Job(ctx, job)
		if rerr == nil && landed(now) {
			return d.transition(key, Uploaded, event, nil)
		}
		if _, oerr := d.ours(ctx, job); oerr != nil {
			return oerr
		}
		return fmt.Errorf("finish_job %s: %w", key, err)
	}
	if err != nil {
		return fmt.Errorf("finish_job %s: %w", key, err)
	}
	if err := d.transition(key, Uploaded, event, map[string]string{"finish_sig": tx.Signature.String()}); err != nil {
		return err
	}
	failpoint.Hit(failpoint.FinishAfterTransition)
	return nil
}
