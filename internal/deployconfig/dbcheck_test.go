package deployconfig

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/testenv"
)

func fromTestenv(db testenv.Database) Database {
	return Database{Type: db.Type, Host: db.Host, Port: db.Port, Name: db.Name, User: db.User, Password: db.Password}
}

// checkDBCases runs the cases every external database must tell apart,
// against a real server.
func checkDBCases(t *testing.T, good Database) {
	if err := CheckDatabase(t.Context(), good, 10*time.Second); err != nil {
		t.Fatalf("right credentials refused: %v", err)
	}
	wrongPW, wrongUser, wrongDB, closed := good, good, good, good
	wrongPW.Password = "not-the-password"
	wrongUser.User = "nobody"
	wrongDB.Name = "nosuchdb"
	closed.Port = testenv.FreePort(t)
	for _, c := range []struct {
		name string
		d    Database
		kind DBProblem
		key  string
		says string
	}{
		{"wrong password", wrongPW, DBAuth, "database.password", `authentication failed for user "vikunja"`},
		{"unknown user", wrongUser, DBAuth, "database.password", `authentication failed for user "nobody"`},
		{"wrong database", wrongDB, DBMissing, "database.name", `database "nosuchdb" does not exist`},
		{"closed port", closed, DBUnreachable, "database.host", "connection refused"},
	} {
		err := CheckDatabase(t.Context(), c.d, 10*time.Second)
		var de *DBError
		if !errors.As(err, &de) || de.Kind != c.kind || de.Key != c.key || !strings.Contains(de.Msg, c.says) {
			t.Errorf("%s: err = %#v, want kind %d on %s saying %q", c.name, err, c.kind, c.key, c.says)
		}
	}

	// Through Validate, the refusal lands on the answer to fix.
	a := goodAnswers(t)
	a.Database = wrongPW
	a.Database.PasswordFile = "pw.txt"
	if ie, _ := validate(t, a).Err().(*InvalidError); ie == nil || !ie.Has("database.password_file") {
		t.Errorf("wrong password through Validate: %v", ie)
	}
	a.Database = good
	if err := validate(t, a).Err(); err != nil {
		t.Errorf("right credentials through Validate: %v", err)
	}

	// A database that holds a Vikunja schema is another instance's: a
	// deploy is refused, a restore (which replaces it) is not.
	conn, err := openDB(good, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "CREATE TABLE migration (id VARCHAR(255) PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	var de *DBError
	if err := CheckDatabase(t.Context(), good, 10*time.Second); !errors.As(err, &de) || de.Kind != DBInUse || de.Key != "database.name" || !strings.Contains(de.Msg, "vkimg restore") {
		t.Errorf("database holding a Vikunja schema: err = %v", err)
	}
	if ie, _ := validate(t, a).Err().(*InvalidError); ie == nil || !ie.Has("database.name") {
		t.Errorf("database holding a Vikunja schema through Validate: %v", ie)
	}
	if err := a.Validate(t.Context(), Checks{Min: testMin, Now: func() time.Time { return testNow }, ReplaceDatabase: true}).Err(); err != nil {
		t.Errorf("the same database for a restore: %v", err)
	}
}

func TestCheckDatabasePostgreSQL(t *testing.T) {
	db := testenv.PostgreSQL(t)
	checkDBCases(t, fromTestenv(db))

	// A user that may log in but not create tables (PostgreSQL 15+ default
	// for a database it does not own) is refused before deploy.
	psql, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
	if len(psql) == 0 {
		t.Fatal("psql not found next to the server testenv started")
	}
	sql := "CREATE USER guest PASSWORD 'guest-pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
	out, err := exec.Command("runuser", "-u", "postgres", "--", psql[len(psql)-1], "-h", db.Socket, "-p", strconv.Itoa(db.Port),
		"-U", "postgres", "-d", db.Name, "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	guest := fromTestenv(db)
	guest.User, guest.Password = "guest", "guest-pw"
	var de *DBError
	if err := CheckDatabase(t.Context(), guest, 10*time.Second); !errors.As(err, &de) || de.Kind != DBPrivilege || !strings.Contains(de.Msg, "GRANT CREATE ON SCHEMA public") {
		t.Errorf("user without CREATE: err = %v", err)
	}
}

func TestCheckDatabaseMariaDB(t *testing.T) {
	checkDBCases(t, fromTestenv(testenv.MariaDB(t)))
}

func TestCheckDatabaseSQLiteNeedsNoConnection(t *testing.T) {
	if err := CheckDatabase(t.Context(), Database{Type: "sqlite", Host: "unused"}, 0); err != nil {
		t.Errorf("sqlite: %v", err)
	}
}
