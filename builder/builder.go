// Package builder turns a recipe and its sources into a template: a
// standard OCI image (Debian base layer + application layer) appended to a
// local OCI image layout, and the same rootfs as one plain .tar.zst for
// Proxmox 8. Builds are reproducible: the same inputs give the same image
// digest (see docs/reproducible.md).
package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
)

// Options say where a build reads and writes.
type Options struct {
	// Overlays is the rootfs-overlays directory.
	Overlays string
	// CacheDir keeps Debian bases and downloads between builds.
	CacheDir string
	// Layout is the OCI image layout the image is appended to.
	Layout string
	// RootfsDir receives debian-12-<name>_<version>-1_amd64.tar.zst.
	RootfsDir string
	// Epoch is SOURCE_DATE_EPOCH: every timestamp in the template.
	Epoch time.Time
	// Revision is the source revision of the recipe (image label).
	Revision string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Result describes a finished build.
type Result struct {
	Manifest *manifest.Manifest
	Image    v1.Image
	Digest   v1.Hash // image manifest digest
	Layout   string
	RefName  string // the image's ref.name in Layout (the version)
	Rootfs   string // path of the plain rootfs .tar.zst
}

// Builder builds templates.
type Builder struct {
	opts Options
}

// New checks opts and returns a Builder.
func New(opts Options) (*Builder, error) {
	if opts.Epoch.IsZero() {
		return nil, fmt.Errorf("builder: SOURCE_DATE_EPOCH is required (it fixes every timestamp in the template)")
	}
	for name, dir := range map[string]string{"overlays": opts.Overlays, "cache": opts.CacheDir, "layout": opts.Layout, "rootfs": opts.RootfsDir} {
		if dir == "" {
			return nil, fmt.Errorf("builder: no %s directory", name)
		}
	}
	if fi, err := os.Stat(opts.Overlays); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("builder: rootfs overlays %s: not a directory", opts.Overlays)
	}
	opts.Epoch = opts.Epoch.UTC()
	return &Builder{opts: opts}, nil
}

func (b *Builder) logf(format string, args ...any) {
	if b.opts.Log != nil {
		fmt.Fprintf(b.opts.Log, format+"\n", args...)
	}
}

// RootfsName is the plain rootfs file name, like Proxmox's own templates.
func RootfsName(name, version string) string {
	return fmt.Sprintf("debian-12-%s_%s-1_amd64.tar.zst", name, version)
}

// Build builds r. Everything is made in a temporary directory first; the
// image is appended to the layout and the rootfs renamed into place only
// when all of it succeeded, so a failed build leaves no partial output.
func (b *Builder) Build(ctx context.Context, r *recipe.Recipe) (*Result, error) {
	start := time.Now()
	if err := os.MkdirAll(b.opts.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	work, err := os.MkdirTemp(b.opts.CacheDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	defer os.RemoveAll(work)

	base, err := b.base(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	m := &manifest.Manifest{
		SchemaVersion: manifest.SchemaVersion,
		Name:          r.Name,
		Version:       r.Version,
		Created:       b.opts.Epoch.Format(time.RFC3339),
		Recipe:        manifest.RecipeRef{Name: r.Name, Digest: r.Digest},
		Base: manifest.Base{
			Distribution: "debian", Suite: r.Base.Suite, Release: "12", Arch: "amd64",
			Packages: base.Packages,
		},
		Resources: manifest.Resources{
			MinCores: r.Resources.MinCores, MinMemoryMB: r.Resources.MinMemoryMB, MinDiskGB: r.Resources.MinDiskGB,
		},
		DataVolume: manifest.DataVolume{Path: "/data", UID: BackendUID, GID: BackendUID},
	}
	comps, err := b.components(ctx, r, work)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	for _, c := range comps {
		m.Components = append(m.Components, c.manifest)
	}
	m.Migrations, err = probeMigrations(ctx, comps[0].path, work)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	entries, err := b.appEntries(r, m, comps, base)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	app, err := ociimage.WriteLayerFile(filepath.Join(work, "app.tar.zst"), entries)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	img, err := ociimage.NewImage(m, b.opts.Revision, []ociimage.Layer{
		{Layer: base.Layer, CreatedBy: "vkimg: Debian " + r.Base.Suite + " base (mmdebstrap)"},
		{Layer: app, CreatedBy: "vkimg: " + r.Name + " " + r.Version + " application and overlays"},
	})
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	rootfsTmp := filepath.Join(work, "rootfs.tar.zst")
	if err := writeRootfs(rootfsTmp, img); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	if err := ociimage.AppendToLayout(b.opts.Layout, img, r.Version); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	if err := os.MkdirAll(b.opts.RootfsDir, 0o755); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	rootfs := filepath.Join(b.opts.RootfsDir, RootfsName(r.Name, r.Version))
	if err := moveFile(rootfsTmp, rootfs); err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	// The image as stored: its application layer's file in work is gone
	// once Build returns.
	stored, err := ociimage.ImageFromLayout(b.opts.Layout, r.Version)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", r.Name, err)
	}
	b.logf("built %s %s: %s in %s (%s)", r.Name, r.Version, digest, b.opts.Layout, time.Since(start).Round(time.Millisecond))
	return &Result{Manifest: m, Image: stored, Digest: digest, Layout: b.opts.Layout, RefName: r.Version, Rootfs: rootfs}, nil
}

func writeRootfs(path string, img v1.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	if err := ociimage.WriteRootfs(f, img); err != nil {
		return err
	}
	return f.Close()
}

// moveFile renames src to dst, copying first when they are on different
// file systems; dst appears complete or not at all.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return fmt.Errorf("move %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name())
	in, err := os.Open(src)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("move %s: %w", dst, err)
	}
	defer in.Close()
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("move %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("move %s: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("move %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("move %s: %w", dst, err)
	}
	return nil
}
