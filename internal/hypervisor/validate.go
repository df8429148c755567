package hypervisor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Limits on container IDs, as Proxmox enforces them.
const (
	MinID = 100
	MaxID = 999999999
)

// SpecError is one reason a ContainerSpec is refused. It wraps
// ErrInvalidSpec so callers can tell refusals from failures.
type SpecError struct {
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("%s: %s: %s", ErrInvalidSpec, e.Field, e.Reason)
}

func (e *SpecError) Unwrap() error { return ErrInvalidSpec }

// systemDirs may never be bind-mounted from the host, nor be mount points
// inside the container: shadowing them breaks the host or the container.
var systemDirs = []string{
	"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
	"/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/lxc", "/var/lib/vz",
}

var (
	dnsLabel = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
	// Proxmox's pve-tag format.
	tagRe = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$`)
)

// ValidateSpec checks spec against the cluster before anything is created:
// every backend and the Proxmox client call it, so a bad spec is refused
// with the same reasons everywhere. It reports every problem it finds, each
// as a *SpecError naming the field.
//
// The target node is spec.Node, or the cluster's only node when empty.
func ValidateSpec(spec ContainerSpec, c Cluster) error {
	v := &validator{}
	node := v.node(spec, c)

	if spec.ID < MinID || spec.ID > MaxID {
		v.add("id", "%d is outside %d..%d", spec.ID, MinID, MaxID)
	}
	for _, ct := range c.Containers {
		if ct.ID == spec.ID {
			v.add("id", "%d is already used by container %q on node %s", spec.ID, ct.Name, ct.Node)
		}
	}
	v.hostname(spec.Hostname, c)
	if spec.Template.Storage == "" || spec.Template.Name == "" {
		v.add("template", "storage and name are required")
	}
	v.resource("cores", "cores", "", spec.Cores, spec.Min.Cores)
	v.resource("memory", "memory", " MB", spec.MemoryMB, spec.Min.MemoryMB)
	v.resource("rootfs", "disk", " GB", spec.RootfsGB, spec.Min.RootfsGB)
	if spec.SwapMB < 0 {
		v.add("swap", "%d MB is negative", spec.SwapMB)
	}
	if node != nil {
		v.storage(spec, node)
		v.net(spec, node, c)
	}
	v.hwaddr(spec, c)
	for _, t := range spec.Tags {
		if !tagRe.MatchString(t) {
			v.add("tags", "%q is not a valid tag (letters, digits, _ - + . and not starting with - + .)", t)
		}
	}
	v.mounts(spec.Mounts)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &SpecError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) node(spec ContainerSpec, c Cluster) *Node {
	if spec.Node == "" {
		if len(c.Nodes) == 1 {
			return &c.Nodes[0]
		}
		v.add("node", "the cluster has %d nodes: name the target node", len(c.Nodes))
		return nil
	}
	for i := range c.Nodes {
		if c.Nodes[i].Name == spec.Node {
			if !c.Nodes[i].Online {
				v.add("node", "%s is offline", spec.Node)
			}
			return &c.Nodes[i]
		}
	}
	v.add("node", "%q is not in the cluster", spec.Node)
	return nil
}

func (v *validator) hostname(name string, c Cluster) {
	if name == "" {
		v.add("hostname", "is required")
		return
	}
	if len(name) > 253 {
		v.add("hostname", "%q is longer than 253 characters", name)
		return
	}
	for _, l := range strings.Split(name, ".") {
		if !dnsLabel.MatchString(l) {
			v.add("hostname", "%q is not a valid DNS name (labels of letters, digits and inner hyphens, at most 63 characters)", name)
			return
		}
	}
	for _, ct := range c.Containers {
		if strings.EqualFold(ct.Name, name) {
			v.add("hostname", "%q is already used by container %d on node %s", name, ct.ID, ct.Node)
		}
	}
}

func (v *validator) resource(field, flag, unit string, got, least int) {
	switch {
	case got <= 0:
		v.add(field, "must be positive, got %d", got)
	case got < least:
		v.add(field, "%s %d%s is below the template's minimum %d%s: use --%s %d or more",
			field, got, unit, least, unit, flag, least)
	}
}

func (v *validator) storage(spec ContainerSpec, n *Node) {
	if spec.Storage == "" {
		v.add("storage", "is required")
		return
	}
	i := slices.IndexFunc(n.Storages, func(s Storage) bool { return s.Name == spec.Storage })
	if i < 0 {
		v.add("storage", "%q is not a storage on node %s", spec.Storage, n.Name)
		return
	}
	s := n.Storages[i]
	switch {
	case !s.Active:
		v.add("storage", "%q is not active on node %s", s.Name, n.Name)
	case !slices.Contains(s.Content, "rootdir"):
		v.add("storage", "%q does not hold container root disks (content %s)", s.Name, strings.Join(s.Content, ","))
	case spec.RootfsGB > 0 && s.FreeMB < int64(spec.RootfsGB)*1024:
		v.add("storage", "%q has %d MB free, the root disk needs %d MB", s.Name, s.FreeMB, spec.RootfsGB*1024)
	}
}

func (v *validator) net(spec ContainerSpec, n *Node, c Cluster) {
	nw := spec.Net
	if nw.Bridge == "" {
		v.add("net.bridge", "is required")
		return
	}
	i := slices.IndexFunc(n.Bridges, func(b Bridge) bool { return b.Name == nw.Bridge })
	if i < 0 {
		v.add("net.bridge", "%q is not a bridge on node %s", nw.Bridge, n.Name)
		return
	}
	br := n.Bridges[i]
	if nw.DHCP() {
		if nw.Gateway.IsValid() {
			v.add("net.gateway", "a gateway needs a static address")
		}
		return
	}
	addr := nw.Address.Addr()
	subnet := nw.Address.Masked()
	if br.Prefix.IsValid() {
		subnet = br.Prefix.Masked()
		if nw.Address.Bits() != br.Prefix.Bits() || !subnet.Contains(addr) {
			v.add("net.address", "%s is not inside bridge %s's subnet %s", nw.Address, br.Name, subnet)
			return
		}
		if addr == br.Prefix.Addr() {
			v.add("net.address", "%s is bridge %s's own address", addr, br.Name)
		}
	}
	if reserved(addr, subnet) {
		v.add("net.address", "%s is the network or broadcast address of %s", addr, subnet)
	}
	if nw.Gateway.IsValid() {
		switch {
		case !subnet.Contains(nw.Gateway):
			v.add("net.gateway", "%s is not inside the subnet %s", nw.Gateway, subnet)
		case reserved(nw.Gateway, subnet):
			v.add("net.gateway", "%s is the network or broadcast address of %s", nw.Gateway, subnet)
		case nw.Gateway == addr:
			v.add("net.address", "%s is the gateway's address", addr)
		}
	}
	for _, ct := range c.Containers {
		if ct.ID != spec.ID && slices.Contains(ct.Addresses, addr) {
			v.add("net.address", "%s is already used by container %d (%s) on node %s", addr, ct.ID, ct.Name, ct.Node)
		}
	}
}

// reserved reports whether a is the network or (IPv4) broadcast address of
// subnet; point-to-point prefixes (/31, /32) have neither.
func reserved(a netip.Addr, subnet netip.Prefix) bool {
	if !a.Is4() || subnet.Bits() >= 31 {
		return false
	}
	if a == subnet.Addr() {
		return true
	}
	b := subnet.Addr().As4()
	host := 32 - subnet.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return a == netip.AddrFrom4(b)
}

func (v *validator) hwaddr(spec ContainerSpec, c Cluster) {
	if spec.Net.HWAddr == "" {
		return
	}
	mac, err := net.ParseMAC(spec.Net.HWAddr)
	if err != nil || len(mac) != 6 {
		v.add("net.hwaddr", "%q is not a MAC address", spec.Net.HWAddr)
		return
	}
	if mac[0]&1 != 0 {
		v.add("net.hwaddr", "%s is a multicast address", mac)
	}
	for _, ct := range c.Containers {
		for _, h := range ct.HWAddrs {
			if ct.ID != spec.ID && strings.EqualFold(h, mac.String()) {
				v.add("net.hwaddr", "%s is already used by container %d", mac, ct.ID)
			}
		}
	}
}

func (v *validator) mounts(ms []Mount) {
	seen := map[string]bool{}
	for i, m := range ms {
		field := fmt.Sprintf("mounts[%d]", i)
		for _, p := range []struct{ what, path string }{{"host path", m.HostPath}, {"container path", m.Path}} {
			switch {
			case !path.IsAbs(p.path):
				v.add(field, "%s %q is not absolute", p.what, p.path)
			case path.Clean(p.path) != p.path:
				v.add(field, "%s %q is not clean (use %q)", p.what, p.path, path.Clean(p.path))
			case p.path == "/":
				v.add(field, "%s is /", p.what)
			default:
				if d, ok := overlapsSystemDir(p.path); ok {
					v.add(field, "%s %s overlaps the system directory %s", p.what, p.path, d)
				}
			}
		}
		if seen[m.Path] {
			v.add(field, "container path %s is mounted twice", m.Path)
		}
		seen[m.Path] = true
	}
}

func overlapsSystemDir(p string) (string, bool) {
	for _, d := range systemDirs {
		if within(p, d) || within(d, p) {
			return d, true
		}
	}
	return "", false
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
