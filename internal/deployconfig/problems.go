package deployconfig

import (
	"fmt"
	"strings"
)

// Problem is one reason the answers are refused (or, for a warning, one
// thing the administrator should know before going on).
type Problem struct {
	Key     string // YAML key path, e.g. "database.host"
	Where   string // "file:line" when the value came from an answers file
	Reason  string
	Warning bool
}

func (p Problem) String() string {
	where := describe(p.Key)
	if p.Where != "" {
		where = p.Where + ": " + where
	}
	return where + ": " + p.Reason
}

// Problems collects every refusal, so the administrator fixes them all in
// one go rather than one per run.
type Problems struct{ List []Problem }

func (ps *Problems) add(a *Answers, key, format string, args ...any) {
	ps.List = append(ps.List, Problem{Key: key, Where: a.origin[key], Reason: fmt.Sprintf(format, args...)})
}

func (ps *Problems) warn(a *Answers, key, format string, args ...any) {
	ps.List = append(ps.List, Problem{Key: key, Where: a.origin[key], Reason: fmt.Sprintf(format, args...), Warning: true})
}

// check adds err, if any, as a problem of key.
func (ps *Problems) check(a *Answers, key string, err error) {
	if err != nil {
		ps.add(a, key, "%v", err)
	}
}

// Warnings are the problems that do not stop a deploy.
func (ps *Problems) Warnings() []Problem {
	var w []Problem
	for _, p := range ps.List {
		if p.Warning {
			w = append(w, p)
		}
	}
	return w
}

// Err is nil when nothing but warnings was found, else an *InvalidError.
func (ps *Problems) Err() error {
	var errs []Problem
	for _, p := range ps.List {
		if !p.Warning {
			errs = append(errs, p)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &InvalidError{Problems: errs}
}

// InvalidError lists every refused answer; nothing was changed.
type InvalidError struct{ Problems []Problem }

func (e *InvalidError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid answer: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d invalid answers:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - " + p.String())
	}
	return b.String()
}

// Has reports whether key is among the refused answers.
func (e *InvalidError) Has(key string) bool {
	for _, p := range e.Problems {
		if p.Key == key {
			return true
		}
	}
	return false
}
