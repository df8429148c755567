package deployconfig

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// field ties one YAML key to its command-line flag. Exactly one of str,
// num and boolean is set. Every answer is listed here once, so the flags,
// the error messages and the documentation cannot drift apart.
type field struct {
	key, flag, usage string
	str              func(*Answers) *string
	num              func(*Answers) *int
	boolean          func(*Answers) *bool
}

// Passwords have no flag of their own: a flag value is visible to every
// user in ps. They come from a file, the environment or the wizard.
const (
	EnvDBPassword    = "VKIMG_DB_PASSWORD"
	EnvAdminPassword = "VKIMG_ADMIN_PASSWORD"
)

var fields = []field{
	{key: "name", flag: "name", usage: "instance name (lowercase DNS label; default: first label of the domain)",
		str: func(a *Answers) *string { return &a.Name }},
	{key: "template.source", flag: "template", usage: "template registry repository or local OCI layout path (default: the built-in templates)",
		str: func(a *Answers) *string { return &a.Template.Source }},
	{key: "template.version", flag: "template-version", usage: `template channel "main" or a semantic version constraint`,
		str: func(a *Answers) *string { return &a.Template.Version }},
	{key: "database.type", flag: "db-type", usage: "database: sqlite, postgres or mysql",
		str: func(a *Answers) *string { return &a.Database.Type }},
	{key: "database.host", flag: "db-host", usage: "external database host name or address",
		str: func(a *Answers) *string { return &a.Database.Host }},
	{key: "database.port", flag: "db-port", usage: "external database port (default 5432 or 3306)",
		num: func(a *Answers) *int { return &a.Database.Port }},
	{key: "database.name", flag: "db-name", usage: "external database name",
		str: func(a *Answers) *string { return &a.Database.Name }},
	{key: "database.user", flag: "db-user", usage: "external database user",
		str: func(a *Answers) *string { return &a.Database.User }},
	{key: "database.password", flag: "", usage: "external database password (env " + EnvDBPassword + ")",
		str: func(a *Answers) *string { return &a.Database.Password }},
	{key: "database.password_file", flag: "db-password-file", usage: "file holding the external database password (or env " + EnvDBPassword + ")",
		str: func(a *Answers) *string { return &a.Database.PasswordFile }},
	{key: "database.sslmode", flag: "db-sslmode", usage: "PostgreSQL sslmode: disable, require, verify-ca or verify-full",
		str: func(a *Answers) *string { return &a.Database.SSLMode }},
	{key: "url", flag: "url", usage: "public URL or domain, e.g. https://tasks.example.org",
		str: func(a *Answers) *string { return &a.URL }},
	{key: "admin.email", flag: "admin-email", usage: "email address of the first Vikunja user",
		str: func(a *Answers) *string { return &a.Admin.Email }},
	{key: "admin.username", flag: "admin-username", usage: "user name of the first Vikunja user",
		str: func(a *Answers) *string { return &a.Admin.Username }},
	{key: "admin.password", flag: "", usage: "first user's password (env " + EnvAdminPassword + "; default: generated and shown once)",
		str: func(a *Answers) *string { return &a.Admin.Password }},
	{key: "admin.password_file", flag: "admin-password-file", usage: "file holding the first user's password (default: generated and shown once)",
		str: func(a *Answers) *string { return &a.Admin.PasswordFile }},
	{key: "resources.cores", flag: "cores", usage: "CPU cores per container",
		num: func(a *Answers) *int { return &a.Resources.Cores }},
	{key: "resources.memory_mb", flag: "memory", usage: "memory per container in MB",
		num: func(a *Answers) *int { return &a.Resources.MemoryMB }},
	{key: "resources.disk_gb", flag: "disk", usage: "root disk per container in GB",
		num: func(a *Answers) *int { return &a.Resources.DiskGB }},
	{key: "network.bridge", flag: "bridge", usage: "network bridge of the containers",
		str: func(a *Answers) *string { return &a.Network.Bridge }},
	{key: "network.address", flag: "address", usage: `slot A address with prefix length (192.0.2.10/24), or "dhcp"`,
		str: func(a *Answers) *string { return &a.Network.Address }},
	{key: "network.address_b", flag: "address-b", usage: "slot B address with prefix length (default: the address after slot A's)",
		str: func(a *Answers) *string { return &a.Network.AddressB }},
	{key: "network.gateway", flag: "gateway", usage: "default gateway for static addresses",
		str: func(a *Answers) *string { return &a.Network.Gateway }},
	{key: "ports.http", flag: "http-port", usage: "port nginx listens on for HTTP (redirects to HTTPS)",
		num: func(a *Answers) *int { return &a.Ports.HTTP }},
	{key: "ports.https", flag: "https-port", usage: "port nginx listens on for HTTPS",
		num: func(a *Answers) *int { return &a.Ports.HTTPS }},
	{key: "tls.certificate", flag: "tls-cert", usage: "PEM certificate file: server certificate first, then intermediates",
		str: func(a *Answers) *string { return &a.TLS.Certificate }},
	{key: "tls.key", flag: "tls-key", usage: "PEM private key file of the certificate",
		str: func(a *Answers) *string { return &a.TLS.Key }},
	{key: "tls.self_signed", flag: "self-signed", usage: "generate a self-signed certificate for the domain",
		boolean: func(a *Answers) *bool { return &a.TLS.SelfSigned }},
	{key: "storage.rootfs", flag: "storage", usage: "storage for the containers' root disks",
		str: func(a *Answers) *string { return &a.Storage.Rootfs }},
	{key: "storage.template", flag: "template-storage", usage: "storage for template files",
		str: func(a *Answers) *string { return &a.Storage.Template }},
	{key: "node", flag: "node", usage: "cluster node to deploy on (default: the only node)",
		str: func(a *Answers) *string { return &a.Node }},
}

// Flags that are about the run rather than the instance.
const (
	FlagConfig     = "config"
	FlagYes        = "yes"
	FlagAccessible = "accessible"
)

// describe names a key for a message: its YAML path and its flag.
func describe(key string) string {
	for _, f := range fields {
		if f.key == key && f.flag != "" {
			return fmt.Sprintf("%s (--%s)", key, f.flag)
		}
	}
	return key
}

// Flags are the deploy command's flags: one per answer, plus --config,
// --yes and --accessible.
func Flags() []cli.Flag {
	flags := []cli.Flag{
		&cli.PathFlag{Name: FlagConfig, Aliases: []string{"c"}, Usage: "YAML answers file (see docs/answers.example.yaml); flags override it"},
		&cli.BoolFlag{Name: FlagYes, Aliases: []string{"y"}, Usage: "do not ask: take every answer from flags and the answers file"},
		&cli.BoolFlag{Name: FlagAccessible, Usage: "plain line-by-line prompts (also when TERM=dumb)"},
	}
	for _, f := range fields {
		if f.flag == "" {
			continue
		}
		usage := f.usage + " [" + f.key + "]"
		switch {
		case f.str != nil:
			flags = append(flags, &cli.StringFlag{Name: f.flag, Usage: usage})
		case f.num != nil:
			flags = append(flags, &cli.IntFlag{Name: f.flag, Usage: usage})
		default:
			flags = append(flags, &cli.BoolFlag{Name: f.flag, Usage: usage})
		}
	}
	return flags
}

// FromContext reads the answers file named by --config, if any, then lets
// every flag given override it, then takes passwords from the environment
// (getenv, usually os.Getenv) where neither named one.
func FromContext(c *cli.Context, getenv func(string) string) (*Answers, error) {
	a := &Answers{}
	if path := c.Path(FlagConfig); path != "" {
		var err error
		if a, err = Load(path); err != nil {
			return nil, err
		}
	}
	for _, f := range fields {
		if f.flag == "" || !c.IsSet(f.flag) {
			continue
		}
		switch {
		case f.str != nil:
			*f.str(a) = strings.TrimSpace(c.String(f.flag))
		case f.num != nil:
			*f.num(a) = c.Int(f.flag)
		default:
			*f.boolean(a) = c.Bool(f.flag)
		}
		// A flag's value did not come from the file: stop pointing there.
		delete(a.origin, f.key)
	}
	a.fromEnv(getenv, c.IsSet("db-password-file"), c.IsSet("admin-password-file"))
	return a, nil
}

// fromEnv applies the password variables. A password file named on the
// command line wins over the environment, the environment over the file.
func (a *Answers) fromEnv(getenv func(string) string, dbFileFlag, adminFileFlag bool) {
	if pw := getenv(EnvDBPassword); pw != "" && !dbFileFlag {
		a.Database.Password, a.Database.PasswordFile = pw, ""
	}
	if pw := getenv(EnvAdminPassword); pw != "" && !adminFileFlag {
		a.Admin.Password, a.Admin.PasswordFile = pw, ""
	}
	if dbFileFlag {
		a.Database.Password = ""
	}
	if adminFileFlag {
		a.Admin.Password = ""
	}
}
