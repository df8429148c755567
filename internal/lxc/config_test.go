package lxc

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

func TestConfigCgroupKeys(t *testing.T) {
	spec := hypervisor.ContainerSpec{
		ID: 105, Hostname: "vikunja-blue", Cores: 2, MemoryMB: 1024, SwapMB: 512, OnBoot: true,
		Net:    hypervisor.Net{Bridge: "vmbr0", Address: netip.MustParsePrefix("10.0.0.5/24")},
		Mounts: []hypervisor.Mount{{HostPath: "/srv/my data", Path: "/data"}, {HostPath: "/srv/ro", Path: "/ro", ReadOnly: true}},
	}
	m := meta{HWAddr: "00:16:3e:00:00:01", Rootfs: "/lxc/storage/local/images/105/rootfs"}
	common := []string{
		"lxc.include = /usr/share/lxc/config/debian.common.conf\n",
		"lxc.include = /usr/share/lxc/config/debian.userns.conf\n",
		"lxc.idmap = u 0 100000 65536\n",
		"lxc.idmap = g 0 100000 65536\n",
		"lxc.rootfs.path = dir:/lxc/storage/local/images/105/rootfs\n",
		"lxc.start.auto = 1\n",
		"lxc.net.0.link = vmbr0\n",
		"lxc.net.0.hwaddr = 00:16:3e:00:00:01\n",
		"lxc.mount.entry = /srv/my\\040data data none bind,create=dir 0 0\n",
		"lxc.mount.entry = /srv/ro ro none bind,create=dir,ro 0 0\n",
	}
	for _, tc := range []struct {
		name        string
		b           Backend
		want, unset []string
	}{
		{"cgroup v1 with swap accounting", Backend{root: "/lxc", memsw: true}, []string{
			"lxc.cgroup.memory.limit_in_bytes = 1073741824\n",
			"lxc.cgroup.memory.memsw.limit_in_bytes = 1610612736\n",
			"lxc.cgroup.cpu.cfs_quota_us = 200000\n",
		}, []string{"lxc.cgroup2."}},
		{"cgroup v1 without swap accounting", Backend{root: "/lxc"}, []string{
			"lxc.cgroup.memory.limit_in_bytes = 1073741824\n",
		}, []string{"memsw", "lxc.cgroup2."}},
		{"cgroup v2", Backend{root: "/lxc", cgroup2: true}, []string{
			"lxc.cgroup2.memory.max = 1073741824\n",
			"lxc.cgroup2.memory.swap.max = 536870912\n",
			"lxc.cgroup2.cpu.max = 200000 100000\n",
		}, []string{"lxc.cgroup.memory", "lxc.cgroup.cpu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.b.config(spec, m)
			for _, w := range append(common, tc.want...) {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
			for _, u := range tc.unset {
				if strings.Contains(got, u) {
					t.Errorf("config has %q:\n%s", u, got)
				}
			}
		})
	}
}

func TestSetConfigKey(t *testing.T) {
	spec := hypervisor.ContainerSpec{ID: 105, Hostname: "vikunja-blue", Cores: 1, MemoryMB: 512, OnBoot: true,
		Net: hypervisor.Net{Bridge: "vmbr0"}}
	conf := (&Backend{root: "/lxc"}).config(spec, meta{HWAddr: "00:16:3e:00:00:01", Rootfs: "/rootfs"})
	off := string(setConfigKey([]byte(conf), "lxc.start.auto", "0"))
	if want := strings.Replace(conf, "lxc.start.auto = 1\n", "lxc.start.auto = 0\n", 1); off != want || off == conf {
		t.Errorf("switching lxc.start.auto off changed more than that line:\n%s", off)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"absent":             {"lxc.arch = amd64\n", "lxc.arch = amd64\nlxc.start.auto = 1\n"},
		"absent, no newline": {"lxc.arch = amd64", "lxc.arch = amd64\nlxc.start.auto = 1\n"},
		"repeated":           {"lxc.start.auto=0\nlxc.arch = amd64\n  lxc.start.auto = 0\n", "lxc.start.auto = 1\nlxc.arch = amd64\n"},
		"only in a comment":  {"# lxc.start.auto = 0\n", "# lxc.start.auto = 0\nlxc.start.auto = 1\n"},
		"a longer key":       {"lxc.start.autodelay = 5\n", "lxc.start.autodelay = 5\nlxc.start.auto = 1\n"},
		"empty config":       {"", "lxc.start.auto = 1\n"},
	} {
		if got := string(setConfigKey([]byte(tc.in), "lxc.start.auto", "1")); got != tc.want {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
}

func TestHWAddrStable(t *testing.T) {
	a, b := hwaddr("pve1", 100, 0), hwaddr("pve1", 100, 0)
	if a != b || !strings.HasPrefix(a, "00:16:3e:") {
		t.Fatalf("hwaddr = %s, %s; want equal, 00:16:3e prefix", a, b)
	}
	if hwaddr("pve1", 101, 0) == a || hwaddr("pve1", 100, 1) == a {
		t.Error("hwaddr does not depend on the ID and salt")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/srv/my\040data`); got != "/srv/my data" {
		t.Errorf("unescapeMount = %q", got)
	}
}
