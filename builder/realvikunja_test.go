package builder_test

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
)

// TestBootRealVikunja is the boot proof with real Vikunja: a binary built
// locally from go-vikunja/vikunja (never committed, so CI cannot run this)
// overrides the backend of recipes/vikunja.yaml, the way a fork's own
// build would; the template is booted and checked like the stand-in's,
// including a task made through the API and one through the MCP server.
//
//	VKIMG_VIKUNJA_BINARY=/path/to/vikunja go test ./builder -run TestBootRealVikunja -v
func TestBootRealVikunja(t *testing.T) {
	bin := os.Getenv("VKIMG_VIKUNJA_BINARY")
	if bin == "" {
		t.Skip("set VKIMG_VIKUNJA_BINARY to a locally built Vikunja binary to run the boot proof with real Vikunja")
	}
	lxctest.RequireRoot(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	m := regexp.MustCompile(`v?(\d+\.\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s version: no version in %q", bin, out)
	}
	version := string(m[1])

	start := time.Now()
	res := build(t, "recipes/vikunja.yaml", recipe.Overrides{
		Sources:  map[string]string{"backend": "file:" + bin},
		Versions: map[string]string{"template": version, "backend": version, "frontend": version},
	})
	fi, err := os.Stat(res.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Vikunja %s template: built in %s (warm base cache), rootfs %s is %.1f MiB, %d migrations, image %s",
		version, time.Since(start).Round(100*time.Millisecond), filepath.Base(res.Rootfs), float64(fi.Size())/(1<<20), len(res.Manifest.Migrations), res.Digest)

	be := lxctest.NewBackend(t)
	bridge, prefix := lxctest.NewBridge(t)
	addr := netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits())
	bootAndCheck(t, be, res.Manifest, res.Rootfs, filepath.Base(res.Rootfs), bridge, prefix.Addr(), addr)
}
