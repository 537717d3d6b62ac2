package jobdef

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Parse decodes and validates a job definition (spec/job-definition.md).
//
// The document must be one JSON object of at most MaxDefinitionBytes. Fields
// are matched exactly (case-sensitive); unknown fields are errors naming
// them, except names starting with "x-", which are ignored in the definition,
// in each operation and in resources. A key that appears twice in any of
// those objects or in env is an error; inside "input" (kept verbatim and only
// handed to the job) duplicates are not checked. null stands for "absent" in
// optional fields. Whole numbers (timeout, resources.*) may also be written
// as decimal strings ("3600") or as integral floats (3600.0), as JavaScript
// clients do.
//
// On failure it returns nil and ValidationErrors listing every problem found
// (errors.Is(err, ErrInvalid) holds). No error text ever contains an env
// value.
func Parse(b []byte) (*Definition, error) {
	var p problems
	d := decode(&p, b)
	if d == nil {
		return nil, p.err()
	}
	d.validate(&p) // a field decode already reported is not reported again
	if err := p.err(); err != nil {
		return nil, err
	}
	return d, nil
}

type member struct {
	key string
	raw json.RawMessage
}

// decode turns b into a Definition with defaults applied, reporting shape
// problems (syntax, types, unknown and duplicate fields, ranges of numbers).
// The rules that Validate also checks are left to it.
func decode(p *problems, b []byte) *Definition {
	if len(b) > MaxDefinitionBytes {
		p.addf("", "definition is %d bytes; at most %d allowed", len(b), MaxDefinitionBytes)
		return nil
	}
	if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
		p.add("", syntaxRule(b, err))
		return nil
	}
	members, ok := readObject(p, "", b)
	if !ok {
		return nil
	}
	d := &Definition{
		Resources: Resources{GPUs: GPUsAll},
		Outputs:   DefaultOutputs,
	}
	seenOps := false
	for _, m := range members {
		at := keyPath("", m.key)
		if isNull(m.raw) && m.key != "operations" && knownField[m.key] {
			continue
		}
		switch m.key {
		case "model":
			d.Model, _ = stringField(p, at, m.raw)
		case "framework":
			d.Framework, _ = stringField(p, at, m.raw)
		case "image":
			d.Image, _ = stringField(p, at, m.raw)
		case "operations":
			seenOps = true
			d.Operations = decodeOperations(p, m.raw)
		case "input":
			if len(m.raw) > MaxInputBytes {
				p.addf(at, "is %d bytes; at most %d allowed", len(m.raw), MaxInputBytes)
				continue
			}
			d.Input = append(json.RawMessage(nil), m.raw...)
		case "env":
			d.Env = decodeEnv(p, m.raw)
		case "timeout":
			n, ok := wholeNumber(m.raw)
			if !ok || n < 1 || n > MaxTimeoutSeconds {
				p.add(at, timeoutRule)
				continue
			}
			d.Timeout = time.Duration(n) * time.Second
		case "resources":
			decodeResources(p, m.raw, &d.Resources)
		case "outputs":
			d.Outputs, _ = stringField(p, at, m.raw)
		default:
			if strings.HasPrefix(m.key, "x-") {
				continue
			}
			p.add(at, unknownFieldRule(m.key))
		}
	}
	if !seenOps {
		p.add("operations", "required (a list of 1 to 64 operations)")
	}
	return d
}

var knownField = map[string]bool{
	"model": true, "framework": true, "image": true, "operations": true, "input": true,
	"env": true, "timeout": true, "resources": true, "outputs": true,
}

// unknownFieldRule adds a hint for names posters are known to confuse.
func unknownFieldRule(key string) string {
	switch key {
	case "minVram", "min_vram", "gpuType", "gpu_type":
		return "unknown field (an on-chain job requirement: pass it to create_job, not in the definition)"
	case "ops":
		return `unknown field (this format calls it "operations")`
	}
	return "unknown field"
}

func decodeOperations(p *problems, raw json.RawMessage) []Operation {
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		p.add("operations", "must be an array of operations")
		return nil
	}
	if len(items) > MaxOperations {
		p.addf("operations", "has %d operations; at most %d allowed", len(items), MaxOperations)
		return nil
	}
	ops := make([]Operation, len(items))
	for i, item := range items {
		ops[i] = decodeOperation(p, indexPath("operations", i), item)
	}
	return ops
}

func decodeOperation(p *problems, at string, raw json.RawMessage) Operation {
	op := Operation{Workdir: DefaultWorkdir}
	members, ok := readObject(p, at, raw)
	if !ok {
		return op
	}
	var seenType, seenCmd bool
	for _, m := range members {
		fat := keyPath(at, m.key)
		switch m.key {
		case "type":
			seenType = true
			op.Type, _ = stringField(p, fat, m.raw) // validate checks the value
		case "command":
			seenCmd = true
			op.Argv, op.Shell = decodeCommand(p, fat, m.raw)
		case "workdir":
			if isNull(m.raw) {
				continue
			}
			if s, ok := stringField(p, fat, m.raw); ok {
				op.Workdir = s
			}
		default:
			if strings.HasPrefix(m.key, "x-") {
				continue
			}
			p.add(fat, unknownFieldRule(m.key))
		}
	}
	if !seenType {
		p.add(at+".type", `required (must be "run")`)
	}
	if !seenCmd {
		p.add(at+".command", "required (a string run by /bin/sh -c, or an argv array of strings)")
	}
	return op
}

// decodeCommand reads "command": a string becomes ["/bin/sh", "-c", s]; an
// array of strings is the argv (an entry that is not a string is reported
// and left ""). Empty strings and arrays are left to validate.
func decodeCommand(p *problems, at string, raw json.RawMessage) (argv []string, shell bool) {
	const rule = "must be a non-empty string or a non-empty array of strings"
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			p.add(at, rule)
			return nil, false
		}
		return []string{"/bin/sh", "-c", s}, true
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			p.add(at, rule)
			return nil, false
		}
		if len(items) > MaxArgv {
			p.addf(at, "has %d entries; at most %d allowed", len(items), MaxArgv)
			return nil, false
		}
		argv = make([]string, len(items))
		for i, it := range items {
			argv[i], _ = stringField(p, indexPath(at, i), it)
		}
		return argv, false
	}
	p.add(at, rule)
	return nil, false
}

func decodeEnv(p *problems, raw json.RawMessage) map[string]Secret {
	if raw[0] != '{' {
		p.add("env", "must be an object of NAME: \"value\" strings")
		return nil
	}
	members, ok := readObject(p, "env", raw)
	if !ok {
		return nil
	}
	if len(members) > MaxEnvEntries {
		p.addf("env", "has %d entries; at most %d allowed", len(members), MaxEnvEntries)
		return nil
	}
	env := make(map[string]Secret, len(members))
	for _, m := range members {
		at := keyPath("env", m.key)
		if m.raw[0] != '"' {
			p.add(at, "value must be a string")
			continue
		}
		var s string
		if err := json.Unmarshal(m.raw, &s); err != nil {
			p.add(at, "value must be a string")
			continue
		}
		env[m.key] = Secret(s)
	}
	return env
}

func decodeResources(p *problems, raw json.RawMessage, r *Resources) {
	members, ok := readObject(p, "resources", raw)
	if !ok {
		return
	}
	for _, m := range members {
		at := keyPath("resources", m.key)
		if isNull(m.raw) {
			continue
		}
		switch m.key {
		case "gpus":
			if string(m.raw) == `"all"` {
				r.GPUs = GPUsAll
				continue
			}
			n, ok := wholeNumber(m.raw)
			if !ok || n < 0 || n > MaxGPUs {
				p.add(at, gpusRule)
				continue
			}
			r.GPUs = int(n)
		case "memory_mb":
			n, ok := wholeNumber(m.raw)
			if !ok || n < 1 || n > MaxMemoryMB {
				p.add(at, memoryRule)
				continue
			}
			r.MemoryMB = uint32(n)
		case "shm_mb":
			n, ok := wholeNumber(m.raw)
			if !ok || n < 1 || n > MaxShmMB {
				p.add(at, shmRule)
				continue
			}
			r.ShmMB = uint32(n)
		case "min_vram_gb":
			n, ok := wholeNumber(m.raw)
			if !ok || n < 0 || n > math.MaxUint8 {
				p.add(at, vramRule)
				continue
			}
			r.MinVRAMGB = uint8(n)
		default:
			if strings.HasPrefix(m.key, "x-") {
				continue
			}
			p.add(at, unknownFieldRule(m.key))
		}
	}
}

// readObject returns the members of the JSON object raw (already known to be
// valid JSON) in document order. It reports a value that is not an object
// (then ok is false), and every key that appears more than once (keeping the
// first occurrence).
func readObject(p *problems, at string, raw []byte) ([]member, bool) {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || raw[0] != '{' {
		if at == "" {
			p.add("", "a job definition must be a JSON object")
		} else {
			p.add(at, "must be a JSON object")
		}
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '{'
		p.add(at, "malformed object")
		return nil, false
	}
	var out []member
	seen := map[string]bool{}
	dupReported := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			p.add(at, "malformed object")
			return nil, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			p.add(at, "malformed object")
			return nil, false
		}
		if seen[key] {
			if !dupReported[key] {
				p.add(keyPath(at, key), "appears more than once")
				dupReported[key] = true
			}
			continue
		}
		seen[key] = true
		out = append(out, member{key: key, raw: v})
	}
	return out, true // with duplicates reported, the first occurrence is decoded
}

// stringField decodes a JSON string; anything else is reported.
func stringField(p *problems, at string, raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		p.add(at, "must be a string")
		return "", false
	}
	return s, true
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// wholeNumber reads a JSON number, or a string holding one, that is a whole
// number within int64 (3600, 3600.0, 3.6e3, "3600").
func wholeNumber(raw json.RawMessage) (int64, bool) {
	s := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false
		}
		if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) || !json.Valid([]byte(s)) {
			return 0, false
		}
	} else if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return 0, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) >= 1<<62 {
		return 0, false
	}
	return int64(f), true
}

// syntaxRule describes a JSON syntax error by line and column, without
// quoting the offending character (it may belong to a secret).
func syntaxRule(b []byte, err error) string {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return "malformed JSON: a job definition is one JSON object"
	}
	what := se.Error()
	if strings.HasPrefix(what, "invalid character ") {
		if i := strings.LastIndex(what, "' "); i >= 0 {
			what = "unexpected character " + what[i+2:]
		} else {
			what = "unexpected character"
		}
	}
	off := int(min(max(se.Offset, 0), int64(len(b))))
	line := 1 + bytes.Count(b[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(b[:off], '\n')
	if off > 0 && b[off-1] != '\n' {
		col-- // Offset points just past the offending byte
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "malformed JSON: the document is empty; a job definition is one JSON object"
	}
	return fmt.Sprintf("malformed JSON at line %d, column %d: %s; a job definition is one JSON object", line, col, what)
}
