package recipe

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Overrides change a loaded recipe from the command line, e.g. a fork's own
// backend build: --source backend=file:/path/to/vikunja --version backend=2.5.0.
type Overrides struct {
	// Sources maps a component kind to a source spec:
	//   file:PATH | dir:PATH | oci:IMAGE#PATH | url:URL#sha256=HEX
	Sources map[string]string
	// Versions maps a component kind, or "template", to a version.
	Versions map[string]string
	// Commits maps a component kind to its source commit.
	Commits map[string]string
}

// ParseAssignments splits NAME=VALUE flag values into a map, refusing
// duplicates and malformed entries.
func ParseAssignments(flag string, vals []string) (map[string]string, error) {
	m := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("--%s %q: want NAME=VALUE", flag, v)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("--%s %s given twice", flag, k)
		}
		m[k] = val
	}
	return m, nil
}

// Apply changes r as o says and validates the result again. Relative paths
// in overrides are taken relative to the current directory, not the recipe.
func (r *Recipe) Apply(o Overrides) error {
	var errs []error
	for k, v := range o.Versions {
		if k == "template" {
			r.Version = v
			continue
		}
		c, err := r.overridable("version", k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Version = v
	}
	for k, v := range o.Commits {
		c, err := r.overridable("commit", k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Commit = v
	}
	for k, v := range o.Sources {
		c, err := r.overridable("source", k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, err := ParseSource(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--source %s: %w", k, err))
			continue
		}
		c.Source, c.Embedded = s, ""
		// A source from the command line names no commit unless --commit
		// does: the recipe's commit described the recipe's source.
		if _, ok := o.Commits[k]; !ok {
			c.Commit = ""
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("after command-line overrides: %w", err)
	}
	return nil
}

func (r *Recipe) overridable(flag, kind string) (*Component, error) {
	if !slices.Contains(Kinds, kind) {
		return nil, fmt.Errorf("--%s %s: unknown component (want one of %s)", flag, kind, strings.Join(Kinds, ", "))
	}
	c := r.Component(kind)
	if c == nil {
		return nil, fmt.Errorf("--%s %s: recipe %s has no %s component", flag, kind, r.Path, kind)
	}
	return c, nil
}

// ParseSource parses a command-line source spec (see Overrides.Sources).
func ParseSource(spec string) (*Source, error) {
	kind, val, ok := strings.Cut(spec, ":")
	if !ok || val == "" {
		return nil, fmt.Errorf("%q: want file:PATH, dir:PATH, oci:IMAGE#PATH or url:URL#sha256=HEX", spec)
	}
	abs := func(p string) (string, error) {
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%q: %w", spec, err)
		}
		return a, nil
	}
	switch kind {
	case "file":
		p, err := abs(val)
		return &Source{File: p}, err
	case "dir":
		p, err := abs(val)
		return &Source{Dir: p}, err
	case "oci":
		img, p, ok := strings.Cut(val, "#")
		if !ok {
			return nil, fmt.Errorf("%q: want oci:IMAGE#/path/in/image", spec)
		}
		if dir, ref, local := LocalLayout(img); local {
			d, err := abs(dir)
			if err != nil {
				return nil, err
			}
			img = d
			if ref != "" {
				img += ":" + ref
			}
		}
		return &Source{OCI: &OCISource{Image: img, Path: p}}, nil
	case "url":
		u, frag, _ := strings.Cut(val, "#")
		sum, ok := strings.CutPrefix(frag, "sha256=")
		if !ok {
			return nil, fmt.Errorf("%q: want url:URL#sha256=HEX", spec)
		}
		return &Source{URL: u, SHA256: sum}, nil
	}
	return nil, fmt.Errorf("%q: unknown source kind %q (want file, dir, oci or url)", spec, kind)
}
