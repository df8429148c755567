package backup

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	"modernc.org/sqlite"

	"github.com/vkimg/vkimg/internal/datavol"
)

// OpenDatabase opens an instance's database: SQLite at
// dataVolume/db/vikunja.db (never created when missing), or the external
// server db names.
func OpenDatabase(db datavol.Database, dataVolume string) (*sql.DB, error) {
	return openDatabase(db, filepath.Join(dataVolume, datavol.SQLiteFile))
}

func openDatabase(db datavol.Database, sqlitePath string) (*sql.DB, error) {
	switch db.Type {
	case datavol.SQLite:
		if _, err := os.Stat(sqlitePath); err != nil {
			return nil, fmt.Errorf("sqlite database: %w", err)
		}
		return sql.Open("sqlite", sqliteDSN(sqlitePath))
	case datavol.Postgres:
		u := url.URL{Scheme: "postgres", User: url.UserPassword(db.User, db.Password), Host: db.Host, Path: "/" + db.Name,
			RawQuery: url.Values{"sslmode": {cmp.Or(db.SSLMode, "disable")}}.Encode()}
		return sql.Open("pgx", u.String())
	case datavol.MySQL:
		cfg := mysql.NewConfig()
		cfg.Net, cfg.Addr = "tcp", hostPort(db.Host, "3306")
		cfg.User, cfg.Passwd, cfg.DBName = db.User, db.Password, db.Name
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	}
	return nil, fmt.Errorf("database type %q: want sqlite, postgres or mysql", db.Type)
}

// sqliteDSN opens an existing database file (mode=rw never creates one)
// and waits for Vikunja's writes instead of failing with SQLITE_BUSY.
func sqliteDSN(path string) string {
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + escaped + "?mode=rw&_pragma=busy_timeout(10000)"
}

func hostPort(host, defaultPort string) string {
	if _, _, err := net.SplitHostPort(host); err != nil {
		return net.JoinHostPort(host, defaultPort)
	}
	return host
}

// Migrations returns the ids in table migration (sorted): what an upgrade
// compares to tell whether it changed the schema.
func Migrations(ctx context.Context, db datavol.Database, dataVolume string) ([]string, error) {
	sqlDB, err := OpenDatabase(db, dataVolume)
	if err != nil {
		return nil, err
	}
	defer sqlDB.Close()
	return readMigrations(ctx, sqlDB)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func readMigrations(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT id FROM migration")
	if err != nil {
		return nil, fmt.Errorf("read table migration: %w", err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read table migration: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table migration: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// dumpDatabase writes a consistent dump of db to out and returns the
// migration ids of the dumped state. work is a private directory for
// credential files.
func dumpDatabase(ctx context.Context, db datavol.Database, dataVolume, out, work string) ([]string, error) {
	switch db.Type {
	case datavol.SQLite:
		if err := backupSQLite(ctx, filepath.Join(dataVolume, datavol.SQLiteFile), out); err != nil {
			return nil, err
		}
		// Read from the copy: exactly the dumped state.
		copyDB, err := openDatabase(db, out)
		if err != nil {
			return nil, err
		}
		defer copyDB.Close()
		return readMigrations(ctx, copyDB)
	case datavol.Postgres:
		return dumpPostgres(ctx, db, out, work)
	case datavol.MySQL:
		// mariadb-dump cannot share a snapshot: the ids are read just
		// before. Nothing migrates while vkimg backs up: upgrades back up
		// before the new version starts.
		ids, err := Migrations(ctx, db, "")
		if err != nil {
			return nil, err
		}
		return ids, dumpMySQL(ctx, db, out, work)
	}
	return nil, fmt.Errorf("database type %q: want sqlite, postgres or mysql", db.Type)
}

// sqlitePages is how much one backup step copies between checks for
// cancellation (4 MB with 4 KB pages).
const sqlitePages = 1024

// backupSQLite copies a live SQLite database with the online backup API.
// The steps run inside one read transaction on the source, so they all
// copy the same snapshot while Vikunja keeps writing (WAL lets it), and
// the backup never restarts. Run as root, SQLite gives any -wal or -shm
// file it creates the database file's owner, so the container keeps
// access to its database.
func backupSQLite(ctx context.Context, src, dst string) error {
	db, err := openDatabase(datavol.Database{Type: datavol.SQLite}, src)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open sqlite database %s: %w", src, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("sqlite backup: %w", err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")
	// BEGIN is deferred: the first read takes the snapshot.
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
		return fmt.Errorf("sqlite backup: read %s: %w", src, err)
	}
	err = conn.Raw(func(dc any) error {
		bk, err := dc.(interface {
			NewBackup(string) (*sqlite.Backup, error)
		}).NewBackup(dst)
		if err != nil {
			return err
		}
		for {
			more, err := bk.Step(sqlitePages)
			if err == nil && more {
				err = ctx.Err()
			}
			if err != nil {
				bk.Finish()
				return err
			}
			if !more {
				return bk.Finish()
			}
		}
	})
	if err != nil {
		return fmt.Errorf("sqlite backup of %s: %w", src, err)
	}
	return nil
}

// runTool runs a database client. Credentials go through files or the
// environment, never argv; stderr is kept for the error.
func runTool(ctx context.Context, env []string, stdin io.Reader, stdout io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout = stdin, stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// A killed vkimg must not leave a dump running into a removed file.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		return fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return nil
}

func writeSecret(dir, name, content string) (string, error) {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return "", err
	}
	return p, nil
}

// pgConn returns a libpq connection string (values quoted, so any
// database or user name works) and the environment that hands the
// password over in a 0600 password file.
func pgConn(db datavol.Database, work string) (string, []string, error) {
	if strings.ContainsAny(db.Password, "\r\n") {
		return "", nil, errors.New("postgres password holds a line break, which a password file cannot carry")
	}
	host, port, err := net.SplitHostPort(db.Host)
	if err != nil {
		host, port = db.Host, "5432"
	}
	quote := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace
	var b strings.Builder
	for _, kv := range [][2]string{{"host", host}, {"port", port}, {"dbname", db.Name}, {"user", db.User},
		{"sslmode", cmp.Or(db.SSLMode, "disable")}, {"connect_timeout", "10"}} {
		fmt.Fprintf(&b, "%s='%s' ", kv[0], quote(kv[1]))
	}
	pass := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(db.Password)
	passfile, err := writeSecret(work, "pgpass", "*:*:*:*:"+pass+"\n")
	if err != nil {
		return "", nil, err
	}
	return strings.TrimSpace(b.String()), []string{"PGPASSFILE=" + passfile}, nil
}

// dumpPostgres runs pg_dump -Fc in a snapshot exported by a transaction
// that also reads the migration ids, so both describe the same state.
func dumpPostgres(ctx context.Context, db datavol.Database, out, work string) ([]string, error) {
	conninfo, env, err := pgConn(db, work)
	if err != nil {
		return nil, err
	}
	sqlDB, err := openDatabase(db, "")
	if err != nil {
		return nil, err
	}
	defer sqlDB.Close()
	tx, err := sqlDB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %w", db.Host, err)
	}
	defer tx.Rollback()
	var snapshot string
	if err := tx.QueryRowContext(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
		return nil, fmt.Errorf("postgres snapshot: %w", err)
	}
	ids, err := readMigrations(ctx, tx)
	if err != nil {
		return nil, err
	}
	// Uncompressed: zstd compresses the whole archive better and faster.
	err = runTool(ctx, env, nil, nil, "pg_dump", "--format=custom", "--compress=0", "--no-password",
		"--snapshot="+snapshot, "--file="+out, "--dbname="+conninfo)
	return ids, err
}

// pgDropOwned drops what the restoring user owns in the database, so the
// restored schema is exactly the dump's, a table a newer migration added
// included. Unlike DROP OWNED it keeps the privileges the user was
// granted, and it leaves alone the public schema, which pg_dump does not
// recreate.
const pgDropOwned = `DO $vkimg$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
      WHERE n.nspowner = current_user::regrole AND n.nspname <> 'public'
        AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relowner = current_user::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.nspname, r.relname);
  END LOOP;
  FOR r IN SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) AS args
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.proowner = current_user::regrole
        AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('DROP ROUTINE IF EXISTS %I.%I(%s) CASCADE', r.nspname, r.proname, r.args);
  END LOOP;
  FOR r IN SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE t.typowner = current_user::regrole
        AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND
             (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
        AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('DROP TYPE IF EXISTS %I.%I CASCADE', r.nspname, r.typname);
  END LOOP;
END
$vkimg$;
`

// restorePostgres replaces the database's content with the dump in one
// transaction: the drops, then pg_restore's script. Any error rolls it
// all back, leaving the database as it was.
func restorePostgres(ctx context.Context, db datavol.Database, dump, work string) error {
	conninfo, env, err := pgConn(db, work)
	if err != nil {
		return err
	}
	script, err := os.OpenFile(filepath.Join(work, "restore.sql"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer script.Close()
	if _, err := script.WriteString(pgDropOwned); err != nil {
		return err
	}
	if err := runTool(ctx, env, nil, script, "pg_restore", "--no-owner", "--no-privileges", "--file=-", dump); err != nil {
		return err
	}
	if err := script.Close(); err != nil {
		return err
	}
	return runTool(ctx, env, nil, nil, "psql", "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
		"--single-transaction", "--file="+script.Name(), "--dbname="+conninfo)
}

// mysqlOptions writes the client option file that carries the
// credentials (--defaults-extra-file), with values quoted and escaped as
// MariaDB's option parser reads them.
func mysqlOptions(db datavol.Database, work string) (string, error) {
	host, port, err := net.SplitHostPort(db.Host)
	if err != nil {
		host, port = db.Host, "3306"
	}
	quote := func(s string) string {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s) + `"`
	}
	content := fmt.Sprintf("[client]\nprotocol=tcp\nhost=%s\nport=%s\nuser=%s\npassword=%s\n",
		quote(host), quote(port), quote(db.User), quote(db.Password))
	return writeSecret(work, "my.cnf", content)
}

func dumpMySQL(ctx context.Context, db datavol.Database, out, work string) error {
	opts, err := mysqlOptions(db, work)
	if err != nil {
		return err
	}
	return runTool(ctx, nil, nil, nil, "mariadb-dump", "--defaults-extra-file="+opts,
		"--single-transaction", "--routines", "--triggers", "--hex-blob", "--default-character-set=utf8mb4",
		"--skip-dump-date", "--result-file="+out, "--", db.Name)
}

// restoreMySQL replaces the database's content with the dump. MariaDB
// cannot undo DDL, so the current content is dumped first and loaded back
// if the restore fails; if even that fails, that dump is kept and the
// error says where.
func restoreMySQL(ctx context.Context, db datavol.Database, dump string, work *workDir) error {
	before := filepath.Join(work.path, "before-restore.sql")
	if err := dumpMySQL(ctx, db, before, work.path); err != nil {
		return fmt.Errorf("save the current database before replacing it: %w", err)
	}
	err := replaceMySQL(ctx, db, dump, work.path)
	if err == nil {
		return nil
	}
	// The previous content is put back even when ctx was cancelled.
	if err2 := replaceMySQL(context.WithoutCancel(ctx), db, before, work.path); err2 != nil {
		kept := filepath.Join(work.preserve(), filepath.Base(before))
		return fmt.Errorf("%w; loading the previous content back failed too (%v): it is in %s, load it with mariadb", err, err2, kept)
	}
	return fmt.Errorf("%w (the database was put back as it was)", err)
}

// replaceMySQL drops every table, view, sequence and routine of the
// database, then loads the dump.
func replaceMySQL(ctx context.Context, db datavol.Database, dump, work string) error {
	sqlDB, err := openDatabase(db, "")
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to mysql at %s: %w", db.Host, err)
	}
	defer conn.Close()
	// Foreign keys would otherwise dictate the order of the drops.
	if _, err := conn.ExecContext(ctx, "SET FOREIGN_KEY_CHECKS=0"); err != nil {
		return err
	}
	var drops []string
	for _, q := range []struct{ query, format string }{
		{"SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'VIEW'", "DROP VIEW IF EXISTS %s"},
		{"SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'SEQUENCE'", "DROP SEQUENCE IF EXISTS %s"},
		{"SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type NOT IN ('VIEW', 'SEQUENCE')", "DROP TABLE IF EXISTS %s"},
		{"SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE() AND routine_type = 'PROCEDURE'", "DROP PROCEDURE IF EXISTS %s"},
		{"SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE() AND routine_type = 'FUNCTION'", "DROP FUNCTION IF EXISTS %s"},
	} {
		names, err := queryStrings(ctx, conn, q.query)
		if err != nil {
			return fmt.Errorf("list database objects: %w", err)
		}
		for _, n := range names {
			drops = append(drops, fmt.Sprintf(q.format, "`"+strings.ReplaceAll(n, "`", "``")+"`"))
		}
	}
	for _, d := range drops {
		if _, err := conn.ExecContext(ctx, d); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	}
	opts, err := mysqlOptions(db, work)
	if err != nil {
		return err
	}
	in, err := os.Open(dump)
	if err != nil {
		return err
	}
	defer in.Close()
	return runTool(ctx, nil, in, nil, "mariadb", "--defaults-extra-file="+opts, "--binary-mode", "--batch",
		"--database="+db.Name)
}

func queryStrings(ctx context.Context, conn *sql.Conn, query string) ([]string, error) {
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
