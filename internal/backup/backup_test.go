package backup_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/testenv"
)

// trickyPassword is a database password that needs escaping in every
// place vkimg hands it over (libpq password file, MariaDB option file).
const trickyPassword = `t"ri#ck:y'pw\x $HOME`

func TestRestoreExactStateSQLite(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	roundTrip(t, in, nil)
}

func TestRestoreExactStatePostgreSQL(t *testing.T) {
	db, other := postgres(t)
	in := newInstance(t, db)
	info := roundTrip(t, in, func(t *testing.T) {
		in.exec(t,
			`CREATE SCHEMA added`,
			`CREATE TABLE added.t (id INT)`,
			`CREATE VIEW added_view AS SELECT id FROM tasks`,
			`CREATE FUNCTION added_fn(i INT) RETURNS INT LANGUAGE sql AS 'SELECT i + 1'`,
			`CREATE TYPE added_mood AS ENUM ('calm', 'busy')`,
			`CREATE TYPE added_pair AS (a INT, b TEXT)`,
		)
	})
	for what, query := range map[string]string{
		"schemas":   `SELECT count(*) FROM pg_namespace WHERE nspname = 'added'`,
		"functions": `SELECT count(*) FROM pg_proc WHERE proname = 'added_fn'`,
		"types":     `SELECT count(*) FROM pg_type WHERE typname IN ('added_mood', 'added_pair')`,
	} {
		if n := count(t, in, query); n != 0 {
			t.Errorf("%d %s the backup did not have survived the restore", n, what)
		}
	}

	// Into another database with other credentials (as on another node):
	// the dump goes where Target says, and the restored config points there.
	vol := filepath.Join(t.TempDir(), "elsewhere", "data")
	if _, err := backup.Restore(context.Background(), info.Path, backup.Target{DataVolume: vol, Database: &other}); err != nil {
		t.Fatal(err)
	}
	moved := &instance{db: other, src: backup.Source{DataVolume: vol}}
	s, err := datavol.ReadSettings(vol)
	if err != nil || s.Database != other {
		t.Fatalf("restored config's database = %+v (%v), want %+v", s.Database, err, other)
	}
	if got := backupDump(t, moved); got != info.dumpBefore {
		t.Errorf("data restored on another server differs:\n%s", diff(info.dumpBefore, got))
	}

	// A database restore that fails (here: a wrong password) leaves the
	// data volume as it was.
	in.exec(t, `DELETE FROM tasks WHERE id = 7`)
	before := in.state(t)
	wrong := db
	wrong.Password = "wrong"
	_, err = backup.Restore(context.Background(), info.Path, backup.Target{DataVolume: in.vol(), Database: &wrong})
	if err == nil || !strings.Contains(err.Error(), "the data volume is unchanged") {
		t.Fatalf("Restore with a wrong password: %v, want a failure that leaves the data volume", err)
	}
	t.Log(err)
	if after := in.state(t); after != before {
		t.Errorf("a failed database restore changed the instance:\n%s", diff(before, after))
	}
}

func TestRestoreExactStateMariaDB(t *testing.T) {
	in := newInstance(t, mariadb(t))
	roundTrip(t, in, func(t *testing.T) {
		in.exec(t,
			`CREATE VIEW added_view AS SELECT id FROM tasks`,
			`CREATE PROCEDURE added_proc() SELECT 1`,
		)
	})
	if n := count(t, in, `SELECT count(*) FROM information_schema.routines WHERE routine_schema = DATABASE()`); n != 0 {
		t.Errorf("%d routines the backup did not have survived the restore", n)
	}
}

// roundTripResult is what a round trip saw before the backup.
type roundTripResult struct {
	*backup.Info
	stateBefore, dumpBefore string
}

// roundTrip backs an instance up, changes its data, config, files and
// schema (plus what change adds), restores, and demands the state from
// before the backup, exactly.
func roundTrip(t *testing.T, in *instance, change func(t *testing.T)) roundTripResult {
	ctx := context.Background()
	before := in.state(t)
	dumpBefore := backupDump(t, in)
	cfgBefore, err := os.ReadFile(in.src.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	info := in.create(t, backup.Options{})
	noRootFiles(t, in.vol())
	if !slices.Equal(info.Manifest.Database.Migrations, standinMigrations) {
		t.Errorf("manifest migrations %v, want %v", info.Manifest.Database.Migrations, standinMigrations)
	}
	if ids, err := backup.Migrations(ctx, in.db, in.vol()); err != nil || !slices.Equal(ids, standinMigrations) {
		t.Errorf("Migrations = %v, %v; want %v", ids, err, standinMigrations)
	}
	checkManifest(t, info)

	// Everything a restore must undo: rows added, changed and deleted,
	// an attachment added and one removed, a new config, other modes and
	// owners, a one-shot secret consumed, a migration applied.
	in.addAttachment(t, 2, 5000)
	in.exec(t,
		`INSERT INTO tasks (title, description, project_id, task_index, created_by_id, created, updated) VALUES ('new', '', 1, 99, 1, 9, 9)`,
		`UPDATE tasks SET title = 'changed', done = TRUE WHERE id = 5`,
		`DELETE FROM tasks WHERE id = 3`,
		`DELETE FROM users WHERE username = 'bob'`,
		`DELETE FROM files WHERE id = 1`,
		`ALTER TABLE tasks ADD COLUMN done_at BIGINT NOT NULL DEFAULT 0`,
		`CREATE TABLE added_by_upgrade (id INT)`,
		`INSERT INTO migration (id, description) VALUES ('20260301000001', 'add tasks.done_at')`,
	)
	vol := in.vol()
	if err := os.Remove(filepath.Join(vol, datavol.FilesDir, "1")); err != nil {
		t.Fatal(err)
	}
	if err := datavol.Write(vol, datavol.Settings{PublicURL: "https://changed.example.org/", Database: in.db}, datavol.Owner{UID: vikunjaID, GID: vikunjaID}); err != nil {
		t.Fatal(err)
	}
	own(t, filepath.Join(vol, datavol.FilesDir, "2"), vikunjaID, mcpID, 0o644)
	own(t, filepath.Join(vol, datavol.MCPTokenFile), vikunjaID, vikunjaID, 0o600)
	if err := os.Remove(filepath.Join(vol, datavol.AdminPasswordFile)); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(vol, "stray"), []byte("not in the backup"), vikunjaID, vikunjaID, 0o600)
	if err := os.WriteFile(in.src.ConfigFile, []byte("name: tasks\nchanged: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(t)
	}
	if in.state(t) == before {
		t.Fatal("the changes changed nothing")
	}

	m, err := backup.Restore(ctx, info.Path, backup.Target{DataVolume: vol, ConfigFile: in.src.ConfigFile})
	if err != nil {
		t.Fatal(err)
	}
	if m.Created != info.Manifest.Created {
		t.Errorf("Restore returned a manifest of %v, want %v", m.Created, info.Manifest.Created)
	}
	if in.db.Type == datavol.SQLite {
		for _, f := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(filepath.Join(vol, datavol.SQLiteFile+f)); err == nil {
				t.Errorf("restore left %s beside the database", datavol.SQLiteFile+f)
			}
		}
	}
	if after := in.state(t); after != before {
		t.Errorf("restored state differs from the backed-up one:\n%s", diff(before, after))
	}
	if cfg, _ := os.ReadFile(in.src.ConfigFile); string(cfg) != string(cfgBefore) {
		t.Errorf("instance.yaml = %q, want %q", cfg, cfgBefore)
	}
	noRootFiles(t, vol)
	entries, _ := os.ReadDir(filepath.Dir(vol))
	for _, e := range entries {
		if e.Name() != "data" && e.Name() != "instance.yaml" {
			t.Errorf("restore left %s beside the data volume", e.Name())
		}
	}
	return roundTripResult{Info: info, stateBefore: before, dumpBefore: dumpBefore}
}

func backupDump(t *testing.T, in *instance) string {
	t.Helper()
	return strings.SplitN(in.state(t), "== volume\n", 2)[0]
}

func checkManifest(t *testing.T, info *backup.Info) {
	t.Helper()
	m := info.Manifest
	if m.Format != backup.FormatVersion || m.Instance != "tasks" || m.Kind != backup.KindManual || m.Template.Version != "1.0.0" {
		t.Errorf("manifest header %+v", m)
	}
	paths := map[string]backup.Entry{}
	for _, e := range m.Entries {
		paths[e.Path] = e
	}
	for _, want := range []string{"instance.yaml", "data", "data/config/config.yml", "data/secrets/admin-password",
		"data/secrets/mcp-token", "data/files/1", m.Database.Dump} {
		if _, ok := paths[want]; !ok {
			t.Errorf("manifest lacks %s", want)
		}
	}
	if e := paths["data/secrets/mcp-token"]; e.UID != 990 || e.GID != 991 || e.Mode != 0o640 {
		t.Errorf("mcp-token stored as %+v, want container-relative 990:991 0640", e)
	}
	for _, live := range []string{"data/db/vikunja.db", "data/db/vikunja.db-wal", "data/db/vikunja.db-shm"} {
		if _, ok := paths[live]; ok {
			t.Errorf("archive holds the live database file %s", live)
		}
	}
	fi, err := os.Stat(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != info.Size {
		t.Errorf("archive mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), info.Size)
	}
	if di, _ := os.Stat(filepath.Dir(info.Path)); di.Mode().Perm() != 0o700 {
		t.Errorf("backup directory mode %v, want 0700", di.Mode().Perm())
	}
	name := filepath.Base(info.Path)
	if want := "tasks-" + m.Created.Format("20060102T150405Z") + "-1.0.0.tar.zst"; name != want {
		t.Errorf("archive name %s, want %s", name, want)
	}
}

func count(t *testing.T, in *instance, query string) int {
	t.Helper()
	db := in.open(t)
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// diff shows the lines only one of two states has.
func diff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}

// postgres starts a server whose vikunja user has trickyPassword, with a
// second database that another user owns: where a restore on another
// node would go.
func postgres(t testing.TB) (vikunja, other datavol.Database) {
	d := testenv.PostgreSQL(t)
	su, err := sql.Open("pgx", fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", d.Name, d.Socket, d.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close()
	for _, stmt := range []string{
		fmt.Sprintf("ALTER USER %s PASSWORD '%s'", d.User, strings.ReplaceAll(trickyPassword, "'", "''")),
		"CREATE USER elsewhere PASSWORD 'elsewhere-pw'",
		"CREATE DATABASE elsewhere OWNER elsewhere",
	} {
		if _, err := su.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	vikunja = datavol.Database{Type: datavol.Postgres, Host: d.Addr(), Name: d.Name, User: d.User, Password: trickyPassword, SSLMode: "disable"}
	other = datavol.Database{Type: datavol.Postgres, Host: d.Addr(), Name: "elsewhere", User: "elsewhere", Password: "elsewhere-pw", SSLMode: "disable"}
	return vikunja, other
}

// mariadb starts a server whose vikunja user has trickyPassword.
func mariadb(t testing.TB) datavol.Database {
	d := testenv.MariaDB(t)
	lit := strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(trickyPassword)
	out, err := exec.Command("mariadb", "--no-defaults", "--socket="+d.Socket, "-uroot",
		"-e", fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", d.User, lit)).CombinedOutput()
	if err != nil {
		t.Fatalf("set password: %v\n%s", err, out)
	}
	return datavol.Database{Type: datavol.MySQL, Host: d.Addr(), Name: d.Name, User: d.User, Password: trickyPassword}
}

// TestSQLiteBackupWhileWriting backs up while another process commits
// row after row: the copy must be one consistent snapshot that includes
// every commit made before the backup started, although all of them are
// still in the WAL.
func TestSQLiteBackupWhileWriting(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	in.exec(t,
		`CREATE TABLE wlog (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)`,
		`CREATE TABLE wstate (last INTEGER NOT NULL)`,
		`INSERT INTO wstate VALUES (0)`,
	)
	writer := exec.Command(os.Args[0])
	writer.Env = append(os.Environ(), helperEnv+"=writer", helperArgsEnv+"="+filepath.Join(in.vol(), datavol.SQLiteFile))
	out, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	writer.Stderr = &stderr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			writer.Process.Kill()
			writer.Wait()
		}
	}
	defer stop()
	// The writer prints each commit: read up to commit 300, then keep
	// reading in the background so that it never blocks on its output.
	var committed atomic.Int64
	sc := bufio.NewScanner(out)
	for committed.Load() < 300 {
		if !sc.Scan() {
			stop()
			t.Fatalf("writer stopped after %d commits: %s", committed.Load(), stderr.String())
		}
		n, _ := strconv.ParseInt(sc.Text(), 10, 64)
		committed.Store(n)
	}
	go func() {
		for sc.Scan() {
			n, _ := strconv.ParseInt(sc.Text(), 10, 64)
			committed.Store(n)
		}
	}()
	atStart := committed.Load()
	info := in.create(t, backup.Options{})
	atEnd := committed.Load()
	stop()
	if atEnd == atStart {
		t.Logf("no commit finished during the backup (%d before and after): the test proved less than it could", atStart)
	}
	noRootFiles(t, in.vol())

	vol := filepath.Join(t.TempDir(), "restored", "data")
	if _, err := backup.Restore(context.Background(), info.Path, backup.Target{DataVolume: vol}); err != nil {
		t.Fatal(err)
	}
	restored := &instance{db: in.db, src: backup.Source{DataVolume: vol}}
	var check string
	var rows, last, maxSeq int64
	db := restored.open(t)
	defer db.Close()
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	if err := db.QueryRow(`SELECT (SELECT count(*) FROM wlog), (SELECT coalesce(max(seq), 0) FROM wlog), (SELECT last FROM wstate)`).Scan(&rows, &maxSeq, &last); err != nil {
		t.Fatal(err)
	}
	if rows != last || maxSeq != last {
		t.Fatalf("torn copy: %d rows up to seq %d, but wstate.last = %d", rows, maxSeq, last)
	}
	if last < atStart {
		t.Fatalf("copy holds %d commits; %d were committed (in the WAL) before the backup started", last, atStart)
	}
	t.Logf("writer: %d commits before the backup, %d after; the copy holds %d", atStart, atEnd, last)
}

// TestCancelLeavesNoArchive cancels a backup halfway through its files.
func TestCancelLeavesNoArchive(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	for i := 0; i < 6; i++ {
		in.addAttachment(t, 1, 3<<20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls int
	_, err := backup.Create(ctx, in.src, backup.Options{Dir: in.dir, Progress: func(done, total int64) {
		calls++
		if 2*done > total {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls < 2 {
		t.Fatalf("progress reported %d times: the cancel did not come mid-way", calls)
	}
	if left, _ := os.ReadDir(in.dir); len(left) != 0 {
		t.Fatalf("cancelled backup left %v", left)
	}
	noRootFiles(t, in.vol())
}

// TestKilledBackupLeavesNoArchive kills a backing-up process halfway: no
// archive appears, List shows nothing, and the next backup cleans up.
func TestKilledBackupLeavesNoArchive(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	for i := 0; i < 4; i++ {
		in.addAttachment(t, 1, 3<<20)
	}
	args, err := json.Marshal(createArgs{Source: in.src, Dir: in.dir})
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), helperEnv+"=create", helperArgsEnv+"="+string(args))
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "halfway\n" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child said %q (%v), stderr:\n%s", line, err, stderr.String())
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	left, _ := os.ReadDir(in.dir)
	if len(left) != 1 || !strings.HasPrefix(left[0].Name(), ".tmp-") {
		t.Fatalf("after the kill the backup directory holds %v, want just the hidden work directory", left)
	}
	if got := archives(t, in.dir); len(got) != 0 {
		t.Fatalf("killed backup left archives %v", got)
	}
	if list, err := backup.List(in.dir); err != nil || len(list) != 0 {
		t.Fatalf("List = %v, %v; want nothing", list, err)
	}
	noRootFiles(t, in.vol())

	info := in.create(t, backup.Options{})
	left, _ = os.ReadDir(in.dir)
	if len(left) != 1 || left[0].Name() != filepath.Base(info.Path) {
		t.Fatalf("after the next backup the directory holds %v, want only %s", left, filepath.Base(info.Path))
	}
}

func TestListNewestFirst(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) func() time.Time { return func() time.Time { return base.Add(d) } }
	in.create(t, backup.Options{Now: at(0)})
	in.src.Kind = backup.KindPreUpgrade
	in.create(t, backup.Options{Now: at(time.Hour)})
	in.src.Kind, in.src.Template.Version = backup.KindManual, "1.1.0"
	// Two in the same second get two names.
	in.create(t, backup.Options{Now: at(2 * time.Hour)})
	in.create(t, backup.Options{Now: at(2*time.Hour + 300*time.Millisecond)})
	if err := os.WriteFile(filepath.Join(in.dir, "garbage.tar.zst"), []byte("not an archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := backup.List(in.dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range list {
		fi, err := os.Stat(i.Path)
		if err != nil || fi.Size() != i.Size {
			t.Errorf("%s: size %d, file has %d (%v)", i.Path, i.Size, fi.Size(), err)
		}
		if i.Err != nil {
			if !errors.Is(i.Err, backup.ErrCorrupt) {
				t.Errorf("%s: err %v, want ErrCorrupt", i.Path, i.Err)
			}
			got = append(got, filepath.Base(i.Path)+" err")
			continue
		}
		got = append(got, fmt.Sprintf("%s %s %s %s", filepath.Base(i.Path), i.Manifest.Created.Format(time.TimeOnly), i.Manifest.Template.Version, i.Manifest.Kind))
	}
	want := []string{
		"tasks-20260301T140000Z-1.1.0-2.tar.zst 14:00:00 1.1.0 manual",
		"tasks-20260301T140000Z-1.1.0.tar.zst 14:00:00 1.1.0 manual",
		"tasks-20260301T130000Z-1.0.0-pre-upgrade.tar.zst 13:00:00 1.0.0 pre-upgrade",
		"tasks-20260301T120000Z-1.0.0.tar.zst 12:00:00 1.0.0 manual",
		"garbage.tar.zst err",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if list, err := backup.List(filepath.Join(in.root, "missing")); err != nil || len(list) != 0 {
		t.Fatalf("List of a missing directory = %v, %v", list, err)
	}
}

// TestArchiveReadableByStandardTools: zstd and tar read an archive (the
// trailer is a skippable frame), so an administrator can look inside.
func TestArchiveReadableByStandardTools(t *testing.T) {
	zstd := testenv.Need(t, "zstd", "zstd")
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	info := in.create(t, backup.Options{})
	out, err := exec.Command("sh", "-c", `"$1" -dc "$2" | tar -t`, "sh", zstd, info.Path).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd | tar: %v\n%s", err, out)
	}
	members := strings.Fields(string(out))
	if len(members) != len(info.Manifest.Entries)+1 || members[len(members)-1] != "manifest.json" {
		t.Fatalf("tar lists %v, want the %d entries and manifest.json last", members, len(info.Manifest.Entries))
	}
}

// TestReadMembers reads members of a checked archive (used by a restore
// on a node that does not have the instance yet).
func TestReadMembers(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	info := in.create(t, backup.Options{})
	ctx := context.Background()
	m, got, err := backup.ReadMembers(ctx, info.Path, backup.InstanceMember, backup.DataMember+datavol.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if m.Instance != info.Manifest.Instance || len(m.Entries) != len(info.Manifest.Entries) {
		t.Fatalf("manifest %+v, want %+v", m, info.Manifest)
	}
	want, _ := os.ReadFile(in.src.ConfigFile)
	if string(got[backup.InstanceMember]) != string(want) {
		t.Fatalf("instance.yaml member = %q; want %q", got[backup.InstanceMember], want)
	}
	if s, err := datavol.ParseSettings(got[backup.DataMember+datavol.ConfigFile]); err != nil || s.PublicURL != "https://tasks.example.org/" {
		t.Fatalf("config member parses to %+v, %v", s, err)
	}
	if _, _, err := backup.ReadMembers(ctx, info.Path, "data/missing"); !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("ReadMembers of a missing member: %v, want ErrCorrupt", err)
	}
}

// TestOpeningLiveSQLiteKeepsOwner: the -wal and -shm files that opening a
// stopped instance's database from the host (as root) creates belong to
// the database's owner, so the container can still open its database.
func TestOpeningLiveSQLiteKeepsOwner(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	dbFile := filepath.Join(in.vol(), datavol.SQLiteFile)
	for _, f := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(dbFile + f); err == nil {
			t.Fatalf("%s exists before the test opens the database", dbFile+f)
		}
	}
	db := in.open(t)
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int
	if err := conn.QueryRowContext(context.Background(), "SELECT count(*) FROM tasks").Scan(&n); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"-wal", "-shm"} {
		fi, err := os.Stat(dbFile + f)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != vikunjaID || st.Gid != vikunjaID {
			t.Errorf("%s owned by %d:%d, want the database's %d:%d", dbFile+f, st.Uid, st.Gid, vikunjaID, vikunjaID)
		}
	}
}
