package hypervisor

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func testCluster() Cluster {
	return Cluster{
		Nodes: []Node{{
			Name: "pve1", Online: true, Cores: 4, MemTotalMB: 8192, MemFreeMB: 4096,
			Storages: []Storage{
				{Name: "local", Content: []string{"vztmpl", "backup"}, Active: true, FreeMB: 50000},
				{Name: "local-lvm", Content: []string{"rootdir", "images"}, Active: true, FreeMB: 50000},
				{Name: "small", Content: []string{"rootdir"}, Active: true, FreeMB: 1000},
				{Name: "offline", Content: []string{"rootdir"}, Active: false, FreeMB: 50000},
			},
			Bridges: []Bridge{
				{Name: "vmbr0", Prefix: netip.MustParsePrefix("10.0.0.1/24")},
				{Name: "vmbr1"},
			},
		}},
		Containers: []Container{
			{ID: 100, Name: "vikunja-blue", Node: "pve1",
				Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, HWAddrs: []string{"00:16:3e:00:00:01"}},
			{ID: 101, Name: "other", Node: "pve2"},
		},
	}
}

func goodSpec() ContainerSpec {
	return ContainerSpec{
		ID: 200, Hostname: "vikunja-green",
		Template: TemplateRef{Storage: "local", Name: "debian-12-vikunja_1.0.0-1_amd64.tar.zst"},
		Cores:    2, MemoryMB: 1024, SwapMB: 512, RootfsGB: 8, Storage: "local-lvm",
		Net: Net{Bridge: "vmbr0", Address: netip.MustParsePrefix("10.0.0.11/24"),
			Gateway: netip.MustParseAddr("10.0.0.1")},
		Mounts: []Mount{{HostPath: "/var/lib/vkimg/instances/vikunja/data", Path: "/data"}},
		Tags:   []string{"vkimg", "slot-green"},
		Min:    Minimums{Cores: 1, MemoryMB: 512, RootfsGB: 4},
	}
}

func TestValidateSpec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*ContainerSpec)
		field  string // "" means valid
		reason string // part of the reason
	}{
		{"valid", func(*ContainerSpec) {}, "", ""},
		{"dhcp", func(s *ContainerSpec) { s.Net.Address, s.Net.Gateway = netip.Prefix{}, netip.Addr{} }, "", ""},
		{"bridge without subnet", func(s *ContainerSpec) {
			s.Net.Bridge = "vmbr1"
			s.Net.Address = netip.MustParsePrefix("192.168.5.7/24")
			s.Net.Gateway = netip.MustParseAddr("192.168.5.1")
		}, "", ""},
		{"fqdn hostname", func(s *ContainerSpec) { s.Hostname = "tasks.example.org" }, "", ""},
		{"explicit node", func(s *ContainerSpec) { s.Node = "pve1" }, "", ""},
		{"id too small", func(s *ContainerSpec) { s.ID = 99 }, "id", "outside 100..999999999"},
		{"id too large", func(s *ContainerSpec) { s.ID = 1000000000 }, "id", "outside"},
		{"id used on another node", func(s *ContainerSpec) { s.ID = 101 }, "id", "already used by container \"other\" on node pve2"},
		{"no hostname", func(s *ContainerSpec) { s.Hostname = "" }, "hostname", "required"},
		{"bad hostname", func(s *ContainerSpec) { s.Hostname = "under_score" }, "hostname", "not a valid DNS name"},
		{"hostname leading hyphen", func(s *ContainerSpec) { s.Hostname = "-x" }, "hostname", "not a valid DNS name"},
		{"hostname label too long", func(s *ContainerSpec) { s.Hostname = strings.Repeat("a", 64) }, "hostname", "not a valid DNS name"},
		{"hostname taken", func(s *ContainerSpec) { s.Hostname = "Vikunja-Blue" }, "hostname", "already used by container 100"},
		{"no template", func(s *ContainerSpec) { s.Template.Name = "" }, "template", "required"},
		{"zero cores", func(s *ContainerSpec) { s.Cores = 0 }, "cores", "must be positive"},
		{"memory below minimum", func(s *ContainerSpec) { s.MemoryMB = 256 }, "memory",
			"memory 256 MB is below the template's minimum 512 MB: use --memory 512 or more"},
		{"cores below minimum", func(s *ContainerSpec) { s.Min.Cores = 4 }, "cores", "use --cores 4 or more"},
		{"disk below minimum", func(s *ContainerSpec) { s.RootfsGB = 2 }, "rootfs", "use --disk 4 or more"},
		{"negative swap", func(s *ContainerSpec) { s.SwapMB = -1 }, "swap", "negative"},
		{"unknown storage", func(s *ContainerSpec) { s.Storage = "nfs" }, "storage", "not a storage on node pve1"},
		{"storage without rootdir", func(s *ContainerSpec) { s.Storage = "local" }, "storage", "does not hold container root disks"},
		{"inactive storage", func(s *ContainerSpec) { s.Storage = "offline" }, "storage", "not active"},
		{"storage too small", func(s *ContainerSpec) { s.Storage = "small" }, "storage", "1000 MB free, the root disk needs 8192 MB"},
		{"unknown node", func(s *ContainerSpec) { s.Node = "pve9" }, "node", "not in the cluster"},
		{"unknown bridge", func(s *ContainerSpec) { s.Net.Bridge = "vmbr9" }, "net.bridge", "not a bridge on node pve1"},
		{"no bridge", func(s *ContainerSpec) { s.Net.Bridge = "" }, "net.bridge", "required"},
		{"address outside subnet", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.1.5/24") },
			"net.address", "not inside bridge vmbr0's subnet 10.0.0.0/24"},
		{"address with other prefix length", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.0.5/16") },
			"net.address", "not inside"},
		{"network address", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.0.0/24") }, "net.address", "network or broadcast"},
		{"broadcast address", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.0.255/24") }, "net.address", "network or broadcast"},
		{"bridge's own address", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.0.1/24") }, "net.address", "bridge vmbr0's own address"},
		{"gateway's address", func(s *ContainerSpec) {
			s.Net.Address = netip.MustParsePrefix("10.0.0.20/24")
			s.Net.Gateway = netip.MustParseAddr("10.0.0.20")
		}, "net.address", "the gateway's address"},
		{"address in use", func(s *ContainerSpec) { s.Net.Address = netip.MustParsePrefix("10.0.0.10/24") },
			"net.address", "already used by container 100 (vikunja-blue)"},
		{"gateway outside subnet", func(s *ContainerSpec) { s.Net.Gateway = netip.MustParseAddr("10.9.9.1") }, "net.gateway", "not inside the subnet"},
		{"gateway with dhcp", func(s *ContainerSpec) { s.Net.Address = netip.Prefix{} }, "net.gateway", "needs a static address"},
		{"bad mac", func(s *ContainerSpec) { s.Net.HWAddr = "zz:16:3e:00:00:01" }, "net.hwaddr", "not a MAC"},
		{"multicast mac", func(s *ContainerSpec) { s.Net.HWAddr = "01:16:3e:00:00:01" }, "net.hwaddr", "multicast"},
		{"mac in use", func(s *ContainerSpec) { s.Net.HWAddr = "00:16:3E:00:00:01" }, "net.hwaddr", "already used by container 100"},
		{"bad tag", func(s *ContainerSpec) { s.Tags = []string{"has space"} }, "tags", "not a valid tag"},
		{"relative host path", func(s *ContainerSpec) { s.Mounts[0].HostPath = "data" }, "mounts[0]", "host path \"data\" is not absolute"},
		{"unclean host path", func(s *ContainerSpec) { s.Mounts[0].HostPath = "/srv/x/../data" }, "mounts[0]", "not clean"},
		{"root host path", func(s *ContainerSpec) { s.Mounts[0].HostPath = "/" }, "mounts[0]", "host path is /"},
		{"host /etc", func(s *ContainerSpec) { s.Mounts[0].HostPath = "/etc/vkimg" }, "mounts[0]", "overlaps the system directory /etc"},
		{"host parent of system dir", func(s *ContainerSpec) { s.Mounts[0].HostPath = "/var/lib" }, "mounts[0]", "overlaps the system directory /var/lib/lxc"},
		{"container /usr", func(s *ContainerSpec) { s.Mounts[0].Path = "/usr/local" }, "mounts[0]", "container path /usr/local overlaps"},
		{"container root", func(s *ContainerSpec) { s.Mounts[0].Path = "/" }, "mounts[0]", "container path is /"},
		{"mounted twice", func(s *ContainerSpec) {
			s.Mounts = append(s.Mounts, Mount{HostPath: "/srv/other", Path: "/data"})
		}, "mounts[1]", "mounted twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := goodSpec()
			s.Mounts = append([]Mount(nil), s.Mounts...)
			tc.mutate(&s)
			err := ValidateSpec(s, testCluster())
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ValidateSpec: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ValidateSpec = %v, want ErrInvalidSpec", err)
			}
			var se *SpecError
			for _, e := range unjoin(err) {
				if errors.As(e, &se) && se.Field == tc.field && strings.Contains(se.Reason, tc.reason) {
					return
				}
			}
			t.Fatalf("ValidateSpec = %v\nwant field %q with reason containing %q", err, tc.field, tc.reason)
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestValidateSpecNeedsNodeInMultiNodeCluster(t *testing.T) {
	c := testCluster()
	c.Nodes = append(c.Nodes, Node{Name: "pve2", Online: true})
	err := ValidateSpec(goodSpec(), c)
	var se *SpecError
	if !errors.As(err, &se) || se.Field != "node" {
		t.Fatalf("ValidateSpec without node on two nodes = %v, want a node error", err)
	}
}

func TestSpecErrorMessage(t *testing.T) {
	s := goodSpec()
	s.MemoryMB = 256
	err := ValidateSpec(s, testCluster())
	want := "invalid container spec: memory: memory 256 MB is below the template's minimum 512 MB: use --memory 512 or more"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
}

func TestReserved(t *testing.T) {
	for _, tc := range []struct {
		addr, subnet string
		want         bool
	}{
		{"10.0.0.0", "10.0.0.0/24", true},
		{"10.0.0.255", "10.0.0.0/24", true},
		{"10.0.0.254", "10.0.0.0/24", false},
		{"10.0.3.255", "10.0.0.0/22", true},
		{"10.0.1.255", "10.0.0.0/22", false},
		{"10.0.0.1", "10.0.0.0/31", false},
		{"fd00::", "fd00::/64", false},
	} {
		if got := reserved(netip.MustParseAddr(tc.addr), netip.MustParsePrefix(tc.subnet)); got != tc.want {
			t.Errorf("reserved(%s, %s) = %v, want %v", tc.addr, tc.subnet, got, tc.want)
		}
	}
}
