package jobdef

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// def builds a definition document from a minimal valid one; extra is
// spliced in as more top-level members (replacing none: use the ops/fields
// arguments to vary the base).
func def(members ...string) []byte {
	return []byte("{" + strings.Join(members, ",") + "}")
}

const (
	fw    = `"framework":"pytorch"`
	opOK  = `"operations":[{"type":"run","command":"echo hi"}]`
	imgOK = `"image":"hypernode.local/test:latest"`
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		doc   []byte
		check func(t *testing.T, d *Definition)
	}{
		{"minimal framework", def(fw, opOK), func(t *testing.T, d *Definition) {
			want := Operation{Type: "run", Argv: []string{"/bin/sh", "-c", "echo hi"}, Shell: true, Workdir: "/workspace"}
			if !opEqual(d.Operations[0], want) {
				t.Errorf("op %+v", d.Operations[0])
			}
			if d.Timeout != 0 || d.Env != nil || d.Input != nil || d.Outputs != "/workspace/output" || d.Resources != (Resources{GPUs: GPUsAll}) {
				t.Errorf("defaults wrong: %#v", d)
			}
		}},
		{"image instead of framework", def(imgOK, opOK), func(t *testing.T, d *Definition) {
			if d.ImageRef() != "hypernode.local/test:latest" {
				t.Errorf("ImageRef %q", d.ImageRef())
			}
		}},
		{"image overrides framework", def(fw, `"image":"ubuntu"`, opOK), func(t *testing.T, d *Definition) {
			if d.ImageRef() != "docker.io/library/ubuntu:latest" {
				t.Errorf("ImageRef %q", d.ImageRef())
			}
		}},
		{"image by digest", def(`"image":"busybox@sha256:`+strings.Repeat("a", 64)+`"`, opOK), func(t *testing.T, d *Definition) {
			if d.ImageRef() != "docker.io/library/busybox@sha256:"+strings.Repeat("a", 64) {
				t.Errorf("ImageRef %q", d.ImageRef())
			}
		}},
		{"each framework", def(`"framework":"ollama"`, opOK), func(t *testing.T, d *Definition) {
			if d.ImageRef() != "docker.io/ollama/ollama:latest" {
				t.Errorf("ImageRef %q", d.ImageRef())
			}
		}},
		{"argv command and workdir", def(fw, `"operations":[{"type":"run","command":["python","-c","print(1)"],"workdir":"/workspace/src"}]`), func(t *testing.T, d *Definition) {
			want := Operation{Type: "run", Argv: []string{"python", "-c", "print(1)"}, Workdir: "/workspace/src"}
			if !opEqual(d.Operations[0], want) {
				t.Errorf("op %+v", d.Operations[0])
			}
		}},
		{"timeout as number", def(fw, opOK, `"timeout":3600`), wantTimeout(3600)},
		{"timeout as numeric string", def(fw, opOK, `"timeout":"3600"`), wantTimeout(3600)},
		{"timeout as integral float", def(fw, opOK, `"timeout":3600.0`), wantTimeout(3600)},
		{"timeout with exponent", def(fw, opOK, `"timeout":3.6e3`), wantTimeout(3600)},
		{"timeout bounds", def(fw, opOK, `"timeout":86400`), wantTimeout(86400)},
		{"timeout null is absent", def(fw, opOK, `"timeout":null`), wantTimeout(0)},
		{"x- fields ignored everywhere", def(fw, `"x-note":{"a":1}`, `"operations":[{"type":"run","command":"true","x-id":"a"}]`, `"resources":{"x-gpu-class":"big"}`), nil},
		{"null optionals are absent", def(fw, opOK, `"model":null`, `"env":null`, `"input":null`, `"resources":null`, `"outputs":null`, `"image":null`), func(t *testing.T, d *Definition) {
			if d.Input != nil || d.Env != nil || d.Outputs != DefaultOutputs {
				t.Errorf("%#v", d)
			}
		}},
		{"input verbatim", def(fw, opOK, `"input": [1, {"a": "b"}, "x"]`), func(t *testing.T, d *Definition) {
			if string(d.Input) != `[1, {"a": "b"}, "x"]` {
				t.Errorf("input %s", d.Input)
			}
		}},
		{"duplicate keys inside input are the job's business", def(fw, opOK, `"input":{"a":1,"a":2}`), nil},
		{"env", def(fw, opOK, `"env":{"HF_TOKEN":"hf_abc","_x1":"","EMPTY":""}`), func(t *testing.T, d *Definition) {
			if len(d.Env) != 3 || d.Env["HF_TOKEN"].Reveal() != "hf_abc" {
				t.Errorf("env %v", d.Env)
			}
		}},
		{"resources", def(fw, opOK, `"resources":{"gpus":2,"memory_mb":"16384","shm_mb":1024,"min_vram_gb":24}`), func(t *testing.T, d *Definition) {
			if d.Resources != (Resources{GPUs: 2, MemoryMB: 16384, ShmMB: 1024, MinVRAMGB: 24}) {
				t.Errorf("resources %+v", d.Resources)
			}
		}},
		{"gpus all and zero", def(fw, opOK, `"resources":{"gpus":0}`), func(t *testing.T, d *Definition) {
			if d.Resources.GPUs != 0 {
				t.Errorf("gpus %d", d.Resources.GPUs)
			}
		}},
		{"outputs is workspace", def(fw, opOK, `"outputs":"/workspace"`), nil},
		{"64 operations", def(fw, `"operations":[`+strings.Repeat(`{"type":"run","command":"true"},`, 63)+`{"type":"run","command":"true"}]`), nil},
		{"128 env entries", def(fw, opOK, `"env":{`+envEntries(128)+`}`), nil},
		{"leading BOM-free whitespace and trailing space", []byte("\n\t " + string(def(fw, opOK)) + " \n"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse(tt.doc)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("Validate after Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

func wantTimeout(sec int) func(*testing.T, *Definition) {
	return func(t *testing.T, d *Definition) {
		t.Helper()
		if d.Timeout != time.Duration(sec)*time.Second {
			t.Errorf("timeout %v; want %ds", d.Timeout, sec)
		}
	}
}

func envEntries(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`"K%d":"v"`, i))
	}
	return strings.Join(parts, ",")
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		doc  []byte
		want string
	}{
		{"empty", []byte(""), "malformed JSON: the document is empty; a job definition is one JSON object"},
		{"array", []byte(`[1]`), "a job definition must be a JSON object"},
		{"string", []byte(`"x"`), "a job definition must be a JSON object"},
		{"truncated", []byte(`{"framework":"pytorch",`), "malformed JSON at line 1, column 23: unexpected end of JSON input; a job definition is one JSON object"},
		{"two objects", []byte("{}\n{}"), "malformed JSON at line 2, column 1: unexpected character after top-level value; a job definition is one JSON object"},
		{"too large", append(def(fw, opOK, `"input":"`), strings.Repeat("a", MaxDefinitionBytes)...), fmt.Sprintf("definition is %d bytes; at most 2097152 allowed", len(def(fw, opOK, `"input":"`))+MaxDefinitionBytes)},
		{"unknown field", def(fw, opOK, `"Timeout":5`), "Timeout: unknown field"},
		{"unknown odd field", def(fw, opOK, `"a b":5`), `["a b"]: unknown field`},
		{"duplicate top-level key", def(fw, opOK, `"timeout":5`, `"timeout":6`), "timeout: appears more than once"},
		{"duplicate env key", def(fw, opOK, `"env":{"A":"x","A":"y"}`), "env.A: appears more than once"},
		{"duplicate op key", def(fw, `"operations":[{"type":"run","command":"a","command":"b"}]`), "operations[0].command: appears more than once"},
		{"no framework nor image", def(opOK), frameworkRequired},
		{"unknown framework", def(`"framework":"PyTorch"`, opOK), "framework: must be one of pytorch, huggingface, stable-diffusion, ollama"},
		{"framework not a string", def(`"framework":1`, opOK), "framework: must be a string"},
		{"bad image", def(`"image":"Ubuntu:latest"`, opOK), "image: not a valid OCI image reference (repository name must be lowercase)"},
		{"bad image tag", def(`"image":"ubuntu:la test"`, opOK), "image: not a valid OCI image reference (invalid reference format)"},
		{"no operations", def(fw), "operations: required (a list of 1 to 64 operations)"},
		{"null operations", def(fw, `"operations":null`), "operations: must be an array of operations"},
		{"empty operations", def(fw, `"operations":[]`), "operations: must have at least 1 operation"},
		{"65 operations", def(fw, `"operations":[`+strings.Repeat(`{"type":"run","command":"true"},`, 64)+`{"type":"run","command":"true"}]`), "operations: has 65 operations; at most 64 allowed"},
		{"operation not an object", def(fw, `"operations":["echo hi"]`), "operations[0]: must be a JSON object"},
		{"op type exec", def(fw, `"operations":[{"type":"exec","command":"x"}]`), `operations[0].type: must be "run"`},
		{"op type missing", def(fw, `"operations":[{"command":"x"}]`), `operations[0].type: required (must be "run")`},
		{"op command missing", def(fw, `"operations":[{"type":"run"}]`), "operations[0].command: required (a string run by /bin/sh -c, or an argv array of strings)"},
		{"op command empty", def(fw, `"operations":[{"type":"run","command":""}]`), "operations[0].command: must not be empty"},
		{"op argv empty", def(fw, `"operations":[{"type":"run","command":[]}]`), "operations[0].command: must be a non-empty string or a non-empty array of strings"},
		{"op argv not strings", def(fw, `"operations":[{"type":"run","command":["a",1]}]`), "operations[0].command[1]: must be a string"},
		{"op argv0 empty", def(fw, `"operations":[{"type":"run","command":["","x"]}]`), "operations[0].command[0]: must not be empty (it names the program)"},
		{"op command object", def(fw, `"operations":[{"type":"run","command":{"cmd":"x"}}]`), "operations[0].command: must be a non-empty string or a non-empty array of strings"},
		{"op command NUL", def(fw, `"operations":[{"type":"run","command":"a\u0000b"}]`), "operations[0].command: must not contain a NUL character"},
		{"op command too long", def(fw, `"operations":[{"type":"run","command":"`+strings.Repeat("x", MaxCommandBytes+1)+`"}]`), "operations[0].command: is 65537 bytes; at most 65536 allowed"},
		{"argv too many", def(fw, `"operations":[{"type":"run","command":[`+strings.Repeat(`"x",`, 256)+`"x"]}]`), "operations[0].command: has 257 entries; at most 256 allowed"},
		{"argv too long in all", def(fw, `"operations":[{"type":"run","command":["`+strings.Repeat("x", 40000)+`","`+strings.Repeat("x", 40000)+`"]}]`), "operations[0].command: is 80000 bytes in all; at most 65536 allowed"},
		{"workdir relative", def(fw, `"operations":[{"type":"run","command":"x","workdir":"work"}]`), "operations[0].workdir: must be an absolute path"},
		{"workdir dotdot", def(fw, `"operations":[{"type":"run","command":"x"},{"type":"run","command":"x","workdir":"/workspace/../etc"}]`), `operations[1].workdir: must not contain ".."`},
		{"workdir unclean", def(fw, `"operations":[{"type":"run","command":"x","workdir":"/workspace/"}]`), "operations[0].workdir: must be a clean path (no //, /./ or trailing /)"},
		{"workdir not string", def(fw, `"operations":[{"type":"run","command":"x","workdir":5}]`), "operations[0].workdir: must be a string"},
		{"op unknown field", def(fw, `"operations":[{"type":"run","command":"x","args":{}}]`), "operations[0].args: unknown field"},
		{"input too large", def(fw, opOK, `"input":"`+strings.Repeat("a", MaxInputBytes)+`"`), "input: is 1048578 bytes; at most 1048576 allowed"},
		{"env not object", def(fw, opOK, `"env":["A=b"]`), `env: must be an object of NAME: "value" strings`},
		{"env bad key", def(fw, opOK, `"env":{"1A":"x"}`), `env["1A"]: name must match [A-Za-z_][A-Za-z0-9_]*`},
		{"env odd key", def(fw, opOK, `"env":{"A-B C":"x"}`), `env["A-B C"]: name must match [A-Za-z_][A-Za-z0-9_]*`},
		{"env reserved key", def(fw, opOK, `"env":{"HYPERNODE_INPUT":"x"}`), "env.HYPERNODE_INPUT: names starting with HYPERNODE_ are reserved for the worker"},
		{"env value number", def(fw, opOK, `"env":{"PORT":3000}`), "env.PORT: value must be a string"},
		{"env value too long", def(fw, opOK, `"env":{"A":"`+strings.Repeat("s", MaxEnvValueBytes+1)+`"}`), "env.A: value is 32769 bytes; at most 32768 allowed"},
		{"env value NUL", def(fw, opOK, `"env":{"A":"sec\u0000ret"}`), "env.A: value must not contain a NUL character"},
		{"env too many", def(fw, opOK, `"env":{`+envEntries(129)+`}`), "env: has 129 entries; at most 128 allowed"},
		{"timeout zero", def(fw, opOK, `"timeout":0`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout too big", def(fw, opOK, `"timeout":86401`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout fraction", def(fw, opOK, `"timeout":1.5`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout duration string", def(fw, opOK, `"timeout":"1h"`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout padded string", def(fw, opOK, `"timeout":" 60"`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout huge", def(fw, opOK, `"timeout":1e400`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"timeout bool", def(fw, opOK, `"timeout":true`), "timeout: must be a whole number of seconds from 1 to 86400"},
		{"resources not object", def(fw, opOK, `"resources":"big"`), "resources: must be a JSON object"},
		{"gpus too many", def(fw, opOK, `"resources":{"gpus":17}`), `resources.gpus: must be "all" or a whole number from 0 to 16`},
		{"gpus word", def(fw, opOK, `"resources":{"gpus":"any"}`), `resources.gpus: must be "all" or a whole number from 0 to 16`},
		{"memory zero", def(fw, opOK, `"resources":{"memory_mb":0}`), "resources.memory_mb: must be a whole number of MiB from 1 to 1048576"},
		{"shm too big", def(fw, opOK, `"resources":{"shm_mb":65537}`), "resources.shm_mb: must be a whole number of MiB from 1 to 65536"},
		{"vram too big", def(fw, opOK, `"resources":{"min_vram_gb":256}`), "resources.min_vram_gb: must be a whole number of GiB from 0 to 255"},
		{"resources unknown", def(fw, opOK, `"resources":{"cpu":4}`), "resources.cpu: unknown field"},
		{"outputs relative", def(fw, opOK, `"outputs":"out"`), "outputs: must be an absolute path"},
		{"outputs outside workspace", def(fw, opOK, `"outputs":"/tmp/out"`), "outputs: must be /workspace or a directory below it"},
		{"outputs sneaky prefix", def(fw, opOK, `"outputs":"/workspace2"`), "outputs: must be /workspace or a directory below it"},
		{"model NUL", def(fw, opOK, `"model":"a\u0000"`), "model: must not contain a NUL character"},
		{"model not string", def(fw, opOK, `"model":{"name":"x"}`), "model: must be a string"},
		{"several problems in order", def(`"framework":"jax"`, `"operations":[{"type":"exec","command":"x","workdir":"rel"}]`, `"timeout":-1`, `"extra":1`),
			`timeout: must be a whole number of seconds from 1 to 86400; extra: unknown field; framework: must be one of pytorch, huggingface, stable-diffusion, ollama; ` +
				`operations[0].type: must be "run"; operations[0].workdir: must be an absolute path`},
		{"error count is bounded", def(fw, opOK, strings.TrimSuffix(strings.Repeat(`"u":1,`, 20), ",")),
			"u: appears more than once"},
		{"many unknown fields are capped", def(fw, opOK, manyUnknown(20)),
			"f0: unknown field; f1: unknown field; f2: unknown field; f3: unknown field; f4: unknown field; f5: unknown field; f6: unknown field; f7: unknown field; " +
				"f8: unknown field; f9: unknown field; f10: unknown field; f11: unknown field; f12: unknown field; f13: unknown field; f14: unknown field; f15: unknown field; and 4 more problems"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse(tt.doc)
			if err == nil {
				t.Fatalf("Parse accepted it: %v", d)
			}
			if d != nil {
				t.Errorf("Parse returned a definition with its error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("errors.As(*ValidationError) = false")
			}
		})
	}
}

func manyUnknown(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`"f%d":1`, i))
	}
	return strings.Join(parts, ",")
}

func TestValidateBuiltDefinition(t *testing.T) {
	d := &Definition{
		Framework:  "pytorch",
		Operations: []Operation{{Type: "run", Argv: []string{"/bin/sh", "-c", "x"}, Shell: true, Workdir: "/workspace"}},
		Resources:  Resources{GPUs: GPUsAll},
		Outputs:    DefaultOutputs,
		Timeout:    90 * time.Second,
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	d.Timeout = 1500 * time.Millisecond
	d.Operations[0].Argv = []string{"/bin/bash", "-c", "x"}
	d.Resources.GPUs = -2
	d.Outputs = ""
	const want = `operations[0].command: a shell operation must have argv ["/bin/sh", "-c", command]; timeout: must be a whole number of seconds from 1 to 86400; ` +
		`resources.gpus: must be "all" or a whole number from 0 to 16; outputs: must be an absolute path`
	if err := d.Validate(); err == nil || err.Error() != want {
		t.Fatalf("Validate: %v\nwant %s", err, want)
	}
}

func TestEnvListAndImage(t *testing.T) {
	d, err := Parse(def(fw, opOK, `"model":"m/x"`, `"env":{"ZED":"z=1","ALPHA":"a b"}`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(d.EnvList(), "\n")
	want := "ALPHA=a b\nZED=z=1\nHYPERNODE_MODEL=m/x\nHYPERNODE_INPUT=/workspace/input.json"
	if got != want {
		t.Errorf("EnvList\n got %q\nwant %q", got, want)
	}
	if string(d.InputJSON()) != "null" {
		t.Errorf("InputJSON of no input = %s", d.InputJSON())
	}
	for fw, img := range map[string]string{
		"pytorch":          "docker.io/pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
		"huggingface":      "docker.io/huggingface/transformers-pytorch-gpu:latest",
		"stable-diffusion": "docker.io/stabilityai/stable-diffusion:latest",
		"ollama":           "docker.io/ollama/ollama:latest",
	} {
		d := &Definition{Framework: fw}
		if d.ImageRef() != img {
			t.Errorf("ImageRef(%s) = %q; want %q", fw, d.ImageRef(), img)
		}
	}
}

// TestMarshalRoundTrip: the canonical rendering parses back to the same
// definition, with env values redacted.
func TestMarshalRoundTrip(t *testing.T) {
	for _, name := range []string{"../testdata/jobs/succeed.json", "../testdata/jobs/fail.json", "../testdata/jobs/timeout.json", casesDir + "/hypernode-worker-readme-definition.json"} {
		d := mustParseFile(t, name)
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: Parse(Marshal) = %v\n%s", name, err, b)
		}
		if got, want := canonical(t, d2), canonical(t, d); got != want {
			t.Errorf("%s: round trip differs\n got %s\nwant %s", name, got, want)
		}
		for k, v := range d2.Env {
			if v.Reveal() != Redacted {
				t.Errorf("%s: env %s came back as a clear value", name, k)
			}
		}
	}
}

func canonical(t *testing.T, d *Definition) string {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
