package backup_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/backup/backuptest"
	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/testenv"
)

// Host ids of the container's vikunja (990) and vkimg-mcp (991) users.
const (
	vikunjaID = hypervisor.IDMapBase + 990
	mcpID     = hypervisor.IDMapBase + 991
)

var (
	standinOnce sync.Once
	standinDir  string
	standinBin  string
	standinErr  error
)

// standin builds the stand-in app (version 1.0.0) once per test binary.
func standin(t testing.TB) string {
	t.Helper()
	standinOnce.Do(func() {
		if standinDir, standinErr = os.MkdirTemp("", "vkimg-backup-standin-"); standinErr != nil {
			return
		}
		standinBin = filepath.Join(standinDir, "vikunja")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version=1.0.0", "-o", standinBin,
			"github.com/vkimg/vkimg/internal/fixtures/standin")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			standinErr = fmt.Errorf("go build standin: %v\n%s", err, out)
		}
	})
	if standinErr != nil {
		t.Fatal(standinErr)
	}
	return standinBin
}

// standinMigrations are the migration ids of stand-in 1.0.0.
var standinMigrations = []string{"20260101000001", "20260101000002", "20260101000003", "20260101000004", "20260101000005"}

func TestMain(m *testing.M) {
	if helper := os.Getenv(helperEnv); helper != "" {
		os.Exit(runHelper(helper))
	}
	code := m.Run()
	if standinDir != "" {
		os.RemoveAll(standinDir)
	}
	os.Exit(code)
}

// instance is a data volume and an instance config as vkimg deploy lays
// them out, with the stand-in's schema and some data.
type instance struct {
	root     string // $VKIMG_ROOT
	db       datavol.Database
	src      backup.Source
	dir      string // backups
	nextFile int
}

func (in *instance) vol() string { return in.src.DataVolume }

func newInstance(t testing.TB, db datavol.Database) *instance {
	t.Helper()
	testenv.NeedRoot(t)
	root := t.TempDir()
	in := &instance{root: root, db: db, dir: filepath.Join(root, "backups", "tasks"), nextFile: 1}
	inst := filepath.Join(root, "instances", "tasks")
	vol := filepath.Join(inst, "data")
	if err := hypervisor.PrepareDataVolume(vol, 990, 990); err != nil {
		t.Fatal(err)
	}
	s := datavol.Settings{PublicURL: "https://tasks.example.org/", Database: db,
		Admin: datavol.Admin{Username: "admin", Email: "admin@example.org", Password: "first-pw"}}
	if err := datavol.Write(vol, s, datavol.Owner{UID: vikunjaID, GID: vikunjaID}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(inst, "instance.yaml")
	if err := os.WriteFile(cfg, []byte("name: tasks\nurl: https://tasks.example.org/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in.src = backup.Source{Instance: "tasks", ConfigFile: cfg, DataVolume: vol, Database: db,
		Template: backup.Template{Name: "vikunja", Version: "1.0.0", Digest: "sha256:" + strings.Repeat("ab", 32), Migrations: standinMigrations},
		Kind:     backup.KindManual}

	migrate := exec.Command(standin(t), "migrate", "--config", filepath.Join(vol, datavol.ConfigFile))
	migrate.Env = append(os.Environ(), "VIKUNJA_DATABASE_PATH="+filepath.Join(vol, datavol.SQLiteFile))
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("stand-in migrate: %v\n%s", err, out)
	}
	if db.Type == datavol.SQLite {
		own(t, filepath.Join(vol, datavol.SQLiteFile), vikunjaID, vikunjaID, 0o640)
	}
	write(t, filepath.Join(vol, datavol.MCPTokenFile), []byte("mcp-token-value"), vikunjaID, mcpID, 0o640)

	in.exec(t,
		`INSERT INTO users (username, email, name, password, created, updated) VALUES ('admin', 'admin@example.org', 'Ädmin "quoted"', 'hash1', 1, 1)`,
		`INSERT INTO users (username, email, name, password, created, updated) VALUES ('bob', 'bob@example.org', '', 'hash2', 2, 2)`,
		`INSERT INTO projects (title, description, owner_id, created, updated) VALUES ('Inbox', 'line1
line2', 1, 3, 3)`,
		`INSERT INTO projects (title, description, owner_id, is_archived, created, updated) VALUES ('Old', '', 2, TRUE, 4, 4)`,
	)
	for i := 1; i <= 20; i++ {
		in.exec(t, fmt.Sprintf(`INSERT INTO tasks (title, description, done, priority, project_id, task_index, created_by_id, created, updated)
			VALUES ('task %d', 'ünïcode ✓ %d', %s, %d, %d, %d, 1, %d, %d)`, i, i, boolSQL(i%3 == 0), i%5, 1+i%2, i, 100+i, 200+i))
	}
	for i := 0; i < 3; i++ {
		in.addAttachment(t, i+1, 10_000*(i+1))
	}
	return in
}

func boolSQL(b bool) string {
	if b {
		return "TRUE"
	}
	return "FALSE"
}

// addAttachment stores a file as Vikunja does: a files row and the
// content at files/<id>, owned by the container's vikunja user.
func (in *instance) addAttachment(t testing.TB, task, size int) {
	t.Helper()
	id := in.nextFile
	in.nextFile++
	in.exec(t,
		fmt.Sprintf(`INSERT INTO files (name, mime, size, created_by_id, created) VALUES ('file%d.bin', 'application/octet-stream', %d, 1, 5)`, id, size),
		fmt.Sprintf(`INSERT INTO task_attachments (task_id, file_id, created_by_id, created) VALUES (%d, %d, 1, 6)`, task, id),
	)
	b := make([]byte, size)
	rand.Read(b)
	write(t, filepath.Join(in.vol(), datavol.FilesDir, strconv.Itoa(id)), b, vikunjaID, vikunjaID, 0o600)
}

func (in *instance) open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := backup.OpenDatabase(in.db, in.vol())
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func (in *instance) exec(t testing.TB, stmts ...string) {
	t.Helper()
	db := in.open(t)
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// state is everything a restore must bring back exactly.
func (in *instance) state(t testing.TB) string {
	t.Helper()
	return backuptest.Dump(t, in.db, in.vol()) + "== volume\n" + backuptest.Tree(t, in.vol())
}

func (in *instance) create(t testing.TB, o backup.Options) *backup.Info {
	t.Helper()
	if o.Dir == "" {
		o.Dir = in.dir
	}
	info, err := backup.Create(context.Background(), in.src, o)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func write(t testing.TB, p string, b []byte, uid, gid int, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	own(t, p, uid, gid, mode)
}

func own(t testing.TB, p string, uid, gid int, mode os.FileMode) {
	t.Helper()
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// noRootFiles fails t if anything in the data volume is owned by the
// host's root: the container could not use it.
func noRootFiles(t testing.TB, vol string) {
	t.Helper()
	filepath.WalkDir(vol, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			t.Errorf("%s is owned by root", p)
		}
		return nil
	})
}

// archives lists the finished archives in dir (not the hidden work
// directories).
func archives(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.tar.zst"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
