// Package registry publishes templates to OCI registries and pulls them into
// vkimg's digest-keyed cache, verifying the cosign signature before any blob
// is fetched and every blob's digest before it is kept. The same code reads a
// registry and a local OCI image layout (the embedded default store, a build
// output directory, the cache itself).
package registry

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// LayoutPrefix starts a reference to a local OCI image layout:
// "oci-layout:/path/to/layout:TAG" or "oci-layout:/path@sha256:…". Without
// a tag or digest the layout must hold exactly one image.
const LayoutPrefix = "oci-layout:"

// Ref is a parsed template reference: either a registry repository or a
// local layout, with a tag and/or a digest.
type Ref struct {
	Layout string          // layout directory; empty for a registry
	Repo   name.Repository // registry repository; zero for a layout
	Tag    string          // may be empty when Digest is set
	Digest *v1.Hash
}

// ParseRef parses "registry.example:5000/vikunja:2.5.0",
// "registry.example:5000/vikunja@sha256:…", a bare repository
// ("registry.example:5000/vikunja", for publishing and listing) or an
// oci-layout: reference.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("empty template reference")
	}
	if rest, ok := strings.CutPrefix(s, LayoutPrefix); ok {
		return parseLayoutRef(s, rest)
	}
	if strings.Contains(s, "://") {
		return Ref{}, fmt.Errorf("template reference %q: give host/repository:tag without a URL scheme", s)
	}
	r, err := name.ParseReference(s, name.StrictValidation)
	if err != nil {
		// A bare repository (no tag, no digest) names where to publish or
		// what to list; never an implicit "latest".
		if repo, rerr := name.NewRepository(s, name.StrictValidation); rerr == nil {
			return Ref{Repo: repo}, nil
		}
		return Ref{}, fmt.Errorf("template reference %q: %w (want host[:port]/repository:tag or @sha256:…)", s, err)
	}
	out := Ref{Repo: r.Context()}
	switch r := r.(type) {
	case name.Tag:
		out.Tag = r.TagStr()
	case name.Digest:
		h, err := v1.NewHash(r.DigestStr())
		if err != nil {
			return Ref{}, fmt.Errorf("template reference %q: %w", s, err)
		}
		out.Digest = &h
	}
	return out, nil
}

// LayoutRef is the reference to tag (or the only image, when tag is empty)
// in the layout at dir.
func LayoutRef(dir, tag string) Ref {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return Ref{Layout: abs, Tag: tag}
}

func parseLayoutRef(s, rest string) (Ref, error) {
	var out Ref
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		h, err := v1.NewHash(rest[i+1:])
		if err != nil {
			return Ref{}, fmt.Errorf("template reference %q: bad digest: %w", s, err)
		}
		out.Digest = &h
		rest = rest[:i]
	} else if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		out.Tag = rest[i+1:]
		rest = rest[:i]
		if out.Tag == "" {
			return Ref{}, fmt.Errorf("template reference %q: empty tag", s)
		}
	}
	if rest == "" {
		return Ref{}, fmt.Errorf("template reference %q: no layout directory", s)
	}
	out.Layout = LayoutRef(rest, "").Layout
	return out, nil
}

// String formats the reference the way ParseRef reads it.
func (r Ref) String() string {
	base := LayoutPrefix + r.Layout
	if r.Layout == "" {
		base = r.Repo.Name()
	}
	switch {
	case r.Digest != nil:
		return base + "@" + r.Digest.String()
	case r.Tag != "":
		return base + ":" + r.Tag
	}
	return base
}

// Where names the repository or layout without tag or digest.
func (r Ref) Where() string {
	if r.Layout != "" {
		return LayoutPrefix + r.Layout
	}
	return r.Repo.Name()
}
