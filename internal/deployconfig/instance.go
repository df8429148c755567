package deployconfig

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
)

// Ports inside a template (docs/architecture.md, "Inside a template").
const (
	BackendPort  = 3456
	MCPPort      = 3457
	FrontendPort = 8080
)

// InstanceConfig is an instance's configuration file,
// $VKIMG_ROOT/instances/<name>/instance.yaml (FR-010): what deploy
// decided and what status, upgrade and reconfigure read. People edit it,
// so it holds no secrets — those stay 0600 on the data volume.
type InstanceConfig struct {
	Name      string           `yaml:"name"`
	URL       string           `yaml:"url"`
	Domain    string           `yaml:"domain"`
	Template  Template         `yaml:"template"`
	Database  InstanceDatabase `yaml:"database"`
	Admin     InstanceAdmin    `yaml:"admin"`
	Resources Resources        `yaml:"resources"`
	Network   InstanceNetwork  `yaml:"network"`
	Ports     InstancePorts    `yaml:"ports"`
	TLS       TLS              `yaml:"tls"`
	Storage   Storage          `yaml:"storage"`
	Node      string           `yaml:"node,omitempty"`
	Slots     Slots            `yaml:"slots"`
	// LastUpgrade is what `vkimg rollback` undoes; nil when there is
	// nothing to roll back to.
	LastUpgrade *Upgrade `yaml:"last_upgrade,omitempty"`
}

// Upgrade records the last upgrade: the slot it left (kept stopped for
// rollback), what the new version changed in the schema, and the backup
// taken with the old version before any migration.
type Upgrade struct {
	FromSlot    string    `yaml:"from_slot"`
	FromVersion string    `yaml:"from_version"`
	ToSlot      string    `yaml:"to_slot"`
	ToVersion   string    `yaml:"to_version"`
	Time        time.Time `yaml:"time"`
	// Migrations are the schema migrations the new version added: when
	// there are any, rolling back restores Backup.
	Migrations []string `yaml:"migrations,omitempty"`
	Backup     string   `yaml:"backup"`
}

// InstanceDatabase is Database without its password.
type InstanceDatabase struct {
	Type    string `yaml:"type"`
	Host    string `yaml:"host,omitempty"`
	Port    int    `yaml:"port,omitempty"`
	Name    string `yaml:"name,omitempty"`
	User    string `yaml:"user,omitempty"`
	SSLMode string `yaml:"sslmode,omitempty"`
}

// InstanceAdmin is Admin without its password.
type InstanceAdmin struct {
	Email    string `yaml:"email"`
	Username string `yaml:"username"`
}

// InstanceNetwork is what both slots share; their addresses are in Slots.
type InstanceNetwork struct {
	Bridge  string `yaml:"bridge"`
	DHCP    bool   `yaml:"dhcp"`
	Gateway string `yaml:"gateway,omitempty"`
}

// InstancePorts are nginx's ports on the node and the services' ports in
// every slot container.
type InstancePorts struct {
	HTTP     int `yaml:"http"`
	HTTPS    int `yaml:"https"`
	Backend  int `yaml:"backend"`
	Frontend int `yaml:"frontend"`
	MCP      int `yaml:"mcp"`
}

// Slots are the instance's two containers (blue/green).
type Slots struct {
	// Active is "a" or "b": the slot nginx sends traffic to.
	Active string `yaml:"active"`
	A      Slot   `yaml:"a"`
	B      Slot   `yaml:"b"`
}

// Slot is one container of an instance. ID and Address are settled at
// deploy time (an address read back from DHCP included), Version and
// Digest when a template is deployed into the slot.
type Slot struct {
	ID      int    `yaml:"ct_id,omitempty"`
	Address string `yaml:"address,omitempty"`
	Version string `yaml:"version,omitempty"`
	Digest  string `yaml:"digest,omitempty"`
}

// Slot returns slot "a" or "b".
func (s *Slots) Slot(name string) (*Slot, error) {
	switch name {
	case "a":
		return &s.A, nil
	case "b":
		return &s.B, nil
	}
	return nil, fmt.Errorf("slot %q: want a or b", name)
}

// Idle is the slot that is not active: where an upgrade goes, and what a
// rollback returns to.
func (s *Slots) Idle() string {
	if s.Active == "b" {
		return "a"
	}
	return "b"
}

// Instance turns validated answers into the instance configuration. Slot
// addresses are filled for static networks; container IDs, versions and
// DHCP addresses are the deployer's to add once known.
func (a *Answers) Instance() (*InstanceConfig, error) {
	domain, publicURL, err := ParseURL(a.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	c := &InstanceConfig{
		Name:      a.Name,
		URL:       publicURL,
		Domain:    domain,
		Template:  a.Template,
		Database:  InstanceDatabase{Type: a.Database.Type},
		Admin:     InstanceAdmin{Email: a.Admin.Email, Username: a.Admin.Username},
		Resources: a.Resources,
		Network:   InstanceNetwork{Bridge: a.Network.Bridge, DHCP: a.Network.Address == DHCP},
		Ports: InstancePorts{HTTP: a.Ports.HTTP, HTTPS: a.Ports.HTTPS,
			Backend: BackendPort, Frontend: FrontendPort, MCP: MCPPort},
		TLS:     a.TLS,
		Storage: a.Storage,
		Node:    a.Node,
		Slots:   Slots{Active: "a"},
	}
	if a.Database.External() {
		d := a.Database
		c.Database = InstanceDatabase{Type: d.Type, Host: d.Host, Port: d.Port, Name: d.Name, User: d.User, SSLMode: d.SSLMode}
	}
	if !c.Network.DHCP {
		sa, sb, gw, err := a.Network.SlotAddresses()
		if err != nil {
			return nil, err
		}
		c.Network.Gateway = gw.String()
		c.Slots.A.Address, c.Slots.B.Address = sa.String(), sb.String()
	}
	return c, nil
}

// Settings turns validated answers into the data volume's settings.
// secret is the volume's existing session secret, or "" for a new one.
func (a *Answers) Settings(secret string) (datavol.Settings, error) {
	_, publicURL, err := ParseURL(a.URL)
	if err != nil {
		return datavol.Settings{}, fmt.Errorf("url: %w", err)
	}
	d := a.Database
	s := datavol.Settings{
		PublicURL: publicURL,
		Database:  datavol.Database{Type: d.Type},
		Admin:     datavol.Admin{Username: a.Admin.Username, Email: a.Admin.Email, Password: a.Admin.Password},
		Secret:    secret,
	}
	if d.External() {
		s.Database = datavol.Database{Type: d.Type, Host: d.Addr(), Name: d.Name, User: d.User, Password: d.Password, SSLMode: d.SSLMode}
	}
	return s, nil
}

// ReadInstance reads an instance configuration file. Unknown keys are
// errors naming file:line: a typo must not silently drop a setting.
func ReadInstance(path string) (*InstanceConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read instance config: %w", err)
	}
	return ParseInstance(path, b)
}

// ParseInstance parses an instance configuration read from name (a file,
// or a member of a backup archive).
func ParseInstance(name string, b []byte) (*InstanceConfig, error) {
	c := &InstanceConfig{}
	if err := decodeStrict(name, b, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Answers are the deploy answers that make this instance again (restoring
// it on a node that does not have it): the same name, URL, template
// channel, database, resources, network and ports. The addresses are the
// same static ones (checked against the new node like any answer); a
// self-signed certificate is made anew.
func (c *InstanceConfig) Answers(dbPassword string) *Answers {
	a := &Answers{
		Name: c.Name, URL: c.URL, Template: c.Template,
		Database: Database{Type: c.Database.Type, Host: c.Database.Host, Port: c.Database.Port,
			Name: c.Database.Name, User: c.Database.User, SSLMode: c.Database.SSLMode},
		Admin:     Admin{Email: c.Admin.Email, Username: c.Admin.Username},
		Resources: c.Resources,
		Network:   Network{Bridge: c.Network.Bridge, Address: DHCP},
		Ports:     Ports{HTTP: c.Ports.HTTP, HTTPS: c.Ports.HTTPS},
		Storage:   c.Storage,
		Node:      c.Node,
	}
	if a.Database.External() {
		a.Database.Password = dbPassword
	}
	a.TLS = c.TLS
	if c.TLS.SelfSigned {
		// Made anew for this node: the old one's paths are not the answer.
		a.TLS = TLS{SelfSigned: true}
	}
	if !c.Network.DHCP {
		a.Network.Address, a.Network.AddressB, a.Network.Gateway = c.Slots.A.Address, c.Slots.B.Address, c.Network.Gateway
	}
	return a
}

const instanceHeader = `vkimg instance configuration (FR-010). Edit values, then run
"vkimg reconfigure NAME". Secrets (database and admin passwords, the
session secret) are not here: they live on the instance's data volume.`

// WriteInstance writes c to path atomically. When the file exists, the
// comments in it are kept: values change under them, so notes an
// administrator added survive every later command.
func WriteInstance(path string, c *InstanceConfig) error {
	var fresh yaml.Node
	if err := fresh.Encode(c); err != nil {
		return fmt.Errorf("encode instance config: %w", err)
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, HeadComment: instanceHeader, Content: []*yaml.Node{&fresh}}
	if old, err := os.ReadFile(path); err == nil {
		var prev yaml.Node
		if yaml.Unmarshal(old, &prev) == nil && prev.Kind == yaml.DocumentNode && len(prev.Content) == 1 {
			mergeNode(prev.Content[0], &fresh)
			doc = &prev
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("read instance config: %w", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encode instance config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode instance config: %w", err)
	}
	return atomicfile.Write(path, buf.Bytes(), 0o644)
}

// mergeNode makes dst carry src's values while keeping dst's comments.
// Keys follow src's order; keys src no longer has are dropped.
func mergeNode(dst, src *yaml.Node) {
	if dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		dst.Kind, dst.Tag, dst.Value, dst.Style, dst.Content = src.Kind, src.Tag, src.Value, src.Style, src.Content
		return
	}
	content := make([]*yaml.Node, 0, len(src.Content))
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		for j := 0; j+1 < len(dst.Content); j += 2 {
			if dst.Content[j].Value == k.Value {
				mergeNode(dst.Content[j+1], v)
				k, v = dst.Content[j], dst.Content[j+1]
				break
			}
		}
		content = append(content, k, v)
	}
	dst.Content = content
}

// SlotSpec is the container of one slot ("a" or "b") as the hypervisor
// creates it; hypervisor.ValidateSpec checks it against the cluster
// (addresses and IDs in use, storage, bridges). The slot's container ID
// must be assigned. Only the active slot starts on boot.
func (c *InstanceConfig) SlotSpec(slot string, tmpl hypervisor.TemplateRef, min hypervisor.Minimums, dataVolume string) (hypervisor.ContainerSpec, error) {
	s, err := c.Slots.Slot(slot)
	if err != nil {
		return hypervisor.ContainerSpec{}, err
	}
	spec := hypervisor.ContainerSpec{
		ID:       s.ID,
		Node:     c.Node,
		Hostname: c.Name + "-" + slot,
		Template: tmpl,
		Cores:    c.Resources.Cores,
		MemoryMB: c.Resources.MemoryMB,
		RootfsGB: c.Resources.DiskGB,
		Storage:  c.Storage.Rootfs,
		Net:      hypervisor.Net{Bridge: c.Network.Bridge},
		OnBoot:   slot == c.Slots.Active,
		Tags:     []string{"vkimg", "vkimg-" + c.Name, "slot-" + slot},
		Description: fmt.Sprintf("Vikunja %s\nslot %s, template %s\nmanaged by vkimg (instance %s): change it with vkimg reconfigure",
			c.URL, slot, cmp.Or(s.Version, c.Template.Version), c.Name),
		Mounts: []hypervisor.Mount{{HostPath: dataVolume, Path: datavol.MountPoint}},
		Min:    min,
	}
	if !c.Network.DHCP {
		addr, err := netip.ParsePrefix(s.Address)
		if err != nil {
			return spec, fmt.Errorf("slot %s address %q: %w", slot, s.Address, err)
		}
		gw, err := netip.ParseAddr(c.Network.Gateway)
		if err != nil {
			return spec, fmt.Errorf("gateway %q: %w", c.Network.Gateway, err)
		}
		spec.Net.Address, spec.Net.Gateway = addr, gw
	}
	return spec, nil
}
