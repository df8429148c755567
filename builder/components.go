package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
)

// Install locations inside the template (architecture.md); the units in
// rootfs-overlays refer to them.
const (
	backendPath  = "/opt/vikunja/vikunja"
	frontendPath = "/opt/vikunja/frontend"
	mcpPath      = "/opt/vkimg-mcp"
)

// component is a fetched or built component ready to install.
type component struct {
	kind     string
	path     string // local file or directory; empty when embedded
	manifest manifest.Component
}

// components fetches or builds every component of r, backend first.
func (b *Builder) components(ctx context.Context, r *recipe.Recipe, work string) ([]component, error) {
	var out []component
	for _, kind := range recipe.Kinds {
		c := r.Component(kind)
		if c == nil {
			continue
		}
		mc := manifest.Component{
			Name: r.Name + "-" + kind, Kind: kind, Version: c.Version, Commit: c.Commit,
			Ports: c.Ports, Health: c.Health, Units: c.Units, User: serviceUser(kind, c),
		}
		if c.Embedded != "" {
			mc.EmbeddedIn, mc.Source = c.Embedded, "embedded in "+c.Embedded
			out = append(out, component{kind: kind, manifest: mc})
			continue
		}
		p, err := b.fetch(ctx, r, c, filepath.Join(work, "src-"+kind))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		if wantDir := kind != manifest.KindBackend; fi.IsDir() != wantDir {
			return nil, fmt.Errorf("%s: %s: the backend must be one file, a frontend or MCP server a directory", kind, p)
		}
		mc.Source = describeSource(c.Source)
		if mc.Digest, err = digestOf(p, fi.IsDir(), b.opts.Epoch); err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		switch kind {
		case manifest.KindBackend:
			err = checkVersion(ctx, p, c.Version)
		case manifest.KindMCP:
			err = checkPackageVersion(p, c.Version)
		}
		if err != nil {
			return nil, err
		}
		b.logf("%s %s: %s (%s)", kind, c.Version, mc.Source, mc.Digest)
		out = append(out, component{kind: kind, path: p, manifest: mc})
	}
	return out, nil
}

func serviceUser(kind string, c *recipe.Component) string {
	switch {
	case kind == manifest.KindMCP:
		return "vkimg-mcp"
	case kind == manifest.KindFrontend && c.Embedded == "":
		return "www-data"
	}
	return "vikunja"
}

// describeSource says where a component came from for the manifest. Paths
// are kept as the recipe writes them (relative to it), and an absolute path
// (a command-line override) is reduced to its last element: the manifest
// is in the image, and where the build host keeps its checkout must not
// change the digest. The component's digest identifies the artifact.
func describeSource(s *recipe.Source) string {
	local := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Base(p)
		}
		return p
	}
	switch {
	case s.File != "":
		return "file " + local(s.File)
	case s.Dir != "":
		return "dir " + local(s.Dir)
	case s.OCI != nil:
		if dir, ref, ok := recipe.LocalLayout(s.OCI.Image); ok {
			if ref != "" {
				dir += ":" + ref
			}
			return "oci layout " + local(dir) + " " + s.OCI.Path
		}
		return "oci " + s.OCI.Image + " " + s.OCI.Path
	case s.URL != "":
		return "url " + s.URL
	}
	return "build " + local(s.Build.Dir)
}

// digestOf is the sha256 of a file, or of a directory's normalised tar
// (names, modes and contents: what ends up in the template).
func digestOf(p string, dir bool, epoch time.Time) (string, error) {
	h := sha256.New()
	if !dir {
		f, err := os.Open(p)
		if err != nil {
			return "", fmt.Errorf("digest: %w", err)
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return "", fmt.Errorf("digest %s: %w", p, err)
		}
	} else {
		es, err := ociimage.WalkDir(p, "/", 0, 0)
		if err != nil {
			return "", fmt.Errorf("digest: %w", err)
		}
		if es, err = ociimage.Normalize(es, epoch); err != nil {
			return "", fmt.Errorf("digest: %w", err)
		}
		if err := ociimage.WriteTar(h, es); err != nil {
			return "", fmt.Errorf("digest: %w", err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// checkVersion refuses a backend binary whose own `version` output does
// not name the version the recipe declares: the manifest must not lie.
func checkVersion(ctx context.Context, bin, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tmp, err := os.MkdirTemp("", "vkimg-version-")
	if err != nil {
		return fmt.Errorf("backend version: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Dir, cmd.Env = tmp, []string{"HOME=" + tmp, "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("backend version: %s version: %w\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), want) {
		return fmt.Errorf("backend version: the recipe says %s, but %s version says %q", want, bin, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkPackageVersion refuses a Node.js component whose package.json names
// another version than the recipe (a directory without one is not checked).
func checkPackageVersion(dir, want string) error {
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mcp version: %w", err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		return fmt.Errorf("mcp version: %s/package.json: %w", dir, err)
	}
	if pkg.Version != want {
		return fmt.Errorf("mcp version: the recipe says %s, but %s/package.json says %q", want, dir, pkg.Version)
	}
	return nil
}

// fetch makes a component's artifact available locally under dst (or
// returns a local source's own path) and returns its path.
func (b *Builder) fetch(ctx context.Context, r *recipe.Recipe, c *recipe.Component, dst string) (string, error) {
	s := c.Source
	switch {
	case s.File != "":
		return r.Resolve(s.File), nil
	case s.Dir != "":
		return r.Resolve(s.Dir), nil
	case s.URL != "":
		return b.download(ctx, s.URL, s.SHA256)
	case s.OCI != nil:
		image, err := expandVars(s.OCI.Image, vars{Version: c.Version, Commit: c.Commit})
		if err != nil {
			return "", err
		}
		return extractFromImage(ctx, r, image, s.OCI.Path, dst)
	}
	return b.runBuild(ctx, r, c, dst)
}

// download fetches url into the cache by its expected digest; a cached
// copy is used only if its digest still matches.
func (b *Builder) download(ctx context.Context, url, sum string) (string, error) {
	dir := filepath.Join(b.opts.CacheDir, "downloads")
	p := filepath.Join(dir, sum)
	if got, err := fileSHA256(p); err == nil && got == sum {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: %s", url, resp.Status)
	}
	tmp, err := os.CreateTemp(dir, ".dl-")
	if err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		tmp.Close()
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", fmt.Errorf("download %s: sha256 is %s, the recipe says %s", url, got, sum)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	return p, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// vars are what build steps and image references may use.
type vars struct {
	Version, Commit, Out string
	SourceDateEpoch      int64
}

// passEnv are the host variables build steps see; everything else is
// dropped so a developer's shell cannot change what gets built. They only
// locate tools, caches and proxies.
var passEnv = []string{
	"PATH", "HOME", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOSUMDB", "GONOSUMDB",
	"GOPRIVATE", "GOTOOLCHAIN", "npm_config_cache", "npm_config_registry",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
}

// runBuild runs a build source's steps with a clean environment and
// returns the artifact.
func (b *Builder) runBuild(ctx context.Context, r *recipe.Recipe, c *recipe.Component, dst string) (string, error) {
	bs := c.Source.Build
	src := r.Resolve(bs.Dir)
	out := filepath.Join(dst, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("build: %w", err)
	}
	cwd := src
	if bs.Copy {
		cwd = out
		if err := copyTree(src, out); err != nil {
			return "", fmt.Errorf("build: copy %s: %w", src, err)
		}
	}
	epoch := strconv.FormatInt(b.opts.Epoch.Unix(), 10)
	base := []string{"SOURCE_DATE_EPOCH=" + epoch, "LC_ALL=C.UTF-8", "TZ=UTC", "TMPDIR=" + dst}
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			base = append(base, k+"="+v)
		}
	}
	v := vars{Version: c.Version, Commit: c.Commit, Out: out, SourceDateEpoch: b.opts.Epoch.Unix()}
	for i, st := range bs.Steps {
		argv := make([]string, len(st.Run))
		for j, a := range st.Run {
			s, err := expandVars(a, v)
			if err != nil {
				return "", fmt.Errorf("build step %d: %w", i+1, err)
			}
			argv[j] = s
		}
		env := append([]string(nil), base...)
		for k, val := range st.Env {
			s, err := expandVars(val, v)
			if err != nil {
				return "", fmt.Errorf("build step %d: env %s: %w", i+1, k, err)
			}
			env = append(env, k+"="+s)
		}
		b.logf("%s: build step %d: %s", c.Kind, i+1, strings.Join(argv, " "))
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir, cmd.Env = cwd, env
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("build step %d (%s): %w\n%s", i+1, strings.Join(argv, " "), err, tail(log.String(), 30))
		}
	}
	return filepath.Join(out, bs.Output), nil
}

func expandVars(s string, v vars) (string, error) {
	t, err := template.New("").Option("missingkey=error").Parse(s)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", s, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		return "", fmt.Errorf("template %q: %w", s, err)
	}
	return buf.String(), nil
}

// copyTree copies regular files, directories and symlinks of src into dst,
// leaving out version control and dependency directories: a build in a copy
// makes its own (npm ci deletes node_modules first anyway).
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel)
		switch {
		case fi.IsDir() && p != src && (fi.Name() == ".git" || fi.Name() == "node_modules"):
			return filepath.SkipDir
		case fi.IsDir():
			return os.MkdirAll(t, 0o755)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, t)
		case fi.Mode().IsRegular():
			return copyFile(p, t, fi.Mode().Perm())
		}
		return fmt.Errorf("%s: unsupported file type", p)
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// extractFromImage copies the file or directory at p inside an OCI image
// (local layout or registry) to dst and returns dst.
func extractFromImage(ctx context.Context, r *recipe.Recipe, image, p, dst string) (string, error) {
	img, err := openImage(ctx, r, image)
	if err != nil {
		return "", err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	want := path.Clean(p)
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("oci %s: %w", image, err)
		}
		name := path.Clean("/" + h.Name)
		var rel string
		switch {
		case name == want:
			rel = "."
		case strings.HasPrefix(name, want+"/"):
			rel = strings.TrimPrefix(name, want+"/")
		default:
			continue
		}
		found = true
		t := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(t), 0o755); err != nil {
			return "", fmt.Errorf("oci %s: %w", image, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(t, 0o755)
		case tar.TypeReg:
			err = writeFrom(t, tr, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, t)
		default:
			err = fmt.Errorf("%s: unsupported entry type %q", name, h.Typeflag)
		}
		if err != nil {
			return "", fmt.Errorf("oci %s: %w", image, err)
		}
	}
	if !found {
		return "", fmt.Errorf("oci %s: no %s in the image", image, p)
	}
	return dst, nil
}

func writeFrom(p string, r io.Reader, perm os.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openImage opens a local OCI layout ("/dir", "./dir:ref") or pulls a
// registry reference for linux/amd64.
func openImage(ctx context.Context, r *recipe.Recipe, image string) (v1.Image, error) {
	if dir, ref, ok := recipe.LocalLayout(image); ok {
		dir = r.Resolve(dir)
		if ref != "" {
			return ociimage.ImageFromLayout(dir, ref)
		}
		return onlyImage(dir)
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("oci %s: %w", image, err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		return nil, fmt.Errorf("oci %s: %w", image, err)
	}
	return img, nil
}

// onlyImage opens the one image in a layout that names no ref.
func onlyImage(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("oci layout %s holds %d images: name one as DIR:REF", dir, len(im.Manifests))
	}
	img, err := ii.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	return img, nil
}
