package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/datavol"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/state"
)

// Member names inside an archive.
const (
	manifestMember = "manifest.json"
	configMember   = "instance.yaml"
	dataMember     = "data"
)

// dumpMembers names the database dump of each database type.
var dumpMembers = map[string]string{
	datavol.SQLite:   "database/vikunja.db",
	datavol.Postgres: "database/vikunja.pgdump",
	datavol.MySQL:    "database/vikunja.sql",
}

// The trailer is a zstd skippable frame after the compressed tar:
//
//	magic (4, little endian) | frame size (4) | manifest JSON | JSON length (4) | footerMagic (8)
//
// Decoders skip it, and its fixed-size end lets List find the manifest by
// reading the last bytes of the file.
const (
	skippableMagic = 0x184D2A5E
	footerMagic    = "VKIMGMF1"
	footerSize     = 4 + 8 // JSON length, footerMagic
	frameHeader    = 8
	// maxManifest bounds what a hostile archive can make us allocate; a
	// manifest entry takes about 200 bytes.
	maxManifest = 64 << 20
	// maxConfig bounds instance.yaml, which Restore holds in memory.
	maxConfig = 1 << 20
	// maxWindow bounds the decoder's memory; the encoder uses 8 MB.
	maxWindow = 64 << 20
	// overflowID is how a container sees a host id outside its map.
	overflowID = 65534
)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

func unsafef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsafe}, args...)...)
}

func appendTrailer(w io.Writer, manifest []byte) error {
	buf := make([]byte, 0, frameHeader+len(manifest)+footerSize)
	buf = binary.LittleEndian.AppendUint32(buf, skippableMagic)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(manifest)+footerSize))
	buf = append(buf, manifest...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(manifest)))
	buf = append(buf, footerMagic...)
	_, err := w.Write(buf)
	return err
}

// archive is an opened backup whose manifest passed validateManifest; its
// members are only trusted once scan has read them all.
type archive struct {
	f       *os.File
	dataEnd int64  // end of the compressed tar, where the trailer starts
	raw     []byte // the manifest as stored in the trailer
	m       *Manifest
}

func openArchive(p string) (*archive, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	a, err := readTrailer(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

func readTrailer(f *os.File) (*archive, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < frameHeader+footerSize {
		return nil, corruptf("%d bytes: too short for a backup archive (truncated?)", size)
	}
	var foot [footerSize]byte
	if _, err := f.ReadAt(foot[:], size-footerSize); err != nil {
		return nil, fmt.Errorf("read trailer: %w", err)
	}
	if string(foot[4:]) != footerMagic {
		return nil, corruptf("no manifest trailer at the end (truncated, or not a vkimg backup)")
	}
	n := int64(binary.LittleEndian.Uint32(foot[:4]))
	start := size - footerSize - n - frameHeader
	if n > maxManifest || start < 0 {
		return nil, corruptf("manifest trailer claims %d bytes", n)
	}
	buf := make([]byte, frameHeader+n)
	if _, err := f.ReadAt(buf, start); err != nil {
		return nil, fmt.Errorf("read trailer: %w", err)
	}
	if binary.LittleEndian.Uint32(buf) != skippableMagic || int64(binary.LittleEndian.Uint32(buf[4:])) != n+footerSize {
		return nil, corruptf("manifest trailer frame is damaged")
	}
	raw := buf[frameHeader:]
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, corruptf("manifest: %v", err)
	}
	if err := validateManifest(&m); err != nil {
		return nil, err
	}
	return &archive{f: f, dataEnd: start, raw: raw, m: &m}, nil
}

func (a *archive) Close() error { return a.f.Close() }

// checkPath refuses member paths that could leave the directory they are
// extracted into.
func checkPath(p string) error {
	switch {
	case p == "":
		return unsafef("empty member name")
	case strings.HasPrefix(p, "/"):
		return unsafef("absolute path %q", p)
	case strings.ContainsRune(p, 0):
		return unsafef("member name %q holds a NUL byte", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return unsafef("path %q climbs out with ..", p)
	case path.Clean(p) != p:
		return unsafef("path %q is not in canonical form", p)
	}
	return nil
}

// validateManifest checks everything that can be checked without reading
// the members: a restore relies on it for the layout it extracts.
func validateManifest(m *Manifest) error {
	if m.Format != FormatVersion {
		return corruptf("unknown archive format %d (this vkimg reads format %d)", m.Format, FormatVersion)
	}
	if err := state.CheckInstanceName(m.Instance); err != nil {
		return unsafef("manifest: %v", err)
	}
	dump, ok := dumpMembers[m.Database.Type]
	if !ok {
		return corruptf("unknown database type %q", m.Database.Type)
	}
	if m.Database.Dump != dump {
		return corruptf("database dump %q, want %q for %s", m.Database.Dump, dump, m.Database.Type)
	}
	seen := make(map[string]string, len(m.Entries))
	var total int64
	for _, e := range m.Entries {
		if err := checkPath(e.Path); err != nil {
			return err
		}
		if _, dup := seen[e.Path]; dup {
			return corruptf("%s listed twice", e.Path)
		}
		if err := checkEntry(&e, m.Database.Type, seen); err != nil {
			return err
		}
		seen[e.Path] = e.Type
		total += e.Size
	}
	for _, need := range []string{configMember, dataMember, dump} {
		if _, ok := seen[need]; !ok {
			return corruptf("manifest lists no %s", need)
		}
	}
	if m.Database.Type == datavol.SQLite && seen["data/db"] != typeDir {
		return corruptf("manifest lists no data/db directory for the SQLite database")
	}
	if total != m.Size {
		return corruptf("manifest size %d, its entries add up to %d", m.Size, total)
	}
	return nil
}

// liveSQLite are the files of the database in use, which an archive never
// holds: the dump takes their place.
var liveSQLite = []string{datavol.SQLiteFile, datavol.SQLiteFile + "-wal", datavol.SQLiteFile + "-shm", datavol.SQLiteFile + "-journal"}

func checkEntry(e *Entry, dbType string, seen map[string]string) error {
	switch e.Type {
	case typeFile:
		if e.Mode&^0o777 != 0 {
			return unsafef("%s: mode %#o has set-id bits", e.Path, e.Mode)
		}
		if len(e.SHA256) != 64 || strings.ToLower(e.SHA256) != e.SHA256 {
			return corruptf("%s: bad sha256 %q", e.Path, e.SHA256)
		}
		if _, err := hex.DecodeString(e.SHA256); err != nil {
			return corruptf("%s: bad sha256 %q", e.Path, e.SHA256)
		}
		if e.Size < 0 {
			return corruptf("%s: size %d", e.Path, e.Size)
		}
	case typeDir:
		if e.Mode&^0o3777 != 0 {
			return unsafef("%s: mode %#o has the set-uid bit", e.Path, e.Mode)
		}
		if e.Size != 0 || e.SHA256 != "" {
			return corruptf("%s: a directory with a size or checksum", e.Path)
		}
	default:
		return unsafef("%s: type %q (only files and directories are restored)", e.Path, e.Type)
	}
	for _, id := range []int{e.UID, e.GID} {
		if id < 0 || id >= hypervisor.IDMapRange {
			return unsafef("%s: owner id %d is outside a container's range 0..%d", e.Path, id, hypervisor.IDMapRange-1)
		}
	}
	switch {
	case e.Path == configMember:
		if e.Type != typeFile || e.Size > maxConfig {
			return corruptf("%s: want a file of at most %d bytes", e.Path, maxConfig)
		}
	case e.Path == dumpMembers[dbType]:
		if e.Type != typeFile {
			return corruptf("%s: not a file", e.Path)
		}
	case e.Path == dataMember:
		if e.Type != typeDir {
			return corruptf("%s: not a directory", e.Path)
		}
	case strings.HasPrefix(e.Path, dataMember+"/"):
		// Parents first: extraction never creates a directory the
		// manifest does not describe.
		if seen[path.Dir(e.Path)] != typeDir {
			return corruptf("%s: its directory is not listed before it", e.Path)
		}
		if dbType == datavol.SQLite && slices.Contains(liveSQLite, strings.TrimPrefix(e.Path, dataMember+"/")) {
			return corruptf("%s: live SQLite files would override the dump", e.Path)
		}
	default:
		return corruptf("unexpected member %s", e.Path)
	}
	return nil
}

// sink receives the members of an archive as scan checks them.
type sink interface {
	dir(e *Entry, hdr *tar.Header) error
	file(e *Entry, hdr *tar.Header) (io.WriteCloser, error)
}

// scan reads the whole archive and checks every member against the
// manifest: names, types, order, modes, owners, sizes and checksums, then
// that the manifest inside equals the trailer and nothing follows. s sees
// each member as it passes its header checks; a file's checksum is only
// known once it has been written to s, so a caller that extracts must
// discard everything when scan fails.
func (a *archive) scan(ctx context.Context, s sink) error {
	// The decoder gets the compressed tar only: the trailer is checked
	// apart, and klauspost/compress prints a line to stderr for each
	// skippable frame it skips.
	zr, err := zstd.NewReader(io.NewSectionReader(a.f, 0, a.dataEnd), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return fmt.Errorf("zstd reader: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	buf := make([]byte, copyBuffer)
	entries := a.m.Entries
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return corruptf("archive ends before its manifest member (truncated?)")
		}
		if err != nil {
			return corruptf("read member %d: %v", i+1, err)
		}
		name, err := memberName(hdr)
		if err != nil {
			return err
		}
		if name == manifestMember {
			if i != len(entries) {
				return corruptf("member %s missing", entries[i].Path)
			}
			return a.checkEnd(zr, tr, hdr)
		}
		if i >= len(entries) || entries[i].Path != name {
			switch j := slices.IndexFunc(entries, func(e Entry) bool { return e.Path == name }); {
			case j > i:
				return corruptf("member %s missing", entries[i].Path)
			case j >= 0:
				return corruptf("member %s repeated or out of the manifest's order", name)
			}
			return corruptf("member %s is not in the manifest", name)
		}
		e := &entries[i]
		if err := checkHeader(e, hdr); err != nil {
			return err
		}
		if e.Type == typeDir {
			if err := s.dir(e, hdr); err != nil {
				return err
			}
			continue
		}
		w, err := s.file(e, hdr)
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := copyCtx(ctx, io.MultiWriter(w, h), tr, buf, nil)
		if closeErr := w.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			if ctx.Err() != nil || !isReadError(err) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return corruptf("%s: %v", name, err)
		}
		if n != e.Size {
			return corruptf("%s: %d bytes, manifest says %d", name, n, e.Size)
		}
		if sum := hex.EncodeToString(h.Sum(nil)); sum != e.SHA256 {
			return corruptf("%s: sha256 %s, manifest says %s (changed after the backup was written?)", name, sum, e.SHA256)
		}
	}
}

func memberName(hdr *tar.Header) (string, error) {
	switch hdr.Typeflag {
	case tar.TypeReg:
		return hdr.Name, checkPath(hdr.Name)
	case tar.TypeDir:
		name := strings.TrimSuffix(hdr.Name, "/")
		return name, checkPath(name)
	case tar.TypeSymlink, tar.TypeLink:
		return "", unsafef("%s: link to %q refused", hdr.Name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "", unsafef("%s: device or fifo refused", hdr.Name)
	}
	return "", unsafef("%s: tar entry type %q refused", hdr.Name, hdr.Typeflag)
}

func checkHeader(e *Entry, hdr *tar.Header) error {
	typ := typeFile
	if hdr.Typeflag == tar.TypeDir {
		typ = typeDir
	}
	switch {
	case typ != e.Type:
		return corruptf("%s: a %s in the archive, a %s in the manifest", e.Path, typ, e.Type)
	case uint32(hdr.Mode)&0o7777 != e.Mode || hdr.Mode&^0o7777 != 0:
		return corruptf("%s: mode %#o, manifest says %#o", e.Path, hdr.Mode, e.Mode)
	case hdr.Uid != e.UID || hdr.Gid != e.GID:
		return corruptf("%s: owner %d:%d, manifest says %d:%d", e.Path, hdr.Uid, hdr.Gid, e.UID, e.GID)
	case typ == typeFile && hdr.Size != e.Size:
		return corruptf("%s: %d bytes, manifest says %d", e.Path, hdr.Size, e.Size)
	}
	return nil
}

// checkEnd makes sure the manifest member is the trailer's and that only
// tar's zero padding follows it, up to a correct end of the zstd stream.
func (a *archive) checkEnd(zr *zstd.Decoder, tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg || hdr.Size != int64(len(a.raw)) {
		return corruptf("%s member differs from the manifest trailer", manifestMember)
	}
	inner, err := io.ReadAll(tr)
	if err != nil {
		return corruptf("%s: %v", manifestMember, err)
	}
	if !bytes.Equal(inner, a.raw) {
		return corruptf("%s member differs from the manifest trailer", manifestMember)
	}
	if _, err := tr.Next(); err != io.EOF {
		return corruptf("members follow %s", manifestMember)
	}
	if _, err := io.Copy(zeroWriter{}, zr); err != nil {
		return corruptf("after the tar end: %v", err)
	}
	return nil
}

type zeroWriter struct{}

func (zeroWriter) Write(p []byte) (int, error) {
	if slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
		return 0, errors.New("data after the end of the tar")
	}
	return len(p), nil
}

// readError marks failures of the archive's reader (zstd, tar) as opposed
// to the sink's writes, which are not the archive's fault.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

func isReadError(err error) bool {
	var re readError
	return errors.As(err, &re)
}

// copyBuffer is the unit of copying, of progress reports and of checks
// for cancellation.
const copyBuffer = 1 << 20

// copyCtx copies src to dst until src ends, checking ctx between chunks
// and telling progress each chunk's size. Read errors come back as
// readError.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, buf []byte, progress func(int64)) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		r, rerr := src.Read(buf)
		if r > 0 {
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
			if progress != nil {
				progress(int64(r))
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, readError{rerr}
		}
	}
}
