package preview

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/state"
)

// The quick start's main job, for real: build the stand-in template, boot
// it, log in with the printed password, then remove every trace.
func TestPreviewBootsTemplateAndRemovesIt(t *testing.T) {
	lxctest.RequireRoot(t)
	built := buildertest.Build(t, "recipes/standin.yaml", recipe.Overrides{}, t.TempDir())
	bridge, subnet := lxctest.NewBridge(t)
	tmp, err := os.MkdirTemp("", "vkimg-preview-")
	if err != nil {
		t.Fatal(err)
	}
	// Unprivileged containers (host uid 100000+) must reach their rootfs.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	root := state.Root{Dir: filepath.Join(tmp, "root"), LogDir: filepath.Join(tmp, "log")}
	ctx := context.Background()
	var progress bytes.Buffer
	o := Options{Root: root, Template: built.Rootfs, Bridge: bridge, Subnet: subnet, Progress: &progress}

	res, err := Run(ctx, o)
	t.Cleanup(func() { Remove(ctx, root) })
	if err != nil {
		t.Fatalf("preview: %v\n%s", err, progress.String())
	}
	if !subnet.Contains(res.Address) || res.Address == subnet.Addr() || res.Version != built.Manifest.Version {
		t.Fatalf("result %+v: want an address in %s and version %s", res, subnet, built.Manifest.Version)
	}
	page, err := http.Get(res.URL)
	if err != nil || page.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", res.URL, page, err)
	}
	page.Body.Close()
	login, _ := json.Marshal(map[string]string{"username": res.AdminUser, "password": res.AdminPassword})
	resp, err := http.Post("http://"+res.Address.String()+":3456/api/v1/login", "application/json", bytes.NewReader(login))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login with the printed password: %s", resp.Status)
	}
	if !strings.Contains(progress.String(), "waiting for the health checks") {
		t.Errorf("no progress lines:\n%s", progress.String())
	}

	// A second preview replaces the first.
	again, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("second preview: %v", err)
	}
	be, _ := backend(root)
	if _, err := be.Status(ctx, res.ID); err == nil && again.ID != res.ID {
		t.Fatalf("first preview container %d still exists after the second", res.ID)
	}
	if err := Remove(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Status(ctx, again.ID); err == nil {
		t.Fatalf("container %d still exists after remove", again.ID)
	}
	if _, err := os.Stat(dir(root)); !os.IsNotExist(err) {
		t.Fatalf("preview data left after remove: %v", err)
	}
}
