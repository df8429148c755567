// Package datavol lays out an instance's data volume: the one host
// directory that outlives every container. The host writes the
// configuration and the one-shot admin secrets here before a container
// first starts; the template's first-boot and bootstrap units take it from
// there (docs/architecture.md, "Inside a template").
package datavol

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"go.yaml.in/yaml/v3"
)

// Paths inside the data volume, relative to its root.
const (
	ConfigFile        = "config/config.yml"
	AdminEnvFile      = "secrets/admin.env"
	AdminPasswordFile = "secrets/admin-password"
	MCPTokenFile      = "secrets/mcp-token"
	SQLiteFile        = "db/vikunja.db"
	FilesDir          = "files"
)

// Database types, as Vikunja's database.type.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Database is where Vikunja keeps its data.
type Database struct {
	Type     string
	Host     string // host:port, for postgres and mysql
	Name     string
	User     string
	Password string
	SSLMode  string // postgres only
}

// Admin is the first user, created by the template's bootstrap unit.
type Admin struct {
	Username string
	Email    string
	Password string
}

// Settings is what the host decides for an instance.
type Settings struct {
	PublicURL string
	Database  Database
	Admin     Admin
	// Secret signs sessions. Both slots must share it or every swap logs
	// users out, so it is generated once and kept with the volume.
	Secret string
}

// Owner is the host uid/gid that the container's service user maps to.
type Owner struct{ UID, GID int }

// MountPoint is where templates expect the volume (manifest.DataVolume.Path).
const MountPoint = "/data"

// Write creates the volume's layout under root and writes Vikunja's config
// and the bootstrap secrets, each file replaced atomically and owned by
// owner with mode 0600. Existing data (database, files, tokens) is kept.
func Write(root string, s Settings, owner Owner) error {
	if s.Secret == "" {
		secret, err := NewSecret()
		if err != nil {
			return err
		}
		s.Secret = secret
	}
	for _, dir := range []string{"", "config", "secrets", "db", FilesDir} {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o750); err != nil {
			return fmt.Errorf("data volume %s: %w", root, err)
		}
		if err := os.Chown(p, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("data volume %s: %w", root, err)
		}
	}
	cfg, err := VikunjaConfig(s)
	if err != nil {
		return err
	}
	files := map[string][]byte{ConfigFile: cfg}
	if s.Admin.Username != "" {
		files[AdminEnvFile] = fmt.Appendf(nil, "ADMIN_USERNAME=%s\nADMIN_EMAIL=%s\n", s.Admin.Username, s.Admin.Email)
		files[AdminPasswordFile] = []byte(s.Admin.Password)
	}
	for name, content := range files {
		if err := atomicfile.WriteOwned(filepath.Join(root, name), content, 0o600, owner.UID, owner.GID); err != nil {
			return err
		}
	}
	return nil
}

// ReadSecret returns the session secret of an existing volume, so that a
// rewrite of its configuration keeps every session valid.
func ReadSecret(root string) (string, error) {
	s, err := ReadSettings(root)
	if err != nil {
		return "", err
	}
	if s.Secret == "" {
		return "", errors.New("data volume config has no service.secret")
	}
	return s.Secret, nil
}

// ReadSettings parses an existing volume's config.yml back into Settings,
// so that backups and restores reach the database the instance really
// uses. Admin stays empty: the one-shot admin secrets are not part of
// Vikunja's config.
func ReadSettings(root string) (Settings, error) {
	path := filepath.Join(root, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Settings{}, fmt.Errorf("read data volume config: %w", err)
	}
	s, err := ParseSettings(b)
	if err != nil {
		return Settings{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSettings parses a config.yml rendered by VikunjaConfig (read from a
// data volume or a backup archive).
func ParseSettings(b []byte) (Settings, error) {
	var c vikunjaConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Settings{}, fmt.Errorf("parse Vikunja config: %w", err)
	}
	return Settings{
		PublicURL: c.Service.PublicURL,
		Secret:    c.Service.Secret,
		Database: Database{
			Type:     c.Database.Type,
			Host:     c.Database.Host,
			Name:     c.Database.Database,
			User:     c.Database.User,
			Password: c.Database.Password,
			SSLMode:  c.Database.SSLMode,
		},
	}, nil
}

// NewSecret returns 32 random bytes, base64-encoded.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

type vikunjaConfig struct {
	Service struct {
		PublicURL          string `yaml:"publicurl"`
		Interface          string `yaml:"interface"`
		Secret             string `yaml:"secret"`
		EnableRegistration bool   `yaml:"enableregistration"`
	} `yaml:"service"`
	Database struct {
		Type     string `yaml:"type"`
		Path     string `yaml:"path,omitempty"`
		Host     string `yaml:"host,omitempty"`
		Database string `yaml:"database,omitempty"`
		User     string `yaml:"user,omitempty"`
		Password string `yaml:"password,omitempty"`
		SSLMode  string `yaml:"sslmode,omitempty"`
	} `yaml:"database"`
	Files struct {
		BasePath string `yaml:"basepath"`
	} `yaml:"files"`
}

// VikunjaConfig renders Vikunja's config.yml. It is produced by a YAML
// encoder, never by string templates, so no value can inject keys.
func VikunjaConfig(s Settings) ([]byte, error) {
	var c vikunjaConfig
	c.Service.PublicURL = s.PublicURL
	c.Service.Interface = ":3456"
	c.Service.Secret = s.Secret
	c.Database.Type = s.Database.Type
	switch s.Database.Type {
	case SQLite:
		c.Database.Path = filepath.Join(MountPoint, SQLiteFile)
	case Postgres, MySQL:
		c.Database.Host = s.Database.Host
		c.Database.Database = s.Database.Name
		c.Database.User = s.Database.User
		c.Database.Password = s.Database.Password
		if s.Database.Type == Postgres {
			c.Database.SSLMode = s.Database.SSLMode
			if c.Database.SSLMode == "" {
				c.Database.SSLMode = "disable"
			}
		}
	default:
		return nil, fmt.Errorf("database type %q: want sqlite, postgres or mysql", s.Database.Type)
	}
	c.Files.BasePath = filepath.Join(MountPoint, FilesDir)
	return yaml.Marshal(&c)
}
