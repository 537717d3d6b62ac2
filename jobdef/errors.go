package jobdef

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalid classifies every error Parse and Validate return: the definition
// breaks a rule of spec/job-definition.md and must not run (the job is
// finished with status "rejected"). Test with errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid job definition")

// ValidationError is one broken rule. Field is the path of the offending
// field in the definition's JSON ("operations[2].workdir", `env["1X"]`), or
// "" when the problem is the document as a whole. Rule says what is wrong.
// Neither ever contains an env value.
type ValidationError struct {
	Field string
	Rule  string
}

// Error returns "field: rule", or the rule alone when Field is "".
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Rule
	}
	return e.Field + ": " + e.Rule
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// ValidationErrors is every problem found in one definition, in document
// order, at most MaxReportedErrors of them (then one "and N more" entry).
// errors.As(err, &ve) with ve *ValidationError yields the first.
type ValidationErrors []*ValidationError

// MaxReportedErrors bounds how many problems one error reports, so that the
// error (which goes into the rejected result document) stays small.
const MaxReportedErrors = 16

// Error joins the problems with "; ".
func (es ValidationErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the individual *ValidationError values.
func (es ValidationErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Is reports whether target is ErrInvalid.
func (es ValidationErrors) Is(target error) bool { return target == ErrInvalid }

// problems collects ValidationErrors while decoding and validating.
// The first problem of a field wins: later ones for the same path, or for a
// path inside an object already reported (validate re-checking what decode
// already reported), are dropped.
type problems struct {
	list   ValidationErrors
	extra  int
	fields map[string]bool
}

func (p *problems) add(field, rule string) {
	if field != "" {
		if p.fields[field] {
			return
		}
		for i := 1; i < len(field); i++ {
			if (field[i] == '.' || field[i] == '[') && p.fields[field[:i]] {
				return // an enclosing object was already reported
			}
		}
	}
	if p.fields == nil {
		p.fields = map[string]bool{}
	}
	p.fields[field] = true
	if len(p.list) >= MaxReportedErrors {
		p.extra++
		return
	}
	p.list = append(p.list, &ValidationError{Field: field, Rule: rule})
}

func (p *problems) addf(field, format string, args ...any) {
	p.add(field, fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	out := p.list
	if p.extra > 0 {
		out = append(out[:len(out):len(out)], &ValidationError{Rule: fmt.Sprintf("and %d more problems", p.extra)})
	}
	return out
}

// maxNameInError bounds how much of a field name (chosen by the poster) an
// error repeats.
const maxNameInError = 64

// keyPath renders member key of the object at parent as a path:
// parent.key for plain names, parent["odd key"] otherwise.
func keyPath(parent, key string) string {
	if plainName(key) && len(key) <= maxNameInError {
		if parent == "" {
			return key
		}
		return parent + "." + key
	}
	k := key
	if len(k) > maxNameInError {
		k = truncateUTF8(k, maxNameInError) + "…"
	}
	return parent + "[" + strconv.Quote(k) + "]"
}

func plainName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '$', c == '@':
		case c >= '0' && c <= '9', c == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
