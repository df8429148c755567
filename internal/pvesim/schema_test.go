package pvesim

import (
	"strings"
	"testing"
)

func createMethod(t *testing.T) *method {
	t.Helper()
	s, err := loadSchema(schemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	m := s.method("/nodes/{node}/lxc", "POST")
	if m == nil {
		t.Fatal("no POST /nodes/{node}/lxc in the schema")
	}
	return m
}

// validCreate is what vkimg's client sends to create a container.
func validCreate() map[string]string {
	return map[string]string{
		"node": "pve", "vmid": "101", "ostemplate": "local:vztmpl/debian-12-vikunja_1.0-1_amd64.tar.zst",
		"hostname": "vikunja-blue", "cores": "2", "memory": "1024", "swap": "512", "rootfs": "local-lvm:8",
		"net0":   "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,type=veth",
		"onboot": "1", "unprivileged": "1", "tags": "vkimg;blue", "description": "vkimg slot blue",
		"mp0": "/var/lib/vkimg/instances/a/data,mp=/data",
	}
}

func TestValidateAcceptsClientCreate(t *testing.T) {
	if errs := createMethod(t).validate(validCreate()); len(errs) > 0 {
		t.Fatalf("valid create refused: %v", errs)
	}
}

func TestValidateRefuses(t *testing.T) {
	m := createMethod(t)
	for _, tc := range []struct {
		param, value, want string
	}{
		{"bogus", "1", "property is not defined in schema"},
		{"memory", "lots", "type check ('integer') failed - got 'lots'"},
		{"memory", "8", "value must have a minimum value of 16"},
		{"vmid", "99", "value must have a minimum value of 100"},
		{"arch", "sparc", "does not have a value in the enumeration"},
		{"onboot", "maybe", "type check ('boolean') failed"},
		{"hostname", "bad_name!", "invalid format - value does not look like a valid DNS name"},
		{"net0", "bridge=vmbr0,ip=dhcp", "net0.name: property is missing and it is not optional"},
		{"net0", "name=eth0,ip=10.0.0.300/24", "net0.ip: invalid format"},
		{"net0", "name=eth0,speed=10", "net0.speed: property is not defined in schema"},
		{"net0", "name=eth0,hwaddr=01:00:00:00:00:01", "not look like a valid unicast MAC"},
		{"net32", "name=eth0", "property is not defined in schema"},
		{"mp01", "/srv,mp=/data", "property is not defined in schema"},
		{"mp0", "/srv,mp=/data/../etc", "illegal character sequences"},
		{"mp0", "/srv", "mp0.mp: property is missing"},
		{"tags", "ok;-bad", "invalid tag '-bad'"},
		{"rootfs", "local:8,size=big", "rootfs.size: invalid format"},
	} {
		p := validCreate()
		p[tc.param] = tc.value
		errs := m.validate(p)
		if !strings.Contains(errs[tc.param], tc.want) {
			t.Errorf("%s=%q: errors %v, want %q for %s", tc.param, tc.value, errs, tc.want, tc.param)
		}
	}
	p := validCreate()
	delete(p, "ostemplate")
	if got := m.validate(p)["ostemplate"]; got != "property is missing and it is not optional" {
		t.Errorf("missing ostemplate: %q", got)
	}
}

func TestValidateRequires(t *testing.T) {
	s, err := loadSchema(schemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	m := s.method("/nodes/{node}/storage/{storage}/upload", "POST")
	p := map[string]string{"node": "pve", "storage": "local", "content": "vztmpl", "filename": "a.tar.zst", "checksum": "ab"}
	if got := m.validate(p)["checksum-algorithm"]; !strings.Contains(got, "required by 'checksum'") {
		t.Errorf("checksum without algorithm: %q", got)
	}
}

func TestValidateOCIReference(t *testing.T) {
	s, err := loadSchema(schemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	m := s.method("/nodes/{node}/storage/{storage}/oci-registry-pull", "POST")
	for ref, ok := range map[string]bool{
		"127.0.0.1:5000/vkimg/vikunja:1.2.3": true,
		"ghcr.io/vkimg/vikunja:main":         true,
		"ghcr.io/vkimg/vikunja":              false, // Proxmox wants a tag
		"ghcr.io/vkimg/Vikunja:1":            false,
	} {
		errs := m.validate(map[string]string{"node": "pve", "storage": "local", "reference": ref})
		if (len(errs) == 0) != ok {
			t.Errorf("reference %q: errors %v, want accepted=%v", ref, errs, ok)
		}
	}
}

func TestLookupPrefersLiteralSegments(t *testing.T) {
	s, err := loadSchema(schemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, vars, _, ok := s.lookup(splitPath("/nodes/pve/lxc/100/status/current"))
	if !ok || tmpl != "/nodes/{node}/lxc/{vmid}/status/current" || vars["vmid"] != "100" || vars["node"] != "pve" {
		t.Errorf("lookup = %q %v %v", tmpl, vars, ok)
	}
	tmpl, vars, _, ok = s.lookup([]string{"nodes", "pve", "tasks", "UPID:pve:0001:0002:0003:vzcreate:100:root@pam:", "status"})
	if !ok || tmpl != "/nodes/{node}/tasks/{upid}/status" || !strings.HasPrefix(vars["upid"], "UPID:") {
		t.Errorf("task lookup = %q %v %v", tmpl, vars, ok)
	}
	if _, _, _, ok := s.lookup(splitPath("/nodes/pve/qemu")); ok {
		t.Error("a path outside the schema was found")
	}
}
