package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/testenv"
)

// deployEnv gives a deploy test its own state directory (VKIMG_ROOT, set
// for the vkimg processes it runs), bridge and nginx, all removed at the end.
func deployEnv(t *testing.T) (tmp, root, bridge string, srv *testenv.NginxServer) {
	t.Helper()
	tmp, err := os.MkdirTemp("", "vkimg-cmd-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	// Unprivileged containers reach their rootfs and data volume below it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	root = filepath.Join(tmp, "root")
	t.Setenv("VKIMG_ROOT", root)
	t.Cleanup(func() { destroyAll(t, filepath.Join(root, "lxc")) })
	bridge, _ = lxctest.NewBridge(t)
	return tmp, root, bridge, testenv.Nginx(t)
}

// nginxFlags point vkimg deploy at the test's nginx.
func nginxFlags(srv *testenv.NginxServer) []string {
	return []string{"--nginx-config", srv.ConfigFile, "--nginx-pid-file", srv.PIDFile, "--nginx-conf-dir", srv.ConfDir,
		"--nginx-upstream-dir", filepath.Join(srv.Dir, "vkimg"), "--nginx-main-dir", srv.MainDir, "--edge-address", "127.0.0.1"}
}

// writeAnswers writes, in dir, the answers file of a deploy of instance
// name from a template source on the test's bridge and nginx.
func writeAnswers(t *testing.T, dir, name, source, version, bridge string, srv *testenv.NginxServer) string {
	t.Helper()
	answers := filepath.Join(dir, "answers.yaml")
	if err := os.WriteFile(answers, fmt.Appendf(nil, `template:
  source: %s
  version: %s
url: https://%s.vkimg.test:%d
admin:
  email: admin@example.org
resources: {cores: 1, memory_mb: 512, disk_gb: 2}
network:
  bridge: %s
ports: {http: %d, https: %d}
tls: {self_signed: true}
`, source, version, name, srv.HTTPSPort, bridge, srv.HTTPPort, srv.HTTPSPort), 0o600); err != nil {
		t.Fatal(err)
	}
	return answers
}

// TestDeployAndListCommands deploys the stand-in template unattended from an
// answers file through the CLI (plain LXC, a real nginx), then lists it.
func TestDeployAndListCommands(t *testing.T) {
	lxctest.RequireRoot(t)
	built := buildertest.Build(t, "recipes/standin.yaml", recipe.Overrides{}, t.TempDir())
	tmp, root, bridge, srv := deployEnv(t)

	answers := writeAnswers(t, tmp, "tasks", built.Layout, built.Manifest.Version, bridge, srv)
	deployArgs := append([]string{"deploy", "--config", answers, "--yes", "--hypervisor", "lxc"}, nginxFlags(srv)...)

	if out, code := vkimg(t, deployArgs...); code != exitFailure || !strings.Contains(out, "--insecure-local") {
		t.Fatalf("deploy of an unsigned layout without --insecure-local: exit %d\n%s", code, out)
	}
	out := mustVkimg(t, append(deployArgs, "--insecure-local")...)
	if !strings.Contains(out, "WITHOUT signature verification") || !strings.Contains(out, "is ready at https://tasks.vkimg.test:") {
		t.Fatalf("deploy output:\n%s", out)
	}
	if m := regexp.MustCompile(`password: +(\S+)`).FindStringSubmatch(out); m == nil {
		t.Fatalf("no generated password printed:\n%s", out)
	}

	cfg, err := deployconfig.ReadInstance(filepath.Join(root, "instances", "tasks", deploy.InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	client, err := deploy.EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: srv.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s through nginx: %s", cfg.URL, resp.Status)
	}

	if out, code := vkimg(t, append(deployArgs, "--insecure-local")...); code != exitUsage || !strings.Contains(out, "already exists") {
		t.Fatalf("second deploy: exit %d\n%s", code, out)
	}

	var list []deploy.Instance
	if err := json.Unmarshal([]byte(mustVkimg(t, "list", "--json", "--hypervisor", "lxc")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "tasks" || list[0].State != "running" || list[0].Version != built.Manifest.Version || list[0].URL != cfg.URL {
		t.Fatalf("list --json = %+v", list)
	}
	if table := mustVkimg(t, "list", "--hypervisor", "lxc"); !strings.Contains(table, "tasks") || !strings.Contains(table, "running") {
		t.Fatalf("list:\n%s", table)
	}
}

// destroyAll removes every container the CLI made under lxcpath.
func destroyAll(t *testing.T, lxcpath string) {
	be, err := lxc.New(lxc.Options{Root: lxcpath})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	ctx := context.Background()
	c, err := be.Cluster(ctx)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, ct := range c.Containers {
		be.Stop(ctx, ct.ID)
		if err := be.Destroy(ctx, ct.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}
