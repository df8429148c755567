package builder_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder"
	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/testenv"
)

// TestReproducible builds the stand-in a second time into a fresh output:
// same inputs must give the same image digest and the same rootfs bytes.
func TestReproducible(t *testing.T) {
	first := standin(t)
	second := build(t, "recipes/standin.yaml", recipe.Overrides{})
	if first.Digest != second.Digest {
		t.Errorf("image digests differ: %s and %s", first.Digest, second.Digest)
	}
	if a, b := fileSum(t, first.Rootfs), fileSum(t, second.Rootfs); a != b {
		t.Errorf("rootfs tarballs differ: %x and %x", a, b)
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestTemplateContents checks the normalisation and layout of the built
// image: two zstd layers, the second only adding files, times clamped,
// entries sorted, numeric owners, no ./dev/*, the manifest in the rootfs and
// in the label, units enabled, service users with their fixed ids.
func TestTemplateContents(t *testing.T) {
	res := standin(t)
	m := res.Manifest
	if m.Version != "1.0.0" || len(m.Base.Packages) < 50 || len(m.Migrations) == 0 || m.DataVolume.UID != builder.BackendUID {
		t.Errorf("manifest: version %s, %d packages, migrations %v, data volume %+v", m.Version, len(m.Base.Packages), m.Migrations, m.DataVolume)
	}
	for _, kind := range []string{manifest.KindBackend, manifest.KindFrontend, manifest.KindMCP} {
		c := m.Component(kind)
		if c == nil || !strings.HasPrefix(c.Digest, "sha256:") || c.User == "" || c.User == "root" {
			t.Errorf("component %s: %+v", kind, c)
		}
	}
	label, err := ociimage.ManifestOf(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	if label.Version != m.Version || !slices.Equal(label.Migrations, m.Migrations) {
		t.Errorf("label manifest differs from the build's: %+v", label)
	}
	cf, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || !slices.Equal(cf.Config.Entrypoint, []string{"/sbin/init"}) || !cf.Created.Time.Equal(buildertest.Epoch) {
		t.Errorf("config: %s/%s entrypoint %v created %v", cf.OS, cf.Architecture, cf.Config.Entrypoint, cf.Created)
	}
	layers, err := res.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%d layers, want 2", len(layers))
	}
	base := checkLayer(t, "base", layers[0])
	app := checkLayer(t, "application", layers[1])
	for name, h := range app {
		if b, ok := base[name]; ok && (b.Typeflag == tar.TypeDir || h.Typeflag == tar.TypeDir) {
			t.Errorf("application layer repeats base directory %s", name)
		}
		if strings.Contains(name, ".wh.") {
			t.Errorf("whiteout %s in the application layer", name)
		}
	}
	for _, want := range []string{
		"./opt/vikunja/vikunja", "./opt/vikunja/frontend/index.html", "./opt/vkimg-mcp/src/server.js",
		"./opt/vkimg-mcp/node_modules/@modelcontextprotocol/sdk/package.json",
		"./" + manifest.PathInRootfs, "./usr/lib/vkimg/firstboot",
		"./etc/systemd/system/multi-user.target.wants/vikunja.service",
		"./etc/systemd/system/multi-user.target.wants/vikunja-frontend.service",
		"./etc/systemd/system/multi-user.target.wants/vkimg-mcp.service",
		"./etc/systemd/system/multi-user.target.wants/vkimg-firstboot.service",
		"./etc/systemd/system/multi-user.target.wants/vkimg-bootstrap.service",
		"./etc/systemd/system/sys-kernel-debug.mount",
		"./data/",
	} {
		if _, ok := app[want]; !ok {
			t.Errorf("application layer lacks %s", want)
		}
	}
	if h := app["./etc/vikunja/config.yml"]; h == nil || h.Linkname != "/data/config/config.yml" {
		t.Errorf("/etc/vikunja/config.yml: %+v", h)
	}
	passwd := readEntry(t, layers[0], "./etc/passwd")
	for _, want := range []string{"vikunja:x:990:990:", "vkimg-mcp:x:991:991:"} {
		if !strings.Contains(passwd, want) {
			t.Errorf("/etc/passwd lacks %q", want)
		}
	}
	if host := readEntry(t, layers[0], "./etc/hostname"); host != "localhost\n" {
		t.Errorf("/etc/hostname is %q: the build host's name leaked", host)
	}
}

type layer interface {
	Uncompressed() (io.ReadCloser, error)
}

// checkLayer asserts the normalisation rules on one layer and returns its
// headers by name.
func checkLayer(t *testing.T, what string, l layer) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]*tar.Header{}
	prev := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s layer: %v", what, err)
		}
		switch {
		case h.Name <= prev:
			t.Errorf("%s layer: %s after %s: not sorted", what, h.Name, prev)
		case strings.HasPrefix(h.Name, "./dev/") && h.Name != "./dev/":
			t.Errorf("%s layer: %s: no ./dev entries allowed", what, h.Name)
		case h.ModTime.After(buildertest.Epoch):
			t.Errorf("%s layer: %s: mtime %v after SOURCE_DATE_EPOCH", what, h.Name, h.ModTime)
		case h.Uname != "" || h.Gname != "":
			t.Errorf("%s layer: %s: owner names %q/%q, want numeric only", what, h.Name, h.Uname, h.Gname)
		case !strings.HasPrefix(h.Name, "./"):
			t.Errorf("%s layer: %s: not ./-relative", what, h.Name)
		}
		prev = h.Name
		out[h.Name] = h
	}
	if len(out) == 0 {
		t.Errorf("%s layer is empty", what)
	}
	return out
}

func readEntry(t *testing.T, l layer, name string) string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.Name == name {
			var b bytes.Buffer
			if _, err := io.Copy(&b, tr); err != nil {
				t.Fatal(err)
			}
			return b.String()
		}
	}
}

// TestVersionNPlus1 builds the stand-in's next version from the same
// recipe with overrides: its manifest lists the one migration it adds.
func TestVersionNPlus1(t *testing.T) {
	n := standin(t)
	next := build(t, "recipes/standin.yaml", recipe.Overrides{Versions: map[string]string{"template": "1.1.0", "backend": "1.1.0"}})
	if next.Manifest.Version != "1.1.0" || next.Manifest.Component(manifest.KindBackend).Version != "1.1.0" {
		t.Errorf("versions: %+v", next.Manifest)
	}
	added := next.Manifest.NewMigrations(n.Manifest)
	if len(added) != 1 || len(next.Manifest.Migrations) != len(n.Manifest.Migrations)+1 {
		t.Errorf("1.1.0 adds migrations %v (N has %v, N+1 %v), want exactly one", added, n.Manifest.Migrations, next.Manifest.Migrations)
	}
	if filepath.Base(next.Rootfs) != "debian-12-standin_1.1.0-1_amd64.tar.zst" {
		t.Errorf("rootfs name %s", next.Rootfs)
	}
	if next.Digest == n.Digest {
		t.Error("1.0.0 and 1.1.0 have the same digest")
	}
}

// TestFailedBuildLeavesNothing overrides the backend with a file whose
// version does not match: the build fails after the base and components
// were prepared, and neither the layout nor the rootfs file appears.
func TestFailedBuildLeavesNothing(t *testing.T) {
	testenv.NeedRoot(t)
	fake := filepath.Join(t.TempDir(), "vikunja")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'Vikunja version 9.9.9'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := recipe.Load(filepath.Join(buildertest.RepoDir(t), "recipes/standin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(recipe.Overrides{Sources: map[string]string{"backend": "file:" + fake}}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// A private cache sharing the Debian bases, so only this build's work
	// directories can appear in it.
	cache := t.TempDir()
	if err := os.MkdirAll(filepath.Join(buildertest.CacheDir(), "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(buildertest.CacheDir(), "base"), filepath.Join(cache, "base")); err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(builder.Options{
		Overlays: filepath.Join(buildertest.RepoDir(t), "rootfs-overlays"), CacheDir: cache,
		Layout: filepath.Join(out, "templates"), RootfsDir: filepath.Join(out, "rootfs"), Epoch: buildertest.Epoch,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Build(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "the recipe says 1.0.0") {
		t.Fatalf("build with a 9.9.9 binary declared 1.0.0: %v", err)
	}
	left, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("failed build left %v in the output", left)
	}
	if left, err := os.ReadDir(cache); err != nil || len(left) != 1 {
		t.Errorf("failed build left %v in the cache (%v), want only base", left, err)
	}
}

// TestVikunjaRecipeFromOCI builds recipes/vikunja.yaml the way it takes
// Vikunja from its release image, with a local OCI layout standing in for
// docker.io/vikunja/vikunja (holding the stand-in binary, stamped 2.5.0, at
// /app/vikunja/vikunja): the frontend is embedded, so no nginx and no
// frontend unit.
func TestVikunjaRecipeFromOCI(t *testing.T) {
	testenv.NeedRoot(t)
	bin := filepath.Join(t.TempDir(), "vikunja")
	cmd := osexec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=2.5.0", "-o", bin, ".")
	cmd.Dir = filepath.Join(buildertest.RepoDir(t), "internal", "fixtures", "standin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build stand-in: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	es, err := ociimage.Normalize([]ociimage.Entry{
		ociimage.DirEntry("/app/vikunja", 0o755, 0, 0),
		ociimage.FileEntry("/app/vikunja/vikunja", 0o755, 0, 0, body),
	}, buildertest.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ociimage.WriteLayerFile(filepath.Join(t.TempDir(), "release.tar.zst"), es)
	if err != nil {
		t.Fatal(err)
	}
	release, err := ociimage.NewImage(&manifest.Manifest{Name: "release", Version: "2.5.0", Created: buildertest.Epoch.Format(time.RFC3339)}, "", []ociimage.Layer{{Layer: l}})
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(t.TempDir(), "release")
	if err := ociimage.AppendToLayout(layoutDir, release, "2.5.0"); err != nil {
		t.Fatal(err)
	}

	res := build(t, "recipes/vikunja.yaml", recipe.Overrides{Sources: map[string]string{"backend": "oci:" + layoutDir + ":2.5.0#/app/vikunja/vikunja"}})
	m := res.Manifest
	be, fe := m.Component(manifest.KindBackend), m.Component(manifest.KindFrontend)
	sum := sha256.Sum256(body)
	if be.Version != "2.5.0" || be.Digest != "sha256:"+hex.EncodeToString(sum[:]) || be.Source != "oci layout release:2.5.0 /app/vikunja/vikunja" {
		t.Errorf("backend %+v", be)
	}
	if fe == nil || fe.EmbeddedIn != manifest.KindBackend {
		t.Errorf("frontend %+v, want embedded in the backend", fe)
	}
	for _, p := range m.Base.Packages {
		if strings.HasPrefix(p.Name, "nginx") {
			t.Errorf("package %s in a template without a separate frontend", p.Name)
		}
	}
	layers, err := res.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	app := checkLayer(t, "application", layers[1])
	if _, ok := app["./etc/systemd/system/multi-user.target.wants/vikunja-frontend.service"]; ok {
		t.Error("vikunja-frontend.service enabled without a separate frontend")
	}
	if _, ok := app["./opt/vikunja/vikunja"]; !ok {
		t.Error("no backend binary")
	}
}
