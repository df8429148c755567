package datavol

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestWriteLaysOutVolumeWithPrivateFiles(t *testing.T) {
	root := t.TempDir()
	owner := Owner{UID: os.Getuid(), GID: os.Getgid()}
	if os.Geteuid() == 0 {
		owner = Owner{UID: 100990, GID: 100990}
	}
	s := Settings{
		PublicURL: "https://tasks.example.org/",
		Database:  Database{Type: SQLite},
		Admin:     Admin{Username: "admin", Email: "admin@example.org", Password: "s3cret pw"},
	}
	if err := Write(root, s, owner); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ConfigFile, AdminEnvFile, AdminPasswordFile} {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != owner.UID || int(st.Gid) != owner.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", f, st.Uid, st.Gid, owner.UID, owner.GID)
		}
	}
	secret, err := ReadSecret(root)
	if err != nil || len(secret) < 40 {
		t.Fatalf("secret %q, %v: want a generated secret", secret, err)
	}
	// Rewriting with the kept secret must not change it: both slots and
	// every restart share it.
	s.Secret = secret
	if err := Write(root, s, owner); err != nil {
		t.Fatal(err)
	}
	if again, _ := ReadSecret(root); again != secret {
		t.Fatalf("secret changed on rewrite: %q → %q", secret, again)
	}
	pw, _ := os.ReadFile(filepath.Join(root, AdminPasswordFile))
	if string(pw) != "s3cret pw" {
		t.Fatalf("admin password file = %q", pw)
	}
}

func TestVikunjaConfigCannotBeInjected(t *testing.T) {
	s := Settings{
		PublicURL: "https://x.example/\ndatabase:\n  type: mysql",
		Secret:    "abc",
		Database:  Database{Type: Postgres, Host: "db:5432", Name: "v", User: "u", Password: "p\"w: {x}\n"},
	}
	b, err := VikunjaConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	var back vikunjaConfig
	if err := yaml.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Database.Type != Postgres || back.Service.PublicURL != s.PublicURL || back.Database.Password != s.Database.Password {
		t.Fatalf("round trip changed values:\n%s", b)
	}
	if back.Database.SSLMode != "disable" {
		t.Errorf("sslmode = %q, want disable by default", back.Database.SSLMode)
	}
}

func TestVikunjaConfigRefusesUnknownDatabase(t *testing.T) {
	_, err := VikunjaConfig(Settings{Database: Database{Type: "oracle"}})
	if err == nil || !strings.Contains(err.Error(), "oracle") {
		t.Fatalf("err = %v, want refusal naming the type", err)
	}
}

func TestReadSettingsRoundTripsWrite(t *testing.T) {
	owner := Owner{UID: os.Getuid(), GID: os.Getgid()}
	for _, db := range []Database{
		{Type: SQLite},
		{Type: Postgres, Host: "db.example:5433", Name: "vik", User: "vu", Password: "p:w\\\"#' x", SSLMode: "verify-full"},
		{Type: MySQL, Host: "10.0.0.5:3306", Name: "vikunja", User: "vikunja", Password: "s3cret: {x}\n"},
	} {
		t.Run(db.Type, func(t *testing.T) {
			root := t.TempDir()
			want := Settings{PublicURL: "https://tasks.example.org/", Database: db, Secret: "kept-secret",
				Admin: Admin{Username: "admin", Email: "a@example.org", Password: "pw"}}
			if err := Write(root, want, owner); err != nil {
				t.Fatal(err)
			}
			got, err := ReadSettings(root)
			if err != nil {
				t.Fatal(err)
			}
			// The admin is bootstrap input, not configuration: it is not read back.
			want.Admin = Admin{}
			if got != want {
				t.Fatalf("ReadSettings = %+v\nwant %+v", got, want)
			}
			again, err := VikunjaConfig(got)
			if err != nil {
				t.Fatal(err)
			}
			if written, _ := os.ReadFile(filepath.Join(root, ConfigFile)); string(written) != string(again) {
				t.Fatalf("re-rendered config differs:\n%s\nwant\n%s", again, written)
			}
		})
	}
}

func TestReadSettingsMissingConfig(t *testing.T) {
	if _, err := ReadSettings(t.TempDir()); err == nil || !strings.Contains(err.Error(), "config") {
		t.Fatalf("err = %v, want a config read error", err)
	}
}
