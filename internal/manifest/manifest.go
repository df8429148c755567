// Package manifest defines the template manifest: what a template contains,
// recorded at build time and read by every host-side command (deploy checks
// minimum resources, upgrade lists the migrations it will run, health checks
// know the ports and endpoints). It travels inside the image as the label
// LabelManifest on the image config, so it can be read without pulling the
// rootfs, and as /etc/vkimg/template.json inside the rootfs.
package manifest

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/Masterminds/semver/v3"
)

// Labels on the OCI image config.
const (
	LabelManifest = "io.vkimg.manifest" // the whole Manifest as JSON
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelCreated  = "org.opencontainers.image.created"
	// PathInRootfs is where the builder writes the manifest in the rootfs.
	PathInRootfs = "etc/vkimg/template.json"
)

// SchemaVersion is bumped on incompatible changes to Manifest.
const SchemaVersion = 1

// Manifest describes one built template.
type Manifest struct {
	SchemaVersion int         `json:"schemaVersion"`
	Name          string      `json:"name"`    // recipe name, e.g. "vikunja"
	Version       string      `json:"version"` // template version, semver
	Created       string      `json:"created"` // RFC 3339, from SOURCE_DATE_EPOCH
	Recipe        RecipeRef   `json:"recipe"`
	Base          Base        `json:"base"`
	Components    []Component `json:"components"`
	// Migrations are the database migration IDs the backend contains, in
	// the order it applies them.
	Migrations []string   `json:"migrations"`
	Resources  Resources  `json:"resources"`
	DataVolume DataVolume `json:"dataVolume"`
}

// RecipeRef names the recipe a template was built from.
type RecipeRef struct {
	Name   string `json:"name"`
	Digest string `json:"digest"` // sha256 of the recipe file
}

// Base is the Debian base system.
type Base struct {
	Distribution string    `json:"distribution"` // "debian"
	Suite        string    `json:"suite"`        // "bookworm"
	Release      string    `json:"release"`      // "12"
	Arch         string    `json:"arch"`         // "amd64"
	Packages     []Package `json:"packages"`
}

// Package is one installed Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
}

// Component kinds.
const (
	KindBackend  = "backend"
	KindFrontend = "frontend"
	KindMCP      = "mcp"
)

// Component is one of backend, frontend, MCP server.
type Component struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	Source  string `json:"source"`           // where it came from, human-readable
	Digest  string `json:"digest,omitempty"` // sha256 of the artifact as fetched or built
	// EmbeddedIn names the component that serves this one (a frontend
	// embedded in the backend binary); empty when it has its own service.
	EmbeddedIn string   `json:"embeddedIn,omitempty"`
	Ports      []Port   `json:"ports,omitempty"`
	Health     []Health `json:"health,omitempty"`
	Units      []string `json:"units,omitempty"` // systemd units that run it
	User       string   `json:"user,omitempty"`  // the non-root user it runs as
}

// Port is a TCP port a component listens on inside the container.
type Port struct {
	Name string `json:"name"`
	Port int    `json:"port"`
}

// Health check kinds.
const (
	HealthHTTP    = "http"    // GET Path on Port answers 200 (and Contains, if set)
	HealthVersion = "version" // GET Path answers JSON whose "version" is the component's
	HealthPage    = "page"    // GET Path answers an HTML page with real content
	HealthMCP     = "mcp"     // MCP initialize handshake over Streamable HTTP at Path
)

// Health is one health check of a component.
type Health struct {
	Kind     string `json:"kind"`
	Port     int    `json:"port"`
	Path     string `json:"path"`
	Contains string `json:"contains,omitempty"`
}

// Resources are the minimums a container from this template needs.
type Resources struct {
	MinCores    int `json:"minCores"`
	MinMemoryMB int `json:"minMemoryMB"`
	MinDiskGB   int `json:"minDiskGB"`
}

// DataVolume describes the bind-mounted instance data volume.
type DataVolume struct {
	Path string `json:"path"` // mount point inside the container
	UID  int    `json:"uid"`  // owner inside the container
	GID  int    `json:"gid"`
}

// Parse decodes and validates a manifest.
func Parse(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse template manifest: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields every consumer relies on.
func (m *Manifest) Validate() error {
	if m.SchemaVersion != SchemaVersion {
		return fmt.Errorf("template manifest: schema version %d, this vkimg understands %d", m.SchemaVersion, SchemaVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("template manifest: no name")
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return fmt.Errorf("template manifest: version %q is not semver: %w", m.Version, err)
	}
	if m.Component(KindBackend) == nil {
		return fmt.Errorf("template manifest: no backend component")
	}
	if m.DataVolume.Path == "" {
		return fmt.Errorf("template manifest: no data volume path")
	}
	return nil
}

// Component returns the first component of kind, or nil.
func (m *Manifest) Component(kind string) *Component {
	for i := range m.Components {
		if m.Components[i].Kind == kind {
			return &m.Components[i]
		}
	}
	return nil
}

// NewMigrations lists the migrations in m that installed (the manifest of
// the running template) does not contain: what an upgrade will run.
func (m *Manifest) NewMigrations(installed *Manifest) []string {
	var out []string
	for _, id := range m.Migrations {
		if !slices.Contains(installed.Migrations, id) {
			out = append(out, id)
		}
	}
	return out
}
