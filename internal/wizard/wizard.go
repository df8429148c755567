// Package wizard asks the administrator for the deploy answers that flags
// and the answers file left open: an interactive terminal form (arrow
// keys, defaults shown, every answer checked as it is given, a summary to
// confirm), or plain line prompts for screen readers and dumb terminals.
// Without a terminal it never waits: it says which answers are missing.
package wizard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/huh"
	"golang.org/x/term"

	"github.com/vkimg/vkimg/internal/deployconfig"
)

// Options are how the wizard talks to the administrator.
type Options struct {
	In  io.Reader // usually os.Stdin; asked only when it is a terminal
	Out io.Writer
	// Yes means: do not ask, every answer is given (--yes).
	Yes bool
	// Accessible asks with plain line prompts (--accessible); TERM=dumb
	// does the same.
	Accessible bool
	Getenv     func(string) string // nil: os.Getenv
	Checks     deployconfig.Checks
}

// ErrAborted is returned when the administrator cancels the wizard.
var ErrAborted = errors.New("deploy cancelled: nothing was changed")

// MissingError lists the answers a run without questions lacks.
type MissingError struct {
	Missing []string
	// NoTerminal is set when there was no terminal to ask on.
	NoTerminal bool
}

func (e *MissingError) Error() string {
	why := "--yes given"
	if e.NoTerminal {
		why = "no terminal to ask on"
	}
	return fmt.Sprintf("%s, and these answers are missing: %s; give them as flags or in the answers file (--config)",
		why, strings.Join(e.Missing, ", "))
}

// Run completes and validates the answers. On a terminal (and without
// Yes) it asks every question, prefilled with what is known, until the
// answers pass validation and the administrator confirms the summary.
// Otherwise it only validates. It returns the validation's warnings.
func Run(ctx context.Context, a *deployconfig.Answers, opt Options) ([]deployconfig.Problem, error) {
	getenv := opt.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	a.Defaults(opt.Checks.Min)
	interactive := isTerminal(opt.In)
	if opt.Yes || !interactive {
		if missing := a.Missing(); len(missing) > 0 {
			return nil, &MissingError{Missing: missing, NoTerminal: !interactive}
		}
		if !opt.Yes {
			return nil, errors.New("no terminal to confirm the answers on: add --yes to deploy without confirmation")
		}
		if err := a.ReadSecrets(); err != nil {
			return nil, err
		}
		ps := a.Validate(ctx, opt.Checks)
		return ps.Warnings(), ps.Err()
	}
	w := &wizard{ctx: ctx, a: a, checks: opt.Checks, in: opt.In, out: opt.Out,
		accessible: opt.Accessible || getenv("TERM") == "dumb"}
	if w.accessible {
		w.eof = &eofReader{r: opt.In}
		w.in = w.eof
	}
	return w.run()
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// eofReader notices the end of input: huh's plain prompts would silently
// take the defaults from there on. The end is sticky, because a terminal
// would go on reading after Ctrl+D and the next prompt would wait.
type eofReader struct {
	r   io.Reader
	hit bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	if e.hit {
		return 0, io.EOF
	}
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.hit = true
	}
	return n, err
}

// Fd lets huh read passwords without echo from the terminal underneath.
func (e *eofReader) Fd() uintptr { return e.r.(interface{ Fd() uintptr }).Fd() }

type wizard struct {
	ctx        context.Context
	a          *deployconfig.Answers
	checks     deployconfig.Checks
	in         io.Reader
	out        io.Writer
	accessible bool
	eof        *eofReader
}

func (w *wizard) run() ([]deployconfig.Problem, error) {
	if err := w.a.ReadSecrets(); err != nil {
		// The wizard asks for whatever could not be read.
		fmt.Fprintln(w.out, err)
	}
	for {
		for _, step := range []func() error{w.askSite, w.askDatabase, w.askAdmin, w.askResources, w.askNetwork, w.askTLS} {
			if err := step(); err != nil {
				return nil, err
			}
		}
		ps := w.a.Validate(w.ctx, w.checks)
		if err := ps.Err(); err != nil {
			if !askable(err) {
				return nil, err
			}
			fmt.Fprintf(w.out, "\n%v\nPlease correct these answers.\n\n", err)
			continue
		}
		choice, err := w.confirm(ps.Warnings())
		if err != nil {
			return nil, err
		}
		switch choice {
		case choiceDeploy:
			return ps.Warnings(), nil
		case choiceCancel:
			return nil, ErrAborted
		}
	}
}

// notAsked are answers the wizard leaves to flags and the answers file:
// asking again cannot fix them.
var notAsked = []string{"node", "ports.", "storage.", "database.sslmode", "database.password_file", "admin.password_file"}

func askable(err error) bool {
	var ie *deployconfig.InvalidError
	if !errors.As(err, &ie) {
		return false
	}
	for _, p := range ie.Problems {
		for _, k := range notAsked {
			if strings.HasPrefix(p.Key, k) {
				return false
			}
		}
	}
	return true
}

// ask runs one step: a form of one group. Steps are separate forms
// because huh's plain-prompt mode ignores hidden groups, and questions
// that do not apply must not be asked.
func (w *wizard) ask(title string, fields ...huh.Field) error {
	form := huh.NewForm(huh.NewGroup(fields...).Title(title)).
		WithAccessible(w.accessible).WithInput(w.in).WithOutput(w.out)
	if w.accessible {
		fmt.Fprintf(w.out, "== %s ==\n", title)
	}
	if err := form.RunWithContext(w.ctx); err != nil {
		if errors.Is(err, huh.ErrUserAborted) {
			return ErrAborted
		}
		return fmt.Errorf("wizard: %w", err)
	}
	if w.eof != nil && w.eof.hit {
		return errors.New("input ended before every question was answered")
	}
	return nil
}

// input is a text question whose answer check must accept before the
// wizard moves on.
func (w *wizard) input(title, desc string, value *string, check func(string) error) *huh.Input {
	return huh.NewInput().Title(title).Description(desc).Value(value).Validate(w.orDefault(value, check))
}

// orDefault adapts a check to huh's plain prompts, where an empty line
// means "keep the value shown".
func (w *wizard) orDefault(value *string, check func(string) error) func(string) error {
	return func(s string) error {
		s = strings.TrimSpace(s)
		if s == "" && w.accessible {
			s = *value
		}
		return check(s)
	}
}

// number is a question for a positive whole number of at least least;
// apply stores the answer in dst once the form is done.
func (w *wizard) number(title, unit string, dst *int, least int) (field *huh.Input, apply func()) {
	s := strconv.Itoa(*dst)
	apply = func() { *dst, _ = strconv.Atoi(strings.TrimSpace(s)) }
	return w.input(title, fmt.Sprintf("at least %d%s", max(least, 1), unit), &s, func(v string) error {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return fmt.Errorf("%q is not a whole number", v)
		case n < max(least, 1):
			return fmt.Errorf("must be at least %d%s (the template's minimum)", max(least, 1), unit)
		}
		return nil
	}), apply
}

func (w *wizard) askSite() error {
	a := w.a
	if err := w.ask("Public address",
		w.input("Public URL or domain", "e.g. https://tasks.example.org; internationalized domains are fine", &a.URL,
			func(s string) error { _, _, err := deployconfig.ParseURL(s); return err }),
	); err != nil {
		return err
	}
	if a.Name == "" {
		a.Defaults(w.checks.Min) // derives the name from the domain
	}
	return w.ask("Instance",
		w.input("Instance name", "a lowercase DNS label; names containers, directories and the nginx site", &a.Name, deployconfig.CheckName),
		w.input("Template source", "registry repository or local OCI layout path; empty: the templates shipped with vkimg", &a.Template.Source, deployconfig.CheckTemplateSource),
		w.input("Template version", `"main" or a version constraint like "^2.5"`, &a.Template.Version, deployconfig.CheckVersion),
	)
}

func (w *wizard) askDatabase() error {
	a := w.a
	if err := w.ask("Database",
		huh.NewSelect[string]().Title("Database").Value(&a.Database.Type).Options(
			huh.NewOption("SQLite, on the instance's data volume", "sqlite"),
			huh.NewOption("PostgreSQL server", "postgres"),
			huh.NewOption("MySQL or MariaDB server", "mysql"),
		),
	); err != nil {
		return err
	}
	if !a.Database.External() {
		return nil
	}
	a.Defaults(w.checks.Min) // port, name and user for the chosen type
	d := &a.Database
	port := strconv.Itoa(d.Port)
	connect := w.connectCheck(d, &port)
	err := w.ask("Database connection",
		w.input("Host", "reachable from the container (not 127.0.0.1)", &d.Host, deployconfig.CheckHost),
		w.input("Port", "", &port, func(s string) error {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%q is not a port number", s)
			}
			return deployconfig.CheckPort(n)
		}),
		w.input("Database name", "it must exist already", &d.Name, deployconfig.CheckIdentifier),
		w.input("User", "", &d.User, deployconfig.CheckIdentifier),
		huh.NewInput().Title("Password").Description("checked by connecting").EchoMode(huh.EchoModePassword).
			Value(&d.Password).Validate(w.orDefault(&d.Password, connect)),
	)
	if err != nil {
		return err
	}
	d.Port, _ = strconv.Atoi(port)
	d.PasswordFile = ""
	return nil
}

// connectCheck checks a database password by connecting with every
// answer of the step. huh validates a field more than once; the last
// result is kept so the server is asked once per distinct answer.
func (w *wizard) connectCheck(d *deployconfig.Database, port *string) func(string) error {
	var lastKey string
	var lastErr error
	return func(pw string) error {
		probe := *d
		probe.Password = pw
		probe.Port, _ = strconv.Atoi(*port)
		if pw == "" {
			return errors.New("is required")
		}
		key := fmt.Sprintf("%#v", probe)
		if key != lastKey {
			lastKey, lastErr = key, deployconfig.CheckDatabase(w.ctx, probe, w.checks.DBTimeout)
		}
		return lastErr
	}
}

const (
	passwordGenerate = "generate"
	passwordEnter    = "enter"
)

func (w *wizard) askAdmin() error {
	a := w.a
	mode := passwordEnter
	if a.Admin.PasswordGenerated || a.Admin.Password == "" {
		mode = passwordGenerate
	}
	if err := w.ask("Administrator",
		w.input("Admin email", "", &a.Admin.Email, deployconfig.CheckEmail),
		w.input("Admin user name", "", &a.Admin.Username, deployconfig.CheckUsername),
		huh.NewSelect[string]().Title("Admin password").Value(&mode).Options(
			huh.NewOption("Generate a strong password (shown once at the end)", passwordGenerate),
			huh.NewOption("Enter a password", passwordEnter),
		),
	); err != nil {
		return err
	}
	if mode == passwordGenerate {
		if !a.Admin.PasswordGenerated {
			pw, err := deployconfig.GeneratePassword()
			if err != nil {
				return err
			}
			a.Admin.Password, a.Admin.PasswordGenerated, a.Admin.PasswordFile = pw, true, ""
		}
		return nil
	}
	if a.Admin.PasswordGenerated {
		a.Admin.Password = ""
	}
	var again string
	if err := w.ask("Admin password",
		huh.NewInput().Title("Password").Description("8 to 72 characters").EchoMode(huh.EchoModePassword).
			Value(&a.Admin.Password).Validate(w.orDefault(&a.Admin.Password, deployconfig.CheckPassword)),
		huh.NewInput().Title("Password again").EchoMode(huh.EchoModePassword).Value(&again).
			Validate(func(s string) error {
				if s != a.Admin.Password {
					return errors.New("the passwords differ")
				}
				return nil
			}),
	); err != nil {
		return err
	}
	a.Admin.PasswordGenerated, a.Admin.PasswordFile = false, ""
	return nil
}

func (w *wizard) askResources() error {
	r, min := &w.a.Resources, w.checks.Min
	cores, setCores := w.number("CPU cores", "", &r.Cores, min.Cores)
	mem, setMem := w.number("Memory (MB)", " MB", &r.MemoryMB, min.MemoryMB)
	disk, setDisk := w.number("Disk (GB)", " GB", &r.DiskGB, min.RootfsGB)
	if err := w.ask("Resources per container", cores, mem, disk); err != nil {
		return err
	}
	setCores()
	setMem()
	setDisk()
	return nil
}

func (w *wizard) askNetwork() error {
	n := &w.a.Network
	mode := "static"
	if n.Address == deployconfig.DHCP {
		mode = deployconfig.DHCP
	}
	if err := w.ask("Network",
		w.input("Bridge", "", &n.Bridge, deployconfig.CheckBridge),
		huh.NewSelect[string]().Title("Addresses").Value(&mode).Options(
			huh.NewOption("DHCP", deployconfig.DHCP),
			huh.NewOption("Static addresses (one per slot)", "static"),
		),
	); err != nil {
		return err
	}
	if mode == deployconfig.DHCP {
		n.Address, n.AddressB, n.Gateway = deployconfig.DHCP, "", ""
		return nil
	}
	if n.Address == deployconfig.DHCP {
		n.Address = ""
	}
	// Each answer is checked together with those before it, so a gateway
	// outside the subnet is refused right where it is typed.
	slots := func(key string) func(string) error {
		return func(string) error {
			_, _, _, err := n.SlotAddresses()
			if err != nil && strings.HasPrefix(err.Error(), key+":") {
				return errors.New(strings.TrimPrefix(err.Error(), key+": "))
			}
			return nil
		}
	}
	return w.ask("Static addresses",
		w.input("Slot A address", "with prefix length, e.g. 192.0.2.10/24", &n.Address, func(s string) error {
			_, err := deployconfig.ParseAddress(s)
			return err
		}),
		w.input("Gateway", "", &n.Gateway, slots("network.gateway")),
		w.input("Slot B address", "empty: the address after slot A's", &n.AddressB, slots("network.address_b")),
	)
}

func (w *wizard) askTLS() error {
	t := &w.a.TLS
	mode := "files"
	if t.SelfSigned || t.Certificate == "" {
		mode = "self-signed"
	}
	if err := w.ask("TLS certificate",
		huh.NewSelect[string]().Title("Certificate").Value(&mode).Options(
			huh.NewOption("Generate a self-signed certificate for the domain", "self-signed"),
			huh.NewOption("Use my certificate and key files (PEM)", "files"),
		),
	); err != nil {
		return err
	}
	if mode == "self-signed" {
		*t = deployconfig.TLS{SelfSigned: true}
		return nil
	}
	t.SelfSigned = false
	domain, _, _ := deployconfig.ParseURL(w.a.URL)
	return w.ask("Certificate files",
		w.input("Certificate file", "server certificate first, then intermediates", &t.Certificate, func(s string) error {
			if _, err := os.Stat(s); err != nil {
				return fmt.Errorf("cannot read %s", s)
			}
			return nil
		}),
		w.input("Key file", "unencrypted PEM private key", &t.Key, func(s string) error {
			return deployconfig.CheckTLS(t.Certificate, s, domain, w.now())
		}),
	)
}

func (w *wizard) now() time.Time {
	if w.checks.Now != nil {
		return w.checks.Now()
	}
	return time.Now()
}

const (
	choiceDeploy = "deploy"
	choiceChange = "change"
	choiceCancel = "cancel"
)

func (w *wizard) confirm(warnings []deployconfig.Problem) (string, error) {
	var b strings.Builder
	b.WriteString(Summary(w.a))
	for _, p := range warnings {
		b.WriteString("\nWarning: " + p.String())
	}
	choice := choiceDeploy
	err := w.ask("Summary",
		huh.NewNote().Title("Deploy this instance?").Description(b.String()),
		huh.NewSelect[string]().Title("Nothing has changed yet").Value(&choice).Options(
			huh.NewOption("Deploy", choiceDeploy),
			huh.NewOption("Change answers", choiceChange),
			huh.NewOption("Cancel", choiceCancel),
		),
	)
	return choice, err
}

// Summary lists the answers for confirmation; passwords are never shown.
func Summary(a *deployconfig.Answers) string {
	var b strings.Builder
	line := func(k, format string, args ...any) { fmt.Fprintf(&b, "%-14s %s\n", k, fmt.Sprintf(format, args...)) }
	domain, url, _ := deployconfig.ParseURL(a.URL)
	line("Instance", "%s", a.Name)
	line("URL", "%s (domain %s)", url, domain)
	src := a.Template.Source
	if src == "" {
		src = "built-in templates"
	}
	line("Template", "%s, %s", src, a.Template.Version)
	if a.Database.External() {
		line("Database", "%s %s@%s/%s", a.Database.Type, a.Database.User, a.Database.Addr(), a.Database.Name)
	} else {
		line("Database", "SQLite on the data volume")
	}
	pw := "given"
	if a.Admin.PasswordGenerated {
		pw = "generated, shown at the end"
	}
	line("Admin", "%s <%s>, password %s", a.Admin.Username, a.Admin.Email, pw)
	line("Resources", "%d cores, %d MB memory, %d GB disk", a.Resources.Cores, a.Resources.MemoryMB, a.Resources.DiskGB)
	if a.Network.Address == deployconfig.DHCP {
		line("Network", "%s, DHCP", a.Network.Bridge)
	} else if sa, sb, gw, err := a.Network.SlotAddresses(); err == nil {
		line("Network", "%s, slot A %s, slot B %s, gateway %s", a.Network.Bridge, sa, sb, gw)
	}
	if a.TLS.SelfSigned {
		line("TLS", "self-signed for %s", domain)
	} else {
		line("TLS", "%s, key %s", a.TLS.Certificate, a.TLS.Key)
	}
	return b.String()
}
