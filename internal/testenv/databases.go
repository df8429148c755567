package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Database is a running database server with one database and one user
// that has a password, as an administrator would set up for Vikunja.
type Database struct {
	Type     string // "postgres" or "mysql", as Vikunja's database.type
	Host     string // 127.0.0.1
	Port     int
	Name     string
	User     string
	Password string
	// Socket is the directory (PostgreSQL) or file (MariaDB) of the
	// server's unix socket, for superuser work in tests.
	Socket string
}

// Addr is host:port, as Vikunja's database.host.
func (d Database) Addr() string { return fmt.Sprintf("%s:%d", d.Host, d.Port) }

// DSN is a Go database/sql DSN (pgx stdlib or go-sql-driver/mysql).
func (d Database) DSN() string {
	if d.Type == "postgres" {
		return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", d.User, d.Password, d.Addr(), d.Name)
	}
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?parseTime=true", d.User, d.Password, d.Addr(), d.Name)
}

const testDBPassword = "vkimg-test-pw"

func pgBin(t testing.TB, name string) string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		return Need(t, name, "postgresql")
	}
	return matches[len(matches)-1]
}

// PostgreSQL starts a fresh PostgreSQL server on loopback, with database
// "vikunja" owned by user "vikunja" (password authentication over TCP).
func PostgreSQL(t testing.TB) Database {
	t.Helper()
	NeedRoot(t)
	initdb, postgres := pgBin(t, "initdb"), pgBin(t, "postgres")
	dir := OwnedTempDir(t, "postgres")
	data, sock := filepath.Join(dir, "data"), dir
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(testDBPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "chown", "postgres:", pwfile)
	run(t, "runuser", "-u", "postgres", "--", initdb, "-D", data, "-U", "postgres",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwfile, "-E", "UTF8", "--locale=C.UTF-8")
	port := FreePort(t)
	Background(t, "postgres", exec.Command("runuser", "-u", "postgres", "--", postgres,
		"-D", data, "-p", itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+sock, "-c", "fsync=off"))
	if err := WaitTCP(fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	psql := func(sql string) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, err := exec.Command("runuser", "-u", "postgres", "--", pgBin(t, "psql"),
				"-h", sock, "-p", itoa(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("psql %q: %v\n%s", sql, err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	psql(fmt.Sprintf("CREATE USER vikunja PASSWORD '%s'", testDBPassword))
	psql("CREATE DATABASE vikunja OWNER vikunja")
	return Database{Type: "postgres", Host: "127.0.0.1", Port: port, Name: "vikunja",
		User: "vikunja", Password: testDBPassword, Socket: sock}
}

// MariaDB starts a fresh MariaDB server on loopback, with database
// "vikunja" and user "vikunja"@"%" (password authentication).
func MariaDB(t testing.TB) Database {
	t.Helper()
	NeedRoot(t)
	installDB := Need(t, "mariadb-install-db", "mariadb-server")
	mariadbd := Need(t, "/usr/sbin/mariadbd", "mariadb-server")
	client := Need(t, "mariadb", "mariadb-client")
	dir := OwnedTempDir(t, "mysql")
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "mysqld.sock")
	run(t, installDB, "--user=mysql", "--datadir="+data, "--auth-root-authentication-method=socket",
		"--skip-test-db", "--skip-name-resolve")
	port := FreePort(t)
	Background(t, "mariadb", exec.Command(mariadbd, "--no-defaults", "--user=mysql", "--datadir="+data,
		"--socket="+sock, "--port="+itoa(port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--pid-file="+filepath.Join(dir, "mysqld.pid"), "--innodb-flush-log-at-trx-commit=0"))
	if err := WaitTCP(fmt.Sprintf("127.0.0.1:%d", port), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	sql := fmt.Sprintf("CREATE DATABASE vikunja CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; "+
		"CREATE USER 'vikunja'@'%%' IDENTIFIED BY '%s'; GRANT ALL ON vikunja.* TO 'vikunja'@'%%';", testDBPassword)
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command(client, "--no-defaults", "--socket="+sock, "-uroot", "-e", sql).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mariadb setup: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return Database{Type: "mysql", Host: "127.0.0.1", Port: port, Name: "vikunja",
		User: "vikunja", Password: testDBPassword, Socket: sock}
}
