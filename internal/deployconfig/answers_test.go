package deployconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

const exampleFile = "../../docs/answers.example.yaml"

func TestExampleAnswersFileDocumentsEveryKeyAndFlag(t *testing.T) {
	a, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if a.Database.Type != "postgres" || a.Network.AddressB != "192.0.2.11/24" || a.Resources.MemoryMB != 1024 {
		t.Errorf("example not decoded as written: %+v", a)
	}
	text, _ := os.ReadFile(exampleFile)
	for _, f := range fields {
		last := f.key[strings.LastIndexByte(f.key, '.')+1:]
		if !strings.Contains(string(text), last+":") {
			t.Errorf("key %s is not documented in %s", f.key, exampleFile)
		}
		if f.flag != "" && !strings.Contains(string(text), "--"+f.flag) {
			t.Errorf("flag --%s is not documented in %s", f.flag, exampleFile)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRefusesUnknownKeysNamingFileAndLine(t *testing.T) {
	p := writeFile(t, "answers.yaml", "name: tasks\ndatabase:\n  type: sqlite\n  hots: db\nresources:\n  cores: many\n")
	_, err := Load(p)
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	for _, want := range []string{p + `:4: unknown key "hots"`, p + ":6: cannot unmarshal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Load(writeFile(t, "bad.yaml", "name: [unclosed\n")); err == nil || !strings.Contains(err.Error(), "bad.yaml:") {
		t.Errorf("syntax error %v does not name the file", err)
	}
	if a, err := Load(writeFile(t, "empty.yaml", "")); err != nil || a.Name != "" {
		t.Errorf("empty file: %v", err)
	}
}

func TestValidationErrorsNameTheFileLineOfTheValue(t *testing.T) {
	p := writeFile(t, "answers.yaml", "name: Bad_Name\nurl: tasks.example.org\n")
	a, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	a.Defaults(hypervisor.Minimums{})
	err = a.Validate(t.Context(), Checks{}).Err()
	if err == nil || !strings.Contains(err.Error(), p+":1: name (--name): ") {
		t.Fatalf("err = %v, want it to point at %s:1", err, p)
	}
}

// runFlags parses args with Flags() as a deploy command would.
func runFlags(t *testing.T, env map[string]string, args ...string) (*Answers, error) {
	t.Helper()
	var got *Answers
	var gotErr error
	app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error {
		got, gotErr = FromContext(c, func(k string) string { return env[k] })
		return nil
	}}
	if err := app.Run(append([]string{"vkimg"}, args...)); err != nil {
		t.Fatal(err)
	}
	return got, gotErr
}

func TestFlagsOverrideTheAnswersFile(t *testing.T) {
	p := writeFile(t, "answers.yaml", "name: fromfile\nurl: file.example.org\ndatabase:\n  type: postgres\n  password: filepw\nresources:\n  cores: 4\n")
	a, err := runFlags(t, nil, "--config", p, "--name", "fromflag", "--memory", "2048", "--self-signed")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "fromflag" || a.URL != "file.example.org" || a.Resources.Cores != 4 || a.Resources.MemoryMB != 2048 || !a.TLS.SelfSigned {
		t.Errorf("merged answers wrong: %+v", a)
	}
	if a.origin["name"] != "" || a.origin["url"] == "" {
		t.Errorf("origin after override: %v", a.origin)
	}
	if a.Database.Password != "filepw" {
		t.Errorf("file password lost: %q", a.Database.Password)
	}
	a, _ = runFlags(t, map[string]string{EnvDBPassword: "envpw", EnvAdminPassword: "adminpw"}, "--config", p)
	if a.Database.Password != "envpw" || a.Admin.Password != "adminpw" {
		t.Errorf("environment passwords not applied: %q %q", a.Database.Password, a.Admin.Password)
	}
	a, _ = runFlags(t, map[string]string{EnvDBPassword: "envpw"}, "--config", p, "--db-password-file", "/x")
	if a.Database.Password != "" || a.Database.PasswordFile != "/x" {
		t.Errorf("--db-password-file must win: %q %q", a.Database.Password, a.Database.PasswordFile)
	}
	if _, err := runFlags(t, nil, "--config", filepath.Join(t.TempDir(), "none.yaml")); err == nil {
		t.Error("missing answers file accepted")
	}
}

func TestNoFlagTakesAPassword(t *testing.T) {
	for _, f := range Flags() {
		for _, n := range f.Names() {
			if strings.Contains(n, "password") && !strings.HasSuffix(n, "-file") {
				t.Errorf("flag --%s would show a password in ps", n)
			}
		}
	}
}

func TestDefaultsAndMissing(t *testing.T) {
	a := &Answers{}
	a.Defaults(hypervisor.Minimums{Cores: 4, MemoryMB: 512, RootfsGB: 2})
	if a.Resources.Cores != 4 || a.Resources.MemoryMB != 1024 || a.Database.Type != "sqlite" || a.Network.Address != DHCP {
		t.Errorf("defaults: %+v", a)
	}
	got := strings.Join(a.Missing(), "; ")
	for _, want := range []string{"url (--url)", "name (--name)", "admin.email (--admin-email)", "tls.certificate (--tls-cert)"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q not listed in %q", want, got)
		}
	}

	b := &Answers{URL: "https://Tasks.Example.org", Database: Database{Type: "mysql"}, Network: Network{Address: "192.0.2.10/24"}}
	b.Defaults(hypervisor.Minimums{})
	if b.Name != "tasks" || b.Database.Port != 3306 || b.Database.User != "vikunja" {
		t.Errorf("derived defaults: %+v", b)
	}
	got = strings.Join(b.Missing(), "; ")
	for _, want := range []string{"database.host", "database.password_file", "network.gateway"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q not listed in %q", want, got)
		}
	}
	if strings.Contains(got, "name") {
		t.Errorf("name derived from the domain still listed: %q", got)
	}
}

func TestReadSecrets(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret-db\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)

	a := &Answers{Database: Database{Type: "postgres", PasswordFile: pw}}
	if err := a.ReadSecrets(); err != nil {
		t.Fatal(err)
	}
	if a.Database.Password != "s3cret-db" {
		t.Errorf("db password = %q", a.Database.Password)
	}
	if !a.Admin.PasswordGenerated || CheckPassword(a.Admin.Password) != nil || len(a.Admin.Password) != 24 {
		t.Errorf("generated admin password %q unusable", a.Admin.Password)
	}
	other := &Answers{}
	other.ReadSecrets()
	if other.Admin.Password == a.Admin.Password {
		t.Error("two generated passwords are equal")
	}

	b := &Answers{Database: Database{PasswordFile: filepath.Join(dir, "nope")}, Admin: Admin{PasswordFile: empty}}
	err := b.ReadSecrets()
	ie, ok := err.(*InvalidError)
	if !ok || !ie.Has("database.password_file") || !ie.Has("admin.password_file") || b.Admin.PasswordGenerated {
		t.Fatalf("err = %v, want both password files refused and nothing generated", err)
	}
}
