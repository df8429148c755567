package deployconfig

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/net/idna"
)

// The checks in this file look at one value each and need nothing but
// the value: the wizard runs them on every keystroke's result, Validate
// on the whole set.

var (
	dnsLabel    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	usernameRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,249}$`)
	bridgeRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)
	storageRe   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)
	identRe     = regexp.MustCompile(`^[A-Za-z0-9_$-]{1,63}$`)
	configChars = "\"'`;{}$\\#"
)

// CheckName accepts an instance name: a lowercase DNS label, since it
// becomes container host names, directory names and nginx file names.
func CheckName(s string) error {
	switch {
	case s == "":
		return errors.New("is required")
	case !dnsLabel.MatchString(s):
		return fmt.Errorf("%q is not a lowercase DNS label (a-z, 0-9 and inner hyphens, at most 63 characters)", s)
	}
	return nil
}

// CheckDomain accepts a domain name, including internationalized ones,
// and returns its ASCII (punycode) form — the only form that reaches
// nginx and Vikunja's config, so no character of the input can alter
// them. An IP address is accepted as is, for local instances.
func CheckDomain(s string) (string, error) {
	if s == "" {
		return "", errors.New("is required")
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.String(), nil
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(configChars+"/@:?*", r)
	}); i >= 0 {
		return "", fmt.Errorf("%q contains %q, which cannot be part of a domain", s, s[i:i+1])
	}
	ascii, err := idna.Registration.ToASCII(strings.ToLower(strings.TrimSuffix(s, ".")))
	if err != nil {
		return "", fmt.Errorf("%q is not a valid domain name: %v", s, err)
	}
	labels := strings.Split(ascii, ".")
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return "", fmt.Errorf("%q is not a valid domain name: label %q must be letters, digits and inner hyphens, at most 63 characters", s, l)
		}
	}
	if len(labels) > 1 && strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("%q is not a valid domain name: the last label is all digits", s)
	}
	return ascii, nil
}

// ParseURL accepts the public URL or just the domain and returns the
// domain (ASCII) and the normalized URL, which is what Vikunja's
// service.publicurl gets. Vikunja is served at the root of its domain.
func ParseURL(s string) (domain, publicURL string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", errors.New("is required")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("%q is not a URL", s)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "", "", fmt.Errorf("scheme %q: use https:// (or http:// for a local test instance)", u.Scheme)
	case u.User != nil:
		return "", "", errors.New("must not contain a user name or password")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", "", errors.New("must not contain a query or fragment")
	case u.Path != "" && u.Path != "/":
		return "", "", fmt.Errorf("path %q: Vikunja must be served at the root of its domain", u.Path)
	}
	domain, err = CheckDomain(u.Hostname())
	if err != nil {
		return "", "", fmt.Errorf("domain %v", err)
	}
	host := domain
	if strings.Contains(domain, ":") {
		host = "[" + domain + "]"
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || CheckPort(n) != nil {
			return "", "", fmt.Errorf("port %q is not a port number", p)
		}
		host += ":" + p
	}
	return domain, u.Scheme + "://" + host + "/", nil
}

// urlPort is the port a normalized public URL names, or 0.
func urlPort(publicURL string) int {
	u, err := url.Parse(publicURL)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(u.Port())
	return n
}

// CheckEmail accepts a bare address ("admin@example.org"): it ends up in
// an environment file and Vikunja's user table, so no display name, no
// quoting and a valid domain.
func CheckEmail(s string) error {
	if s == "" {
		return errors.New("is required")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return fmt.Errorf("%q is not an email address", s)
	}
	bare := fmt.Errorf("%q: give the bare address, like admin@example.org, without a name or angle brackets", s)
	if addr.Name != "" || strings.ContainsAny(s, "<>") {
		return bare
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if strings.ContainsAny(local, " \"\\") {
		return fmt.Errorf("%q: the part before @ must not contain quotes, spaces or backslashes", s)
	}
	if addr.Address != s {
		return bare
	}
	if _, err := CheckDomain(domain); err != nil {
		return fmt.Errorf("%q: domain part %v", s, err)
	}
	return nil
}

// CheckUsername accepts a Vikunja user name usable in an environment file.
func CheckUsername(s string) error {
	if !usernameRe.MatchString(s) {
		return fmt.Errorf("%q: use letters, digits, '.', '_' and '-', starting with a letter or digit", s)
	}
	return nil
}

// CheckPassword accepts a password Vikunja accepts: bcrypt ignores
// everything after 72 bytes, and Vikunja asks for at least 8 characters.
func CheckPassword(s string) error {
	switch {
	case len(s) < 8:
		return errors.New("must be at least 8 characters")
	case len(s) > 72:
		return errors.New("must be at most 72 bytes (bcrypt ignores the rest)")
	case strings.ContainsAny(s, "\r\n\x00"):
		return errors.New("must be a single line")
	}
	return nil
}

// CheckPort accepts a TCP port number.
func CheckPort(n int) error {
	if n < 1 || n > 65535 {
		return fmt.Errorf("%d is not a port (1-65535)", n)
	}
	return nil
}

// CheckHost accepts a database host: a domain name or an IP address,
// without a port (that is a separate answer).
func CheckHost(s string) error {
	if h, _, err := net.SplitHostPort(s); err == nil && h != "" {
		return fmt.Errorf("%q: give the port separately (--db-port)", s)
	}
	_, err := CheckDomain(s)
	return err
}

// CheckIdentifier accepts a database or user name.
func CheckIdentifier(s string) error {
	if !identRe.MatchString(s) {
		return fmt.Errorf("%q: use letters, digits, '_', '$' and '-', at most 63", s)
	}
	return nil
}

// CheckBridge accepts a Linux network interface name.
func CheckBridge(s string) error {
	if !bridgeRe.MatchString(s) {
		return fmt.Errorf("%q is not a network interface name (at most 15 letters, digits, '_', '.', '-')", s)
	}
	return nil
}

// CheckStorage accepts a storage name as Proxmox spells them.
func CheckStorage(s string) error {
	if !storageRe.MatchString(s) {
		return fmt.Errorf("%q is not a storage name (a letter, then letters, digits, '_', '.', '-')", s)
	}
	return nil
}

// CheckNode accepts a cluster node name: a host name label.
func CheckNode(s string) error {
	if !dnsLabel.MatchString(strings.ToLower(s)) {
		return fmt.Errorf("%q is not a node name (letters, digits and inner hyphens)", s)
	}
	return nil
}

// CheckTemplateSource accepts an empty source (the built-in templates), a
// local OCI image layout directory, or a registry repository.
func CheckTemplateSource(s string) error {
	if s == "" {
		return nil
	}
	if IsLocalSource(s) {
		if _, err := os.Stat(filepath.Join(s, "oci-layout")); err != nil {
			return fmt.Errorf("%s is not an OCI image layout (no oci-layout file)", s)
		}
		return nil
	}
	if strings.ContainsAny(s, "@") || strings.Contains(s[strings.LastIndexByte(s, '/')+1:], ":") {
		return fmt.Errorf("%q: give the repository without tag or digest, and the version as template.version (--template-version)", s)
	}
	if _, err := name.NewRepository(s, name.StrictValidation); err != nil {
		return fmt.Errorf("%q is neither a local OCI layout path nor a registry repository: %v", s, err)
	}
	return nil
}

// IsLocalSource reports whether a template source is a path rather than a
// registry repository: paths start with / or . so nothing is ambiguous.
func IsLocalSource(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".")
}

// CheckVersion accepts the channel "main" or a semantic version constraint.
func CheckVersion(s string) error {
	if s == "main" {
		return nil
	}
	if _, err := semver.NewConstraint(s); err != nil {
		return fmt.Errorf("%q is neither the channel \"main\" nor a version constraint like \"2.5.0\" or \"^2.5\": %v", s, err)
	}
	return nil
}

// ParseAddress accepts a host address with its prefix length, as a
// container's static address: not the subnet's network or broadcast
// address, and leaving room for a gateway.
func ParseAddress(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Errorf("%q has no prefix length: write it like %s/24", s, s)
		}
		return netip.Prefix{}, fmt.Errorf("%q is not an address with prefix length (192.0.2.10/24)", s)
	}
	a := p.Addr()
	if a.Is4() && p.Bits() > 30 || a.Is6() && p.Bits() > 126 {
		return netip.Prefix{}, fmt.Errorf("%s: a /%d subnet leaves no room for a gateway", s, p.Bits())
	}
	if a == p.Masked().Addr() {
		return netip.Prefix{}, fmt.Errorf("%s is the subnet's network address", s)
	}
	if a.Is4() && a == broadcast(p) {
		return netip.Prefix{}, fmt.Errorf("%s is the subnet's broadcast address", s)
	}
	if a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() {
		return netip.Prefix{}, fmt.Errorf("%s cannot be a container's address", s)
	}
	return p, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// joinHostPort is net.JoinHostPort for an int port.
func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
