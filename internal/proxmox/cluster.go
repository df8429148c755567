package proxmox

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

type resource struct {
	Type   string    `json:"type"`
	Node   string    `json:"node"`
	Status string    `json:"status"`
	VMID   flexInt   `json:"vmid"`
	Name   string    `json:"name"`
	Tags   string    `json:"tags"`
	MaxCPU flexInt   `json:"maxcpu"`
	CPU    flexFloat `json:"cpu"`
	MaxMem flexInt   `json:"maxmem"`
	Mem    flexInt   `json:"mem"`
}

// Cluster implements hypervisor.Hypervisor: every node with its storages
// and bridges, and every container with the addresses it is configured
// with and, when running, those it has.
func (c *Client) Cluster(ctx context.Context) (hypervisor.Cluster, error) {
	var cl hypervisor.Cluster
	var err error
	if cl.Version, err = c.Version(ctx); err != nil {
		return cl, fmt.Errorf("cluster: %w", err)
	}
	var res []resource
	if err := c.api.Get(ctx, "/cluster/resources", &res); err != nil {
		return cl, wrap(err, "cluster resources")
	}
	for _, r := range res {
		switch r.Type {
		case "node":
			n := hypervisor.Node{Name: r.Node, Online: r.Status == "online"}
			if n.Online {
				if err := c.nodeDetails(ctx, &n); err != nil {
					return cl, err
				}
			}
			cl.Nodes = append(cl.Nodes, n)
		case "lxc":
			ct := hypervisor.Container{ID: int(r.VMID), Name: r.Name, Node: r.Node, State: hypervisor.State(r.Status), Tags: splitTags(r.Tags)}
			if err := c.containerAddresses(ctx, &ct); err != nil {
				return cl, err
			}
			cl.Containers = append(cl.Containers, ct)
		}
	}
	return cl, nil
}

func (c *Client) nodeDetails(ctx context.Context, n *hypervisor.Node) error {
	var st struct {
		CPU     flexFloat `json:"cpu"`
		CPUInfo struct {
			CPUs flexInt `json:"cpus"`
		} `json:"cpuinfo"`
		Memory struct {
			Total flexInt `json:"total"`
			Free  flexInt `json:"free"`
		} `json:"memory"`
	}
	if err := c.api.Get(ctx, "/nodes/"+n.Name+"/status", &st); err != nil {
		return wrap(err, "status of node %s", n.Name)
	}
	n.Cores, n.CPUUsage = int(st.CPUInfo.CPUs), float64(st.CPU)
	n.MemTotalMB, n.MemFreeMB = int(st.Memory.Total>>20), int(st.Memory.Free>>20)

	var storages []struct {
		Storage string  `json:"storage"`
		Type    string  `json:"type"`
		Content string  `json:"content"`
		Total   flexInt `json:"total"`
		Avail   flexInt `json:"avail"`
		Active  flexInt `json:"active"`
		Shared  flexInt `json:"shared"`
	}
	if err := c.api.Get(ctx, "/nodes/"+n.Name+"/storage", &storages); err != nil {
		return wrap(err, "storages of node %s", n.Name)
	}
	for _, s := range storages {
		n.Storages = append(n.Storages, hypervisor.Storage{
			Name: s.Storage, Type: s.Type, Content: strings.Split(s.Content, ","),
			TotalMB: int64(s.Total >> 20), FreeMB: int64(s.Avail >> 20), Active: s.Active != 0, Shared: s.Shared != 0,
		})
	}

	var ifaces []struct {
		Iface string `json:"iface"`
		Type  string `json:"type"`
		CIDR  string `json:"cidr"`
	}
	if err := c.api.Get(ctx, "/nodes/"+n.Name+"/network?type=any_bridge", &ifaces); err != nil {
		return wrap(err, "network of node %s", n.Name)
	}
	for _, i := range ifaces {
		b := hypervisor.Bridge{Name: i.Iface}
		if p, err := netip.ParsePrefix(i.CIDR); err == nil {
			b.Prefix = p
		}
		n.Bridges = append(n.Bridges, b)
	}
	return nil
}

// containerAddresses fills in what a container's net0 is configured with
// and, when it runs, the addresses it has (a DHCP lease, for one).
func (c *Client) containerAddresses(ctx context.Context, ct *hypervisor.Container) error {
	var conf struct {
		Net0 string `json:"net0"`
	}
	if err := c.api.Get(ctx, fmt.Sprintf("/nodes/%s/lxc/%d/config", ct.Node, ct.ID), &conf); err != nil {
		return wrap(err, "config of container %d", ct.ID)
	}
	for _, kv := range strings.Split(conf.Net0, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			if p, err := netip.ParsePrefix(v); err == nil {
				ct.Addresses = append(ct.Addresses, p.Addr())
			}
		case "hwaddr":
			ct.HWAddrs = append(ct.HWAddrs, v)
		}
	}
	if ct.State != hypervisor.StateRunning || ct.Node != "" && ct.Node != c.node {
		return nil
	}
	live, err := c.Addresses(ctx, ct.ID)
	if err != nil {
		return err
	}
	for _, a := range live {
		if !containsAddr(ct.Addresses, a) {
			ct.Addresses = append(ct.Addresses, a)
		}
	}
	return nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
