package lxc

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// CreateBridge makes a Linux bridge with prefix as its own address (for
// example 10.200.7.1/24) and brings it up. It adds no NAT: containers made
// from immutable templates need no outbound traffic. On error nothing is
// left behind.
func CreateBridge(name string, prefix netip.Prefix) error {
	if err := runIP("link", "add", name, "type", "bridge"); err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	for _, args := range [][]string{
		{"addr", "add", prefix.String(), "dev", name},
		{"link", "set", name, "up"},
	} {
		if err := runIP(args...); err != nil {
			_ = runIP("link", "del", name)
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
	}
	return nil
}

// DeleteBridge removes a bridge made by CreateBridge. The veth ends of
// running containers attached to it go with it.
func DeleteBridge(name string) error {
	if err := runIP("link", "del", name); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hostBridges lists the host's bridges with their first IPv4 address and
// subnet, which is what validation needs to place static addresses.
func hostBridges() ([]hypervisor.Bridge, error) {
	dirs, err := filepath.Glob("/sys/class/net/*/bridge")
	if err != nil {
		return nil, fmt.Errorf("list bridges: %w", err)
	}
	var out []hypervisor.Bridge
	for _, d := range dirs {
		name := filepath.Base(filepath.Dir(d))
		b := hypervisor.Bridge{Name: name}
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("bridge %s addresses: %w", name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Unmap().Is4() {
				continue
			}
			ones, _ := ipn.Mask.Size()
			b.Prefix = netip.PrefixFrom(ip.Unmap(), ones)
			break
		}
		out = append(out, b)
	}
	return out, nil
}
