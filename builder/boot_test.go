package builder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vkimg/vkimg/builder"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/health"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/mcpclient"
	"github.com/vkimg/vkimg/internal/ociimage"
)

// Host uid/gid of the template's service users in an unprivileged
// container (container id + 100000).
const (
	hostBackendUID = 100000 + builder.BackendUID
	hostMCPGID     = 100000 + builder.MCPUID
)

// TestBootStandin is the boot proof: the stand-in template, created as a
// real unprivileged LXC container from both the plain rootfs and the OCI
// archive, reaches systemd "running" with every service up as a non-root
// user, every health endpoint of its manifest answering, and the bootstrap
// having made the admin user and the MCP token.
func TestBootStandin(t *testing.T) {
	lxctest.RequireRoot(t)
	res := standin(t)
	be := lxctest.NewBackend(t)
	bridge, prefix := lxctest.NewBridge(t)

	ociArchive := filepath.Join(t.TempDir(), "standin-oci.tar")
	f, err := os.Create(ociArchive)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociimage.WriteArchive(f, res.Image, res.RefName); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ name, file, stored string }{
		{"rootfs", res.Rootfs, filepath.Base(res.Rootfs)},
		{"oci-archive", ociArchive, "standin_1.0.0_oci.tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := netip.PrefixFrom(prefix.Addr().Next().Next(), prefix.Bits())
			for range i {
				addr = netip.PrefixFrom(addr.Addr().Next(), prefix.Bits())
			}
			bootAndCheck(t, be, res.Manifest, tc.file, tc.stored, bridge, prefix.Addr(), addr)
		})
	}
}

func bootAndCheck(t *testing.T, be *lxc.Backend, m *manifest.Manifest, file, stored, bridge string, gw netip.Addr, addr netip.Prefix) {
	ctx := context.Background()
	if err := hypervisor.UploadFile(ctx, be, "local", stored, file); err != nil {
		t.Fatal(err)
	}
	ip := addr.Addr().String()
	data, password := dataVolume(t, "http://"+ip+":3456/")
	id, err := be.NextID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := hypervisor.ContainerSpec{
		ID: id, Hostname: "standin-" + strconv.Itoa(id),
		Template: hypervisor.TemplateRef{Storage: "local", Name: stored},
		Cores:    1, MemoryMB: 512, RootfsGB: 2, Storage: "local",
		Net:    hypervisor.Net{Bridge: bridge, Address: addr, Gateway: gw},
		Mounts: []hypervisor.Mount{{HostPath: data, Path: m.DataVolume.Path}},
	}
	if err := be.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := be.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := be.Stop(context.Background(), id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	waitSystemRunning(t, be, id)

	for _, c := range m.Components {
		for _, u := range c.Units {
			checkUnit(t, be, id, u)
		}
	}
	// The bootstrap unit is ordered after the backend; wait for its result.
	checkBootstrap(t, be, id)
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := (health.Prober{Client: client}).WaitHealthy(wait, m, health.Direct(ip), time.Second); err != nil {
		t.Fatal(err)
	}
	checkServiceWorkerNotCached(t, ip, m)

	useTheApp(t, ip, login(t, ip, "admin", password))
	tok, err := os.Stat(filepath.Join(data, datavol.MCPTokenFile))
	if err != nil {
		t.Fatalf("bootstrap wrote no MCP token: %v", err)
	}
	st := tok.Sys().(*syscall.Stat_t)
	if tok.Mode().Perm() != 0o640 || st.Uid != hostBackendUID || st.Gid != hostMCPGID || tok.Size() == 0 {
		t.Errorf("mcp-token: mode %v owner %d:%d size %d, want 0640 %d:%d and a token", tok.Mode().Perm(), st.Uid, st.Gid, tok.Size(), hostBackendUID, hostMCPGID)
	}
	if _, err := os.Stat(filepath.Join(data, datavol.AdminPasswordFile)); !os.IsNotExist(err) {
		t.Errorf("admin-password still on the data volume after bootstrap (err %v)", err)
	}
}

// dataVolume prepares an instance data volume as the host side does before
// the first start (internal/datavol): config for SQLite, the admin's name
// and one-shot password, owned by the container's vikunja user.
func dataVolume(t *testing.T, publicURL string) (dir, password string) {
	t.Helper()
	// Not under t.TempDir (0700): the bind mount is made inside the user
	// namespace, so the container's root (host uid 100000) must reach it.
	parent, err := os.MkdirTemp("", "vkimg-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(parent, "data")
	password = "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	err = datavol.Write(dir, datavol.Settings{
		PublicURL: publicURL,
		Database:  datavol.Database{Type: datavol.SQLite},
		Admin:     datavol.Admin{Username: "admin", Email: "admin@example.org", Password: password},
	}, datavol.Owner{UID: hostBackendUID, GID: hostBackendUID})
	if err != nil {
		t.Fatal(err)
	}
	return dir, password
}

func inCT(t *testing.T, be *lxc.Backend, id int, argv ...string) string {
	t.Helper()
	res, err := be.Exec(context.Background(), id, argv, nil)
	if err != nil {
		t.Fatalf("exec %v: %v", argv, err)
	}
	return strings.TrimSpace(string(res.Stdout))
}

// waitSystemRunning polls systemd until it has finished booting and
// requires "running": "degraded" means some unit failed.
func waitSystemRunning(t *testing.T, be *lxc.Backend, id int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	state := ""
	for time.Now().Before(deadline) {
		// Until systemd is up, systemctl cannot connect: it says nothing
		// or "offline".
		res, err := be.Exec(context.Background(), id, []string{"systemctl", "is-system-running"}, nil)
		if err != nil {
			t.Fatalf("is-system-running: %v", err)
		}
		state = strings.TrimSpace(string(res.Stdout))
		if state != "" && state != "offline" && state != "initializing" && state != "starting" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if state != "running" {
		failed := inCT(t, be, id, "systemctl", "--failed", "--no-pager")
		journal := inCT(t, be, id, "journalctl", "-b", "--no-pager", "-n", "80")
		t.Fatalf("systemd is %q, want running\n%s\n%s", state, failed, journal)
	}
}

// checkUnit asserts a service is active and running, and that its main
// process runs as a non-root user.
func checkUnit(t *testing.T, be *lxc.Backend, id int, unit string) {
	t.Helper()
	props := inCT(t, be, id, "systemctl", "show", "-p", "ActiveState,SubState,MainPID", unit)
	if !strings.Contains(props, "ActiveState=active") || !strings.Contains(props, "SubState=running") {
		t.Errorf("%s: %s\n%s", unit, props, inCT(t, be, id, "journalctl", "-u", unit, "--no-pager", "-n", "30"))
		return
	}
	pid := inCT(t, be, id, "systemctl", "show", "-p", "MainPID", "--value", unit)
	status := inCT(t, be, id, "cat", "/proc/"+pid+"/status")
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
			if f[1] == "0" {
				t.Errorf("%s: main process %s runs as root", unit, pid)
			}
			return
		}
	}
	t.Errorf("%s: no Uid in /proc/%s/status", unit, pid)
}

func checkBootstrap(t *testing.T, be *lxc.Backend, id int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		props := inCT(t, be, id, "systemctl", "show", "-p", "ActiveState,Result", "vkimg-bootstrap.service")
		switch {
		case strings.Contains(props, "ActiveState=active") && strings.Contains(props, "Result=success"):
			return
		case strings.Contains(props, "ActiveState=failed"), time.Now().After(deadline):
			t.Fatalf("vkimg-bootstrap.service: %s\n%s", props, inCT(t, be, id, "journalctl", "-u", "vkimg-bootstrap.service", "--no-pager", "-n", "40"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// checkServiceWorkerNotCached: nginx serves a separate frontend, and its
// service worker must never be cached, or browsers keep an old frontend.
// (The page itself is checked by the health checks.)
func checkServiceWorkerNotCached(t *testing.T, ip string, m *manifest.Manifest) {
	t.Helper()
	for _, c := range m.Components {
		for _, h := range c.Health {
			if h.Kind != manifest.HealthPage || c.EmbeddedIn != "" {
				continue
			}
			u := fmt.Sprintf("http://%s:%d/sw.js", ip, h.Port)
			resp, err := client.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Errorf("%s: %s, Cache-Control %q, want 200 and no-cache", u, resp.Status, resp.Header.Get("Cache-Control"))
			}
		}
	}
}

// mcpCall sends one JSON-RPC request to the MCP server.
func mcpCall(t *testing.T, url, method string, params, out any) {
	t.Helper()
	if err := mcpclient.Call(context.Background(), client, url, method, params, out); err != nil {
		t.Fatal(err)
	}
}

// useTheApp creates a project and a task through the API as the admin and
// a task through the MCP server (which uses the token bootstrap made), and
// finds both through the MCP server.
func useTheApp(t *testing.T, ip, token string) {
	t.Helper()
	api := "http://" + ip + ":3456/api/v1"
	var project struct{ ID int }
	apiJSON(t, http.MethodPut, api+"/projects", token, map[string]any{"title": "vkimg boot test"}, &project)
	var task struct{ ID int }
	apiJSON(t, http.MethodPut, fmt.Sprintf("%s/projects/%d/tasks", api, project.ID), token, map[string]any{"title": "task via the API"}, &task)
	if project.ID == 0 || task.ID == 0 {
		t.Fatalf("API: project %d, task %d", project.ID, task.ID)
	}
	type toolResult struct {
		IsError bool                    `json:"isError"`
		Content []struct{ Text string } `json:"content"`
	}
	mcp := "http://" + ip + ":3457/mcp"
	var created toolResult
	mcpCall(t, mcp, "tools/call", map[string]any{"name": "create_task", "arguments": map[string]any{"project_id": project.ID, "title": "task via MCP"}}, &created)
	if created.IsError {
		t.Fatalf("MCP create_task: %+v", created)
	}
	var found toolResult
	mcpCall(t, mcp, "tools/call", map[string]any{"name": "search_tasks", "arguments": map[string]any{"project_id": project.ID}}, &found)
	var text strings.Builder
	for _, c := range found.Content {
		text.WriteString(c.Text)
	}
	if found.IsError || !strings.Contains(text.String(), "task via the API") || !strings.Contains(text.String(), "task via MCP") {
		t.Errorf("MCP search_tasks does not list both tasks: %+v", found)
	}
}

func apiJSON(t *testing.T, method, url, token string, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, url, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("%s %s: %v: %s", method, url, err, body)
	}
}

func login(t *testing.T, ip, user, password string) string {
	t.Helper()
	var tok struct{ Token string }
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := client.Post("http://"+ip+":3456/api/v1/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		t.Fatalf("login as %s: %s: %s", user, resp.Status, body)
	}
	return tok.Token
}
