package lxc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
)

const (
	plainName = "debian-12-vkimgtest_1-1_amd64.tar.zst"
	ociName   = "vkimgtest-oci.tar"
)

// upload stores the test template files on the backend's "local" storage.
func upload(t testing.TB, b *lxc.Backend) {
	t.Helper()
	plain, oci := lxctest.TestTemplate(t)
	ctx := context.Background()
	for name, src := range map[string]string{plainName: plain, ociName: oci} {
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		err = b.UploadTemplate(ctx, "local", name, f, st.Size())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ok, err := b.TemplateStored(ctx, "local", name)
		if err != nil || !ok {
			t.Fatalf("TemplateStored(%s) = %v, %v after upload", name, ok, err)
		}
	}
}

// dataDir makes a data volume for a container's uid-990 user outside any
// test temp dir (those are 0700: the container's root could not reach it).
func dataDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vkimg-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := hypervisor.PrepareDataVolume(data, lxctest.ServiceUID, lxctest.ServiceUID); err != nil {
		t.Fatal(err)
	}
	return data
}

// freeAddr picks the first address of the bridge's subnet that no container
// in the cluster uses (and that is not the bridge's own).
func freeAddr(c hypervisor.Cluster, bridge netip.Prefix) (netip.Prefix, error) {
	used := map[netip.Addr]bool{bridge.Addr(): true}
	for _, ct := range c.Containers {
		for _, a := range ct.Addresses {
			used[a] = true
		}
	}
	for a := bridge.Masked().Addr().Next(); bridge.Contains(a); a = a.Next() {
		if !used[a] {
			return netip.PrefixFrom(a, bridge.Bits()), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free address in %s", bridge)
}

func spec(id int, host, tmpl, bridge string, addr netip.Prefix, gw netip.Addr) hypervisor.ContainerSpec {
	return hypervisor.ContainerSpec{
		ID: id, Hostname: host,
		Template: hypervisor.TemplateRef{Storage: "local", Name: tmpl},
		Cores:    1, MemoryMB: 256, SwapMB: 128, RootfsGB: 1, Storage: "local",
		Net: hypervisor.Net{Bridge: bridge, Address: addr, Gateway: gw},
	}
}

// waitRunning polls systemd inside the container until it reports running.
func waitRunning(t testing.TB, b *lxc.Backend, id int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		res, err := b.Exec(ctx, id, []string{"systemctl", "is-system-running"}, nil)
		last = strings.TrimSpace(string(res.Stdout))
		if err == nil && last == "running" {
			return
		}
		if last == "degraded" {
			out, _ := b.Exec(ctx, id, []string{"systemctl", "--failed", "--no-pager"}, nil)
			t.Fatalf("container %d: systemd is degraded:\n%s", id, out.Stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %d: systemd never reached running (last %q)", id, last)
}

func exec(t testing.TB, b *lxc.Backend, id int, stdin string, argv ...string) hypervisor.ExecResult {
	t.Helper()
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	res, err := b.Exec(context.Background(), id, argv, in)
	if err != nil {
		t.Fatalf("exec %v: %v", argv, err)
	}
	return res
}

func TestLifecycle(t *testing.T) {
	b := lxctest.NewBackend(t)
	br, prefix := lxctest.NewBridge(t)
	upload(t, b)
	ctx := context.Background()

	for _, tc := range []struct {
		name, tmpl, index string
		// stubborn containers ignore the halt signal: Shutdown must stop
		// them hard when its timeout is up.
		stubborn bool
	}{
		{"plain", plainName, lxctest.IndexHTML, false},
		{"oci", ociName, lxctest.OCILayer2HTML, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := b.NextID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c, err := b.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			addr, err := freeAddr(c, prefix)
			if err != nil {
				t.Fatal(err)
			}
			data := dataDir(t)
			s := spec(id, "ct-"+tc.name, tc.tmpl, br, addr, prefix.Addr())
			s.OnBoot, s.Tags, s.Description = true, []string{"vkimg", "slot-blue"}, "test container"
			s.Mounts = []hypervisor.Mount{{HostPath: data, Path: "/data"}}
			if err := b.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			st, err := b.Status(ctx, id)
			if err != nil || st.State != hypervisor.StateStopped || st.Name != s.Hostname || st.MaxMemMB != 256 || !st.OnBoot {
				t.Fatalf("Status after create = %+v, %v", st, err)
			}
			checkOnBoot(t, b, id)
			if got, err := b.Addresses(ctx, id); err != nil || !slices.Equal(got, []netip.Addr{addr.Addr()}) {
				t.Fatalf("Addresses of a stopped container = %v, %v; want the configured %s", got, err, addr.Addr())
			}

			if err := b.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
			waitRunning(t, b, id)
			body := lxctest.WaitHTTP(t, fmt.Sprintf("http://%s:%d/", addr.Addr(), lxctest.HTTPPort))
			if body != tc.index {
				t.Errorf("httpd served %q, want %q", body, tc.index)
			}

			if got := strings.TrimSpace(string(exec(t, b, id, "", "hostname").Stdout)); got != s.Hostname {
				t.Errorf("hostname inside = %q, want %q", got, s.Hostname)
			}
			res := exec(t, b, id, "", "setpriv", "--reuid=990", "--regid=990", "--clear-groups",
				"sh", "-c", "echo written > /data/probe && cat /data/probe")
			if res.ExitCode != 0 || string(res.Stdout) != "written\n" {
				t.Fatalf("uid 990 writing /data: exit %d, out %q, err %q", res.ExitCode, res.Stdout, res.Stderr)
			}
			var fst syscall.Stat_t
			if err := syscall.Stat(filepath.Join(data, "probe"), &fst); err != nil || fst.Uid != 100990 {
				t.Errorf("data file on host: uid %d, err %v; want 100990", fst.Uid, err)
			}
			if res := exec(t, b, id, "piped input", "cat"); string(res.Stdout) != "piped input" {
				t.Errorf("exec with stdin echoed %q", res.Stdout)
			}
			if res := exec(t, b, id, "", "sh", "-c", "echo oops >&2; exit 3"); res.ExitCode != 3 || string(res.Stderr) != "oops\n" {
				t.Errorf("exec exit = %d, stderr %q; want 3, oops", res.ExitCode, res.Stderr)
			}
			limit := strings.TrimSpace(string(exec(t, b, id, "", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").Stdout))
			if limit != strconv.Itoa(256<<20) {
				t.Errorf("memory limit inside = %q, want %d", limit, 256<<20)
			}

			st, err = b.Status(ctx, id)
			if err != nil || st.State != hypervisor.StateRunning || st.MemoryMB <= 0 || !slices.Equal(st.Tags, s.Tags) {
				t.Errorf("Status while running = %+v, %v", st, err)
			}
			if got, err := b.Addresses(ctx, id); err != nil || !slices.Contains(got, addr.Addr()) {
				t.Errorf("Addresses while running = %v, %v; want %s among them", got, err, addr.Addr())
			}
			c, err = b.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(c.Containers, func(ct hypervisor.Container) bool { return ct.ID == id })
			if i < 0 || c.Containers[i].State != hypervisor.StateRunning || !slices.Contains(c.Containers[i].Addresses, addr.Addr()) {
				t.Errorf("Cluster containers = %+v; want %d running on %s", c.Containers, id, addr.Addr())
			}

			node := c.Nodes[0]
			if !slices.Contains(node.Bridges, hypervisor.Bridge{Name: br, Prefix: prefix}) {
				t.Errorf("Cluster bridges = %v, want %s %s", node.Bridges, br, prefix)
			}
			if len(node.Storages) != 1 || !node.Storages[0].Active || node.Storages[0].FreeMB <= 0 || node.MemTotalMB <= 0 {
				t.Errorf("Cluster node = %+v", node)
			}

			if err := b.Destroy(ctx, id); err == nil {
				t.Fatal("Destroy of a running container succeeded")
			}
			timeout := 30 * time.Second
			if tc.stubborn {
				exec(t, b, id, "", "systemctl", "mask", "halt.target")
				timeout = time.Second
			}
			if err := b.Shutdown(ctx, id, timeout); err != nil {
				t.Fatal(err)
			}
			if st, err := b.Status(ctx, id); err != nil || st.State != hypervisor.StateStopped {
				t.Fatalf("Status after shutdown = %+v, %v", st, err)
			}
			// Something mounted in the rootfs (say a data volume bound there
			// by hand) stops Destroy before it deletes anything.
			mnt := filepath.Join(b.Root(), "storage", "local", "images", strconv.Itoa(id), "rootfs", "mnt")
			if err := syscall.Mount(data, mnt, "", syscall.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			err = b.Destroy(ctx, id)
			if uerr := syscall.Unmount(mnt, 0); uerr != nil {
				t.Fatal(uerr)
			}
			if err == nil || !strings.Contains(err.Error(), "is mounted") {
				t.Fatalf("Destroy with a mount in the rootfs = %v, want a refusal", err)
			}
			if err := b.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
			assertGone(t, b, id)
			if raw, err := os.ReadFile(filepath.Join(data, "probe")); err != nil || string(raw) != "written\n" {
				t.Errorf("data volume after destroy: %q, %v", raw, err)
			}
			if _, err := b.Status(ctx, id); !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("Status after destroy: %v, want ErrNotFound", err)
			}
			if err := b.SetOnBoot(ctx, id, true); !errors.Is(err, hypervisor.ErrNotFound) {
				t.Errorf("SetOnBoot after destroy: %v, want ErrNotFound", err)
			}
		})
	}
}

// checkOnBoot checks that a container made with OnBoot is one lxc-autostart
// starts at boot, then switches that off and on again, reading it back
// from both Status and lxc-autostart.
func checkOnBoot(t *testing.T, b *lxc.Backend, id int) {
	t.Helper()
	if !autostarted(t, b, id) {
		t.Fatalf("lxc-autostart would not start container %d made with OnBoot", id)
	}
	for _, on := range []bool{false, true} {
		if err := b.SetOnBoot(context.Background(), id, on); err != nil {
			t.Fatal(err)
		}
		if st, err := b.Status(context.Background(), id); err != nil || st.OnBoot != on {
			t.Fatalf("Status after SetOnBoot(%v) = %+v, %v", on, st, err)
		}
		if got := autostarted(t, b, id); got != on {
			t.Fatalf("after SetOnBoot(%v), lxc-autostart would start container %d: %v", on, id, got)
		}
	}
}

// autostarted reports whether lxc-autostart lists container id among those
// it starts when the host boots.
func autostarted(t *testing.T, b *lxc.Backend, id int) bool {
	t.Helper()
	out, err := osexec.Command("lxc-autostart", "-P", b.Root(), "--list", "--all").Output()
	if err != nil {
		t.Fatalf("lxc-autostart --list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

// assertGone checks that nothing of container id is left on disk.
func assertGone(t testing.TB, b *lxc.Backend, id int) {
	t.Helper()
	for _, p := range []string{
		filepath.Join(b.Root(), strconv.Itoa(id)),
		filepath.Join(b.Root(), "storage", "local", "images", strconv.Itoa(id)),
	} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", p, err)
		}
	}
	c, err := b.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range c.Containers {
		if ct.ID == id {
			t.Errorf("container %d is still in the cluster", id)
		}
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	b := lxctest.NewBackend(t)
	br, prefix := lxctest.NewBridge(t)
	plain, _ := lxctest.TestTemplate(t)
	ctx := context.Background()
	f, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The first MB of a good template: it starts extracting, then breaks.
	if err := b.UploadTemplate(ctx, "local", "broken.tar.zst", io.LimitReader(f, 1<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	s := spec(100, "broken", "broken.tar.zst", br, netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits()), netip.Addr{})
	err = b.Create(ctx, s)
	if err == nil {
		t.Fatal("Create from a truncated template succeeded")
	}
	t.Logf("Create: %v", err)
	assertGone(t, b, 100)
	if id, err := b.NextID(ctx); err != nil || id != 100 {
		t.Errorf("NextID after the failed create = %d, %v; want 100 again", id, err)
	}
}

func TestCreateRefusesInvalidSpec(t *testing.T) {
	b := lxctest.NewBackend(t)
	br, prefix := lxctest.NewBridge(t)
	upload(t, b)
	ctx := context.Background()
	good := spec(100, "good", plainName, br, netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits()), netip.Addr{})
	for name, mutate := range map[string]func(*hypervisor.ContainerSpec){
		"address outside subnet": func(s *hypervisor.ContainerSpec) {
			s.Net.Address = netip.MustParsePrefix("192.0.2.10/24")
		},
		"unknown storage":  func(s *hypervisor.ContainerSpec) { s.Storage = "nowhere" },
		"missing template": func(s *hypervisor.ContainerSpec) { s.Template.Name = "absent.tar.zst" },
		"memory below minimum": func(s *hypervisor.ContainerSpec) {
			s.Min.MemoryMB = 512
		},
		"mount inside the lxc root": func(s *hypervisor.ContainerSpec) {
			s.Mounts = []hypervisor.Mount{{HostPath: b.Root() + "/storage", Path: "/data"}}
		},
	} {
		s := good
		mutate(&s)
		err := b.Create(ctx, s)
		if !errors.Is(err, hypervisor.ErrInvalidSpec) {
			t.Errorf("%s: Create = %v, want ErrInvalidSpec", name, err)
		}
		assertGone(t, b, 100)
	}
}

// TestConflictAvoidance is SC-007: five instances of two containers each,
// created concurrently with IDs from NextID and addresses picked from
// Cluster, all come up side by side without manual resolution.
func TestConflictAvoidance(t *testing.T) {
	b := lxctest.NewBackend(t)
	br, prefix := lxctest.NewBridge(t)
	upload(t, b)
	ctx := context.Background()

	type made struct {
		id   int
		addr netip.Addr
	}
	var (
		mu  sync.Mutex
		all []made
		wg  sync.WaitGroup
	)
	errs := make(chan error, 10)
	for inst := range 5 {
		for _, slot := range []string{"blue", "green"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Racing creates see each other's claims and are refused;
				// they simply pick again.
				for attempt := 0; ; attempt++ {
					id, err := b.NextID(ctx)
					if err != nil {
						errs <- err
						return
					}
					c, err := b.Cluster(ctx)
					if err != nil {
						errs <- err
						return
					}
					addr, err := freeAddr(c, prefix)
					if err != nil {
						errs <- err
						return
					}
					s := spec(id, fmt.Sprintf("inst%d-%s", inst, slot), plainName, br, addr, netip.Addr{})
					err = b.Create(ctx, s)
					if errors.Is(err, hypervisor.ErrInvalidSpec) && attempt < 20 {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					all = append(all, made{id, addr.Addr()})
					mu.Unlock()
					return
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ids, addrs := map[int]bool{}, map[netip.Addr]bool{}
	for _, m := range all {
		if ids[m.id] || addrs[m.addr] {
			t.Fatalf("duplicate ID %d or address %s in %v", m.id, m.addr, all)
		}
		ids[m.id], addrs[m.addr] = true, true
		if err := b.Start(ctx, m.id); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range all {
		waitRunning(t, b, m.id)
		if body := lxctest.WaitHTTP(t, fmt.Sprintf("http://%s:%d/", m.addr, lxctest.HTTPPort)); body != lxctest.IndexHTML {
			t.Errorf("container %d served %q", m.id, body)
		}
	}
	if len(all) != 10 {
		t.Fatalf("made %d containers, want 10", len(all))
	}
}

// BenchmarkCreateStartHealthy measures create + start from a stored template
// until the container's health endpoint answers (issue 4's measure), and
// reports the two phases separately.
func BenchmarkCreateStartHealthy(bm *testing.B) {
	b := lxctest.NewBackend(bm)
	br, prefix := lxctest.NewBridge(bm)
	upload(bm, b)
	ctx := context.Background()
	addr := netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits())
	var (
		create, boot time.Duration
		n            int
	)
	for bm.Loop() {
		n++
		t0 := time.Now()
		id, err := b.NextID(ctx)
		if err != nil {
			bm.Fatal(err)
		}
		if err := b.Create(ctx, spec(id, "bench", plainName, br, addr, netip.Addr{})); err != nil {
			bm.Fatal(err)
		}
		t1 := time.Now()
		if err := b.Start(ctx, id); err != nil {
			bm.Fatal(err)
		}
		lxctest.WaitHTTP(bm, fmt.Sprintf("http://%s:%d/", addr.Addr(), lxctest.HTTPPort))
		create, boot = create+t1.Sub(t0), boot+time.Since(t1)
		bm.StopTimer()
		if err := b.Stop(ctx, id); err != nil {
			bm.Fatal(err)
		}
		if err := b.Destroy(ctx, id); err != nil {
			bm.Fatal(err)
		}
		bm.StartTimer()
	}
	bm.ReportMetric((create+boot).Seconds()/float64(n), "s/op")
	bm.ReportMetric(create.Seconds()/float64(n), "create-s/op")
	bm.ReportMetric(boot.Seconds()/float64(n), "start-to-healthy-s/op")
}
