// Package recipe parses and validates template recipes: the YAML files under
// recipes/ that name a template's Debian base and its components (backend,
// frontend, MCP server) with where each comes from. Every error in a recipe
// names the file and line, so a user editing one by hand finds the mistake
// without reading vkimg's source.
package recipe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/vkimg/vkimg/internal/manifest"
)

// Recipe is one parsed recipe file.
type Recipe struct {
	Name        string     `yaml:"name"`
	Version     string     `yaml:"version"` // template version, strict semver
	Description string     `yaml:"description"`
	Base        Base       `yaml:"base"`
	Resources   Resources  `yaml:"resources"`
	Components  Components `yaml:"components"`

	// Path is the recipe file; Dir its directory, against which relative
	// source paths are resolved; Digest the sha256 of the file's bytes.
	Path   string `yaml:"-"`
	Dir    string `yaml:"-"`
	Digest string `yaml:"-"`

	root *yaml.Node
}

// Base is the Debian base system built with mmdebstrap.
type Base struct {
	Suite string `yaml:"suite"`
	// Mirror is an apt sources file (deb822 or one-line format) handed to
	// mmdebstrap as its mirror argument; empty means the host's
	// /etc/apt/sources.list.d/debian.sources.
	Mirror   string   `yaml:"mirror"`
	Packages []string `yaml:"packages"`
}

// Resources are the minimums recorded in the manifest.
type Resources struct {
	MinCores    int `yaml:"minCores"`
	MinMemoryMB int `yaml:"minMemoryMB"`
	MinDiskGB   int `yaml:"minDiskGB"`
}

// Components are the three parts of a template. Backend is required;
// Frontend and MCP are optional.
type Components struct {
	Backend  *Component `yaml:"backend"`
	Frontend *Component `yaml:"frontend"`
	MCP      *Component `yaml:"mcp"`
}

// Component is one part of the template and where it comes from.
type Component struct {
	Version string `yaml:"version"` // strict semver
	Commit  string `yaml:"commit"`  // source commit, if known
	// Embedded names the component that serves this one (only
	// "backend", for a frontend built into the backend binary). An
	// embedded component has no source of its own.
	Embedded string            `yaml:"embedded"`
	Source   *Source           `yaml:"source"`
	Ports    []manifest.Port   `yaml:"ports"`
	Health   []manifest.Health `yaml:"health"`
	Units    []string          `yaml:"units"`

	// Kind is backend, frontend or mcp; set by Load.
	Kind string `yaml:"-"`
}

// Source says where a component's artifact comes from: exactly one of its
// fields is set.
type Source struct {
	File   string     `yaml:"file"`   // a local file (the backend binary)
	Dir    string     `yaml:"dir"`    // a local directory (static frontend, MCP tree)
	OCI    *OCISource `yaml:"oci"`    // a file or directory inside an OCI image
	URL    string     `yaml:"url"`    // a download, verified against SHA256
	SHA256 string     `yaml:"sha256"` // hex digest of what URL serves
	Build  *Build     `yaml:"build"`  // a source tree built by declared steps
}

// OCISource is a path inside an OCI image.
type OCISource struct {
	// Image is a registry reference ("vikunja/vikunja:{{.Version}}") or a
	// local OCI image layout directory (a path starting with "/", "./" or
	// "../", optionally followed by ":<ref.name>").
	Image string `yaml:"image"`
	Path  string `yaml:"path"` // absolute path inside the image
}

// Build is a source tree and the steps that turn it into the artifact.
type Build struct {
	Dir string `yaml:"dir"`
	// Copy builds in a fresh copy of Dir (for package managers that write
	// into the tree, like npm ci) instead of in Dir itself; .git and
	// node_modules are not copied.
	Copy  bool   `yaml:"copy"`
	Steps []Step `yaml:"steps"`
	// Output is the artifact, relative to the build's output directory
	// ({{.Out}}), or to the copy when Copy is set.
	Output string `yaml:"output"`
}

// Step is one command of a build. Run is an argv (no shell); each element
// and each Env value is a Go text/template with .Version, .Commit, .Out and
// .SourceDateEpoch.
type Step struct {
	Run []string          `yaml:"run"`
	Env map[string]string `yaml:"env"`
}

// Kinds lists the component kinds in build order.
var Kinds = []string{manifest.KindBackend, manifest.KindFrontend, manifest.KindMCP}

// Component returns the component of kind, or nil.
func (r *Recipe) Component(kind string) *Component {
	switch kind {
	case manifest.KindBackend:
		return r.Components.Backend
	case manifest.KindFrontend:
		return r.Components.Frontend
	case manifest.KindMCP:
		return r.Components.MCP
	}
	return nil
}

// SeparateFrontend reports whether the frontend is its own static files
// (served by vikunja-frontend.service) rather than embedded in the backend.
func (r *Recipe) SeparateFrontend() bool {
	f := r.Components.Frontend
	return f != nil && f.Embedded == ""
}

// DefaultMirror is the apt sources file used when a recipe names none.
const DefaultMirror = "/etc/apt/sources.list.d/debian.sources"

// Load reads, parses and validates a recipe file.
func Load(path string) (*Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read recipe: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read recipe: %w", err)
	}
	return Parse(abs, b)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse parses recipe bytes read from path (used for messages and for
// resolving relative source paths) and validates them.
func Parse(path string, b []byte) (*Recipe, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, posError(path, err)
	}
	var r Recipe
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return nil, posError(path, err)
	}
	sum := sha256.Sum256(b)
	r.Path, r.Dir, r.Digest = path, filepath.Dir(path), "sha256:"+hex.EncodeToString(sum[:])
	if len(root.Content) > 0 {
		r.root = root.Content[0]
	}
	for _, k := range Kinds {
		if c := r.Component(k); c != nil {
			c.Kind = k
		}
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// posError rewrites yaml's "line N: msg" errors as "file:N: msg", one per
// line, so every message points at its place in the file.
func posError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			msgs = append(msgs, lineMsg(path, e))
		}
		return fmt.Errorf("%s", strings.Join(msgs, "\n"))
	}
	return errors.New(lineMsg(path, err.Error()))
}

func lineMsg(path, msg string) string {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s: %s", path, m[1], m[2])
	}
	return fmt.Sprintf("%s: %s", path, strings.TrimPrefix(msg, "yaml: "))
}

// errAt returns an error naming the line of the YAML key at keys (the
// nearest existing ancestor when a key is missing).
func (r *Recipe) errAt(keys []string, format string, args ...any) error {
	line := 0
	n := r.root
	if n != nil {
		line = n.Line
	}
	for _, k := range keys {
		if n == nil {
			break
		}
		var at int
		n, at = child(n, k)
		if n != nil {
			line = at
		}
	}
	msg := fmt.Sprintf(format, args...)
	if line == 0 {
		return fmt.Errorf("%s: %s", r.Path, msg)
	}
	return fmt.Errorf("%s:%d: %s", r.Path, line, msg)
}

// child finds key in a mapping node (returning the value and the key's
// line) or index key in a sequence node.
func child(n *yaml.Node, key string) (*yaml.Node, int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(key); err == nil && i >= 0 && i < len(n.Content) {
			return n.Content[i], n.Content[i].Line
		}
	}
	return nil, 0
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate checks the whole recipe, including that local sources exist.
func (r *Recipe) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !nameRE.MatchString(r.Name) {
		add(r.errAt([]string{"name"}, "name %q: want lower-case letters, digits and dashes", r.Name))
	}
	add(r.checkVersion([]string{"version"}, "version", r.Version))
	if r.Base.Suite != "bookworm" {
		add(r.errAt([]string{"base", "suite"}, "base.suite %q: only bookworm (Debian 12) is supported", r.Base.Suite))
	}
	if r.Base.Mirror != "" {
		add(r.checkPath([]string{"base", "mirror"}, "base.mirror", r.Base.Mirror, false))
	}
	for i, p := range r.Base.Packages {
		if !debPkgRE.MatchString(p) {
			add(r.errAt([]string{"base", "packages", fmt.Sprint(i)}, "base.packages: %q is not a Debian package name", p))
		}
	}
	if r.Resources.MinCores < 1 || r.Resources.MinMemoryMB < 64 || r.Resources.MinDiskGB < 1 {
		add(r.errAt([]string{"resources"}, "resources: minCores >= 1, minMemoryMB >= 64 and minDiskGB >= 1 are required"))
	}
	if r.Components.Backend == nil {
		add(r.errAt([]string{"components"}, "components.backend is required"))
	}
	for _, k := range Kinds {
		if c := r.Component(k); c != nil {
			add(r.validateComponent(c))
		}
	}
	return errors.Join(errs...)
}

var debPkgRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

func (r *Recipe) checkVersion(keys []string, field, v string) error {
	if _, err := semver.StrictNewVersion(v); err != nil {
		return r.errAt(keys, "%s %q is not a semantic version (like 1.2.3): %v", field, v, err)
	}
	return nil
}

// checkPath reports a missing local path (resolved against the recipe).
func (r *Recipe) checkPath(keys []string, field, p string, wantDir bool) error {
	fi, err := os.Stat(r.Resolve(p))
	if err != nil {
		return r.errAt(keys, "%s: %v", field, err)
	}
	if fi.IsDir() != wantDir {
		want := "a file"
		if wantDir {
			want = "a directory"
		}
		return r.errAt(keys, "%s: %s is not %s", field, p, want)
	}
	return nil
}

// Resolve makes a recipe-relative path absolute.
func (r *Recipe) Resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(r.Dir, p)
}

func (r *Recipe) validateComponent(c *Component) error {
	at := func(keys ...string) []string { return append([]string{"components", c.Kind}, keys...) }
	f := "components." + c.Kind
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(r.checkVersion(at("version"), f+".version", c.Version))
	if c.Commit != "" && !commitRE.MatchString(c.Commit) {
		add(r.errAt(at("commit"), "%s.commit %q: want 7 to 40 hex digits", f, c.Commit))
	}
	switch {
	case c.Embedded != "":
		if c.Kind != manifest.KindFrontend || c.Embedded != manifest.KindBackend {
			add(r.errAt(at("embedded"), "%s.embedded: only a frontend can be embedded, and only in the backend", f))
		}
		if c.Source != nil {
			add(r.errAt(at("source"), "%s: an embedded component has no source of its own", f))
		}
		if len(c.Units) > 0 {
			add(r.errAt(at("units"), "%s: an embedded component has no units of its own", f))
		}
	case c.Source == nil:
		add(r.errAt(at(), "%s.source is required", f))
	default:
		add(r.validateSource(at("source"), f+".source", c.Kind, c.Source))
	}
	for i, p := range c.Ports {
		if p.Name == "" || p.Port < 1 || p.Port > 65535 {
			add(r.errAt(at("ports", fmt.Sprint(i)), "%s.ports[%d]: want a name and a port in 1..65535", f, i))
		}
	}
	for i, h := range c.Health {
		switch h.Kind {
		case manifest.HealthHTTP, manifest.HealthVersion, manifest.HealthPage, manifest.HealthMCP:
		default:
			add(r.errAt(at("health", fmt.Sprint(i), "kind"), "%s.health[%d].kind %q: want http, version, page or mcp", f, i, h.Kind))
		}
		if h.Port < 1 || h.Port > 65535 || !strings.HasPrefix(h.Path, "/") {
			add(r.errAt(at("health", fmt.Sprint(i)), "%s.health[%d]: want a port in 1..65535 and a path starting with /", f, i))
		}
	}
	for i, u := range c.Units {
		if !unitRE.MatchString(u) {
			add(r.errAt(at("units", fmt.Sprint(i)), "%s.units[%d] %q is not a systemd unit name", f, i, u))
		}
	}
	return errors.Join(errs...)
}

var (
	commitRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	unitRE   = regexp.MustCompile(`^[A-Za-z0-9@_.-]+\.(service|socket|timer|path|target)$`)
	shaRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func (r *Recipe) validateSource(keys []string, f, kind string, s *Source) error {
	set := 0
	for _, ok := range []bool{s.File != "", s.Dir != "", s.OCI != nil, s.URL != "", s.Build != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return r.errAt(keys, "%s: give exactly one of file, dir, oci, url, build", f)
	}
	if s.SHA256 != "" && s.URL == "" {
		return r.errAt(append(keys, "sha256"), "%s.sha256 belongs to a url source", f)
	}
	switch {
	case s.File != "":
		return r.checkPath(append(keys, "file"), f+".file", s.File, false)
	case s.Dir != "":
		return r.checkPath(append(keys, "dir"), f+".dir", s.Dir, true)
	case s.OCI != nil:
		if s.OCI.Image == "" || !strings.HasPrefix(s.OCI.Path, "/") {
			return r.errAt(append(keys, "oci"), "%s.oci: want image and an absolute path inside it", f)
		}
		if dir, _, ok := LocalLayout(s.OCI.Image); ok {
			return r.checkPath(append(keys, "oci", "image"), f+".oci.image", dir, true)
		}
	case s.URL != "":
		if !strings.HasPrefix(s.URL, "https://") && !strings.HasPrefix(s.URL, "http://") {
			return r.errAt(append(keys, "url"), "%s.url %q: want http(s)", f, s.URL)
		}
		if !shaRE.MatchString(s.SHA256) {
			return r.errAt(append(keys, "sha256"), "%s.sha256: a url source needs the 64-hex-digit sha256 of what it serves", f)
		}
	case s.Build != nil:
		b := s.Build
		if err := r.checkPath(append(keys, "build", "dir"), f+".build.dir", b.Dir, true); err != nil {
			return err
		}
		if len(b.Steps) == 0 {
			return r.errAt(append(keys, "build"), "%s.build.steps: at least one step", f)
		}
		for i, st := range b.Steps {
			if len(st.Run) == 0 {
				return r.errAt(append(keys, "build", "steps", fmt.Sprint(i)), "%s.build.steps[%d].run is empty", f, i)
			}
		}
		if b.Output == "" || filepath.IsAbs(b.Output) || strings.HasPrefix(filepath.Clean(b.Output), "..") {
			return r.errAt(append(keys, "build", "output"), "%s.build.output: want a relative path inside the build output", f)
		}
	}
	return nil
}

// LocalLayout reports whether an OCI image reference names a local OCI
// image layout directory, and splits off the optional ":<ref.name>".
func LocalLayout(image string) (dir, ref string, ok bool) {
	if !strings.HasPrefix(image, "/") && !strings.HasPrefix(image, "./") && !strings.HasPrefix(image, "../") {
		return "", "", false
	}
	dir = image
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		dir, ref = image[:i], image[i+1:]
	}
	return dir, ref, true
}
