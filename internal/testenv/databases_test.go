package testenv

import (
	"database/sql"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Both servers must accept the vikunja user's password over TCP and let it
// create tables, which is all Vikunja (and the stand-in) needs.
func TestDatabasesAcceptTheirUser(t *testing.T) {
	for name, start := range map[string]func(testing.TB) Database{"postgres": PostgreSQL, "mariadb": MariaDB} {
		t.Run(name, func(t *testing.T) {
			d := start(t)
			driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[d.Type]
			db, err := sql.Open(driver, d.DSN())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec("CREATE TABLE probe (id INT PRIMARY KEY)"); err != nil {
				t.Fatalf("create table as %s: %v", d.User, err)
			}
			if _, err := db.Exec("INSERT INTO probe VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRow("SELECT count(*) FROM probe").Scan(&n); err != nil || n != 1 {
				t.Fatalf("count = %d, %v; want 1", n, err)
			}
			bad := d
			bad.Password = "wrong"
			wrong, _ := sql.Open(driver, bad.DSN())
			defer wrong.Close()
			if err := wrong.Ping(); err == nil {
				t.Fatal("a wrong password was accepted: the server does not check credentials")
			}
		})
	}
}
