package deployconfig

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

func externalAnswers(t *testing.T) *Answers {
	a := goodAnswers(t)
	a.Name = "tasks"
	a.Database = Database{Type: "postgres", Host: "192.0.2.5", Port: 5432, Name: "vikunja", User: "vikunja",
		Password: "db-secret-pw", SSLMode: "require"}
	a.Admin.Password = "admin-secret-pw"
	return a
}

func TestInstanceConfigRoundTripWithoutSecrets(t *testing.T) {
	a := externalAnswers(t)
	c, err := a.Instance()
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "https://tasks.example.org/" || c.Domain != "tasks.example.org" || c.Slots.A.Address != "192.0.2.10/24" ||
		c.Slots.B.Address != "192.0.2.11/24" || c.Network.Gateway != "192.0.2.1" || c.Ports.Backend != BackendPort ||
		c.Database.Host != "192.0.2.5" || c.Admin.Email != "admin@example.org" || c.Slots.Active != "a" {
		t.Errorf("instance config: %+v", c)
	}
	c.Slots.A.ID, c.Slots.B.ID, c.Slots.A.Version = 101, 102, "2.5.0"
	p := filepath.Join(t.TempDir(), "instance.yaml")
	if err := WriteInstance(p, c); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, secret := range []string{"db-secret-pw", "admin-secret-pw"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("instance config holds %q:\n%s", secret, b)
		}
	}
	back, err := ReadInstance(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, c)
	}

	dhcp := goodAnswers(t)
	dhcp.Network = Network{Bridge: "vmbr1", Address: DHCP}
	dc, err := dhcp.Instance()
	if err != nil || !dc.Network.DHCP || dc.Slots.A.Address != "" || dc.Database.Host != "" {
		t.Errorf("dhcp sqlite instance: %+v, %v", dc, err)
	}
}

func TestWriteInstanceKeepsTheAdministratorsComments(t *testing.T) {
	c, err := externalAnswers(t).Instance()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "instance.yaml")
	if err := WriteInstance(p, c); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(b), "# vkimg instance configuration") {
		t.Errorf("no header comment:\n%s", b)
	}
	edited := strings.Replace(string(b), "  cores: 2\n", "  # raised for the team, see ticket 42\n  cores: 4 # was 2\n", 1)
	if edited == string(b) {
		t.Fatalf("cores line not found:\n%s", b)
	}
	os.WriteFile(p, []byte(edited), 0o644)
	read, err := ReadInstance(p)
	if err != nil || read.Resources.Cores != 4 {
		t.Fatalf("edited file: %+v, %v", read, err)
	}
	read.Slots.B.ID = 202
	if err := WriteInstance(p, read); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	for _, want := range []string{"# raised for the team, see ticket 42\n  cores: 4 # was 2", "ct_id: 202", "# vkimg instance configuration"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("rewritten file lacks %q:\n%s", want, b)
		}
	}
	os.WriteFile(p, append(b, "typo_key: 1\n"...), 0o644)
	if _, err := ReadInstance(p); err == nil || !strings.Contains(err.Error(), `unknown key "typo_key"`) {
		t.Errorf("typo accepted: %v", err)
	}
}

func TestSettingsForTheDataVolume(t *testing.T) {
	s, err := externalAnswers(t).Settings("kept-secret")
	if err != nil {
		t.Fatal(err)
	}
	if s.PublicURL != "https://tasks.example.org/" || s.Secret != "kept-secret" || s.Database.Host != "192.0.2.5:5432" ||
		s.Database.Password != "db-secret-pw" || s.Database.SSLMode != "require" || s.Admin.Password != "admin-secret-pw" || s.Admin.Username != "admin" {
		t.Errorf("settings: %+v", s)
	}
	sqlite := goodAnswers(t)
	sqlite.Database.Host = "ignored"
	s, _ = sqlite.Settings("")
	if s.Database.Type != "sqlite" || s.Database.Host != "" {
		t.Errorf("sqlite settings: %+v", s.Database)
	}
}

func TestSlotSpecsGoThroughValidateSpec(t *testing.T) {
	c, err := externalAnswers(t).Instance()
	if err != nil {
		t.Fatal(err)
	}
	c.Slots.A.ID, c.Slots.B.ID = 201, 202
	cluster := hypervisor.Cluster{
		Nodes: []hypervisor.Node{{Name: "pve", Online: true,
			Storages: []hypervisor.Storage{{Name: "local-lvm", Content: []string{"rootdir"}, FreeMB: 100 * 1024, Active: true}},
			Bridges:  []hypervisor.Bridge{{Name: "vmbr0", Prefix: netip.MustParsePrefix("192.0.2.1/24")}}}},
		Containers: []hypervisor.Container{{ID: 150, Name: "other", Node: "pve", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.11")}}},
	}
	tmpl := hypervisor.TemplateRef{Storage: "local", Name: "debian-12-vikunja_2.5.0-1_amd64.tar.zst"}
	a, err := c.SlotSpec("a", tmpl, testMin, "/var/lib/vkimg/instances/tasks/data")
	if err != nil {
		t.Fatal(err)
	}
	if a.Hostname != "tasks-a" || !a.OnBoot || a.Net.Address.String() != "192.0.2.10/24" || a.Mounts[0].Path != "/data" ||
		!strings.Contains(a.Description, "https://tasks.example.org/") {
		t.Errorf("slot a spec: %+v", a)
	}
	if err := hypervisor.ValidateSpec(a, cluster); err != nil {
		t.Errorf("slot a refused: %v", err)
	}
	b, _ := c.SlotSpec("b", tmpl, testMin, "/var/lib/vkimg/instances/tasks/data")
	if b.OnBoot {
		t.Error("the idle slot starts on boot")
	}
	if err := hypervisor.ValidateSpec(b, cluster); err == nil || !strings.Contains(err.Error(), "192.0.2.11 is already used by container 150") {
		t.Errorf("slot b with a taken address: %v", err)
	}
	if _, err := c.SlotSpec("c", tmpl, testMin, "/x"); err == nil {
		t.Error("slot c accepted")
	}
}
