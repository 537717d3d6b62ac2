package jobdef

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const casesDir = "../testdata/jobs/cases"

const frameworkRequired = "framework: required unless image is set (one of pytorch, huggingface, stable-diffusion, ollama)"

// caseOutcomes pins Parse's outcome for every captured definition in
// testdata/jobs/cases: "" means valid, anything else is the exact error.
var caseOutcomes = map[string]string{
	// Hypernode's own format.
	"hypernode-worker-readme-definition.json":    "",
	"hypernode-sdk-create-job-llama31.ipfs.json": "",
	"hypernode-sdk-readme-sdxl.ipfs.json":        "",
	// The SDK's createJob *parameters*, not the definition the SDK uploads:
	// minVram and gpuType are on-chain fields (create_job), not definition fields.
	"hypernode-sdk-readme-quickstart-params.json": "minVram: unknown field (an on-chain job requirement: pass it to create_job, not in the definition); " +
		"gpuType: unknown field (an on-chain job requirement: pass it to create_job, not in the definition)",

	// Other markets' formats: rejected, naming what is foreign.
	"nosana-cli-confidential-empty-ops.json": "version: unknown field; type: unknown field; meta: unknown field; logistics: unknown field; " +
		`ops: unknown field (this format calls it "operations"); operations: required (a list of 1 to 64 operations); ` + frameworkRequired,
	"nosana-cli-job-literals.json": `global: unknown field; ops: unknown field (this format calls it "operations"); version: unknown field; type: unknown field; ` +
		"operations: required (a list of 1 to 64 operations); " + frameworkRequired,
	"nosana-cli-nginx-multi-ops.json": `version: unknown field; type: unknown field; meta: unknown field; ops: unknown field (this format calls it "operations"); ` +
		"operations: required (a list of 1 to 64 operations); " + frameworkRequired,
	"nosana-docs-literals-pipeline.json": `version: unknown field; type: unknown field; meta: unknown field; ops: unknown field (this format calls it "operations"); ` +
		"operations: required (a list of 1 to 64 operations); " + frameworkRequired,
	"nosana-docs-multi-job.json": `version: unknown field; type: unknown field; meta: unknown field; global: unknown field; ops: unknown field (this format calls it "operations"); ` +
		"operations: required (a list of 1 to 64 operations); " + frameworkRequired,
	"agentchallenge-grich88-k8s-style.json": `name: unknown field; version: unknown field; description: unknown field; ports: unknown field; ` +
		`env: must be an object of NAME: "value" strings; resources.requests: unknown field; resources.limits: unknown field; ` +
		"replicas: unknown field; restartPolicy: unknown field; healthCheck: unknown field; operations: required (a list of 1 to 64 operations)",
	"salad-ollama-container-group.json": "autostartPolicy: unknown field; container: unknown field; name: unknown field; networking: unknown field; " +
		"replicas: unknown field; restartPolicy: unknown field; readme: unknown field; startupProbe: unknown field; livenessProbe: unknown field; " +
		"readinessProbe: unknown field; operations: required (a list of 1 to 64 operations); " + frameworkRequired,
	"akash-ollama-gpu.yaml": "malformed JSON at line 1, column 2: unexpected character in numeric literal; a job definition is one JSON object",
}

func TestParseCapturedCases(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(casesDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if filepath.Base(f) != "SOURCES.md" {
			names = append(names, filepath.Base(f))
		}
	}
	var pinned []string
	for name := range caseOutcomes {
		pinned = append(pinned, name)
	}
	slices.Sort(names)
	slices.Sort(pinned)
	if !slices.Equal(names, pinned) {
		t.Fatalf("files in %s and the golden table differ:\n files %q\ntable %q", casesDir, names, pinned)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(casesDir, name))
			if err != nil {
				t.Fatal(err)
			}
			want := caseOutcomes[name]
			d, err := Parse(b)
			if want == "" {
				if err != nil {
					t.Fatalf("Parse: %v; want a valid definition", err)
				}
				if err := d.Validate(); err != nil {
					t.Fatalf("parsed definition does not re-validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted it; want error %q", want)
			}
			if d != nil {
				t.Errorf("Parse returned a definition with its error")
			}
			if got := err.Error(); got != want {
				t.Errorf("error\n got %s\nwant %s", got, want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
		})
	}
}

// TestParseHypernodeCasesFields checks what the valid captured definitions
// decode to, not only that they parse.
func TestParseHypernodeCasesFields(t *testing.T) {
	tests := []struct {
		file      string
		model     string
		image     string
		timeout   int
		envKeys   []string
		inputHas  string
		operation Operation
	}{
		{
			file:      "hypernode-worker-readme-definition.json",
			model:     "meta-llama/Llama-2-7b-chat-hf",
			image:     "docker.io/pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
			timeout:   3600,
			envKeys:   []string{"HF_TOKEN"},
			inputHas:  `"max_tokens": 200`,
			operation: Operation{Type: "run", Argv: []string{"/bin/sh", "-c", "python inference.py"}, Shell: true, Workdir: "/workspace"},
		},
		{
			file:      "hypernode-sdk-create-job-llama31.ipfs.json",
			model:     "meta-llama/Llama-3.1-8B-Instruct",
			image:     "docker.io/pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
			timeout:   3600,
			envKeys:   []string{"HF_TOKEN"},
			inputHas:  `"temperature":0.7`,
			operation: Operation{Type: "run", Argv: []string{"/bin/sh", "-c", "python inference.py"}, Shell: true, Workdir: "/workspace"},
		},
		{
			file:      "hypernode-sdk-readme-sdxl.ipfs.json",
			model:     "stabilityai/stable-diffusion-xl",
			image:     "docker.io/stabilityai/stable-diffusion:latest",
			timeout:   0,
			inputHas:  `"width":1024`,
			operation: Operation{Type: "run", Argv: []string{"/bin/sh", "-c", "python generate.py"}, Shell: true, Workdir: "/workspace"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d := mustParseFile(t, filepath.Join(casesDir, tt.file))
			if d.Model != tt.model || d.ImageRef() != tt.image || int(d.Timeout.Seconds()) != tt.timeout {
				t.Errorf("model %q image %q timeout %v; want %q %q %ds", d.Model, d.ImageRef(), d.Timeout, tt.model, tt.image, tt.timeout)
			}
			var keys []string
			for k := range d.Env {
				keys = append(keys, k)
			}
			if !slices.Equal(keys, tt.envKeys) {
				t.Errorf("env keys %q; want %q", keys, tt.envKeys)
			}
			if !containsBytes(d.Input, tt.inputHas) {
				t.Errorf("input %s lacks %s", d.Input, tt.inputHas)
			}
			if len(d.Operations) != 1 || !opEqual(d.Operations[0], tt.operation) {
				t.Errorf("operations %+v; want [%+v]", d.Operations, tt.operation)
			}
			if d.Outputs != DefaultOutputs || d.Resources.GPUs != GPUsAll {
				t.Errorf("defaults: outputs %q gpus %d", d.Outputs, d.Resources.GPUs)
			}
		})
	}
}

// TestSampleJobs checks the demo's definitions in testdata/jobs.
func TestSampleJobs(t *testing.T) {
	const image = "hypernode.local/test:latest"
	t.Run("succeed", func(t *testing.T) {
		d := mustParseFile(t, "../testdata/jobs/succeed.json")
		if d.ImageRef() != image || len(d.Operations) != 2 || d.Timeout.Seconds() != 60 {
			t.Fatalf("got %v", d)
		}
		if !d.Operations[0].Shell || d.Operations[1].Shell || d.Operations[1].Argv[0] != "/bin/cat" || d.Operations[1].Workdir != "/workspace/output" {
			t.Errorf("operations %+v", d.Operations)
		}
		if d.Env["DEMO_TOKEN"].Reveal() != "hn-demo-secret-7f3a9c" {
			t.Errorf("DEMO_TOKEN not decoded")
		}
		if !containsBytes(d.Input, "hello from the hypernode demo") {
			t.Errorf("input %s", d.Input)
		}
	})
	t.Run("fail", func(t *testing.T) {
		d := mustParseFile(t, "../testdata/jobs/fail.json")
		if d.ImageRef() != image || len(d.Operations) != 3 || d.Operations[1].Command() != "echo second operation fails >&2; exit 3" {
			t.Fatalf("got %v %+v", d, d.Operations)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		d := mustParseFile(t, "../testdata/jobs/timeout.json")
		if d.ImageRef() != image || d.Timeout.Seconds() != 3 || len(d.Operations) != 1 {
			t.Fatalf("got %v", d)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		b, err := os.ReadFile("../testdata/jobs/invalid.json")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(b)
		const want = "operations[0].workdir: must be an absolute path"
		if err == nil || err.Error() != want {
			t.Fatalf("Parse error %v; want %q", err, want)
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "operations[0].workdir" || ve.Rule != "must be an absolute path" {
			t.Errorf("errors.As gave %+v", ve)
		}
	})
}

func mustParseFile(t *testing.T, name string) *Definition {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return d
}

func containsBytes(b []byte, s string) bool { return strings.Contains(string(b), s) }

func opEqual(a, b Operation) bool {
	return a.Type == b.Type && a.Shell == b.Shell && a.Workdir == b.Workdir && slices.Equal(a.Argv, b.Argv)
}
