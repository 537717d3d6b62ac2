// Package jobdef parses and validates job definitions (the JSON a poster
// stores on IPFS and names in JobAccount.ipfs_job) and encodes result
// documents (the JSON the worker stores and names in finish_job), exactly as
// spec/job-definition.md lays them out. It also keeps the definition's env
// values secret: see Secret and Scrub.
package jobdef

import (
	"encoding/json"
	"errors"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
)

// Limits of a job definition. Sizes are bytes of the JSON document as stored.
const (
	MaxDefinitionBytes = 2 << 20  // whole definition
	MaxInputBytes      = 1 << 20  // the "input" value, as written in the document
	MaxOperations      = 64       // entries of "operations"
	MaxTimeoutSeconds  = 86400    // "timeout" upper bound (1 day)
	MaxEnvEntries      = 128      // entries of "env"
	MaxEnvValueBytes   = 32 << 10 // one env value
	MaxCommandBytes    = 64 << 10 // a command string, or the sum of an argv's entries
	MaxArgv            = 256      // entries of an argv command
	MaxModelBytes      = 1024     // "model"
	MaxImageBytes      = 512      // "image"
	MaxPathBytes       = 4096     // "workdir", "outputs"
	MaxGPUs            = 16       // resources.gpus as a count
	MaxMemoryMB        = 1 << 20  // resources.memory_mb (1 TiB)
	MaxShmMB           = 64 << 10 // resources.shm_mb (64 GiB)
)

// Paths inside the container.
const (
	WorkspaceDir   = "/workspace"
	InputPath      = "/workspace/input.json" // where "input" is written; also HYPERNODE_INPUT
	DefaultWorkdir = WorkspaceDir
	DefaultOutputs = "/workspace/output"
)

// Names of the variables the worker adds to every job's environment. A
// definition may not set any name starting with ReservedEnvPrefix.
const (
	EnvModel          = "HYPERNODE_MODEL"
	EnvInput          = "HYPERNODE_INPUT"
	ReservedEnvPrefix = "HYPERNODE_"
)

// OpRun is the only operation type.
const OpRun = "run"

// GPUsAll in Resources.GPUs asks for every GPU of the machine. It is the
// default when a definition does not say.
const GPUsAll = -1

// Frameworks, and their default images (spec/job-definition.md).
const (
	FrameworkPyTorch         = "pytorch"
	FrameworkHuggingFace     = "huggingface"
	FrameworkStableDiffusion = "stable-diffusion"
	FrameworkOllama          = "ollama"
)

var frameworkImages = map[string]string{
	FrameworkPyTorch:         "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
	FrameworkHuggingFace:     "huggingface/transformers-pytorch-gpu:latest",
	FrameworkStableDiffusion: "stabilityai/stable-diffusion:latest",
	FrameworkOllama:          "ollama/ollama:latest",
}

// frameworkList is the error text naming the valid frameworks.
const frameworkList = "pytorch, huggingface, stable-diffusion, ollama"

// DefaultImage returns the image of framework as the spec's table writes it
// ("pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime"), and false for an
// unknown framework.
func DefaultImage(framework string) (string, bool) {
	img, ok := frameworkImages[framework]
	return img, ok
}

// Definition is a parsed, valid job definition. Parse fills the defaults:
// Workdir DefaultWorkdir, Outputs DefaultOutputs, Resources.GPUs GPUsAll.
type Definition struct {
	Model      string            // "" when not given; HYPERNODE_MODEL
	Framework  string            // one of the Framework* constants, or "" when Image is set
	Image      string            // explicit OCI reference as written, or ""
	Operations []Operation       // 1..MaxOperations, run in order in one container
	Input      json.RawMessage   // the "input" value verbatim, nil when absent or null
	Env        map[string]Secret // nil when absent
	Timeout    time.Duration     // whole seconds, 1s..24h; 0 when not given (the on-chain timeout alone bounds the job)
	Resources  Resources
	Outputs    string // absolute, clean, WorkspaceDir or below it
}

// Operation is one command run in the job's container.
type Operation struct {
	Type    string   // always OpRun
	Argv    []string // the process's argv; ["/bin/sh", "-c", cmd] when Shell
	Shell   bool     // the definition gave "command" as a string
	Workdir string   // absolute, clean
}

// Command returns the shell command of a Shell operation, or "".
func (o Operation) Command() string {
	if o.Shell && len(o.Argv) == 3 {
		return o.Argv[2]
	}
	return ""
}

// Resources are the job's requests. Zero values mean "the worker's default".
type Resources struct {
	GPUs      int    // GPUsAll, or a count 0..MaxGPUs
	MemoryMB  uint32 // memory limit, MiB; 0 = default
	ShmMB     uint32 // size of /dev/shm, MiB; 0 = default
	MinVRAMGB uint8  // least VRAM per GPU, GiB; 0 = none
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ImageRef returns the image to run, fully qualified as containerd expects
// it: Image when set, else the framework's default image; for example
// "docker.io/pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime" or
// "hypernode.local/test:latest". It returns "" when d has neither (an
// invalid definition).
func (d *Definition) ImageRef() string {
	ref := d.Image
	if ref == "" {
		ref = frameworkImages[d.Framework]
	}
	if ref == "" {
		return ""
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return reference.TagNameOnly(named).String()
}

// EnvList returns the container's environment as KEY=VALUE entries: the
// definition's env sorted by key, values in clear, then HYPERNODE_MODEL and
// HYPERNODE_INPUT. The result holds secrets: hand it to the OCI spec and
// nowhere else.
func (d *Definition) EnvList() []string {
	keys := make([]string, 0, len(d.Env))
	for k := range d.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys)+2)
	for _, k := range keys {
		out = append(out, k+"="+d.Env[k].Reveal())
	}
	return append(out, EnvModel+"="+d.Model, EnvInput+"="+InputPath)
}

// InputJSON returns the bytes to write to InputPath: Input, or "null" when
// the definition has none.
func (d *Definition) InputJSON() []byte {
	if len(d.Input) == 0 {
		return []byte("null")
	}
	return d.Input
}

// Validate checks d against every rule of the spec that a Go value can break
// (Parse additionally rejects unknown fields, wrong JSON types and duplicate
// keys). It returns nil or ValidationErrors; errors.Is(err, ErrInvalid).
func (d *Definition) Validate() error {
	var p problems
	d.validate(&p)
	return p.err()
}

func (d *Definition) validate(p *problems) {
	validateModel(p, d.Model)
	if d.Framework != "" {
		if _, ok := frameworkImages[d.Framework]; !ok {
			p.add("framework", "must be one of "+frameworkList)
		}
	}
	if d.Image != "" {
		if rule := imageRule(d.Image); rule != "" {
			p.add("image", rule)
		}
	} else if d.Framework == "" {
		p.add("framework", "required unless image is set (one of "+frameworkList+")")
	}
	switch n := len(d.Operations); {
	case n == 0:
		p.add("operations", "must have at least 1 operation")
	case n > MaxOperations:
		p.addf("operations", "has %d operations; at most %d allowed", n, MaxOperations)
	}
	for i := range d.Operations {
		if i >= MaxOperations {
			break
		}
		d.Operations[i].validate(p, indexPath("operations", i))
	}
	if len(d.Input) > MaxInputBytes {
		p.addf("input", "is %d bytes; at most %d allowed", len(d.Input), MaxInputBytes)
	} else if len(d.Input) > 0 && !json.Valid(d.Input) {
		p.add("input", "must be valid JSON")
	}
	validateEnv(p, d.Env)
	if d.Timeout != 0 && (d.Timeout < time.Second || d.Timeout > MaxTimeoutSeconds*time.Second || d.Timeout%time.Second != 0) {
		p.add("timeout", timeoutRule)
	}
	r := d.Resources
	if r.GPUs != GPUsAll && (r.GPUs < 0 || r.GPUs > MaxGPUs) {
		p.add("resources.gpus", gpusRule)
	}
	if r.MemoryMB > MaxMemoryMB {
		p.add("resources.memory_mb", memoryRule)
	}
	if r.ShmMB > MaxShmMB {
		p.add("resources.shm_mb", shmRule)
	}
	if rule := pathRule(d.Outputs); rule != "" {
		p.add("outputs", rule)
	} else if d.Outputs != WorkspaceDir && !strings.HasPrefix(d.Outputs, WorkspaceDir+"/") {
		p.add("outputs", "must be "+WorkspaceDir+" or a directory below it")
	}
}

const (
	timeoutRule = "must be a whole number of seconds from 1 to 86400"
	gpusRule    = `must be "all" or a whole number from 0 to 16`
	memoryRule  = "must be a whole number of MiB from 1 to 1048576"
	shmRule     = "must be a whole number of MiB from 1 to 65536"
	vramRule    = "must be a whole number of GiB from 0 to 255"
)

func validateModel(p *problems, model string) {
	switch {
	case len(model) > MaxModelBytes:
		p.addf("model", "is %d bytes; at most %d allowed", len(model), MaxModelBytes)
	case strings.ContainsRune(model, 0):
		p.add("model", "must not contain a NUL character")
	}
}

func (o *Operation) validate(p *problems, at string) {
	if o.Type != OpRun {
		p.add(at+".type", `must be "run"`)
	}
	cmd := at + ".command"
	switch {
	case o.Shell:
		if len(o.Argv) != 3 || o.Argv[0] != "/bin/sh" || o.Argv[1] != "-c" {
			p.add(cmd, `a shell operation must have argv ["/bin/sh", "-c", command]`)
			break
		}
		switch c := o.Argv[2]; {
		case c == "":
			p.add(cmd, "must not be empty")
		case len(c) > MaxCommandBytes:
			p.addf(cmd, "is %d bytes; at most %d allowed", len(c), MaxCommandBytes)
		case strings.ContainsRune(c, 0):
			p.add(cmd, "must not contain a NUL character")
		}
	default:
		switch n := len(o.Argv); {
		case n == 0:
			p.add(cmd, "must be a non-empty string or a non-empty array of strings")
			return
		case n > MaxArgv:
			p.addf(cmd, "has %d entries; at most %d allowed", n, MaxArgv)
			return
		}
		total := 0
		for i, a := range o.Argv {
			total += len(a)
			if strings.ContainsRune(a, 0) {
				p.add(indexPath(cmd, i), "must not contain a NUL character")
			}
		}
		if o.Argv[0] == "" {
			p.add(indexPath(cmd, 0), "must not be empty (it names the program)")
		}
		if total > MaxCommandBytes {
			p.addf(cmd, "is %d bytes in all; at most %d allowed", total, MaxCommandBytes)
		}
	}
	if rule := pathRule(o.Workdir); rule != "" {
		p.add(at+".workdir", rule)
	}
}

// pathRule returns why s is not an absolute, clean container path, or "".
func pathRule(s string) string {
	switch {
	case s == "":
		return "must be an absolute path"
	case len(s) > MaxPathBytes:
		return "must be at most 4096 bytes"
	case strings.ContainsRune(s, 0):
		return "must not contain a NUL character"
	case !path.IsAbs(s):
		return "must be an absolute path"
	case path.Clean(s) != s:
		if strings.Contains("/"+s+"/", "/../") {
			return `must not contain ".."`
		}
		return "must be a clean path (no //, /./ or trailing /)"
	}
	return ""
}

// imageRule returns why ref is not a usable OCI image reference, or "".
// The reference itself is not repeated.
func imageRule(ref string) string {
	if len(ref) > MaxImageBytes {
		return "must be at most 512 bytes"
	}
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		reason := "invalid reference format"
		for _, known := range []error{
			reference.ErrNameContainsUppercase, reference.ErrNameEmpty, reference.ErrNameTooLong,
			reference.ErrTagInvalidFormat, reference.ErrDigestInvalidFormat, reference.ErrNameNotCanonical,
		} {
			if errors.Is(err, known) {
				reason = known.Error()
				break
			}
		}
		if strings.Contains(err.Error(), "must be lowercase") {
			reason = "repository name must be lowercase"
		}
		return "not a valid OCI image reference (" + reason + ")"
	}
	return ""
}

func validateEnv(p *problems, env map[string]Secret) {
	if len(env) > MaxEnvEntries {
		p.addf("env", "has %d entries; at most %d allowed", len(env), MaxEnvEntries)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		at := keyPath("env", k)
		switch {
		case !envKeyRE.MatchString(k):
			p.add(at, "name must match [A-Za-z_][A-Za-z0-9_]*")
		case strings.HasPrefix(k, ReservedEnvPrefix):
			p.add(at, "names starting with "+ReservedEnvPrefix+" are reserved for the worker")
		}
		v := env[k]
		switch {
		case len(v) > MaxEnvValueBytes:
			p.addf(at, "value is %d bytes; at most %d allowed", len(v), MaxEnvValueBytes)
		case strings.ContainsRune(string(v), 0):
			p.add(at, "value must not contain a NUL character")
		}
	}
}

// MarshalJSON writes d in the definition format with env values redacted, so
// that logging or printing a Definition never reveals them: shell commands as
// strings, timeout in seconds, defaults written out. Parse accepts the output.
func (d Definition) MarshalJSON() ([]byte, error) {
	type op struct {
		Type    string `json:"type"`
		Command any    `json:"command"`
		Workdir string `json:"workdir"`
	}
	type res struct {
		GPUs      any    `json:"gpus"`
		MemoryMB  uint32 `json:"memory_mb,omitempty"`
		ShmMB     uint32 `json:"shm_mb,omitempty"`
		MinVRAMGB uint8  `json:"min_vram_gb,omitempty"`
	}
	type def struct {
		Model      string            `json:"model,omitempty"`
		Framework  string            `json:"framework,omitempty"`
		Image      string            `json:"image,omitempty"`
		Operations []op              `json:"operations"`
		Input      json.RawMessage   `json:"input,omitempty"`
		Env        map[string]Secret `json:"env,omitempty"`
		Timeout    int64             `json:"timeout,omitempty"`
		Resources  res               `json:"resources"`
		Outputs    string            `json:"outputs"`
	}
	out := def{
		Model: d.Model, Framework: d.Framework, Image: d.Image,
		Operations: make([]op, len(d.Operations)),
		Env:        d.Env, Timeout: int64(d.Timeout / time.Second), Outputs: d.Outputs,
		Resources: res{GPUs: d.Resources.GPUs, MemoryMB: d.Resources.MemoryMB, ShmMB: d.Resources.ShmMB, MinVRAMGB: d.Resources.MinVRAMGB},
	}
	if len(d.Input) > 0 && json.Valid(d.Input) {
		out.Input = d.Input
	}
	if d.Resources.GPUs == GPUsAll {
		out.Resources.GPUs = "all"
	}
	for i, o := range d.Operations {
		out.Operations[i] = op{Type: o.Type, Command: o.Argv, Workdir: o.Workdir}
		if o.Shell {
			out.Operations[i].Command = o.Command()
		}
	}
	return json.Marshal(out)
}

// String returns a short description without env values:
// `job definition (image docker.io/…, 2 operations, timeout 3s, env: HF_TOKEN)`.
func (d Definition) String() string {
	keys := make([]string, 0, len(d.Env))
	for k := range d.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("job definition (image ")
	b.WriteString(d.ImageRef())
	b.WriteString(", ")
	b.WriteString(strconv.Itoa(len(d.Operations)))
	if len(d.Operations) == 1 {
		b.WriteString(" operation")
	} else {
		b.WriteString(" operations")
	}
	if d.Timeout > 0 {
		b.WriteString(", timeout ")
		b.WriteString(d.Timeout.String())
	}
	if len(keys) > 0 {
		b.WriteString(", env: ")
		b.WriteString(strings.Join(keys, " "))
	}
	b.WriteString(")")
	return b.String()
}
