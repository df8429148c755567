// Package deployconfig holds the answers an administrator gives `vkimg
// deploy` — from flags, a YAML answers file or the wizard — checks them
// before anything changes (spec FR-011), and turns them into what the rest
// of vkimg consumes: the data volume's settings and the instance
// configuration file (FR-010) that every later command reads.
package deployconfig

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"strings"

	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
)

// Answers is everything deploy needs to know about a new instance. The
// YAML keys are those of docs/answers.example.yaml.
type Answers struct {
	// Name identifies the instance on the host (directories, container
	// hostnames, nginx site): a lowercase DNS label.
	Name     string   `yaml:"name"`
	Template Template `yaml:"template"`
	Database Database `yaml:"database"`
	// URL is the public address users type: "https://tasks.example.org" or
	// just the domain "tasks.example.org" (then https is assumed).
	URL       string    `yaml:"url"`
	Admin     Admin     `yaml:"admin"`
	Resources Resources `yaml:"resources"`
	Network   Network   `yaml:"network"`
	Ports     Ports     `yaml:"ports"`
	TLS       TLS       `yaml:"tls"`
	Storage   Storage   `yaml:"storage"`
	// Node is the cluster node to deploy on; empty for a single node.
	Node string `yaml:"node,omitempty"`

	// origin maps a YAML key path to "file:line", so that a refusal of a
	// value read from a file says where to fix it.
	origin map[string]string
}

// Template says which template to deploy.
type Template struct {
	// Source is a registry repository ("registry.example.org/vkimg/vikunja")
	// or the path of a local OCI image layout; empty means the templates
	// shipped with vkimg ($VKIMG_ROOT/templates).
	Source string `yaml:"source"`
	// Version is the channel "main" or a semantic version constraint
	// ("2.5.0", "^2.5", ">= 2.4, < 3").
	Version string `yaml:"version"`
}

// Database is where Vikunja keeps its data. Host, port, name, user and
// password only matter for postgres and mysql.
type Database struct {
	Type         string `yaml:"type"`
	Host         string `yaml:"host,omitempty"`
	Port         int    `yaml:"port,omitempty"`
	Name         string `yaml:"name,omitempty"`
	User         string `yaml:"user,omitempty"`
	Password     string `yaml:"password,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
	SSLMode      string `yaml:"sslmode,omitempty"`
}

// External reports whether the database is a server outside the container.
func (d Database) External() bool { return d.Type == datavol.Postgres || d.Type == datavol.MySQL }

// Addr is host:port.
func (d Database) Addr() string { return joinHostPort(d.Host, d.Port) }

// Admin is the first Vikunja user.
type Admin struct {
	Email        string `yaml:"email"`
	Username     string `yaml:"username"`
	Password     string `yaml:"password,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
	// PasswordGenerated is set when vkimg chose the password: it must be
	// shown to the administrator once, as it is stored nowhere readable.
	PasswordGenerated bool `yaml:"-"`
}

// Resources are the container's sizes.
type Resources struct {
	Cores    int `yaml:"cores"`
	MemoryMB int `yaml:"memory_mb"`
	DiskGB   int `yaml:"disk_gb"`
}

// DHCP is the Network.Address value asking for addresses from DHCP.
const DHCP = "dhcp"

// Network is the containers' single interface. Each instance has two
// slots (blue/green), each a container with its own address.
type Network struct {
	Bridge string `yaml:"bridge"`
	// Address is slot A's address with prefix length ("192.0.2.10/24"), or
	// "dhcp".
	Address string `yaml:"address"`
	// AddressB is slot B's address; empty means the one after Address.
	AddressB string `yaml:"address_b,omitempty"`
	Gateway  string `yaml:"gateway,omitempty"`
}

// Ports are where the node's nginx listens for the instance.
type Ports struct {
	HTTP  int `yaml:"http"`
	HTTPS int `yaml:"https"`
}

// TLS is the certificate nginx serves: the administrator's files, or a
// self-signed one generated for the domain.
type TLS struct {
	Certificate string `yaml:"certificate,omitempty"`
	Key         string `yaml:"key,omitempty"`
	SelfSigned  bool   `yaml:"self_signed,omitempty"`
}

// Storage names the hypervisor storages to use.
type Storage struct {
	Rootfs   string `yaml:"rootfs"`
	Template string `yaml:"template"`
}

// Defaults fills every unset answer that has a sensible default. Sizes
// default to at least the template's minimums.
func (a *Answers) Defaults(min hypervisor.Minimums) {
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setStr(&a.Template.Version, "main")
	setStr(&a.Database.Type, datavol.SQLite)
	if a.Database.External() {
		setInt(&a.Database.Port, defaultDBPort[a.Database.Type])
		setStr(&a.Database.Name, "vikunja")
		setStr(&a.Database.User, "vikunja")
		if a.Database.Type == datavol.Postgres {
			setStr(&a.Database.SSLMode, "disable")
		}
	}
	if a.Name == "" && a.URL != "" {
		// The first label of the domain is what most people would pick.
		if d, _, err := ParseURL(a.URL); err == nil {
			if first, _, _ := strings.Cut(d, "."); CheckName(first) == nil {
				a.Name = first
			}
		}
	}
	setStr(&a.Admin.Username, "admin")
	setInt(&a.Resources.Cores, max(2, min.Cores))
	setInt(&a.Resources.MemoryMB, max(1024, min.MemoryMB))
	setInt(&a.Resources.DiskGB, max(8, min.RootfsGB))
	setStr(&a.Network.Bridge, "vmbr0")
	setStr(&a.Network.Address, DHCP)
	setInt(&a.Ports.HTTP, 80)
	setInt(&a.Ports.HTTPS, 443)
	setStr(&a.Storage.Rootfs, "local-lvm")
	setStr(&a.Storage.Template, "local")
}

var defaultDBPort = map[string]int{datavol.Postgres: 5432, datavol.MySQL: 3306}

// Missing lists the keys that have no answer and no default, so that a
// run without a terminal can say exactly what to add. Call it after
// Defaults.
func (a *Answers) Missing() []string {
	var m []string
	need := func(ok bool, key string) {
		if !ok {
			m = append(m, describe(key))
		}
	}
	need(a.URL != "", "url")
	need(a.Name != "", "name")
	need(a.Admin.Email != "", "admin.email")
	if a.Database.External() {
		need(a.Database.Host != "", "database.host")
		need(a.Database.Password != "" || a.Database.PasswordFile != "", "database.password_file")
	}
	if a.Network.Address != DHCP {
		need(a.Network.Gateway != "", "network.gateway")
	}
	if !a.TLS.SelfSigned {
		need(a.TLS.Certificate != "", "tls.certificate")
		need(a.TLS.Key != "", "tls.key")
	}
	return m
}

// ReadSecrets fills the passwords from their files, and generates the
// admin password when none was given. It reports unreadable files.
func (a *Answers) ReadSecrets() error {
	var problems Problems
	read := func(key, path string, dst *string) {
		if path == "" || *dst != "" {
			return
		}
		pw, err := readSecretFile(path)
		if err != nil {
			problems.add(a, key, "%v", err)
			return
		}
		*dst = pw
	}
	read("database.password_file", a.Database.PasswordFile, &a.Database.Password)
	read("admin.password_file", a.Admin.PasswordFile, &a.Admin.Password)
	if a.Admin.Password == "" && a.Admin.PasswordFile == "" {
		pw, err := GeneratePassword()
		if err != nil {
			return err
		}
		a.Admin.Password, a.Admin.PasswordGenerated = pw, true
	}
	return problems.Err()
}

// readSecretFile reads a one-line secret; the trailing newline every
// editor adds is not part of it.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read password file: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("password file %s has more than one line", path)
	}
	return s, nil
}

const passwordAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// GeneratePassword returns a 24-character random password (about 140
// bits) without look-alike characters, since it is read off a screen.
func GeneratePassword() (string, error) {
	var b strings.Builder
	n := big.NewInt(int64(len(passwordAlphabet)))
	for range 24 {
		i, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		b.WriteByte(passwordAlphabet[i.Int64()])
	}
	return b.String(), nil
}
