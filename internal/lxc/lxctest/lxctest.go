// Package lxctest holds the fixtures shared by every test that runs real
// LXC containers: a small systemd template (built once, cached across runs)
// and a private bridge per test.
package lxctest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
)

// HTTPPort is where the template's busybox httpd listens: the container's
// health endpoint in tests.
const HTTPPort = 8080

// IndexHTML is what the template's httpd serves at "/" from the plain rootfs.
const IndexHTML = "vkimg test template\n"

// OCILayer2HTML is what the OCI archive's second layer puts in place of
// IndexHTML, so a test can tell the layers were applied in order.
const OCILayer2HTML = "vkimg test template, OCI layer 2\n"

// ServiceUID is the uid (and gid) of the unprivileged user "svc" in the
// template, standing in for an application's service user.
const ServiceUID = 990

// customize is run by mmdebstrap inside the finished rootfs ($1). It adds the
// health endpoint, a service user, and the mask that keeps systemd from
// ending "degraded" in an unprivileged container.
const customize = `set -e
mkdir -p "$1/srv/www"
printf '%s' '` + IndexHTML + `' > "$1/srv/www/index.html"
cat > "$1/etc/systemd/system/httpd.service" <<'UNIT'
[Unit]
Description=busybox httpd (test health endpoint)
After=network.target
[Service]
ExecStart=/bin/busybox httpd -f -p 8080 -h /srv/www
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$1/etc/systemd/system/multi-user.target.wants"
ln -sf ../httpd.service "$1/etc/systemd/system/multi-user.target.wants/httpd.service"
ln -sf /dev/null "$1/etc/systemd/system/sys-kernel-debug.mount"
chroot "$1" groupadd --system --gid 990 svc
chroot "$1" useradd --system --uid 990 --gid 990 --no-create-home --shell /usr/sbin/nologin svc
`

// mmdebstrapArgs builds the template. ifupdown is included because the
// backend, like Proxmox, configures the address in /etc/network/interfaces.
// --skip=output/dev leaves the device nodes out of the tarball: they cannot
// be made in a user namespace and LXC populates /dev itself.
func mmdebstrapArgs(out string) []string {
	return []string{
		"--variant=minbase",
		"--include=systemd-sysv,busybox,ifupdown",
		"--skip=output/dev",
		// Smaller is faster to extract: a test rootfs needs no docs or locales.
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--customize-hook=" + customize,
		"bookworm", out, "/etc/apt/sources.list.d/debian.sources",
	}
}

// recipeVersion changes whenever the way the OCI archive is made changes,
// so a stale cache entry is never reused.
const recipeVersion = "2"

var (
	templateOnce  sync.Once
	templatePlain string
	templateOCI   string
	templateErr   error
)

// TestTemplate returns a plain rootfs .tar.zst and an OCI image archive of
// the same small Debian 12 systemd rootfs. Both are built at most once per
// test binary and cached under $VKIMG_TEST_CACHE (default
// os.TempDir()/vkimg-test-cache), keyed by their recipe. It skips unless
// root.
func TestTemplate(t testing.TB) (plainTarZst string, ociArchive string) {
	t.Helper()
	RequireRoot(t)
	templateOnce.Do(func() {
		templatePlain, templateOCI, templateErr = buildTemplate()
	})
	if templateErr != nil {
		t.Fatalf("test template: %v", templateErr)
	}
	return templatePlain, templateOCI
}

func cacheDir() string {
	if d := os.Getenv("VKIMG_TEST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "vkimg-test-cache")
}

func buildTemplate() (string, string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s", recipeVersion, strings.Join(mmdebstrapArgs("OUT"), "\x00"))
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(cacheDir(), "lxctest-"+key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	// Several test binaries (go test ./...) may want the template at once:
	// the first builds it, the others wait on the lock and reuse it.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", "", fmt.Errorf("lock %s: %w", dir, err)
	}
	plain := filepath.Join(dir, "debian-12-vkimgtest_1-1_amd64.tar.zst")
	oci := filepath.Join(dir, "vkimgtest-oci.tar")
	if !exists(plain) {
		tmp := filepath.Join(dir, "tmp-rootfs.tar.zst")
		cmd := exec.Command("mmdebstrap", mmdebstrapArgs(tmp)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			os.Remove(tmp)
			return "", "", fmt.Errorf("mmdebstrap: %w\n%s", err, lastLines(out.String(), 30))
		}
		if err := os.Rename(tmp, plain); err != nil {
			return "", "", err
		}
	}
	if !exists(oci) {
		tmp := filepath.Join(dir, "tmp-oci.tar")
		if err := writeOCIArchive(plain, tmp); err != nil {
			os.Remove(tmp)
			return "", "", fmt.Errorf("OCI archive: %w", err)
		}
		if err := os.Rename(tmp, oci); err != nil {
			return "", "", err
		}
	}
	return plain, oci, nil
}

// writeOCIArchive makes an oci-archive of the rootfs as the builder and
// skopeo do: layer 1 the rootfs as tar+zstd, layer 2 (tar+gzip) replacing
// the index page, so both compressions and the layer order are exercised.
func writeOCIArchive(rootfsTarZst, out string) error {
	base, err := tarball.LayerFromFile(rootfsTarZst,
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		return err
	}
	var l2 bytes.Buffer
	gz := gzip.NewWriter(&l2)
	tw := tar.NewWriter(gz)
	body := []byte(OCILayer2HTML)
	if err := tw.WriteHeader(&tar.Header{Name: "./srv/www/index.html", Mode: 0o644, Size: int64(len(body)),
		Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	top, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(l2.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img, err := OCIImage(base, top)
	if err != nil {
		return err
	}
	return WriteOCIArchive(out, img)
}

// OCIImage makes a linux/amd64 image with OCI media types, layers and the
// entrypoint /sbin/init, as the builder makes templates.
func OCIImage(layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/sbin/init"}
	return mutate.ConfigFile(img, cf)
}

// WriteOCIArchive writes img as an oci-archive: the tar of an OCI image
// layout, as skopeo copy oci-archive: makes it.
func WriteOCIArchive(out string, img v1.Image) error {
	lay, err := os.MkdirTemp(filepath.Dir(out), "layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(lay)
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		return err
	}
	return tarDir(lay, out)
}

// tarDir writes dir's contents as a tar with relative names, the shape of
// an oci-archive.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// RequireRoot skips the test unless it runs as root: LXC containers,
// bridges and user namespace mappings all need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for LXC")
	}
}

// NewBridge creates a bridge with a unique name (vkt + random hex) and a
// random free 10.X.Y.1/24 (X in 200..250) and removes it when the test
// ends.
func NewBridge(t testing.TB) (name string, prefix netip.Prefix) {
	t.Helper()
	RequireRoot(t)
	used, err := hostPrefixes()
	if err != nil {
		t.Fatalf("new bridge: %v", err)
	}
	for range 20 {
		x, y := 200+rand.IntN(51), rand.IntN(256)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(x), byte(y), 1}), 24)
		if overlaps(p, used) {
			continue
		}
		name = fmt.Sprintf("vkt%06x", rand.IntN(1<<24))
		if err := lxc.CreateBridge(name, p); err != nil {
			t.Fatalf("new bridge: %v", err)
		}
		t.Cleanup(func() {
			if err := lxc.DeleteBridge(name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		return name, p
	}
	t.Fatalf("new bridge: no free 10.200-250.x.0/24 subnet found")
	return "", netip.Prefix{}
}

func hostPrefixes() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func overlaps(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// NewBackend returns an LXC backend on a fresh lxcpath (one storage,
// "local") that stops and destroys every container left in it, then
// removes it, when the test ends.
func NewBackend(t testing.TB) *lxc.Backend {
	t.Helper()
	RequireRoot(t)
	root, err := os.MkdirTemp("", "vkimg-lxc-")
	if err != nil {
		t.Fatalf("new backend: %v", err)
	}
	// Unprivileged containers' root (host uid 100000) must reach its rootfs.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatalf("new backend: %v", err)
	}
	b, err := lxc.New(lxc.Options{Root: root, Node: "vkimg-test"})
	if err != nil {
		t.Fatalf("new backend: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := b.Cluster(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, ct := range c.Containers {
			// A directory without a sidecar is a failed claim: RemoveAll
			// below takes it.
			if err := b.Stop(ctx, ct.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("cleanup: %v", err)
			}
			if err := b.Destroy(ctx, ct.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b
}

// WaitHTTP polls url until it answers 200 OK and returns the body. It gives
// up (failing the test) after two minutes: a container that is not serving
// by then is broken, not slow.
func WaitHTTP(t testing.TB, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A short dial timeout: a SYN sent before the container's address is up
	// would otherwise wait for the kernel's 1 s retransmission.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:       (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext,
		DisableKeepAlives: true,
	}}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(body)
			}
			last = fmt.Errorf("status %s, read error %v", resp.Status, rerr)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s: no answer: %v", url, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
