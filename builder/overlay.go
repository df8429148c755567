package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
)

// systemUnits are enabled in every template: first boot checks the data
// volume before anything uses it; bootstrap creates the admin user and the
// MCP token once the backend answers.
var systemUnits = []string{"vkimg-firstboot.service", "vkimg-bootstrap.service"}

// unitDirs are where overlay units may live, in lookup order.
var unitDirs = []string{"usr/lib/systemd/system", "etc/systemd/system"}

// appEntries lists the application layer: the overlays, the components at
// their install paths, the manifest, the enabled units' symlinks and the
// data volume's mount point. Directories the base already has are left
// out, so the layer never changes the base's metadata and only adds.
func (b *Builder) appEntries(r *recipe.Recipe, m *manifest.Manifest, comps []component, base *baseLayer) ([]ociimage.Entry, error) {
	entries, err := ociimage.WalkDir(b.opts.Overlays, "/", 0, 0)
	if err != nil {
		return nil, fmt.Errorf("overlays: %w", err)
	}
	for _, c := range comps {
		switch {
		case c.path == "":
		case c.kind == manifest.KindBackend:
			f := c.path
			e := ociimage.Entry{
				Header: tar.Header{Typeflag: tar.TypeReg, Name: backendPath, Mode: 0o755},
				Open:   func() (io.ReadCloser, error) { return os.Open(f) },
			}
			fi, err := os.Stat(f)
			if err != nil {
				return nil, fmt.Errorf("backend: %w", err)
			}
			e.Header.Size = fi.Size()
			entries = append(entries, e)
		default:
			dst := frontendPath
			if c.kind == manifest.KindMCP {
				dst = mcpPath
			}
			es, err := ociimage.WalkDir(c.path, dst, 0, 0)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.kind, err)
			}
			entries = append(entries, es...)
		}
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	entries = append(entries,
		ociimage.FileEntry("/"+manifest.PathInRootfs, 0o644, 0, 0, append(mj, '\n')),
		ociimage.DirEntry(m.DataVolume.Path, 0o755, 0, 0),
	)
	units := append([]string(nil), systemUnits...)
	for _, c := range comps {
		if c.path != "" {
			units = append(units, c.manifest.Units...)
		}
	}
	for _, u := range units {
		links, err := b.enable(u)
		if err != nil {
			return nil, err
		}
		entries = append(entries, links...)
	}
	entries = withParents(entries, base.Dirs)
	out, err := ociimage.Normalize(entries, b.opts.Epoch)
	if err != nil {
		return nil, fmt.Errorf("application layer: %w", err)
	}
	inBase := make(map[string]bool, len(base.Dirs))
	for _, d := range base.Dirs {
		inBase[d] = true
	}
	kept := out[:0]
	for _, e := range out {
		if e.Header.Typeflag == tar.TypeDir && inBase[e.Header.Name] {
			continue
		}
		kept = append(kept, e)
	}
	return kept, nil
}

// withParents adds a root-owned 0755 directory entry for every parent
// that neither the base nor the entries themselves provide.
func withParents(entries []ociimage.Entry, baseDirs []string) []ociimage.Entry {
	have := make(map[string]bool, len(baseDirs)+len(entries))
	for _, d := range baseDirs {
		have[d] = true
	}
	for _, e := range entries {
		if e.Header.Typeflag == tar.TypeDir {
			have[ociimage.Canonical(e.Header.Name, true)] = true
		}
	}
	for _, e := range entries {
		for p := path.Dir(path.Clean("/" + strings.TrimPrefix(e.Header.Name, "./"))); p != "/"; p = path.Dir(p) {
			c := ociimage.Canonical(p, true)
			if have[c] {
				break
			}
			have[c] = true
			entries = append(entries, ociimage.DirEntry(p, 0o755, 0, 0))
		}
	}
	return entries
}

// enable does what `systemctl enable` would: a symlink in each
// WantedBy/RequiredBy target's directory under /etc/systemd/system.
func (b *Builder) enable(unit string) ([]ociimage.Entry, error) {
	var file, dir string
	for _, d := range unitDirs {
		p := filepath.Join(b.opts.Overlays, d, unit)
		if _, err := os.Stat(p); err == nil {
			file, dir = p, d
			break
		}
	}
	if file == "" {
		return nil, fmt.Errorf("unit %s: not in %s (looked in %s)", unit, b.opts.Overlays, strings.Join(unitDirs, ", "))
	}
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", unit, err)
	}
	var out []ociimage.Entry
	sc := bufio.NewScanner(bytes.NewReader(body))
	section := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Install]" {
			continue
		}
		var suffix string
		switch strings.TrimSpace(k) {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		default:
			continue
		}
		for _, target := range strings.Fields(v) {
			out = append(out, ociimage.SymlinkEntry(path.Join("/etc/systemd/system", target+suffix, unit), "/"+dir+"/"+unit))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("unit %s: no WantedBy= or RequiredBy= in [Install]: it cannot be enabled", unit)
	}
	return out, nil
}
