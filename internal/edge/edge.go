// Package edge is the node's nginx: the only entry point to every instance.
// Each instance gets one site (TLS with the administrator's certificate,
// HTTP→HTTPS redirect, the app, its API and /mcp) and one upstream file that
// names the active slot. A flip rewrites only the upstream file, checks the
// whole configuration with `nginx -t`, reloads, and then proves through the
// edge itself that the new slot answers.
package edge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/net/idna"
)

// Proxy is what deploy, upgrade and rollback need from the edge.
type Proxy interface {
	// Apply creates or replaces the instance's site and upstream, and
	// returns once the edge serves the site's slot.
	Apply(ctx context.Context, s Site) error
	// Flip points the instance at another slot and returns once a request
	// through the edge was answered by that slot. If the new slot does not
	// answer, the flip is left in place and the error says so: whether to
	// flip back is the caller's decision.
	Flip(ctx context.Context, instance string, to Upstream) error
	// Drain waits until every request that was in flight before the last
	// Apply or Flip has finished, so the old slot can be stopped.
	Drain(ctx context.Context) error
	// Remove deletes the instance's site and upstream.
	Remove(ctx context.Context, instance string) error
	// Sites lists the instances the edge serves, with their current upstream.
	Sites(ctx context.Context) ([]Site, error)
}

// ErrInvalid is returned (wrapped) when a Site or Upstream is refused before
// anything was written.
var ErrInvalid = errors.New("invalid edge configuration")

// ErrNotFound is returned (wrapped) when the edge has no site for an instance.
var ErrNotFound = errors.New("no edge site for instance")

// ErrNotRunning is returned (wrapped) when the edge's nginx is not running,
// so a change was written but not loaded.
var ErrNotRunning = errors.New("nginx is not running")

// Default ports of the node's edge and of the services inside a template
// (docs/architecture.md, "Inside a template").
const (
	DefaultHTTPPort    = 80
	DefaultHTTPSPort   = 443
	DefaultAPIPort     = 3456
	DefaultMCPPort     = 3457
	DefaultMaxBodySize = 500 // MiB
)

// Site is one instance as the edge serves it.
type Site struct {
	Instance string `json:"instance"`
	// Domains are the server names; the first is the canonical one, used
	// for the edge's own checks. Internationalised names are accepted and
	// stored in their ASCII (punycode) form.
	Domains []string `json:"domains"`
	// HTTPPort and HTTPSPort default to 80 and 443. Proxmox's own pveproxy
	// listens on 8006, so the standard ports are normally free on a node.
	HTTPPort  int `json:"http_port"`
	HTTPSPort int `json:"https_port"`
	// Address is the local address to listen on; invalid (zero) means every
	// IPv4 and IPv6 address. Tests bind to 127.0.0.1.
	Address netip.Addr `json:"address,omitzero"`
	// CertFile and KeyFile are the administrator's certificate chain and
	// key (PEM). They are read by nginx's master process (root).
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// HSTS adds Strict-Transport-Security (two years). Off by default: a
	// self-signed or not-yet-trusted certificate combined with HSTS locks
	// browsers out with no way to click through.
	HSTS bool `json:"hsts,omitempty"`
	// MaxBodyMiB is nginx's client_max_body_size in MiB (default 500), the
	// largest attachment or import users can upload.
	MaxBodyMiB int `json:"max_body_mib"`
	// Upstream is the active slot. Sites reports the one in the upstream
	// file, which a Flip may have changed since Apply.
	Upstream Upstream `json:"upstream,omitzero"`
}

// Upstream is one slot's container as the edge reaches it.
type Upstream struct {
	Slot    string     `json:"slot"` // e.g. "blue"/"green"; named in the X-Vkimg-Slot header
	Address netip.Addr `json:"address"`
	// AppPort serves "/" when the frontend is separate static files (8080
	// in vkimg's templates); 0 means the frontend is embedded in the
	// backend, which then serves "/" too.
	AppPort int `json:"app_port,omitempty"`
	APIPort int `json:"api_port"` // default 3456
	MCPPort int `json:"mcp_port"` // default 3457
}

var slotName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,15}$`)

// withDefaults fills the zero ports; it never changes a value that was set.
func (u Upstream) withDefaults() Upstream {
	if u.APIPort == 0 {
		u.APIPort = DefaultAPIPort
	}
	if u.MCPPort == 0 {
		u.MCPPort = DefaultMCPPort
	}
	return u
}

// check validates an upstream whose defaults are filled.
func (u Upstream) check() error {
	if !slotName.MatchString(u.Slot) {
		return fmt.Errorf("%w: slot %q: use 1-16 lowercase letters, digits and hyphens, starting with a letter", ErrInvalid, u.Slot)
	}
	a := u.Address
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return fmt.Errorf("%w: slot %s: address %q is not a unicast container address", ErrInvalid, u.Slot, a)
	}
	for name, p := range map[string]int{"app port": u.AppPort, "API port": u.APIPort, "MCP port": u.MCPPort} {
		if p < 0 || p > 65535 || (p == 0 && name != "app port") {
			return fmt.Errorf("%w: slot %s: %s %d out of range", ErrInvalid, u.Slot, name, p)
		}
	}
	return nil
}

// appPort is where "/" goes: the separate frontend, or the backend that
// embeds it.
func (u Upstream) appPort() int {
	if u.AppPort != 0 {
		return u.AppPort
	}
	return u.APIPort
}

// normalize fills defaults, converts domains to ASCII and validates every
// value that ends up in nginx's configuration. Nothing is written before it
// succeeds, and everything it lets through is free of characters that mean
// something to nginx (whitespace, ; { } quotes $ # \).
func (s Site) normalize() (Site, error) {
	if err := validInstance(s.Instance); err != nil {
		return s, err
	}
	if len(s.Domains) == 0 {
		return s, fmt.Errorf("%w: instance %s: no domain", ErrInvalid, s.Instance)
	}
	domains := make([]string, 0, len(s.Domains))
	seen := map[string]bool{}
	for _, d := range s.Domains {
		ascii, err := Domain(d)
		if err != nil {
			return s, err
		}
		if seen[ascii] {
			return s, fmt.Errorf("%w: domain %q given twice", ErrInvalid, d)
		}
		seen[ascii] = true
		domains = append(domains, ascii)
	}
	s.Domains = domains
	if s.HTTPPort == 0 {
		s.HTTPPort = DefaultHTTPPort
	}
	if s.HTTPSPort == 0 {
		s.HTTPSPort = DefaultHTTPSPort
	}
	if s.HTTPPort < 1 || s.HTTPPort > 65535 || s.HTTPSPort < 1 || s.HTTPSPort > 65535 || s.HTTPPort == s.HTTPSPort {
		return s, fmt.Errorf("%w: listen ports %d (http) and %d (https): want two different ports 1-65535", ErrInvalid, s.HTTPPort, s.HTTPSPort)
	}
	if s.Address.IsValid() && (s.Address.Zone() != "" || s.Address.IsMulticast()) {
		return s, fmt.Errorf("%w: listen address %s", ErrInvalid, s.Address)
	}
	for field, p := range map[string]string{"certificate": s.CertFile, "key": s.KeyFile} {
		if err := checkPath(p); err != nil {
			return s, fmt.Errorf("%w: %s file: %w", ErrInvalid, field, err)
		}
	}
	if s.MaxBodyMiB == 0 {
		s.MaxBodyMiB = DefaultMaxBodySize
	}
	if s.MaxBodyMiB < 1 || s.MaxBodyMiB > 1<<20 {
		return s, fmt.Errorf("%w: max body size %d MiB: want 1 to 1048576", ErrInvalid, s.MaxBodyMiB)
	}
	s.Upstream = s.Upstream.withDefaults()
	if err := s.Upstream.check(); err != nil {
		return s, err
	}
	return s, nil
}

// Domain converts a domain name to the ASCII form nginx and certificates
// use (IDN → punycode, lower case) and refuses anything that is not a plain
// DNS host name: no wildcards, ports, IP addresses, trailing dots or
// characters with a meaning in nginx's configuration.
func Domain(d string) (string, error) {
	ascii, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: domain %q: %w", ErrInvalid, d, err)
	}
	if len(ascii) == 0 || len(ascii) > 253 {
		return "", fmt.Errorf("%w: domain %q: want 1-253 characters", ErrInvalid, d)
	}
	labels := strings.Split(ascii, ".")
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return "", fmt.Errorf("%w: domain %q: label %q: use letters, digits and inner hyphens, at most 63", ErrInvalid, d, l)
		}
	}
	if allDigits.MatchString(labels[len(labels)-1]) {
		return "", fmt.Errorf("%w: domain %q: an IP address or numeric top-level label is not a domain", ErrInvalid, d)
	}
	return ascii, nil
}

var (
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	allDigits = regexp.MustCompile(`^[0-9]+$`)
	// Paths are an allow-list: whatever is not here (space, ; { } quotes,
	// $ for nginx variables, # for comments, \ escapes) is refused.
	safePath = regexp.MustCompile(`^/[A-Za-z0-9._/@+:=,-]*$`)
)

func checkPath(p string) error {
	if !safePath.MatchString(p) {
		return fmt.Errorf("%q: want an absolute path of letters, digits and ._/@+:=,-", p)
	}
	if filepath.Clean(p) != p || p == "/" {
		return fmt.Errorf("%q: want a clean path to a file", p)
	}
	return nil
}
