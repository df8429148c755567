// Package ociimage writes reproducible template layers and images: tar
// entries are normalised (names, times, owners, order) so the same inputs
// always give the same bytes, compressed with zstd at a fixed level on one
// thread, and assembled into standard OCI images in a local image layout.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Entry is one tar entry of a layer: its header and, for regular files,
// a way to open its content.
type Entry struct {
	Header tar.Header
	Open   func() (io.ReadCloser, error)
}

// Canonical returns name as layer tars spell it: "./" + path, with a
// trailing "/" for directories, so entries from any source compare equal.
func Canonical(name string, dir bool) string {
	p := path.Clean("/" + strings.TrimPrefix(name, "./"))
	if p == "/" {
		return "./"
	}
	p = "." + p
	if dir {
		p += "/"
	}
	return p
}

// FileEntry makes an in-memory regular file entry.
func FileEntry(name string, mode int64, uid, gid int, content []byte) Entry {
	return Entry{
		Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, Size: int64(len(content))},
		Open:   func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil },
	}
}

// DirEntry makes a directory entry.
func DirEntry(name string, mode int64, uid, gid int) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid}}
}

// SymlinkEntry makes a symbolic link entry.
func SymlinkEntry(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// posReader tracks the offset in a file under tar.Reader, which seeks over
// file data, so each entry's data can be reopened later as a section.
type posReader struct {
	f   *os.File
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.f.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

// IndexTar lists the entries of an uncompressed tar file without reading
// their data; each entry's Open reads its section of the file. The file
// must stay in place while the entries are used.
func IndexTar(file string) ([]Entry, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("index tar: %w", err)
	}
	defer f.Close()
	pr := &posReader{f: f}
	tr := tar.NewReader(pr)
	var out []Entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("index tar %s: %w", file, err)
		}
		if h.Typeflag == tar.TypeGNUSparse {
			return nil, fmt.Errorf("index tar %s: %s: sparse files are not supported", file, h.Name)
		}
		e := Entry{Header: *h}
		if h.Typeflag == tar.TypeReg {
			off, size := pr.pos, h.Size
			e.Open = func() (io.ReadCloser, error) {
				f, err := os.Open(file)
				if err != nil {
					return nil, err
				}
				return struct {
					io.Reader
					io.Closer
				}{io.NewSectionReader(f, off, size), f}, nil
			}
		}
		out = append(out, e)
	}
}

// WalkDir lists a directory tree as entries under prefix (a path inside
// the rootfs, like "/opt/vikunja"), owned by uid:gid. Modes are reduced to
// 0755 for directories and executables and 0644 for other files, so a
// checkout's umask cannot change the image. The root itself is included.
func WalkDir(root, prefix string, uid, gid int) ([]Entry, error) {
	var out []Entry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := path.Join(prefix, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out = append(out, DirEntry(name, 0o755, uid, gid))
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e := SymlinkEntry(name, target)
			e.Header.Uid, e.Header.Gid = uid, gid
			out = append(out, e)
		case d.Type().IsRegular():
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			file := p
			out = append(out, Entry{
				Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, Size: info.Size(), ModTime: info.ModTime()},
				Open:   func() (io.ReadCloser, error) { return os.Open(file) },
			})
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, d.Type())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", root, err)
	}
	return out, nil
}

// Normalize makes entries reproducible: canonical names, mtimes clamped to
// epoch and whole seconds, no access/change times, numeric owners only, no
// PAX records but extended attributes, no ./dev/* (LXC populates /dev and
// device nodes cannot be made in a user namespace), sorted by name, later
// entries replacing earlier ones of the same name, and hard links pointing
// at the first of their group in that order so extraction never meets a
// link before its target.
func Normalize(entries []Entry, epoch time.Time) ([]Entry, error) {
	byName := make(map[string]int, len(entries))
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		h := &e.Header
		h.Name = Canonical(h.Name, h.Typeflag == tar.TypeDir)
		if strings.HasPrefix(h.Name, "./dev/") && h.Name != "./dev/" {
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		case tar.TypeRegA:
			h.Typeflag = tar.TypeReg
		default:
			return nil, fmt.Errorf("normalize %s: unsupported entry type %q", h.Name, h.Typeflag)
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = Canonical(h.Linkname, false)
		}
		if h.ModTime.After(epoch) || h.ModTime.IsZero() {
			h.ModTime = epoch
		}
		h.ModTime = h.ModTime.Truncate(time.Second).UTC()
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.Uname, h.Gname = "", ""
		h.Format = tar.FormatUnknown
		h.Xattrs = nil //nolint:staticcheck // cleared so only PAXRecords carry xattrs
		var pax map[string]string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if pax == nil {
					pax = map[string]string{}
				}
				pax[k] = v
			}
		}
		h.PAXRecords = pax
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if i, ok := byName[h.Name]; ok {
			out[i] = e
			continue
		}
		byName[h.Name] = len(out)
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Header.Name < out[j].Header.Name })
	return fixHardlinks(out)
}

// fixHardlinks rewrites each hard-link group so that its first member in
// order holds the data and the others link to it.
func fixHardlinks(es []Entry) ([]Entry, error) {
	idx := make(map[string]int, len(es))
	for i, e := range es {
		idx[e.Header.Name] = i
	}
	groups := map[string][]int{} // target name -> indexes of links to it
	for i, e := range es {
		if e.Header.Typeflag == tar.TypeLink {
			t, ok := idx[e.Header.Linkname]
			if !ok || es[t].Header.Typeflag != tar.TypeReg {
				return nil, fmt.Errorf("normalize %s: hard link to %s, which is not a regular file in the layer", e.Header.Name, e.Header.Linkname)
			}
			groups[e.Header.Linkname] = append(groups[e.Header.Linkname], i)
		}
	}
	for target, links := range groups {
		t := idx[target]
		first := t
		for _, l := range links {
			first = min(first, l)
		}
		if first == t {
			continue
		}
		data := es[t]
		data.Header.Name = es[first].Header.Name
		es[first] = data
		firstName := data.Header.Name
		for _, i := range append(links, t) {
			if i == first {
				continue
			}
			h := es[t].Header
			if i != t {
				h = es[i].Header
			}
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, firstName, 0
			if i == t {
				h.Name = target
			}
			es[i] = Entry{Header: h}
		}
	}
	return es, nil
}
