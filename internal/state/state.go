// Package state is the one place every vkimg command keeps what it knows
// about the node: where templates, the cache, instances, backups and logs
// live, the locks that keep two operations off one instance, and the
// journal that lets the next command finish or undo an interrupted one.
package state

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// DefaultDir is the state directory on a node.
const DefaultDir = "/var/lib/vkimg"

// DefaultLogDir is where per-instance operation logs go on a node.
const DefaultLogDir = "/var/log/vkimg"

// DefaultConfigDir holds the node's vkimg configuration (the trusted key).
const DefaultConfigDir = "/etc/vkimg"

// Root locates vkimg's state. Tests and non-root users point VKIMG_ROOT
// elsewhere; logs and configuration then live under it too, so a test
// never reads or writes the node's /etc or /var/log.
type Root struct {
	Dir       string
	LogDir    string
	ConfigDir string
}

// FromEnv returns the root named by VKIMG_ROOT, or the node default.
func FromEnv() Root {
	if dir := os.Getenv("VKIMG_ROOT"); dir != "" {
		return Root{Dir: dir, LogDir: filepath.Join(dir, "log"), ConfigDir: filepath.Join(dir, "etc")}
	}
	return Root{Dir: DefaultDir, LogDir: DefaultLogDir, ConfigDir: DefaultConfigDir}
}

// TrustedKey is the public key this node pins: templates must be signed
// with it.
func (r Root) TrustedKey() string { return filepath.Join(r.ConfigDir, "trusted.pub") }

// Templates is the local OCI image layout that holds built templates.
func (r Root) Templates() string { return filepath.Join(r.Dir, "templates") }

// Cache is the OCI layout of pulled, verified templates, keyed by digest.
func (r Root) Cache() string { return filepath.Join(r.Dir, "cache") }

// LXC is the plain-LXC backend's container and storage directory.
func (r Root) LXC() string { return filepath.Join(r.Dir, "lxc") }

// Instances is the directory holding one subdirectory per instance.
func (r Root) Instances() string { return filepath.Join(r.Dir, "instances") }

// Instance is the directory of one instance.
func (r Root) Instance(name string) string { return filepath.Join(r.Instances(), name) }

// DataVolume is the instance's data volume on the host.
func (r Root) DataVolume(name string) string { return filepath.Join(r.Instance(name), "data") }

// Backups is where the instance's backup archives are kept.
func (r Root) Backups(name string) string { return filepath.Join(r.Dir, "backups", name) }

// LogFile is the instance's operation log (FR-013).
func (r Root) LogFile(name string) string { return filepath.Join(r.LogDir, name+".log") }

var instanceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}[a-z0-9]$`)

// CheckInstanceName refuses names that could escape the state directory or
// break a hostname, a file name or an nginx config.
func CheckInstanceName(name string) error {
	if !instanceName.MatchString(name) {
		return fmt.Errorf("instance name %q: use 2-32 lowercase letters, digits and hyphens, starting with a letter", name)
	}
	return nil
}
