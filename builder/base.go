package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/ociimage"
	"github.com/vkimg/vkimg/internal/recipe"
)

// Fixed service users (architecture.md): the data volume's ownership on
// every host depends on these ids, so they are never allocated dynamically.
const (
	BackendUID = 990
	MCPUID     = 991
)

// basePackages are installed in every template whatever the recipe says:
// systemd as init; ifupdown, iproute2 and a DHCP client because Proxmox
// (and the LXC backend) configure eth0 in /etc/network/interfaces; TLS
// roots for outbound calls (mailer, OIDC); Node.js for the bootstrap unit
// and the MCP server.
var basePackages = []string{"systemd-sysv", "ifupdown", "iproute2", "isc-dhcp-client", "ca-certificates", "nodejs"}

// dpkgOptions keep documentation out of the image (smaller template; the
// copyright files stay, as Debian's licences ask).
var dpkgOptions = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

// customizeHook runs inside mmdebstrap on the finished tree ($1). It
// creates the service users with their fixed ids, drops the build host's
// hostname and resolver (Proxmox and the LXC backend write both at create
// time), and disables Debian's root nginx on port 80: the template runs its
// own non-root nginx for a separate frontend.
var customizeHook = fmt.Sprintf(`set -eu
chroot "$1" groupadd --system --gid %[1]d vikunja
chroot "$1" useradd --system --uid %[1]d --gid %[1]d --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vikunja
chroot "$1" groupadd --system --gid %[2]d vkimg-mcp
chroot "$1" useradd --system --uid %[2]d --gid %[2]d --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vkimg-mcp
echo localhost > "$1/etc/hostname"
: > "$1/etc/resolv.conf"
if [ -e "$1/lib/systemd/system/nginx.service" ]; then chroot "$1" systemctl disable nginx.service; fi
rm -f "$1/etc/.pwd.lock" "$1/etc/shadow-" "$1/etc/gshadow-" "$1/etc/passwd-" "$1/etc/group-"
`, BackendUID, MCPUID)

// baseCacheFormat is bumped when what is cached for a base changes shape.
const baseCacheFormat = "2"

// baseLayer is a cached Debian base: its layer, the directories it holds
// (so the application layer never repeats them), and its packages.
type baseLayer struct {
	Layer    *ociimage.FileLayer `json:"-"`
	DiffID   string              `json:"diffID"`
	Dirs     []string            `json:"dirs"`
	Packages []manifest.Package  `json:"packages"`
}

// baseKey hashes every input of the base build: same key, same bytes.
func (b *Builder) baseKey(r *recipe.Recipe, mirror []byte, mmVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "format %s\nsuite %s\nepoch %d\nmmdebstrap %s\n", baseCacheFormat, r.Base.Suite, b.opts.Epoch.Unix(), mmVersion)
	fmt.Fprintf(h, "packages %s\n", strings.Join(b.packages(r), ","))
	fmt.Fprintf(h, "dpkg %s\nhook %s\nmirror %d\n", strings.Join(dpkgOptions, ","), customizeHook, len(mirror))
	h.Write(mirror)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func (b *Builder) packages(r *recipe.Recipe) []string {
	ps := slices.Concat(basePackages, r.Base.Packages)
	slices.Sort(ps)
	return slices.Compact(ps)
}

// base returns the Debian base layer for r, from the cache when its inputs
// are unchanged, else built with mmdebstrap.
func (b *Builder) base(ctx context.Context, r *recipe.Recipe) (*baseLayer, error) {
	mirrorFile := recipe.DefaultMirror
	if r.Base.Mirror != "" {
		mirrorFile = r.Resolve(r.Base.Mirror)
	}
	mirror, err := os.ReadFile(mirrorFile)
	if err != nil {
		return nil, fmt.Errorf("base: apt sources: %w", err)
	}
	mmv, err := exec.CommandContext(ctx, "mmdebstrap", "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("base: mmdebstrap is needed (apt-get install mmdebstrap): %w", err)
	}
	key := b.baseKey(r, mirror, strings.TrimSpace(string(mmv)))
	dir := filepath.Join(b.opts.CacheDir, "base", key)
	if bl, err := loadBase(dir); err == nil {
		b.logf("base: cached %s", key)
		return bl, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		b.logf("base: cache %s unusable, rebuilding: %v", key, err)
	}
	b.logf("base: mmdebstrap %s (%s)", r.Base.Suite, strings.Join(b.packages(r), " "))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+key+"-")
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	defer os.RemoveAll(tmp)
	raw := filepath.Join(tmp, "mmdebstrap.tar")
	args := []string{"--variant=minbase", "--format=tar", "--include=" + strings.Join(b.packages(r), ",")}
	for _, o := range dpkgOptions {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args, "--customize-hook="+customizeHook, r.Base.Suite, raw, mirrorFile)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C.UTF-8",
		"TMPDIR=" + tmp,
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(b.opts.Epoch.Unix(), 10),
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("base: mmdebstrap: %w\n%s", err, tail(out.String(), 30))
	}
	entries, err := ociimage.IndexTar(raw)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	pkgs, err := dpkgStatus(entries)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	entries, err = ociimage.Normalize(entries, b.opts.Epoch)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	layer, err := ociimage.WriteLayerFile(filepath.Join(tmp, "layer.tar.zst"), entries)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	diffID, err := layer.DiffID()
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	meta := baseLayer{DiffID: diffID.String(), Packages: pkgs}
	for _, e := range entries {
		if e.Header.Typeflag == tar.TypeDir {
			meta.Dirs = append(meta.Dirs, e.Header.Name)
		}
	}
	mj, err := json.MarshalIndent(meta, "", " ")
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), mj, 0o644); err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	if err := os.Remove(raw); err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	// Another build may have finished the same base meanwhile; its bytes
	// are the same, so either copy will do.
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return nil, fmt.Errorf("base: cache: %w", err)
	}
	return loadBase(dir)
}

func loadBase(dir string) (*baseLayer, error) {
	mj, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var bl baseLayer
	if err := json.Unmarshal(mj, &bl); err != nil {
		return nil, fmt.Errorf("base cache %s: %w", dir, err)
	}
	diffID, err := v1.NewHash(bl.DiffID)
	if err != nil {
		return nil, fmt.Errorf("base cache %s: %w", dir, err)
	}
	bl.Layer, err = ociimage.OpenLayerFile(filepath.Join(dir, "layer.tar.zst"), diffID)
	if err != nil {
		return nil, err
	}
	return &bl, nil
}

// dpkgStatus reads the installed packages from var/lib/dpkg/status.
func dpkgStatus(entries []ociimage.Entry) ([]manifest.Package, error) {
	for _, e := range entries {
		if ociimage.Canonical(e.Header.Name, false) != "./var/lib/dpkg/status" || e.Open == nil {
			continue
		}
		rc, err := e.Open()
		if err != nil {
			return nil, fmt.Errorf("dpkg status: %w", err)
		}
		defer rc.Close()
		return parseDpkgStatus(rc)
	}
	return nil, fmt.Errorf("dpkg status: var/lib/dpkg/status not in the base")
}

func parseDpkgStatus(r io.Reader) ([]manifest.Package, error) {
	var out []manifest.Package
	var p manifest.Package
	installed := false
	flush := func() {
		if installed && p.Name != "" {
			out = append(out, p)
		}
		p, installed = manifest.Package{}, false
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			p.Name = v
		case "Version":
			p.Version = v
		case "Architecture":
			p.Arch = v
		case "Status":
			installed = strings.HasSuffix(v, " installed")
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dpkg status: %w", err)
	}
	slices.SortFunc(out, func(a, b manifest.Package) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
