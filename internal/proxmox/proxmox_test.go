package proxmox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
	"github.com/vkimg/vkimg/internal/pvesim"
	"github.com/vkimg/vkimg/internal/pvesim/pvesimtest"
)

const plainName = "debian-12-vkimgtest_1-1_amd64.tar.zst"

func TestMain(m *testing.M) {
	code := m.Run()
	pvesimtest.Cleanup()
	os.Exit(code)
}

// env is a simulator on a real LXC backend with a test bridge, and the two
// clients: HTTPS with an API token, and pvesh as root on the "node".
type env struct {
	backend *lxc.Backend
	sim     *pvesimtest.Env
	https   *Client
	node    *Client
	bridge  string
	prefix  netip.Prefix
	next    netip.Addr
}

func newEnv(t testing.TB, version string, insecureRegistries ...string) *env {
	t.Helper()
	lxctest.RequireRoot(t)
	b := lxctest.NewBackend(t)
	br, prefix := lxctest.NewBridge(t)
	sim := pvesimtest.Start(t, b, version, insecureRegistries...)
	e := &env{backend: b, sim: sim, bridge: br, prefix: prefix, next: prefix.Addr().Next().Next()}
	var err error
	e.https, err = NewHTTPS(HTTPSOptions{
		URL: sim.Sim.URL(), TokenID: pvesimtest.TokenID, Secret: sim.Secret, CACertPEM: sim.Sim.CACertPEM(), Node: pvesimtest.Node,
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.node, err = NewNode(NodeOptions{Node: pvesimtest.Node, Pvesh: sim.Pvesh, Pct: sim.Pct}); err != nil {
		t.Fatal(err)
	}
	return e
}

// spec is a small container on the env's bridge with the next free static
// address.
func (e *env) spec(t testing.TB, c *Client, host, template string) hypervisor.ContainerSpec {
	t.Helper()
	id, err := c.NextID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := e.next
	e.next = e.next.Next()
	return hypervisor.ContainerSpec{
		ID: id, Hostname: host, Template: hypervisor.TemplateRef{Storage: "local", Name: template},
		Cores: 1, MemoryMB: 256, SwapMB: 128, RootfsGB: 1, Storage: "local",
		Net:  hypervisor.Net{Bridge: e.bridge, Address: netip.PrefixFrom(addr, e.prefix.Bits()), Gateway: e.prefix.Addr()},
		Tags: []string{"vkimg", "test"}, Description: "vkimg test container " + host,
	}
}

func uploadPlain(t testing.TB, c *Client) {
	t.Helper()
	plain, _ := lxctest.TestTemplate(t)
	f, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UploadTemplate(context.Background(), "local", plainName, f, fi.Size()); err != nil {
		t.Fatal(err)
	}
}

// assertGone checks that nothing of container id is left: not in the API,
// not in the backend, no config or rootfs directory.
func assertGone(t testing.TB, e *env, c *Client, id int) {
	t.Helper()
	if _, err := c.Status(context.Background(), id); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("status of container %d: %v, want ErrNotFound", id, err)
	}
	for _, p := range []string{
		filepath.Join(e.backend.Root(), strconv.Itoa(id)),
		filepath.Join(e.backend.Root(), "storage", "local", "images", strconv.Itoa(id)),
	} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", p, err)
		}
	}
	cl, err := e.backend.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range cl.Containers {
		if ct.ID == id {
			t.Errorf("container %d is still on the backend", id)
		}
	}
}

func TestLifecycle(t *testing.T) {
	for _, transport := range []string{"https", "pvesh"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, "8.2.4")
			c := map[string]*Client{"https": e.https, "pvesh": e.node}[transport]
			ctx := context.Background()

			if ok, err := c.TemplateStored(ctx, "local", plainName); err != nil || ok {
				t.Fatalf("TemplateStored before upload = %v, %v", ok, err)
			}
			uploadPlain(t, c)
			if ok, err := c.TemplateStored(ctx, "local", plainName); err != nil || !ok {
				t.Fatalf("TemplateStored after upload = %v, %v", ok, err)
			}

			s := e.spec(t, c, "ct-"+transport, plainName)
			s.OnBoot = true
			if transport == "pvesh" {
				// Bind mounts need root@pam: only the node transport has it.
				data := dataDir(t)
				if err := os.WriteFile(filepath.Join(data, "hello"), []byte("from the host\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				s.Mounts = []hypervisor.Mount{{HostPath: data, Path: "/data"}}
			}
			if err := c.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			cl, err := c.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if cl.Version != "8.2.4" || len(cl.Nodes) != 1 || len(cl.Nodes[0].Storages) == 0 {
				t.Errorf("cluster: version %q, nodes %+v", cl.Version, cl.Nodes)
			}
			if !hasBridge(cl.Nodes[0].Bridges, e.bridge, e.prefix) {
				t.Errorf("bridge %s %s missing from %+v", e.bridge, e.prefix, cl.Nodes[0].Bridges)
			}
			if len(cl.Containers) != 1 || cl.Containers[0].ID != s.ID || !containsAddr(cl.Containers[0].Addresses, s.Net.Address.Addr()) {
				t.Errorf("cluster containers %+v, want %d with %s", cl.Containers, s.ID, s.Net.Address.Addr())
			}
			st, err := c.Status(ctx, s.ID)
			if err != nil || st.State != hypervisor.StateStopped || st.Name != s.Hostname || strings.Join(st.Tags, ";") != "vkimg;test" || !st.OnBoot {
				t.Errorf("status after create: %+v, %v", st, err)
			}

			if err := c.Start(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			if st, err := c.Status(ctx, s.ID); err != nil || st.State != hypervisor.StateRunning || st.MaxMemMB != 256 {
				t.Errorf("status after start: %+v, %v", st, err)
			}
			checkOnBoot(t, e, c, s.ID)
			body := lxctest.WaitHTTP(t, fmt.Sprintf("http://%s:%d/", s.Net.Address.Addr(), lxctest.HTTPPort))
			if body != lxctest.IndexHTML {
				t.Errorf("health endpoint answered %q", body)
			}
			// Once it serves, its address is configured.
			addrs, err := c.Addresses(ctx, s.ID)
			if err != nil || !containsAddr(addrs, s.Net.Address.Addr()) {
				t.Errorf("addresses %v, %v; want %s", addrs, err, s.Net.Address.Addr())
			}

			res, err := c.Exec(ctx, s.ID, []string{"cat", "/data/hello"}, nil)
			if transport == "https" {
				if !errors.Is(err, ErrExecNeedsNode) {
					t.Errorf("exec over HTTPS: %v, want ErrExecNeedsNode", err)
				}
			} else if err != nil || res.ExitCode != 0 || string(res.Stdout) != "from the host\n" {
				t.Errorf("pct exec: %+v (stdout %q), %v", res, res.Stdout, err)
			}

			if err := c.Shutdown(ctx, s.ID, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if st, err := c.Status(ctx, s.ID); err != nil || st.State != hypervisor.StateStopped {
				t.Errorf("status after shutdown: %+v, %v", st, err)
			}
			if err := c.Destroy(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			assertGone(t, e, c, s.ID)
			if err := c.SetOnBoot(ctx, s.ID, true); !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("SetOnBoot of a destroyed container: %v, want ErrNotFound", err)
			}
		})
	}
}

// checkOnBoot switches a container's onboot off and on again, reading it
// back through the API and from the backend the simulator runs it on.
func checkOnBoot(t *testing.T, e *env, c *Client, id int) {
	t.Helper()
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		if err := c.SetOnBoot(ctx, id, on); err != nil {
			t.Fatal(err)
		}
		if st, err := c.Status(ctx, id); err != nil || st.OnBoot != on {
			t.Errorf("status after SetOnBoot(%v): %+v, %v", on, st, err)
		}
		if st, err := e.backend.Status(ctx, id); err != nil || st.OnBoot != on {
			t.Errorf("backend status after SetOnBoot(%v): %+v, %v", on, st, err)
		}
	}
}

// dataDir is a data volume the container's root (host uid 100000) can
// reach: t.TempDir's parent is private to the host's root.
func dataDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vkimg-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func hasBridge(bs []hypervisor.Bridge, name string, prefix netip.Prefix) bool {
	for _, b := range bs {
		if b.Name == name && b.Prefix == prefix {
			return true
		}
	}
	return false
}

func TestTokenCannotBindMount(t *testing.T) {
	e := newEnv(t, "8.2.4")
	ctx := context.Background()
	s := e.spec(t, e.https, "ct-bind", plainName)
	s.Mounts = []hypervisor.Mount{{HostPath: dataDir(t), Path: "/data"}}
	err := e.https.Create(ctx, s)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 403 || !strings.Contains(err.Error(), "mount point type bind is only allowed for root@pam") {
		t.Fatalf("create with a bind mount over a token: %v; want Proxmox's 403", err)
	}
	t.Logf("refused: %v", err)
	assertGone(t, e, e.https, s.ID)
}

func TestSchemaRefusals(t *testing.T) {
	e := newEnv(t, "8.2.4")
	s := e.spec(t, e.https, "ct-schema", plainName)
	for name, c := range map[string]*Client{"https": e.https, "pvesh": e.node} {
		for _, tc := range []struct{ param, value, want string }{
			{"bogus", "1", "property is not defined in schema"},
			{"memory", "lots", "type check ('integer') failed - got 'lots'"},
		} {
			p := createParams(s)
			p[tc.param] = tc.value
			var upid string
			err := c.api.Post(context.Background(), "/nodes/pve/lxc", p, &upid)
			if err == nil || !strings.Contains(err.Error(), "400 Parameter verification failed.") ||
				!strings.Contains(err.Error(), tc.param) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %s=%s: %v; want 400 naming %s: %s", name, tc.param, tc.value, err, tc.param, tc.want)
			}
		}
	}
	assertGone(t, e, e.https, s.ID)
}

func TestFailedCreateLeavesNothing(t *testing.T) {
	e := newEnv(t, "8.2.4")
	ctx := context.Background()
	plain, _ := lxctest.TestTemplate(t)
	f, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The first MB of a good template: extraction starts, then breaks.
	if err := e.node.UploadTemplate(ctx, "local", "broken.tar.zst", io.LimitReader(f, 1<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	s := e.spec(t, e.node, "ct-broken", "broken.tar.zst")
	s.Mounts = []hypervisor.Mount{{HostPath: dataDir(t), Path: "/data"}}
	err = e.node.Create(ctx, s)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unable to create CT %d", s.ID)) || !strings.Contains(err.Error(), "task log") {
		t.Fatalf("create from a truncated template: %v; want Proxmox's task error and log", err)
	}
	t.Logf("create failed as it should: %v", err)
	assertGone(t, e, e.node, s.ID)
}

func TestTaskTimeout(t *testing.T) {
	e := newEnv(t, "8.2.4")
	ctx := context.Background()
	uploadPlain(t, e.node)
	s := e.spec(t, e.node, "ct-timeout", plainName)
	if err := e.node.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	impatient, err := NewNode(NodeOptions{Node: pvesimtest.Node, Pvesh: e.sim.Pvesh, Pct: e.sim.Pct, TaskTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	err = impatient.Start(ctx, s.ID)
	if !errors.Is(err, ErrTaskTimeout) || !strings.Contains(err.Error(), ":vzstart:") {
		t.Fatalf("start with a 1ns task timeout: %v; want ErrTaskTimeout naming the task", err)
	}
	t.Logf("timed out as it should: %v", err)
	// The task itself goes on: the container comes up.
	lxctest.WaitHTTP(t, fmt.Sprintf("http://%s:%d/", s.Net.Address.Addr(), lxctest.HTTPPort))
}

func TestCreateRefusesInvalidSpec(t *testing.T) {
	e := newEnv(t, "8.2.4")
	s := e.spec(t, e.https, "ct-invalid", plainName)
	s.Net.Address = netip.MustParsePrefix("192.0.2.10/24") // not the bridge's subnet
	s.MemoryMB = 64
	s.Min = hypervisor.Minimums{MemoryMB: 128}
	err := e.https.Create(context.Background(), s)
	if !errors.Is(err, hypervisor.ErrInvalidSpec) || !strings.Contains(err.Error(), "memory") || !strings.Contains(err.Error(), "192.0.2.10") {
		t.Fatalf("create with a bad spec: %v; want ErrInvalidSpec naming memory and the address", err)
	}
	assertGone(t, e, e.https, s.ID)
}

func TestOCIPull(t *testing.T) {
	lxctest.RequireRoot(t)
	_, oci := lxctest.TestTemplate(t)
	// A loopback registry holding the test template as an OCI image.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/vkimg/vkimgtest:1"
	if out, err := exec.Command("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci-archive:"+oci, "docker://"+ref).CombinedOutput(); err != nil {
		t.Fatalf("push test image: %v\n%s", err, out)
	}
	ctx := context.Background()

	old := newEnv(t, "8.2.4")
	if ok, err := old.https.CanPullOCI(ctx); err != nil || ok {
		t.Errorf("CanPullOCI on 8.2.4 = %v, %v", ok, err)
	}
	if err := old.https.PullOCI(ctx, "local", ref, "vkimgtest_1.tar"); err == nil || !strings.Contains(err.Error(), "not implemented") {
		t.Errorf("oci-registry-pull on 8.2.4: %v; want Proxmox's 501", err)
	}

	e := newEnv(t, "9.1.1", host)
	if ok, err := e.https.CanPullOCI(ctx); err != nil || !ok {
		t.Fatalf("CanPullOCI on 9.1.1 = %v, %v", ok, err)
	}
	if err := e.https.PullOCI(ctx, "local", ref, "vkimgtest_1.tar"); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.https.TemplateStored(ctx, "local", "vkimgtest_1.tar"); err != nil || !ok {
		t.Fatalf("pulled archive stored = %v, %v", ok, err)
	}
	s := e.spec(t, e.https, "ct-oci", "vkimgtest_1.tar")
	if err := e.https.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := e.https.Start(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	// Layer 2 replaced the page: both layers were applied, in order.
	if body := lxctest.WaitHTTP(t, fmt.Sprintf("http://%s:%d/", s.Net.Address.Addr(), lxctest.HTTPPort)); body != lxctest.OCILayer2HTML {
		t.Errorf("container from the OCI image serves %q", body)
	}
	if err := e.https.Stop(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.https.Destroy(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e, e.https, s.ID)
}

// BenchmarkCreateStartHealthy measures, through the simulator on each
// transport, create + start from a template already on storage until the
// container's health endpoint answers.
func BenchmarkCreateStartHealthy(b *testing.B) {
	for _, transport := range []string{"https", "pvesh"} {
		b.Run(transport, func(b *testing.B) {
			e := newEnv(b, "8.2.4")
			c := map[string]*Client{"https": e.https, "pvesh": e.node}[transport]
			uploadPlain(b, c)
			ctx := context.Background()
			s := e.spec(b, c, "bench", plainName)
			url := fmt.Sprintf("http://%s:%d/", s.Net.Address.Addr(), lxctest.HTTPPort)
			for b.Loop() {
				id, err := c.NextID(ctx)
				if err != nil {
					b.Fatal(err)
				}
				s.ID = id
				if err := c.Create(ctx, s); err != nil {
					b.Fatal(err)
				}
				if err := c.Start(ctx, id); err != nil {
					b.Fatal(err)
				}
				lxctest.WaitHTTP(b, url)
				b.StopTimer()
				if err := c.Stop(ctx, id); err != nil {
					b.Fatal(err)
				}
				if err := c.Destroy(ctx, id); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// TestCreateDHCP creates (without starting: no DHCP server here) a
// container that takes its address from DHCP: Proxmox records ip=dhcp and
// a generated MAC address, which conflict checks then see.
func TestCreateDHCP(t *testing.T) {
	e := newEnv(t, "8.2.4")
	ctx := context.Background()
	uploadPlain(t, e.node)
	s := e.spec(t, e.node, "ct-dhcp", plainName)
	s.Net.Address, s.Net.Gateway = netip.Prefix{}, netip.Addr{}
	if err := e.node.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	cl, err := e.https.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Containers) != 1 || len(cl.Containers[0].Addresses) != 0 || len(cl.Containers[0].HWAddrs) != 1 {
		t.Errorf("DHCP container in the cluster: %+v; want no address and one MAC", cl.Containers)
	}
	if err := e.https.Destroy(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e, e.https, s.ID)
}

// TestTLSPinning checks both ways of trusting the node's self-signed
// certificate, and that a wrong pin or token is refused. It needs no
// container, so no root.
func TestTLSPinning(t *testing.T) {
	b, err := lxc.New(lxc.Options{Root: t.TempDir(), Node: "pve"})
	if err != nil {
		t.Fatal(err)
	}
	secret := "5f0b6c1e-0000-4000-8000-000000000002"
	sim, err := pvesim.Start(pvesim.Config{Backend: b, Version: "9.1.1", Tokens: map[string]string{pvesimtest.TokenID: secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	other, err := pvesim.Start(pvesim.Config{Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	version := func(o HTTPSOptions) (string, error) {
		o.URL, o.TokenID, o.Node = sim.URL(), pvesimtest.TokenID, pvesimtest.Node
		if o.Secret == "" {
			o.Secret = secret
		}
		c, err := NewHTTPS(o)
		if err != nil {
			return "", err
		}
		return c.Version(context.Background())
	}
	for name, o := range map[string]HTTPSOptions{
		"CA":                     {CACertPEM: sim.CACertPEM()},
		"fingerprint":            {Fingerprint: sim.Fingerprint()},
		"lower-case fingerprint": {Fingerprint: strings.ToLower(sim.Fingerprint())},
	} {
		if v, err := version(o); err != nil || v != "9.1.1" {
			t.Errorf("%s pinned: version %q, %v", name, v, err)
		}
	}
	for name, o := range map[string]HTTPSOptions{
		"system roots":      {},
		"another CA":        {CACertPEM: other.CACertPEM()},
		"other fingerprint": {Fingerprint: other.Fingerprint()},
	} {
		if _, err := version(o); err == nil {
			t.Errorf("%s: connected to an untrusted certificate", name)
		}
	}
	_, err = version(HTTPSOptions{CACertPEM: sim.CACertPEM(), Secret: "wrong"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 401 {
		t.Errorf("wrong token secret: %v, want a 401 APIError", err)
	}
}
