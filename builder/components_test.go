package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
)

var epoch = time.Unix(1700000000, 0).UTC()

var testManifest = manifest.Manifest{
	SchemaVersion: manifest.SchemaVersion, Name: "vikunja", Version: "2.5.0", Created: epoch.Format(time.RFC3339),
	Components: []manifest.Component{{Name: "vikunja-backend", Kind: manifest.KindBackend, Version: "2.5.0"}},
	DataVolume: manifest.DataVolume{Path: "/data"},
}

func newTestBuilder(t *testing.T) *Builder {
	t.Helper()
	b, err := New(Options{Overlays: t.TempDir(), CacheDir: t.TempDir(), Layout: t.TempDir(), RootfsDir: t.TempDir(), Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDownloadVerifiesSHA256(t *testing.T) {
	body := []byte("#!/bin/sh\necho Vikunja version 2.5.0\n")
	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		w.Write(body)
	}))
	defer srv.Close()
	b := newTestBuilder(t)
	ctx := context.Background()

	if _, err := b.download(ctx, srv.URL+"/vikunja", strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "sha256 is "+good) {
		t.Fatalf("wrong checksum accepted or not explained: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(b.opts.CacheDir, "downloads")); len(left) != 0 {
		t.Errorf("a refused download left %v", left)
	}
	p, err := b.download(ctx, srv.URL+"/vikunja", good)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(body) {
		t.Errorf("downloaded %q", got)
	}
	if _, err := b.download(ctx, srv.URL+"/vikunja", good); err != nil || hits != 2 {
		t.Errorf("second download: %v, %d requests (want the cached copy)", err, hits)
	}
}

// TestRunBuildCleanEnv: steps see their templated arguments and env, and
// none of the developer's other variables.
func TestRunBuildCleanEnv(t *testing.T) {
	t.Setenv("VKIMG_LEAK", "yes")
	dir := t.TempDir()
	r := &recipe.Recipe{Dir: dir}
	c := &recipe.Component{Kind: "backend", Version: "1.2.3", Source: &recipe.Source{Build: &recipe.Build{
		Dir: ".",
		Steps: []recipe.Step{{
			Run: []string{"sh", "-c", `env > "$1/env"; echo "$2" > "$1/vikunja"`, "sh", "{{.Out}}", "v{{.Version}}"},
			Env: map[string]string{"CGO_ENABLED": "0"},
		}},
		Output: "vikunja",
	}}}
	b := newTestBuilder(t)
	p, err := b.runBuild(context.Background(), r, c, filepath.Join(t.TempDir(), "work"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(p)
	if err != nil || strings.TrimSpace(string(out)) != "v1.2.3" {
		t.Errorf("artifact %q %v", out, err)
	}
	env, err := os.ReadFile(filepath.Join(filepath.Dir(p), "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SOURCE_DATE_EPOCH=1700000000", "CGO_ENABLED=0", "TZ=UTC"} {
		if !strings.Contains(string(env), want+"\n") {
			t.Errorf("step env lacks %s:\n%s", want, env)
		}
	}
	if strings.Contains(string(env), "VKIMG_LEAK") {
		t.Errorf("step saw the caller's environment:\n%s", env)
	}

	c.Source.Build.Steps = []recipe.Step{{Run: []string{"sh", "-c", "echo broken >&2; exit 3"}}}
	if _, err := b.runBuild(context.Background(), r, c, filepath.Join(t.TempDir(), "work")); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("failing step: %v", err)
	}
}

// TestExtractFromImage takes a file and a directory out of a local OCI
// layout, as an oci source does with Vikunja's release image.
func TestExtractFromImage(t *testing.T) {
	es, err := ociimage.Normalize([]ociimage.Entry{
		ociimage.DirEntry("/app", 0o755, 0, 0),
		ociimage.DirEntry("/app/vikunja", 0o755, 0, 0),
		ociimage.FileEntry("/app/vikunja/vikunja", 0o755, 0, 0, []byte("binary")),
		ociimage.DirEntry("/app/vikunja/dist", 0o755, 0, 0),
		ociimage.FileEntry("/app/vikunja/dist/index.html", 0o644, 0, 0, []byte("<html>")),
	}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ociimage.WriteLayerFile(filepath.Join(t.TempDir(), "l.tar.zst"), es)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.NewImage(&testManifest, "", []ociimage.Layer{{Layer: l}})
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "layout")
	if err := ociimage.AppendToLayout(layout, img, "2.5.0"); err != nil {
		t.Fatal(err)
	}
	r := &recipe.Recipe{Dir: filepath.Dir(layout)}
	ctx := context.Background()
	p, err := extractFromImage(ctx, r, "./layout:2.5.0", "/app/vikunja/vikunja", filepath.Join(t.TempDir(), "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "binary" {
		t.Errorf("file: %q", got)
	}
	p, err = extractFromImage(ctx, r, layout, "/app/vikunja/dist", filepath.Join(t.TempDir(), "dist"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p, "index.html")); string(got) != "<html>" {
		t.Errorf("dir: %q", got)
	}
	if _, err := extractFromImage(ctx, r, layout, "/app/missing", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("a missing path was extracted")
	}
}

func TestDescribeSourceHasNoHostPaths(t *testing.T) {
	for _, tc := range []struct {
		src  recipe.Source
		want string
	}{
		{recipe.Source{File: "/home/me/src/vikunja/vikunja"}, "file vikunja"},
		{recipe.Source{Dir: "../internal/fixtures/standin/frontend"}, "dir ../internal/fixtures/standin/frontend"},
		{recipe.Source{Build: &recipe.Build{Dir: "/builds/ci/1234/mcp"}}, "build mcp"},
		{recipe.Source{OCI: &recipe.OCISource{Image: "/tmp/x/release:2.5.0", Path: "/app/vikunja/vikunja"}}, "oci layout release:2.5.0 /app/vikunja/vikunja"},
		{recipe.Source{OCI: &recipe.OCISource{Image: "vikunja/vikunja:2.5.0", Path: "/app/vikunja/vikunja"}}, "oci vikunja/vikunja:2.5.0 /app/vikunja/vikunja"},
	} {
		if got := describeSource(&tc.src); got != tc.want {
			t.Errorf("describeSource(%+v) = %q, want %q", tc.src, got, tc.want)
		}
	}
}
