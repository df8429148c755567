package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/proxmox"
	"github.com/vkimg/vkimg/internal/pvesim/pvesimtest"
	"github.com/vkimg/vkimg/internal/recipe"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/state"
	"github.com/vkimg/vkimg/internal/testenv"
)

// signedTemplate is the stand-in template published, signed, into a local
// layout: built once per test binary.
type signedTemplate struct {
	layout  string
	version string
	key     *ecdsa.PublicKey
	priv    *ecdsa.PrivateKey // publishes later versions (upgrade tests)
}

var (
	templateOnce sync.Once
	template     signedTemplate
	templateErr  error
	templateDirs []string
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	code := m.Run()
	for _, d := range templateDirs {
		os.RemoveAll(d)
	}
	pvesimtest.Cleanup()
	os.Exit(code)
}

func standin(t testing.TB) signedTemplate {
	t.Helper()
	templateOnce.Do(func() {
		out, err := os.MkdirTemp("", "vkimg-deploy-build-")
		if err != nil {
			templateErr = err
			return
		}
		signed, err := os.MkdirTemp("", "vkimg-deploy-layout-")
		if err != nil {
			templateErr = err
			return
		}
		templateDirs = append(templateDirs, out, signed)
		built := buildertest.Build(t, "recipes/standin.yaml", recipe.Overrides{}, out)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			templateErr = err
			return
		}
		_, err = registry.Publish(context.Background(), registry.LayoutRef(built.Layout, built.RefName),
			registry.LayoutRef(signed, ""), registry.PublishOptions{Key: key})
		template, templateErr = signedTemplate{layout: signed, version: built.Manifest.Version, key: &key.PublicKey, priv: key}, err
	})
	if templateErr != nil {
		t.Fatalf("stand-in template: %v", templateErr)
	}
	return template
}

// env is a node: an LXC backend, a bridge and a real nginx on loopback.
type env struct {
	root   state.Root
	lxc    *lxc.Backend
	be     hypervisor.Hypervisor
	bridge string
	nginx  *testenv.NginxServer
	edge   *edge.Nginx
	tmpl   signedTemplate
}

func newEnv(t testing.TB) *env {
	t.Helper()
	lxctest.RequireRoot(t)
	tmpl := standin(t)
	tmp, err := os.MkdirTemp("", "vkimg-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	// The container's service user reaches its data volume below it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	be := lxctest.NewBackend(t)
	bridge, _ := lxctest.NewBridge(t)
	srv := testenv.Nginx(t)
	return &env{
		root: state.Root{Dir: filepath.Join(tmp, "root"), LogDir: filepath.Join(tmp, "log")},
		lxc:  be, be: be, bridge: bridge, nginx: srv, tmpl: tmpl,
		edge: &edge.Nginx{Binary: srv.Binary, ConfigFile: srv.ConfigFile, PIDFile: srv.PIDFile,
			ConfDir: srv.ConfDir, UpstreamDir: filepath.Join(srv.Dir, "vkimg"), MainDir: srv.MainDir},
	}
}

// answers writes an answers file the way an administrator would and loads it.
func (e *env) answers(t testing.TB, name, extra string) *deployconfig.Answers {
	t.Helper()
	a, err := deployconfig.Load(e.answersFile(t, name, extra))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (e *env) answersFile(t testing.TB, name, extra string) string {
	t.Helper()
	yaml := fmt.Sprintf(`name: %s
template:
  source: %s
  version: %s
database:
  type: sqlite
url: https://%s.vkimg.test:%d
admin:
  email: admin@example.org
  username: admin
resources:
  cores: 1
  memory_mb: 512
  disk_gb: 2
network:
  bridge: %s
ports:
  http: %d
  https: %d
storage:
  rootfs: local
  template: local
tls:
  self_signed: true
%s`, name, e.tmpl.layout, e.tmpl.version, name, e.nginx.HTTPSPort, e.bridge, e.nginx.HTTPPort, e.nginx.HTTPSPort, extra)
	path := filepath.Join(t.TempDir(), "answers.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *env) options(progress *bytes.Buffer) Options {
	return Options{Root: e.root, Hypervisor: e.be, Edge: e.edge, EdgeAddress: netip.MustParseAddr("127.0.0.1"),
		Trusted: e.tmpl.key, Progress: progress}
}

// assertNothing checks that no container, site, data volume or instance
// directory exists.
func (e *env) assertNothing(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	c, err := e.be.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Containers) != 0 {
		t.Errorf("containers left: %+v", c.Containers)
	}
	sites, err := e.edge.Sites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 0 {
		t.Errorf("nginx sites left: %+v", sites)
	}
	if _, err := os.Stat(e.root.Instance(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory left: %v", err)
	}
}

// useInstance logs in through the edge over HTTPS and creates a task.
func useInstance(t testing.TB, e *env, res *Result) {
	t.Helper()
	var project struct{ ID int }
	e.api(t, res, "PUT", "/api/v1/projects", map[string]string{"title": "deploy test"}, &project)
	var task struct {
		ID    int
		Title string
	}
	e.api(t, res, "PUT", fmt.Sprintf("/api/v1/projects/%d/tasks", project.ID), map[string]string{"title": "first task"}, &task)
	if task.ID == 0 || task.Title != "first task" {
		t.Fatalf("created task %+v", task)
	}
}

// api calls the instance's API through nginx over HTTPS, logged in as its
// admin, and decodes the answer into out.
func (e *env) api(t testing.TB, res *Result, method, path string, body, out any) {
	t.Helper()
	cfg, err := deployconfig.ReadInstance(filepath.Join(e.root.Instance(res.Name), InstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	client, err := EdgeClient(edge.Site{Domains: []string{cfg.Domain}, HTTPSPort: e.nginx.HTTPSPort, CertFile: cfg.TLS.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("https://%s:%d", cfg.Domain, e.nginx.HTTPSPort)
	call := func(method, path, token string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s through nginx: %s", method, path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	var login struct{ Token string }
	call("POST", "/api/v1/login", "", map[string]string{"username": res.AdminUser, "password": res.AdminPassword}, &login)
	call(method, path, login.Token, body, out)
}

func TestDeployLXCBehindNginx(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var progress bytes.Buffer
	res, err := Run(ctx, e.answers(t, "tasks", ""), e.options(&progress))
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, progress.String())
	}
	for _, s := range res.Steps {
		t.Logf("step %-40s %v", s.Step, s.Duration)
	}
	if !res.PasswordGenerated || res.AdminPassword == "" || res.Version != e.tmpl.version {
		t.Fatalf("result %+v", res)
	}
	useInstance(t, e, res)

	log, err := os.ReadFile(e.root.LogFile("tasks"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), res.AdminPassword) || strings.Contains(progress.String(), res.AdminPassword) {
		t.Error("the admin password reached the log or the progress output")
	}
	if !regexp.MustCompile(`checks through nginx: .*version /api/v1/info.*page /.*mcp /mcp`).Match(log) {
		t.Errorf("the version, page and MCP checks did not all go through nginx:\n%s", log)
	}
	if !strings.Contains(string(log), "step 13/13: "+stepInstance) || !strings.Contains(string(log), "signature verified") {
		t.Errorf("log lacks the step list or the verification:\n%s", log)
	}

	list, err := List(ctx, e.root, e.be)
	if err != nil {
		t.Fatal(err)
	}
	want := Instance{Name: "tasks", URL: fmt.Sprintf("https://tasks.vkimg.test:%d/", e.nginx.HTTPSPort), Version: e.tmpl.version, ActiveSlot: "a",
		ContainerID: res.ContainerID, State: string(hypervisor.StateRunning)}
	if len(list) != 1 || list[0] != want {
		t.Fatalf("list = %+v, want [%+v]", list, want)
	}

	cfgPath := filepath.Join(e.root.Instance("tasks"), InstanceFile)
	before, _ := os.ReadFile(cfgPath)
	_, err = Run(ctx, e.answers(t, "tasks", ""), e.options(&progress))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second deploy of tasks: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(cfgPath)
	if !bytes.Equal(before, after) {
		t.Error("the refused deploy changed the instance configuration")
	}
	if st, err := e.be.Status(ctx, res.ContainerID); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("first instance after the refused deploy: %+v %v", st, err)
	}
	useInstance(t, e, res)

	// A second instance beside it, from the template already on storage.
	progress.Reset()
	second, err := Run(ctx, e.answers(t, "notes", ""), e.options(&progress))
	if err != nil {
		t.Fatalf("deploy notes: %v\n%s", err, progress.String())
	}
	for _, s := range second.Steps {
		t.Logf("second instance, step %-40s %v", s.Step, s.Duration)
	}
	if !strings.Contains(progress.String(), "already on storage") {
		t.Errorf("the template was uploaded again:\n%s", progress.String())
	}
	if second.ContainerID == res.ContainerID || second.Address == res.Address {
		t.Fatalf("two instances share container %d / address %s", res.ContainerID, res.Address)
	}
	useInstance(t, e, second)
	useInstance(t, e, res)
	if list, err = List(ctx, e.root, e.be); err != nil || len(list) != 2 {
		t.Fatalf("list after two deploys: %+v %v", list, err)
	}
}

func TestDeployInvalidAnswersCreateNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, tc := range []struct{ name, extra, key string }{
		{"baddomain", "", "url"},
		{"nodb", "", "database.host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.answers(t, tc.name, "")
			switch tc.name {
			case "baddomain":
				a.URL = "https://bad domain;.test"
			case "nodb":
				// Port 1 on loopback: nothing listens there.
				a.Database = deployconfig.Database{Type: "postgres", Host: "127.0.0.1", Port: 1, Password: "x"}
			}
			var progress bytes.Buffer
			_, err := Run(ctx, a, e.options(&progress))
			var inv *deployconfig.InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("deploy: %v, want an InvalidError\n%s", err, progress.String())
			}
			t.Logf("refused: %v", err)
			e.assertNothing(t, tc.name)
		})
	}
	t.Run("unsigned", func(t *testing.T) {
		o := e.options(&bytes.Buffer{})
		o.Trusted = nil
		_, err := Run(ctx, e.answers(t, "unsigned", ""), o)
		if err == nil || !strings.Contains(err.Error(), "--insecure-local") {
			t.Fatalf("deploy without a trusted key: %v", err)
		}
		e.assertNothing(t, "unsigned")
	})
}

// cancelAfter cancels a deploy once its progress reaches a step.
type cancelAfter struct {
	buf    bytes.Buffer
	step   string
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(": "+c.step)) {
		c.cancel()
	}
	return c.buf.Write(p)
}

func TestDeployInterruptedLeavesNothingAndRerunSucceeds(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &cancelAfter{step: stepStart, cancel: cancel}
	o := e.options(nil)
	o.Progress = progress
	_, err := Run(ctx, e.answers(t, "interrupted", ""), o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted deploy: %v, want context.Canceled\n%s", err, progress.buf.String())
	}
	if !strings.Contains(progress.buf.String(), "undone: "+stepCreate) {
		t.Errorf("no undo of the container in the progress:\n%s", progress.buf.String())
	}
	e.assertNothing(t, "interrupted")

	var again bytes.Buffer
	res, err := Run(context.Background(), e.answers(t, "interrupted", ""), e.options(&again))
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, again.String())
	}
	useInstance(t, e, res)
}

func TestDeployThroughProxmoxSimulator(t *testing.T) {
	e := newEnv(t)
	sim := pvesimtest.Start(t, e.be, "8.2.4")
	node, err := proxmox.NewNode(proxmox.NodeOptions{Node: pvesimtest.Node, Pvesh: sim.Pvesh, Pct: sim.Pct})
	if err != nil {
		t.Fatal(err)
	}
	e.be = node
	var progress bytes.Buffer
	res, err := Run(context.Background(), e.answers(t, "pve", ""), e.options(&progress))
	if err != nil {
		t.Fatalf("deploy through the Proxmox API: %v\n%s", err, progress.String())
	}
	useInstance(t, e, res)
	st, err := node.Status(context.Background(), res.ContainerID)
	if err != nil || st.State != hypervisor.StateRunning || !slices.Contains(st.Tags, "vkimg-pve") {
		t.Fatalf("container %d through the API: %+v %v", res.ContainerID, st, err)
	}
}

// childEnv carries a childSpec to the test binary re-run as a deploy
// process, which the test then kills with SIGKILL: no deferred cleanup, no
// undo, only the journal.
const childEnv = "VKIMG_DEPLOY_TEST_CHILD"

type childSpec struct {
	Root    state.Root
	LXCRoot string
	Edge    edge.Nginx
	Answers string
	Trusted []byte
}

func child(spec string) int {
	var c childSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return c.deploy(os.Stdout)
}

// deploy runs the deploy c describes in this process, as vkimg deploy
// would, and returns the exit code.
func (c childSpec) deploy(progress io.Writer) int {
	be, pub, err := childNode(c.LXCRoot, c.Trusted)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	a, err := deployconfig.Load(c.Answers)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = Run(context.Background(), a, Options{Root: c.Root, Hypervisor: be, Edge: &c.Edge,
		EdgeAddress: netip.MustParseAddr("127.0.0.1"), Trusted: pub, Progress: progress})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// childNode is the test node as a child process reaches it: the LXC
// backend under lxcRoot and the pinned key.
func childNode(lxcRoot string, trusted []byte) (*lxc.Backend, *ecdsa.PublicKey, error) {
	be, err := lxc.New(lxc.Options{Root: lxcRoot, Node: "vkimg-test"})
	if err != nil {
		return nil, nil, err
	}
	pub, err := signing.ParsePublicKey(trusted)
	return be, pub, err
}

func TestDeployKilledThenRerunConverges(t *testing.T) {
	e := newEnv(t)
	pem, err := signing.MarshalPublicKey(e.tmpl.key)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(childSpec{Root: e.root, LXCRoot: e.lxc.Root(), Edge: *e.edge,
		Answers: e.answersFile(t, "killed", ""), Trusted: pem})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		seen.WriteString(lines.Text() + "\n")
		if strings.Contains(lines.Text(), ": "+stepStart) {
			cmd.Process.Kill()
			break
		}
	}
	cmd.Wait()
	if !strings.Contains(seen.String(), ": "+stepStart) {
		t.Fatalf("the deploy process ended before starting its container:\n%s%s", seen.String(), stderr.String())
	}
	ctx := context.Background()
	c, err := e.be.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Containers) != 1 {
		t.Fatalf("after SIGKILL: containers %+v, want the one the killed deploy made", c.Containers)
	}
	if p, err := e.root.Journal("killed").Pending(); err != nil || p == nil {
		t.Fatalf("after SIGKILL: pending operation %+v %v", p, err)
	}

	var again bytes.Buffer
	res, err := Run(ctx, e.answers(t, "killed", ""), e.options(&again))
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, again.String())
	}
	if !strings.Contains(again.String(), "undone: "+stepCreate) {
		t.Errorf("the rerun did not undo the killed deploy's container:\n%s", again.String())
	}
	if c, err = e.be.Cluster(ctx); err != nil || len(c.Containers) != 1 || c.Containers[0].ID != res.ContainerID {
		t.Fatalf("after the rerun: containers %+v (%v), want only %d", c.Containers, err, res.ContainerID)
	}
	useInstance(t, e, res)
}
