// Package backup writes, lists, verifies and restores an instance's
// backups: one archive with the database dump, Vikunja's config and
// secrets, the attachments and the instance's configuration, restorable on
// this node or another (spec US5, FR-016, FR-017).
//
// Why the format is what it is:
//
//   - One file, <instance>-<UTC time>-<template version>[-pre-upgrade].tar.zst,
//     a tar stream compressed with zstd. tar streams: attachments (1 GB and
//     more) go from disk to the archive and back without being held in
//     memory, and anyone can look inside with `tar --zstd -tvf`. zstd
//     compresses on every core at disk speed; gzip would spend most of the
//     30 s budget on a gigabyte.
//   - The database as a dump, never as its live files: SQLite through its
//     online backup API inside one read transaction (a consistent snapshot
//     while Vikunja writes, the commits still in the WAL included),
//     PostgreSQL with pg_dump -Fc, MariaDB with mariadb-dump
//     --single-transaction. The dump comes first and the files after it:
//     an attachment uploaded meanwhile is at worst an unreferenced file,
//     never a row whose file is missing.
//   - The manifest (manifest.json) lists every other member with its type,
//     mode, owner, size and SHA-256, and says which template made this state
//     and which migrations its schema has. It is the last member because
//     the checksums of live files are known only once they have been read;
//     reading a gigabyte twice would be slow and might not even see the same
//     bytes. A copy follows the compressed tar in a zstd skippable frame
//     with a fixed-size footer, which zstd and tar skip: List reads a few
//     kilobytes at the end of each archive instead of decompressing it.
//   - Owners are stored as the container sees them (990, not 100990), so an
//     archive restores on a node whose containers map ids elsewhere.
//   - Nothing in an archive is trusted. Verify and Restore read every member
//     and refuse absolute paths, "..", links, devices, set-uid bits, owners
//     outside a container's range, members missing from or added to the
//     manifest, wrong sizes and checksums — before anything changes. The
//     checksums find corruption, not a forger who also rewrites the
//     manifest: archives hold the database password and the session secret,
//     so they are 0600 in a 0700 directory.
//   - Each archive is written in a locked work directory beside its final
//     name, fsynced, and linked under that name only once complete: a
//     failure, a cancel or a kill leaves no partial archive, and the next
//     Create removes what a killed one left.
//
// The members, in this order:
//
//	instance.yaml        the instance's configuration (a host file: owner 0)
//	data/…               the data volume: config/, secrets/, files/, db/
//	                     (without the live SQLite files), owners as the container sees them
//	database/vikunja.db  SQLite's online backup copy, placed as data/db/vikunja.db on restore;
//	                     or database/vikunja.pgdump (pg_dump -Fc), database/vikunja.sql (mariadb-dump)
//	manifest.json        the manifest
//
// then, after the compressed tar, the trailer: a zstd skippable frame
// holding manifest.json again, its length and the magic "VKIMGMF1".
package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/state"
)

// Kinds of backup.
const (
	KindManual     = "manual"
	KindPreUpgrade = "pre-upgrade"
)

// FormatVersion is the archive format this package writes and reads.
const FormatVersion = 1

// Entry types.
const (
	typeFile = "file"
	typeDir  = "dir"
)

var (
	// ErrCorrupt is wrapped by errors about an archive's integrity:
	// checksums, sizes, truncation, an unknown format.
	ErrCorrupt = errors.New("backup archive is corrupt")
	// ErrUnsafe is wrapped by errors about members that could write
	// outside the data volume or as another user: absolute paths, "..",
	// links, devices, foreign owners.
	ErrUnsafe = errors.New("backup archive is unsafe")
)

// Template is the template an instance ran when its backup was taken.
type Template struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Digest     string   `json:"digest"`
	Migrations []string `json:"migrations"`
}

// Source is what Create backs up.
type Source struct {
	Instance   string           // instance name
	ConfigFile string           // path of the instance's instance.yaml; stored in the archive as instance.yaml
	DataVolume string           // host path of the data volume
	Database   datavol.Database // usually datavol.ReadSettings(DataVolume).Database; sqlite means DataVolume/db/vikunja.db
	Template   Template         // the template the instance runs now (the version that made this state)
	Kind       string           // KindManual or KindPreUpgrade
}

// Options says where and how Create writes.
type Options struct {
	Dir      string                  // where archives go (created 0700); e.g. $VKIMG_ROOT/backups/<name>
	Now      func() time.Time        // nil: time.Now
	Progress func(done, total int64) // bytes archived of an estimate; may be nil
	// IDBase is the host uid/gid that the container's id 0 maps to;
	// ownership is stored container-relative. 0 means hypervisor.IDMapBase.
	IDBase int
}

// Info describes one archive.
type Info struct {
	Path     string
	Size     int64
	Manifest Manifest
	Err      error // set by List for unreadable archives
}

// Manifest describes an archive's content.
type Manifest struct {
	Format   int          `json:"format"`
	Creator  string       `json:"creator"`
	Instance string       `json:"instance"`
	Created  time.Time    `json:"created"`
	Kind     string       `json:"kind"`
	Template Template     `json:"template"`
	Database DatabaseInfo `json:"database"`
	// Size is the sum of the entries' sizes: the space a restore needs.
	Size    int64   `json:"size"`
	Entries []Entry `json:"entries"`
}

// DatabaseInfo says what the archive's database dump is.
type DatabaseInfo struct {
	Type       string   `json:"type"`       // datavol.SQLite, Postgres or MySQL
	Dump       string   `json:"dump"`       // member path of the dump
	Migrations []string `json:"migrations"` // ids in table migration at dump time, sorted
}

// Entry is one member of the archive other than the manifest.
type Entry struct {
	Path   string `json:"path"` // slash-separated, relative: instance.yaml, data[/…], database/…
	Type   string `json:"type"` // "file" or "dir"
	Mode   uint32 `json:"mode"` // Unix permission bits (0o7777)
	UID    int    `json:"uid"`  // as the container sees it
	GID    int    `json:"gid"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // hex, files only
}

var nameSafe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]*$`)

func (s *Source) check() error {
	if err := state.CheckInstanceName(s.Instance); err != nil {
		return err
	}
	if !nameSafe.MatchString(s.Template.Version) {
		return fmt.Errorf("template version %q: want a version such as 1.2.3", s.Template.Version)
	}
	if s.Kind != KindManual && s.Kind != KindPreUpgrade {
		return fmt.Errorf("kind %q: want %q or %q", s.Kind, KindManual, KindPreUpgrade)
	}
	if _, ok := dumpMembers[s.Database.Type]; !ok {
		return fmt.Errorf("database type %q: want sqlite, postgres or mysql", s.Database.Type)
	}
	if s.ConfigFile == "" || s.DataVolume == "" {
		return errors.New("source needs the instance's config file and data volume")
	}
	return nil
}

func idBaseOr(base int) int {
	if base == 0 {
		return hypervisor.IDMapBase
	}
	return base
}

const tmpPrefix = ".tmp-"

// Create backs up an instance while it serves. The archive appears in
// o.Dir complete or not at all.
func Create(ctx context.Context, src Source, o Options) (*Info, error) {
	if err := src.check(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	info, err := create(ctx, src, o)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", src.Instance, err)
	}
	return info, nil
}

func create(ctx context.Context, src Source, o Options) (*Info, error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	vol, err := filepath.Abs(src.DataVolume)
	if err != nil {
		return nil, err
	}
	if dir == vol || strings.HasPrefix(dir, vol+string(filepath.Separator)) {
		return nil, fmt.Errorf("backup directory %s is inside the data volume", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The archives hold the database password and the session secret.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	work, err := newWorkDir(dir, tmpPrefix)
	if err != nil {
		return nil, err
	}
	defer work.remove()

	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	m := &Manifest{
		Format: FormatVersion, Creator: "vkimg", Instance: src.Instance, Created: now().UTC(),
		Kind: src.Kind, Template: src.Template,
		Database: DatabaseInfo{Type: src.Database.Type, Dump: dumpMembers[src.Database.Type]},
	}
	dump := filepath.Join(work.path, "dump")
	if m.Database.Migrations, err = dumpDatabase(ctx, src.Database, vol, dump, work.path); err != nil {
		return nil, err
	}

	total, err := estimate(src, dump)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(work.path, "archive.tar.zst")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w, err := newArchiveWriter(ctx, f, idBaseOr(o.IDBase), total, o.Progress)
	if err != nil {
		return nil, err
	}
	if err := w.write(src, dump, m); err != nil {
		w.zw.Close() // stops its goroutines; the file is discarded
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	final, err := publish(tmp, dir, archiveName(src, m.Created))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &Info{Path: final, Size: fi.Size(), Manifest: *m}, nil
}

func archiveName(src Source, created time.Time) string {
	name := fmt.Sprintf("%s-%s-%s", src.Instance, created.Format("20060102T150405Z"), src.Template.Version)
	if src.Kind == KindPreUpgrade {
		name += "-" + KindPreUpgrade
	}
	return name
}

// publish links the finished archive under its name, or under the name
// with a counter when an archive of the same second exists: link(2),
// unlike rename(2), never replaces one.
func publish(tmp, dir, name string) (string, error) {
	for i := 1; ; i++ {
		final := filepath.Join(dir, name+".tar.zst")
		if i > 1 {
			final = filepath.Join(dir, fmt.Sprintf("%s-%d.tar.zst", name, i))
		}
		err := os.Link(tmp, final)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err == nil {
			err = syncDir(dir)
		}
		if err != nil {
			os.Remove(final)
			return "", err
		}
		return final, nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// estimate is the archive's payload as the volume is now: the dump, the
// instance config and the data volume's files.
func estimate(src Source, dump string) (int64, error) {
	var total int64
	for _, p := range []string{dump, src.ConfigFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		total += fi.Size()
	}
	err := walkVolume(src.DataVolume, src.Database.Type, func(_ string, d fs.DirEntry) error {
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return total, err
}

// walkVolume calls fn for every entry of the data volume (its root as "."),
// parents before children, in lexical order, without the live SQLite
// files. Entries that vanish while it walks are skipped: the volume is in
// use.
func walkVolume(root, dbType string, fn func(rel string, d fs.DirEntry) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != root {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if dbType == datavol.SQLite && slices.Contains(liveSQLite, rel) {
			return nil
		}
		return fn(rel, d)
	})
}

// archiveWriter streams members into tar, zstd and the file, collecting
// the manifest's entries.
type archiveWriter struct {
	ctx      context.Context
	f        *os.File
	zw       *zstd.Encoder
	tw       *tar.Writer
	buf      []byte
	idBase   int
	entries  []Entry
	done     int64
	total    int64
	progress func(done, total int64)
}

func newArchiveWriter(ctx context.Context, f *os.File, idBase int, total int64, progress func(done, total int64)) (*archiveWriter, error) {
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("zstd writer: %w", err)
	}
	return &archiveWriter{ctx: ctx, f: f, zw: zw, tw: tar.NewWriter(zw), buf: make([]byte, copyBuffer),
		idBase: idBase, total: total, progress: progress}, nil
}

// write writes every member, the manifest last, and the trailer.
func (w *archiveWriter) write(src Source, dump string, m *Manifest) error {
	if err := w.addPath(configMember, src.ConfigFile, hostFile); err != nil {
		return err
	}
	err := walkVolume(src.DataVolume, src.Database.Type, func(rel string, d fs.DirEntry) error {
		member := dataMember
		if rel != "." {
			member += "/" + rel
		}
		switch {
		case d.IsDir():
			return w.addDir(member, filepath.Join(src.DataVolume, rel))
		case d.Type().IsRegular():
			return w.addPath(member, filepath.Join(src.DataVolume, rel), w.containerOwner)
		}
		return fmt.Errorf("data volume holds %s (%v): only regular files and directories are backed up", rel, d.Type())
	})
	if err != nil {
		return err
	}
	owner := hostFile
	if src.Database.Type == datavol.SQLite {
		// The restored database gets the owner and mode of the live one.
		live, err := os.Stat(filepath.Join(src.DataVolume, datavol.SQLiteFile))
		if err != nil {
			return err
		}
		owner = func(fs.FileInfo) (uint32, int, int) { return w.containerOwner(live) }
	}
	if err := w.addPath(m.Database.Dump, dump, owner); err != nil {
		return err
	}
	m.Entries = w.entries
	for _, e := range m.Entries {
		m.Size += e.Size
	}
	// What this writes, Verify must accept.
	if err := validateManifest(m); err != nil {
		return fmt.Errorf("internal error: %w", err)
	}
	raw, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: manifestMember, Mode: 0o600, Size: int64(len(raw)), ModTime: m.Created, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := w.tw.Write(raw); err != nil {
		return err
	}
	if err := w.tw.Close(); err != nil {
		return err
	}
	if err := w.zw.Close(); err != nil {
		return err
	}
	return appendTrailer(w.f, raw)
}

// An owner function gives the mode and container-relative owner to store
// for a file.
type ownerFunc func(fi fs.FileInfo) (mode uint32, uid, gid int)

// hostFile is the owner of files that live on the host, not in the
// container (instance.yaml, an external database's dump): root.
func hostFile(fi fs.FileInfo) (uint32, int, int) {
	return uint32(fi.Mode().Perm()), 0, 0
}

// containerOwner maps host ids to the container's; ids outside the
// container's map are stored as the overflow id the container sees them as.
func (w *archiveWriter) containerOwner(fi fs.FileInfo) (uint32, int, int) {
	st := fi.Sys().(*syscall.Stat_t)
	return unixMode(fi.Mode()), w.containerID(int(st.Uid)), w.containerID(int(st.Gid))
}

func (w *archiveWriter) containerID(host int) int {
	id := host - w.idBase
	if id < 0 || id >= hypervisor.IDMapRange {
		return overflowID
	}
	return id
}

func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func (w *archiveWriter) addDir(member, p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s changed type while being backed up", p)
	}
	mode, uid, gid := w.containerOwner(fi)
	if fi.Mode()&fs.ModeSetuid != 0 {
		return fmt.Errorf("%s: set-uid directory", p)
	}
	hdr := &tar.Header{Typeflag: tar.TypeDir, Name: member + "/", Mode: int64(mode), Uid: uid, Gid: gid, ModTime: fi.ModTime(), Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	w.entries = append(w.entries, Entry{Path: member, Type: typeDir, Mode: mode, UID: uid, GID: gid})
	return nil
}

// addPath archives one regular file, with exactly the size it had when
// opened: a file that shrinks meanwhile fails the backup rather than
// storing a torn copy. A file that vanished is skipped.
func (w *archiveWriter) addPath(member, p string, owner ownerFunc) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(member, dataMember+"/") {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	mode, uid, gid := owner(fi)
	if mode&^0o777 != 0 {
		return fmt.Errorf("%s: set-id bits (mode %#o) are not backed up", p, mode)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: member, Mode: int64(mode), Uid: uid, Gid: gid, Size: fi.Size(), ModTime: fi.ModTime(), Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := copyCtx(w.ctx, io.MultiWriter(w.tw, h), io.LimitReader(f, fi.Size()), w.buf, w.report)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	if n != fi.Size() {
		return fmt.Errorf("%s shrank from %d to %d bytes while being backed up; try again", p, fi.Size(), n)
	}
	w.entries = append(w.entries, Entry{Path: member, Type: typeFile, Mode: mode, UID: uid, GID: gid,
		Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

func (w *archiveWriter) report(n int64) {
	w.done += n
	if w.progress != nil {
		w.progress(w.done, max(w.total, w.done))
	}
}
