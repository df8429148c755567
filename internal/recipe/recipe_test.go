package recipe

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/manifest"
)

// valid is a complete recipe; tests break one line of it at a time. Line
// numbers in the cases below refer to it.
const valid = `name: demo
version: 1.0.0
base:
  suite: bookworm
  packages: [nginx-light]
resources: {minCores: 1, minMemoryMB: 256, minDiskGB: 2}
components:
  backend:
    version: 1.0.0
    source:
      file: bin/vikunja
    ports: [{name: http, port: 3456}]
    health:
      - {kind: http, port: 3456, path: /health}
    units: [vikunja.service]
  frontend:
    version: 1.0.0
    source:
      dir: web
    units: [vikunja-frontend.service]
  mcp:
    version: 0.1.0
    source:
      build:
        dir: mcp
        copy: true
        steps:
          - run: [npm, ci]
        output: .
`

// fixture writes valid (edited) and the files it names into a temp dir.
func fixture(t *testing.T, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "web", "mcp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "vikunja"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(p, []byte(edit(valid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadValid(t *testing.T) {
	p := fixture(t, func(s string) string { return s })
	r, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "demo" || r.Component(manifest.KindBackend).Kind != manifest.KindBackend || !r.SeparateFrontend() {
		t.Errorf("parsed %+v", r)
	}
	if got := r.Resolve(r.Components.Backend.Source.File); got != filepath.Join(filepath.Dir(p), "bin", "vikunja") {
		t.Errorf("backend source resolves to %s", got)
	}
	if !strings.HasPrefix(r.Digest, "sha256:") || len(r.Digest) != 71 {
		t.Errorf("digest %q", r.Digest)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		line           int
		want           string
	}{
		{"unknown top-level key", "name: demo", "name: demo\nflavour: vanilla", 2, "field flavour not found"},
		{"unknown component key", "    ports: [{name: http, port: 3456}]", "    portz: [{name: http, port: 3456}]", 12, "field portz not found"},
		{"bad template version", "version: 1.0.0\nbase", "version: 1.0\nbase", 2, `version "1.0" is not a semantic version`},
		{"bad component version", "  mcp:\n    version: 0.1.0", "  mcp:\n    version: latest", 22, `components.mcp.version "latest"`},
		{"missing file", "file: bin/vikunja", "file: bin/nope", 11, "components.backend.source.file"},
		{"missing build dir", "dir: mcp", "dir: nowhere", 25, "components.mcp.source.build.dir"},
		{"file is a dir", "file: bin/vikunja", "file: bin", 11, "is not a file"},
		{"two sources", "      dir: web", "      dir: web\n      file: bin/vikunja", 18, "exactly one of"},
		{"no source", "    source:\n      dir: web\n", "", 16, "components.frontend.source is required"},
		{"bad health kind", "kind: http, port: 3456", "kind: ping, port: 3456", 14, `kind "ping"`},
		{"url without sha256", "      dir: web", "      url: https://example.org/web.tar", 18, "sha256"},
		{"bad suite", "suite: bookworm", "suite: trixie", 4, "only bookworm"},
		{"embedded backend", "  frontend:\n    version: 1.0.0\n    source:\n      dir: web\n", "  frontend:\n    version: 1.0.0\n    embedded: mcp\n", 18, "only a frontend can be embedded"},
		{"yaml syntax", "name: demo", "name: [demo", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fixture(t, func(s string) string {
				if !strings.Contains(s, tc.old) {
					t.Fatalf("fixture has no %q", tc.old)
				}
				return strings.Replace(s, tc.old, tc.new, 1)
			})
			_, err := Load(p)
			if err == nil {
				t.Fatal("no error")
			}
			prefix := p + ":"
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("error does not start with %q: %v", prefix, err)
			}
			if tc.line > 0 && !strings.Contains(err.Error(), prefix+strconv.Itoa(tc.line)+":") {
				t.Errorf("error does not name line %d: %v", tc.line, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not say %q: %v", tc.want, err)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	p := fixture(t, func(s string) string { return s })
	bin := filepath.Join(filepath.Dir(p), "bin", "vikunja")
	r, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	r.Components.Backend.Commit = "abcdef0"
	err = r.Apply(Overrides{
		Sources:  map[string]string{"backend": "file:" + bin, "frontend": "oci:./layout:1.0#/app/dist"},
		Versions: map[string]string{"backend": "2.5.0", "template": "1.1.0"},
	})
	// The OCI layout does not exist: refused, naming the flag's result.
	if err == nil || !strings.Contains(err.Error(), "after command-line overrides") {
		t.Fatalf("missing OCI layout: %v", err)
	}
	r, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	r.Components.Backend.Commit = "abcdef0"
	if err := r.Apply(Overrides{
		Sources:  map[string]string{"backend": "file:" + bin},
		Versions: map[string]string{"backend": "2.5.0", "template": "1.1.0"},
	}); err != nil {
		t.Fatal(err)
	}
	b := r.Components.Backend
	if b.Source.File != bin || b.Version != "2.5.0" || r.Version != "1.1.0" || b.Commit != "" {
		t.Errorf("after overrides: %+v %+v version %s", b, b.Source, r.Version)
	}
	for _, o := range []Overrides{
		{Versions: map[string]string{"backend": "two"}},
		{Versions: map[string]string{"database": "1.0.0"}},
		{Sources: map[string]string{"backend": "git:https://example.org"}},
		{Sources: map[string]string{"backend": "url:https://example.org/x"}},
		{Sources: map[string]string{"backend": "oci:vikunja/vikunja:2.5.0"}},
	} {
		r, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

func TestParseSource(t *testing.T) {
	s, err := ParseSource("oci:docker.io/vikunja/vikunja:2.5.0#/app/vikunja/vikunja")
	if err != nil || s.OCI.Image != "docker.io/vikunja/vikunja:2.5.0" || s.OCI.Path != "/app/vikunja/vikunja" {
		t.Errorf("oci: %+v %v", s, err)
	}
	s, err = ParseSource("url:https://example.org/v#sha256=" + strings.Repeat("a", 64))
	if err != nil || s.URL != "https://example.org/v" || s.SHA256 != strings.Repeat("a", 64) {
		t.Errorf("url: %+v %v", s, err)
	}
	dir, ref, ok := LocalLayout("/var/lib/vkimg/templates:1.0.0")
	if !ok || dir != "/var/lib/vkimg/templates" || ref != "1.0.0" {
		t.Errorf("LocalLayout: %q %q %v", dir, ref, ok)
	}
	if _, _, ok := LocalLayout("vikunja/vikunja:2.5.0"); ok {
		t.Error("a registry reference taken for a local layout")
	}
}

func TestParseAssignments(t *testing.T) {
	m, err := ParseAssignments("version", []string{"backend=2.5.0", "template=1.1.0"})
	if err != nil || m["backend"] != "2.5.0" || m["template"] != "1.1.0" {
		t.Errorf("%v %v", m, err)
	}
	for _, bad := range [][]string{{"backend"}, {"=1"}, {"backend=1", "backend=2"}} {
		if _, err := ParseAssignments("version", bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestRepositoryRecipes keeps the shipped recipes valid.
func TestRepositoryRecipes(t *testing.T) {
	for _, name := range []string{"standin.yaml", "vikunja.yaml"} {
		r, err := Load(filepath.Join("..", "..", "recipes", name))
		if err != nil {
			t.Fatal(err)
		}
		if r.Components.MCP == nil || r.Components.Frontend == nil {
			t.Errorf("%s: want backend, frontend and MCP", name)
		}
	}
}
