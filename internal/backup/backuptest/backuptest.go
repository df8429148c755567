// Package backuptest gives tests a canonical picture of an instance's
// state, so that "the data is identical to before" is one string
// comparison (with a readable diff when it fails).
package backuptest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
)

// Dump returns every table's (and view's) columns and rows, rows sorted,
// then the data volume's files/ tree with sizes and SHA-256: the same
// string for the same data, whatever order the database returns rows in.
func Dump(t testing.TB, db datavol.Database, dataVolume string) string {
	t.Helper()
	var b strings.Builder
	dumpTables(t, &b, db, dataVolume)
	b.WriteString("== files\n")
	b.WriteString(tree(t, filepath.Join(dataVolume, datavol.FilesDir), false))
	return b.String()
}

// Tree lists every entry under root with its type, mode and owner, and
// for files their size and SHA-256, in lexical order. A SQLite database
// of the data volume (db/vikunja.db) is listed without size and checksum,
// and its -wal and -shm files not at all: those change as the database
// is opened, not as its data does (compare Dump for that).
func Tree(t testing.TB, root string) string {
	t.Helper()
	return tree(t, root, true)
}

func tree(t testing.TB, root string, owners bool) string {
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		live := rel == datavol.SQLiteFile
		if rel == datavol.SQLiteFile+"-wal" || rel == datavol.SQLiteFile+"-shm" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s", rel, kind(fi.Mode()))
		if owners {
			st := fi.Sys().(*syscall.Stat_t)
			fmt.Fprintf(&b, " %v %d:%d", fi.Mode().Perm()|fi.Mode()&(fs.ModeSetgid|fs.ModeSticky), st.Uid, st.Gid)
		}
		if fi.Mode().IsRegular() && !live {
			fmt.Fprintf(&b, " %d %s", fi.Size(), fileSHA256(t, p))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", root, err)
	}
	return b.String()
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m.IsRegular():
		return "file"
	}
	return m.Type().String()
}

func fileSHA256(t testing.TB, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tableQueries list the tables and views of the instance's database as
// identifiers ready to be put in a query, sorted.
var tableQueries = map[string]string{
	datavol.SQLite: `SELECT '"' || replace(name, '"', '""') || '"' FROM sqlite_schema
		WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`,
	datavol.Postgres: `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_schema, table_name`,
	datavol.MySQL: "SELECT CONCAT('`', REPLACE(table_name, '`', '``'), '`') FROM information_schema.tables " +
		"WHERE table_schema = DATABASE() ORDER BY table_name",
}

func dumpTables(t testing.TB, b *strings.Builder, db datavol.Database, dataVolume string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sqlDB, err := backup.OpenDatabase(db, dataVolume)
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	tables := queryColumn(t, ctx, sqlDB, tableQueries[db.Type])
	for _, table := range tables {
		rows, err := sqlDB.QueryContext(ctx, "SELECT * FROM "+table)
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("dump %s: %v", table, err)
			}
			fields := make([]string, len(vals))
			for i, v := range vals {
				fields[i] = format(v)
			}
			lines = append(lines, strings.Join(fields, "\t"))
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		rows.Close()
		slices.Sort(lines)
		fmt.Fprintf(b, "== table %s (%s)\n", table, strings.Join(cols, ", "))
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
}

func queryColumn(t testing.TB, ctx context.Context, db *sql.DB, query string) []string {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func format(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		return fmt.Sprintf("%q", v)
	case string:
		return fmt.Sprintf("%q", v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}
