package builder

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the probe's throw-away database
)

// probeMigrations lists the database migrations a backend binary contains
// by letting it migrate an empty SQLite database and reading the migration
// table back, in the order they were applied. This works the same for real
// Vikunja (xormigrate) and the stand-in, with no knowledge of their code.
func probeMigrations(ctx context.Context, bin, work string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp(work, "probe-")
	if err != nil {
		return nil, fmt.Errorf("probe migrations: %w", err)
	}
	db := filepath.Join(dir, "probe.db")
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		return nil, fmt.Errorf("probe migrations: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, "migrate")
	cmd.Dir = dir
	cmd.Env = []string{
		"HOME=" + dir,
		"PATH=/usr/bin:/bin",
		"VIKUNJA_DATABASE_TYPE=sqlite",
		"VIKUNJA_DATABASE_PATH=" + db,
		"VIKUNJA_SERVICE_PUBLICURL=http://probe/",
		"VIKUNJA_FILES_BASEPATH=" + files,
		"VIKUNJA_SERVICE_ROOTPATH=" + dir,
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("probe migrations: %s migrate: %w\n%s", bin, err, tail(string(out), 20))
	}
	conn, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		return nil, fmt.Errorf("probe migrations: %w", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SELECT id FROM migration ORDER BY rowid")
	if err != nil {
		return nil, fmt.Errorf("probe migrations: read migration table: %w\n%s", err, tail(string(out), 20))
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("probe migrations: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("probe migrations: %w", err)
	}
	return ids, nil
}
