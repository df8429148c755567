package pvesim

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// create is POST /nodes/{node}/lxc: checks that Proxmox makes before it
// forks the worker (ID free, permissions), then a vzcreate task.
func (s *Server) create(r *request) (any, error) {
	m := s.schema.method("/nodes/{node}/lxc", http.MethodPost)
	spec, conf, err := s.createSpec(r, m)
	if err != nil {
		return nil, err
	}
	used, _, err := s.vmids(r.ctx)
	if err != nil {
		return nil, err
	}
	if used[spec.ID] {
		return nil, errorf(http.StatusInternalServerError, "CT %d already exists on node '%s'", spec.ID, s.cfg.Node)
	}
	if err := s.lock(spec.ID, "create"); err != nil {
		return nil, err
	}
	return s.tasks.start(s.ctx, s.cfg.Node, "vzcreate", strconv.Itoa(spec.ID), r.user, func(ctx context.Context, t *task) error {
		defer s.unlock(spec.ID)
		t.logf("extracting archive '%s:vztmpl/%s'", spec.Template.Storage, spec.Template.Name)
		if err := s.cfg.Backend.Create(ctx, spec); err != nil {
			return fmt.Errorf("unable to create CT %d - %w", spec.ID, err)
		}
		s.mu.Lock()
		s.configs[spec.ID] = conf
		s.mu.Unlock()
		return nil
	}), nil
}

// createSpec turns create parameters (already valid for the schema) into
// a container spec and the config Proxmox would store. Parameters the
// simulator cannot honour are refused rather than ignored.
func (s *Server) createSpec(r *request, m *method) (hypervisor.ContainerSpec, map[string]any, error) {
	p := r.params
	id := s.vmid(r)
	spec := hypervisor.ContainerSpec{ID: id, MemoryMB: 512, SwapMB: 512, Hostname: fmt.Sprintf("CT%d", id)}
	conf := map[string]any{"arch": "amd64", "ostype": "debian", "hostname": spec.Hostname, "memory": 512, "swap": 512}
	var unsupported []string
	for name, v := range p {
		var err error
		switch {
		case name == "node" || name == "vmid":
		case name == "ostemplate":
			storage, rest, ok := strings.Cut(v, ":")
			tmpl, isTmpl := strings.CutPrefix(rest, "vztmpl/")
			if !ok || !isTmpl || strings.Contains(tmpl, "/") {
				err = errorf(http.StatusInternalServerError, "unable to parse volume ID '%s'", v)
			}
			spec.Template = hypervisor.TemplateRef{Storage: storage, Name: tmpl}
		case name == "hostname":
			spec.Hostname = v
			conf[name] = v
		case name == "cores":
			spec.Cores = atoi(v)
			conf[name] = spec.Cores
		case name == "memory":
			spec.MemoryMB = atoi(v)
			conf[name] = spec.MemoryMB
		case name == "swap":
			spec.SwapMB = atoi(v)
			conf[name] = spec.SwapMB
		case name == "onboot":
			spec.OnBoot = isTrue(v)
			conf[name] = boolInt(spec.OnBoot)
		case name == "unprivileged":
			if !isTrue(v) {
				err = errorf(http.StatusNotImplemented, "the simulator creates only unprivileged containers")
			}
			conf[name] = 1
		case name == "tags":
			for _, t := range tagSeparator.Split(v, -1) {
				if t != "" {
					spec.Tags = append(spec.Tags, t)
				}
			}
			conf[name] = strings.Join(spec.Tags, ";")
		case name == "description":
			spec.Description = v
			conf[name] = v
		case name == "rootfs":
			err = parseRootfs(&spec, m, v)
			conf[name] = fmt.Sprintf("%s:%d/vm-%d-disk-0.raw,size=%dG", spec.Storage, id, id, spec.RootfsGB)
		case name == "net0":
			var net0 string
			net0, err = parseNet0(&spec, m, v)
			conf[name] = net0
		case indexedName.MatchString(name) && strings.HasPrefix(name, "mp"):
			err = s.parseMount(&spec, r, m, name, v)
			conf[name] = v
		default:
			unsupported = append(unsupported, name)
		}
		if err != nil {
			return spec, nil, err
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return spec, nil, errorf(http.StatusNotImplemented, "the simulator does not implement create parameter(s) %s", strings.Join(unsupported, ", "))
	}
	if _, ok := p["unprivileged"]; !ok {
		return spec, nil, errorf(http.StatusNotImplemented, "the simulator creates only unprivileged containers (unprivileged=1)")
	}
	if spec.Storage == "" {
		return spec, nil, errorf(http.StatusNotImplemented, "the simulator needs an explicit rootfs")
	}
	if err := s.requireStorage(r.ctx, spec.Storage, "rootdir"); err != nil {
		return spec, nil, err
	}
	if spec.Cores == 0 {
		// Proxmox's default is "all the node's cores".
		n, _, err := s.node(r.ctx)
		if err != nil {
			return spec, nil, err
		}
		spec.Cores = n.Cores
	}
	return spec, conf, nil
}

func parseRootfs(spec *hypervisor.ContainerSpec, m *method, v string) error {
	kv, err := parsePropertyString("rootfs", v, m.param("rootfs").formatKeys)
	if err != nil {
		return err
	}
	if err := onlyKeys("rootfs", kv, "volume"); err != nil {
		return err
	}
	storage, size, _ := strings.Cut(kv["volume"], ":")
	gb, err := strconv.Atoi(size)
	if err != nil || gb < 1 {
		return errorf(http.StatusNotImplemented, "the simulator allocates rootfs only as STORAGE:GiB (whole GiB), got '%s'", kv["volume"])
	}
	spec.Storage, spec.RootfsGB = storage, gb
	return nil
}

// parseNet0 reads net0 and returns it as Proxmox stores it (with the
// generated hwaddr when none was given).
func parseNet0(spec *hypervisor.ContainerSpec, m *method, v string) (string, error) {
	kv, err := parsePropertyString("net0", v, m.param("net0").formatKeys)
	if err != nil {
		return "", err
	}
	if err := onlyKeys("net0", kv, "name", "bridge", "ip", "gw", "hwaddr", "type"); err != nil {
		return "", err
	}
	if kv["name"] != "eth0" || kv["bridge"] == "" {
		return "", errorf(http.StatusNotImplemented, "the simulator needs net0 with name=eth0 and a bridge")
	}
	spec.Net.Bridge = kv["bridge"]
	switch ip := kv["ip"]; ip {
	case "dhcp":
	case "", "manual":
		return "", errorf(http.StatusNotImplemented, "the simulator needs net0 ip=<CIDR> or ip=dhcp")
	default:
		spec.Net.Address = netip.MustParsePrefix(ip) // validated as pve-ipv4-config
	}
	if gw := kv["gw"]; gw != "" {
		spec.Net.Gateway = netip.MustParseAddr(gw) // validated as ipv4
	}
	if kv["hwaddr"] == "" {
		kv["hwaddr"] = randomHWAddr()
	}
	spec.Net.HWAddr = kv["hwaddr"]
	out := "name=eth0,bridge=" + kv["bridge"]
	for _, k := range []string{"gw", "hwaddr", "ip"} {
		if kv[k] != "" {
			out += "," + k + "=" + kv[k]
		}
	}
	return out + ",type=veth", nil
}

// parseMount reads mpN. A host path makes a bind mount, which Proxmox
// allows only root@pam to add (PVE::LXC::check_ct_modify_config_perm).
func (s *Server) parseMount(spec *hypervisor.ContainerSpec, r *request, m *method, name, v string) error {
	kv, err := parsePropertyString(name, v, m.param(name).formatKeys)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(kv["volume"], "/") {
		return errorf(http.StatusNotImplemented, "the simulator supports only bind mounts (a host path) in %s", name)
	}
	if r.user != RootUser {
		return errorf(http.StatusForbidden, "Permission check failed (mount point type bind is only allowed for root@pam)")
	}
	if err := onlyKeys(name, kv, "volume", "mp", "ro"); err != nil {
		return err
	}
	spec.Mounts = append(spec.Mounts, hypervisor.Mount{HostPath: kv["volume"], Path: kv["mp"], ReadOnly: isTrue(kv["ro"])})
	return nil
}

// atoi reads a value the schema validated as an integer.
func atoi(v string) int {
	n, _ := strconv.Atoi(v)
	return n
}

func onlyKeys(name string, kv map[string]string, allowed ...string) error {
	for k := range kv {
		if !contains(allowed, k) {
			return errorf(http.StatusNotImplemented, "the simulator does not implement %s option '%s'", name, k)
		}
	}
	return nil
}

// method returns the schema of one API method; it must exist.
func (s *schema) method(tmpl, name string) *method {
	_, _, methods, _ := s.lookup(splitPath(tmpl))
	return methods[name]
}
