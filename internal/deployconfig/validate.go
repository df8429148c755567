package deployconfig

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
)

// Checks are what validation needs besides the answers.
type Checks struct {
	// Min is the template's minimum resources (from its manifest).
	Min hypervisor.Minimums
	// Now is the clock certificates are checked against; nil is time.Now.
	Now func() time.Time
	// DBTimeout bounds the database connection check; 0 is DefaultDBTimeout.
	DBTimeout time.Duration
	// ReplaceDatabase accepts a database that holds a Vikunja schema: a
	// restore replaces it with the archive's.
	ReplaceDatabase bool
}

// Validate checks every answer before anything changes (FR-011) and
// reports all problems at once, each naming its key and flag. It connects
// to an external database and reads the certificate files; cluster-wide
// conflicts (addresses, IDs, storage) are hypervisor.ValidateSpec's job.
// Call Defaults and ReadSecrets first.
func (a *Answers) Validate(ctx context.Context, c Checks) *Problems {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	var ps Problems
	ps.check(a, "name", CheckName(a.Name))
	ps.check(a, "template.source", CheckTemplateSource(a.Template.Source))
	ps.check(a, "template.version", CheckVersion(a.Template.Version))

	domain, publicURL, err := ParseURL(a.URL)
	ps.check(a, "url", err)
	if err == nil {
		a.checkURLPorts(&ps, publicURL)
	}

	ps.check(a, "admin.email", CheckEmail(a.Admin.Email))
	ps.check(a, "admin.username", CheckUsername(a.Admin.Username))
	ps.check(a, passwordKey(a.Admin.PasswordFile, "admin"), CheckPassword(a.Admin.Password))

	a.checkResources(&ps, c.Min)
	a.checkNetwork(&ps)
	ps.check(a, "ports.http", CheckPort(a.Ports.HTTP))
	ps.check(a, "ports.https", CheckPort(a.Ports.HTTPS))
	if a.Ports.HTTP == a.Ports.HTTPS {
		ps.add(a, "ports.https", "%d is also the HTTP port", a.Ports.HTTPS)
	}
	ps.check(a, "storage.rootfs", CheckStorage(a.Storage.Rootfs))
	ps.check(a, "storage.template", CheckStorage(a.Storage.Template))
	if a.Node != "" {
		ps.check(a, "node", CheckNode(a.Node))
	}

	if a.TLS.SelfSigned {
		if a.TLS.Certificate != "" || a.TLS.Key != "" {
			ps.add(a, "tls.self_signed", "give either a self-signed certificate or certificate and key files, not both")
		}
	} else {
		checkTLS(&ps, a, domain, now())
	}

	// Only a database whose answers make sense is worth a connection.
	var dbProblems Problems
	a.checkDatabaseAnswers(&dbProblems)
	ps.List = append(ps.List, dbProblems.List...)
	if dbProblems.Err() == nil && a.Database.External() {
		var dbErr *DBError
		err := CheckDatabase(ctx, a.Database, c.DBTimeout)
		if errors.As(err, &dbErr) && dbErr.Kind == DBInUse && c.ReplaceDatabase {
			err = nil
		}
		if errors.As(err, &dbErr) {
			key := dbErr.Key
			if key == "database.password" {
				key = passwordKey(a.Database.PasswordFile, "database")
			}
			ps.add(a, key, "%s", dbErr.Msg)
		} else if err != nil {
			ps.add(a, "database.host", "%v", err)
		}
	}
	return &ps
}

// passwordKey names the key a password came from.
func passwordKey(file, section string) string {
	if file != "" {
		return section + ".password_file"
	}
	return section + ".password"
}

// checkURLPorts makes the URL and nginx's listening port agree: users
// type the URL, nginx must answer there.
func (a *Answers) checkURLPorts(ps *Problems, publicURL string) {
	listen, def := a.Ports.HTTPS, 443
	if strings.HasPrefix(publicURL, "http://") {
		listen, def = a.Ports.HTTP, 80
		ps.warn(a, "url", "%s is plain HTTP: passwords cross the network readable; use https:// except for a local test instance", publicURL)
	}
	switch p := urlPort(publicURL); {
	case p != 0 && p != listen:
		ps.add(a, "url", "names port %d but nginx is to listen on %d: make them agree", p, listen)
	case p == 0 && listen != def:
		ps.add(a, "url", "nginx is to listen on port %d: put it in the URL (%s:%d)", listen, strings.TrimSuffix(publicURL, "/"), listen)
	}
}

func (a *Answers) checkResources(ps *Problems, min hypervisor.Minimums) {
	res := func(key, flag, unit string, got, least int) {
		switch {
		case got <= 0:
			ps.add(a, key, "must be positive, got %d", got)
		case got < least:
			ps.add(a, key, "%d%s is below the template's minimum of %d%s: use --%s %d or more", got, unit, least, unit, flag, least)
		}
	}
	res("resources.cores", "cores", "", a.Resources.Cores, min.Cores)
	res("resources.memory_mb", "memory", " MB", a.Resources.MemoryMB, min.MemoryMB)
	res("resources.disk_gb", "disk", " GB", a.Resources.DiskGB, min.RootfsGB)
}

func (a *Answers) checkNetwork(ps *Problems) {
	n := a.Network
	ps.check(a, "network.bridge", CheckBridge(n.Bridge))
	if n.Address == DHCP {
		if n.AddressB != "" {
			ps.add(a, "network.address_b", "slot B cannot have a static address when slot A uses DHCP")
		}
		if n.Gateway != "" {
			ps.add(a, "network.gateway", "is only used with static addresses; DHCP provides the gateway")
		}
		return
	}
	_, _, _, err := n.SlotAddresses()
	var ne *netError
	if errors.As(err, &ne) {
		ps.add(a, ne.key, "%s", ne.msg)
	}
}

// netError is a network answer's problem, keyed by the answer to fix.
type netError struct{ key, msg string }

func (e *netError) Error() string { return e.key + ": " + e.msg }

// SlotAddresses are the two slots' static addresses and the gateway;
// slot B defaults to the address after slot A's. It fails for DHCP.
func (n Network) SlotAddresses() (a, b netip.Prefix, gw netip.Addr, err error) {
	fail := func(key, format string, args ...any) error {
		return &netError{key: key, msg: fmt.Sprintf(format, args...)}
	}
	if n.Address == DHCP {
		return a, b, gw, fail("network.address", "is dhcp: there are no static addresses")
	}
	if a, err = ParseAddress(n.Address); err != nil {
		return a, b, gw, fail("network.address", "%v", err)
	}
	subnet := a.Masked()
	if n.Gateway == "" {
		return a, b, gw, fail("network.gateway", "is required with a static address")
	}
	if gw, err = netip.ParseAddr(n.Gateway); err != nil {
		return a, b, gw, fail("network.gateway", "%q is not an IP address", n.Gateway)
	}
	switch {
	case gw.Is4() != a.Addr().Is4():
		return a, b, gw, fail("network.gateway", "%s is not the same IP version as %s", gw, a)
	case !subnet.Contains(gw):
		return a, b, gw, fail("network.gateway", "%s is not in the address's subnet %s", gw, subnet)
	case gw == a.Addr():
		return a, b, gw, fail("network.gateway", "%s is the container's own address", gw)
	}
	if n.AddressB == "" {
		b = netip.PrefixFrom(a.Addr().Next(), a.Bits())
		if b.Addr() == gw {
			b = netip.PrefixFrom(gw.Next(), a.Bits())
		}
		if _, err := ParseAddress(b.String()); err != nil || !subnet.Contains(b.Addr()) {
			return a, b, gw, fail("network.address_b", "no address follows %s in its subnet: give slot B's address", a)
		}
		return a, b, gw, nil
	}
	if b, err = ParseAddress(n.AddressB); err != nil {
		return a, b, gw, fail("network.address_b", "%v", err)
	}
	switch {
	case b.Masked() != subnet:
		return a, b, gw, fail("network.address_b", "%s is not in slot A's subnet %s", b, subnet)
	case b.Addr() == a.Addr():
		return a, b, gw, fail("network.address_b", "%s is slot A's address too: each slot needs its own", b.Addr())
	case b.Addr() == gw:
		return a, b, gw, fail("network.address_b", "%s is the gateway", b.Addr())
	}
	return a, b, gw, nil
}

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

func (a *Answers) checkDatabaseAnswers(ps *Problems) {
	d := a.Database
	switch d.Type {
	case datavol.SQLite:
		return
	case datavol.Postgres, datavol.MySQL:
	default:
		ps.add(a, "database.type", "%q: want sqlite, postgres or mysql (also for MariaDB)", d.Type)
		return
	}
	ps.check(a, "database.host", CheckHost(d.Host))
	if ip, err := netip.ParseAddr(d.Host); err == nil && ip.IsLoopback() || d.Host == "localhost" {
		ps.warn(a, "database.host", "%s is this node's loopback: inside the container it is the container itself; give an address the container can reach", d.Host)
	}
	ps.check(a, "database.port", CheckPort(d.Port))
	ps.check(a, "database.name", CheckIdentifier(d.Name))
	ps.check(a, "database.user", CheckIdentifier(d.User))
	if d.Password == "" {
		ps.add(a, passwordKey(d.PasswordFile, "database"), "is required: give --db-password-file or %s", EnvDBPassword)
	}
	switch {
	case d.Type == datavol.Postgres && d.SSLMode != "" && !slices.Contains(sslModes, d.SSLMode):
		ps.add(a, "database.sslmode", "%q: want one of %s", d.SSLMode, strings.Join(sslModes, ", "))
	case d.Type == datavol.MySQL && d.SSLMode != "":
		ps.add(a, "database.sslmode", "only applies to postgres")
	}
}
