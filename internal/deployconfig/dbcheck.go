package deployconfig

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/vkimg/vkimg/internal/datavol"
)

// DBProblem is what went wrong when connecting to the database; each
// kind needs a different fix, so each is told apart.
type DBProblem int

const (
	DBUnreachable DBProblem = iota + 1 // nothing answers at host:port
	DBAuth                             // the server refused the user or password
	DBMissing                          // the database does not exist
	DBPrivilege                        // the user may not create Vikunja's tables
	DBInUse                            // the database already holds a Vikunja schema
	DBOther
)

// DBError explains a failed database check and what to do about it.
type DBError struct {
	Kind DBProblem
	Key  string // the answer to fix
	Msg  string
	Err  error
}

func (e *DBError) Error() string { return e.Msg }
func (e *DBError) Unwrap() error { return e.Err }

// DefaultDBTimeout bounds a database check: an unreachable host must not
// stall the wizard.
const DefaultDBTimeout = 5 * time.Second

// CheckDatabase connects to an external database with the given
// credentials and makes sure Vikunja could use it. It returns nil for
// SQLite, which lives on the data volume.
func CheckDatabase(ctx context.Context, d Database, timeout time.Duration) error {
	if !d.External() {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultDBTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	db, err := openDB(d, timeout)
	if err != nil {
		return &DBError{Kind: DBOther, Key: "database.host", Msg: fmt.Sprintf("%s database at %s: %v", d.Type, d.Addr(), err), Err: err}
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return classifyDBError(d, err)
	}
	if d.Type == datavol.Postgres {
		// PostgreSQL 15 no longer lets every user create tables in the
		// public schema: Vikunja's first migration would fail.
		var ok bool
		err := db.QueryRowContext(ctx, "SELECT has_schema_privilege(current_schema(), 'CREATE')").Scan(&ok)
		if err != nil {
			return classifyDBError(d, err)
		}
		if !ok {
			return &DBError{Kind: DBPrivilege, Key: "database.user", Msg: fmt.Sprintf(
				"user %q may not create tables in database %q: run GRANT CREATE ON SCHEMA public TO %q (or make it the database owner)",
				d.User, d.Name, d.User)}
		}
	}
	// Another instance's data (or one left behind) must not be taken
	// over: the new instance's admin could not log in, and both would
	// write one database.
	schema := "current_schema()"
	if d.Type == datavol.MySQL {
		schema = "DATABASE()"
	}
	var tables int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "+schema+" AND table_name = 'migration'").Scan(&tables); err != nil {
		return classifyDBError(d, err)
	}
	if tables > 0 {
		return &DBError{Kind: DBInUse, Key: "database.name", Msg: fmt.Sprintf(
			"database %q already holds a Vikunja schema (table migration): a new instance needs an empty database; `vkimg restore` brings an existing instance back, or empty the database first",
			d.Name)}
	}
	return nil
}

func openDB(d Database, timeout time.Duration) (*sql.DB, error) {
	switch d.Type {
	case datavol.Postgres:
		u := url.URL{Scheme: "postgres", User: url.UserPassword(d.User, d.Password), Host: d.Addr(), Path: "/" + d.Name}
		q := url.Values{}
		q.Set("sslmode", cmp.Or(d.SSLMode, "disable"))
		q.Set("connect_timeout", strconv.Itoa(max(1, int(timeout.Seconds()))))
		u.RawQuery = q.Encode()
		cfg, err := pgx.ParseConfig(u.String())
		if err != nil {
			return nil, err
		}
		return stdlib.OpenDB(*cfg), nil
	case datavol.MySQL:
		cfg := mysql.NewConfig()
		cfg.Net, cfg.Addr = "tcp", d.Addr()
		cfg.User, cfg.Passwd, cfg.DBName = d.User, d.Password, d.Name
		cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = timeout, timeout, timeout
		// The driver would print protocol hiccups to stderr, over the wizard.
		cfg.Logger = mysql.Logger(nopLogger{})
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	}
	return nil, fmt.Errorf("unknown database type %q", d.Type)
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

// MySQL/MariaDB error numbers (mysqld_error.h).
const (
	erDBAccessDenied = 1044
	erAccessDenied   = 1045
	// MariaDB's answer for an unknown user.
	erAccessDeniedNoPassword = 1698
	erBadDB                  = 1049
)

func classifyDBError(d Database, err error) error {
	unreachable := &DBError{Kind: DBUnreachable, Key: "database.host", Err: err, Msg: fmt.Sprintf(
		"cannot reach %s at %s: %v; check the host and port, that the server listens on the network, and the firewall", d.Type, d.Addr(), rootCause(err))}
	auth := &DBError{Kind: DBAuth, Key: "database.password", Err: err, Msg: fmt.Sprintf(
		"authentication failed for user %q at %s: check the user name and password, and that the server lets this user connect from this host", d.User, d.Addr())}
	missing := &DBError{Kind: DBMissing, Key: "database.name", Err: err, Msg: fmt.Sprintf(
		"database %q does not exist on %s: create it (owned by %q) or fix the name", d.Name, d.Addr(), d.User)}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return auth
		case "3D000":
			return missing
		}
		return &DBError{Kind: DBOther, Key: "database.host", Err: err, Msg: fmt.Sprintf("postgres at %s: %s", d.Addr(), pgErr.Message)}
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		switch myErr.Number {
		case erAccessDenied, erAccessDeniedNoPassword:
			return auth
		case erBadDB:
			return missing
		case erDBAccessDenied:
			// MariaDB does not tell users whether a database they may not
			// see exists.
			return &DBError{Kind: DBMissing, Key: "database.name", Err: err, Msg: fmt.Sprintf(
				"database %q does not exist on %s or user %q has no rights on it: create it and run GRANT ALL ON `%s`.* TO '%s'@'%%'",
				d.Name, d.Addr(), d.User, d.Name, d.User)}
		}
		return &DBError{Kind: DBOther, Key: "database.host", Err: err, Msg: fmt.Sprintf("mysql at %s: %s", d.Addr(), myErr.Message)}
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return unreachable
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return unreachable
	}
	return &DBError{Kind: DBOther, Key: "database.host", Err: err, Msg: fmt.Sprintf("%s at %s: %v", d.Type, d.Addr(), err)}
}

// rootCause is the innermost error, which for a dial says plainly
// "connection refused" or "i/o timeout".
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
