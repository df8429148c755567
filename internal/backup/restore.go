package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vkimg/vkimg/internal/atomicfile"
	"github.com/vkimg/vkimg/internal/datavol"
)

// Target is where Restore puts an archive back.
type Target struct {
	DataVolume string            // replaced by the archive's data volume (the caller has stopped every container using it)
	Database   *datavol.Database // external DB credentials to restore into; nil: those in the archive's config.yml
	IDBase     int               // as Options.IDBase
	// ConfigFile, when set, receives the archive's instance.yaml once
	// everything else is restored.
	ConfigFile string
}

// Verify reads the whole archive and checks it against its manifest. It
// changes nothing.
func Verify(ctx context.Context, path string) (*Manifest, error) {
	m, _, err := ReadMembers(ctx, path)
	return m, err
}

type discard struct{}

func (discard) dir(*Entry, *tar.Header) error { return nil }
func (discard) file(*Entry, *tar.Header) (io.WriteCloser, error) {
	return nopCloser{io.Discard}, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Restore brings back the state an archive holds: its data volume in
// place of t.DataVolume and its database dump into the instance's
// database. The archive is verified completely before anything changes.
// It is then extracted beside the data volume, and the two directories
// are swapped; for an external database the swap is undone if the
// database restore fails. On error the data volume and the database are
// as they were, unless the error says otherwise and what to do.
func Restore(ctx context.Context, path string, t Target) (*Manifest, error) {
	m, err := restore(ctx, path, t)
	if err != nil {
		return nil, fmt.Errorf("restore %s into %s: %w", path, t.DataVolume, err)
	}
	return m, nil
}

func restore(ctx context.Context, path string, t Target) (*Manifest, error) {
	if t.DataVolume == "" {
		return nil, errors.New("no data volume to restore into")
	}
	target, err := filepath.Abs(t.DataVolume)
	if err != nil {
		return nil, err
	}
	a, err := openArchive(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if t.Database != nil && t.Database.Type != a.m.Database.Type {
		return nil, fmt.Errorf("the archive holds a %s database, the target is %s", a.m.Database.Type, t.Database.Type)
	}
	if fi, err := os.Lstat(target); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", target)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := a.scan(ctx, discard{}); err != nil {
		return nil, err
	}

	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	work, err := newWorkDir(parent, "."+filepath.Base(target)+".restore-")
	if err != nil {
		return nil, err
	}
	defer work.remove()
	x := &extractor{root: filepath.Join(work.path, dataMember), idBase: idBaseOr(t.IDBase), dumpMember: a.m.Database.Dump}
	x.dump, x.dumpOnHost = filepath.Join(work.path, "dump"), true
	if a.m.Database.Type == datavol.SQLite {
		// The dump is the database file itself; no -wal or -shm comes with it.
		x.dump, x.dumpOnHost = filepath.Join(x.root, datavol.SQLiteFile), false
	}
	// The second pass checks everything again: the file could have
	// changed since the first.
	if err := a.scan(ctx, x); err != nil {
		return nil, err
	}
	db, err := targetDatabase(x.root, a.m.Database.Type, t.Database)
	if err != nil {
		return nil, err
	}
	if err := syncFS(x.root); err != nil {
		return nil, err
	}

	swapped, err := swap(x.root, target)
	if err != nil {
		return nil, fmt.Errorf("put the restored data volume in place: %w (nothing changed)", err)
	}
	if err := restoreDatabase(ctx, db, x.dump, work); err != nil {
		return nil, undoSwap(err, target, swapped, work)
	}
	if t.ConfigFile != "" {
		if err := atomicfile.Write(t.ConfigFile, x.config.Bytes(), fs.FileMode(x.configMode)); err != nil {
			return nil, fmt.Errorf("data volume and database restored, but not the instance config: %w", err)
		}
	}
	return a.m, nil
}

// targetDatabase is where the dump goes: the archive config's database,
// or db, written into the restored config when it differs, so that the
// restored Vikunja uses the database it was restored into.
func targetDatabase(root, dbType string, db *datavol.Database) (datavol.Database, error) {
	s, err := datavol.ReadSettings(root)
	if err != nil {
		return datavol.Database{}, err
	}
	if s.Database.Type != dbType {
		return datavol.Database{}, fmt.Errorf("%w: config.yml says database %s, the dump is %s", ErrCorrupt, s.Database.Type, dbType)
	}
	if db == nil || *db == s.Database {
		return s.Database, nil
	}
	s.Database = *db
	cfg, err := datavol.VikunjaConfig(s)
	if err != nil {
		return datavol.Database{}, err
	}
	p := filepath.Join(root, datavol.ConfigFile)
	fi, err := os.Stat(p)
	if err != nil {
		return datavol.Database{}, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return *db, atomicfile.WriteOwned(p, cfg, fi.Mode().Perm(), int(st.Uid), int(st.Gid))
}

func restoreDatabase(ctx context.Context, db datavol.Database, dump string, work *workDir) error {
	switch db.Type {
	case datavol.Postgres:
		return restorePostgres(ctx, db, dump, work.path)
	case datavol.MySQL:
		return restoreMySQL(ctx, db, dump, work)
	}
	return nil
}

// swap puts dir in place of target: an atomic exchange when target
// exists (the old content is then at dir), a rename when it does not.
func swap(dir, target string) (swapped bool, err error) {
	err = unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, target, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, target, unix.RENAME_NOREPLACE)
	case errors.Is(err, unix.EINVAL):
		// A file system without RENAME_EXCHANGE: two renames, with a
		// moment in which target does not exist.
		old := dir + ".old"
		if err := os.Rename(target, old); err != nil {
			return false, err
		}
		if err := os.Rename(dir, target); err != nil {
			return false, errors.Join(err, os.Rename(old, target))
		}
		return true, os.Rename(old, dir)
	}
	return false, err
}

// undoSwap puts the previous data volume back after a failed database
// restore. The work directory may have been preserved meanwhile: the
// path of its data is taken afresh.
func undoSwap(cause error, target string, swapped bool, work *workDir) error {
	dir := filepath.Join(work.path, dataMember)
	var err error
	if swapped {
		_, err = swap(dir, target)
	} else {
		err = os.Rename(target, dir)
	}
	if err != nil {
		state := fmt.Sprintf("%s holds the archive's data volume (there was none before); rerun the restore", target)
		if swapped {
			state = fmt.Sprintf("%s holds the archive's data volume, the previous one is %s; rerun the restore, "+
				"or move the previous one back in its place", target, filepath.Join(work.preserve(), dataMember))
		}
		return fmt.Errorf("restore the database: %w; putting the previous data volume back failed too (%v): %s", cause, err, state)
	}
	return fmt.Errorf("restore the database: %w (the data volume is unchanged)", cause)
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// extractor writes the members of an archive into a new data volume root,
// the database dump to dump and instance.yaml into memory.
type extractor struct {
	root       string
	idBase     int
	dumpMember string
	dump       string
	// dumpOnHost: an external database's dump, read by the restore
	// tools only, stays root's.
	dumpOnHost bool
	config     bytes.Buffer
	configMode uint32
}

// hostPath maps a member to where it goes: "" for instance.yaml.
func (x *extractor) hostPath(member string) string {
	switch {
	case member == x.dumpMember:
		return x.dump
	case member == dataMember:
		return x.root
	case strings.HasPrefix(member, dataMember+"/"):
		return filepath.Join(x.root, filepath.FromSlash(strings.TrimPrefix(member, dataMember+"/")))
	}
	return ""
}

func (x *extractor) dir(e *Entry, _ *tar.Header) error {
	p := x.hostPath(e.Path)
	if err := os.Mkdir(p, 0o700); err != nil {
		return err
	}
	if err := os.Lchown(p, x.idBase+e.UID, x.idBase+e.GID); err != nil {
		return err
	}
	// chown clears set-gid: the mode comes after it.
	return syscall.Chmod(p, e.Mode)
}

func (x *extractor) file(e *Entry, hdr *tar.Header) (io.WriteCloser, error) {
	if e.Path == configMember {
		x.configMode = e.Mode
		return nopCloser{&x.config}, nil
	}
	p := x.hostPath(e.Path)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	uid, gid := x.idBase+e.UID, x.idBase+e.GID
	if e.Path == x.dumpMember && x.dumpOnHost {
		uid, gid = 0, 0
	}
	return &extractedFile{f: f, uid: uid, gid: gid, mode: e.Mode, mtime: hdr.ModTime}, nil
}

type extractedFile struct {
	f        *os.File
	uid, gid int
	mode     uint32
	mtime    time.Time
}

func (w *extractedFile) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w *extractedFile) Close() error {
	err := w.f.Chown(w.uid, w.gid)
	if err == nil {
		err = syscall.Fchmod(int(w.f.Fd()), w.mode)
	}
	if closeErr := w.f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Chtimes(w.f.Name(), w.mtime, w.mtime)
	}
	return err
}
