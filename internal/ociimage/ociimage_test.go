package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/manifest"
)

var epoch = time.Unix(1700000000, 0).UTC()

func TestNormalize(t *testing.T) {
	late := epoch.Add(time.Hour)
	early := epoch.Add(-time.Hour).Add(300 * time.Millisecond)
	in := []Entry{
		{Header: tar.Header{Typeflag: tar.TypeDir, Name: "etc", Mode: 0o755, ModTime: late, Uname: "root", Gname: "root"}},
		FileEntry("./etc/b", 0o644, 0, 0, []byte("b")),
		{Header: tar.Header{Typeflag: tar.TypeChar, Name: "./dev/null", Devmajor: 1, Devminor: 3}},
		{Header: tar.Header{Typeflag: tar.TypeDir, Name: "./dev/", Mode: 0o755}},
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "/etc/a", Mode: 0o644, ModTime: early, AccessTime: late,
			PAXRecords: map[string]string{"atime": "1", "SCHILY.xattr.security.capability": "x"}}},
		FileEntry("etc/b", 0o600, 0, 0, []byte("replaced")),
	}
	out, err := Normalize(in, epoch)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range out {
		names = append(names, e.Header.Name)
	}
	if got := strings.Join(names, " "); got != "./dev/ ./etc/ ./etc/a ./etc/b" {
		t.Fatalf("names %q", got)
	}
	etc, a, b := out[1].Header, out[2].Header, out[3].Header
	if !etc.ModTime.Equal(epoch) || etc.Uname != "" || etc.Gname != "" {
		t.Errorf("./etc/: mtime %v, owner names %q %q", etc.ModTime, etc.Uname, etc.Gname)
	}
	if !a.ModTime.Equal(early.Truncate(time.Second)) || !a.AccessTime.IsZero() || len(a.PAXRecords) != 1 || a.PAXRecords["SCHILY.xattr.security.capability"] != "x" {
		t.Errorf("./etc/a: %+v", a)
	}
	if b.Mode != 0o600 || b.Size != int64(len("replaced")) {
		t.Errorf("./etc/b was not replaced by the later entry: %+v", b)
	}
}

// TestNormalizeHardlinks: sorting can put a link before the file it links
// to; the first of the group in order must carry the data.
func TestNormalizeHardlinks(t *testing.T) {
	in := []Entry{
		FileEntry("./usr/bin/z-data", 0o755, 0, 0, []byte("program")),
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "./usr/bin/a-link", Linkname: "usr/bin/z-data"}},
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "./usr/bin/m-link", Linkname: "./usr/bin/z-data"}},
	}
	out, err := Normalize(in, epoch)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(&buf, out); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			if err := os.WriteFile(p, b, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeLink:
			// Extraction in order: the target must already exist.
			if err := os.Link(filepath.Join(dir, h.Linkname), p); err != nil {
				t.Fatalf("link %s before its target: %v", h.Name, err)
			}
		}
	}
	for _, n := range []string{"a-link", "m-link", "z-data"} {
		b, err := os.ReadFile(filepath.Join(dir, "usr/bin", n))
		if err != nil || string(b) != "program" {
			t.Errorf("%s: %q %v", n, b, err)
		}
	}
	bad := []Entry{{Header: tar.Header{Typeflag: tar.TypeLink, Name: "./x", Linkname: "./missing"}}}
	if _, err := Normalize(bad, epoch); err == nil {
		t.Error("a hard link to nothing was accepted")
	}
}

func TestWalkDirModes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "run"), []byte("x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	es, err := WalkDir(dir, "/opt/app", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]int64{}
	for _, e := range es {
		modes[e.Header.Name] = e.Header.Mode
	}
	want := map[string]int64{"/opt/app": 0o755, "/opt/app/run": 0o755, "/opt/app/data": 0o644, "/opt/app/link": 0o777}
	for n, m := range want {
		if modes[n] != m {
			t.Errorf("%s: mode %o, want %o (all: %v)", n, modes[n], m, modes)
		}
	}
}

func layerOf(t *testing.T, name string, es []Entry) *FileLayer {
	t.Helper()
	es, err := Normalize(es, epoch)
	if err != nil {
		t.Fatal(err)
	}
	l, err := WriteLayerFile(filepath.Join(t.TempDir(), name), es)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testManifest() *manifest.Manifest {
	return &manifest.Manifest{
		SchemaVersion: manifest.SchemaVersion, Name: "demo", Version: "1.0.0", Created: epoch.Format(time.RFC3339),
		Components: []manifest.Component{{Name: "demo-backend", Kind: manifest.KindBackend, Version: "1.0.0"}},
		Migrations: []string{"1"}, DataVolume: manifest.DataVolume{Path: "/data", UID: 990, GID: 990},
	}
}

func baseEntries() []Entry {
	return []Entry{
		DirEntry("/etc", 0o755, 0, 0), FileEntry("/etc/os-release", 0o644, 0, 0, []byte("debian\n")),
		DirEntry("/opt", 0o755, 0, 0), FileEntry("/etc/motd", 0o644, 0, 0, []byte("old\n")),
	}
}

func appEntries() []Entry {
	return []Entry{FileEntry("/etc/motd", 0o644, 0, 0, []byte("new\n")), DirEntry("/opt/app", 0o755, 0, 0),
		FileEntry("/opt/app/bin", 0o755, 0, 0, []byte("#!/bin/sh\n"))}
}

// TestImageReproducibleAndFlattened: the same entries give the same image
// digest; the flattened rootfs holds the union with the later layer winning.
func TestImageReproducibleAndFlattened(t *testing.T) {
	var digests []string
	for range 2 {
		img, err := NewImage(testManifest(), "abc", []Layer{
			{Layer: layerOf(t, "base.tar.zst", baseEntries()), CreatedBy: "base"},
			{Layer: layerOf(t, "app.tar.zst", appEntries()), CreatedBy: "app"},
		})
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
		m, err := ManifestOf(img)
		if err != nil || m.Name != "demo" {
			t.Fatalf("manifest label: %+v %v", m, err)
		}
		var rootfs bytes.Buffer
		if err := WriteRootfs(&rootfs, img); err != nil {
			t.Fatal(err)
		}
		files := untarZst(t, rootfs.Bytes())
		if got := strings.Join(files.names, " "); got != "./etc/ ./etc/motd ./etc/os-release ./opt/ ./opt/app/ ./opt/app/bin" {
			t.Errorf("rootfs entries %q", got)
		}
		if files.content["./etc/motd"] != "new\n" {
			t.Errorf("motd %q: the application layer did not win", files.content["./etc/motd"])
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ: %v", digests)
	}

	dir := filepath.Join(t.TempDir(), "layout")
	img, err := NewImage(testManifest(), "", []Layer{{Layer: layerOf(t, "b.tar.zst", baseEntries())}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second append replaces the first under the same ref
		if err := AppendToLayout(dir, img, "1.0.0"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ImageFromLayout(dir, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := img.Digest()
	if gd != wd {
		t.Errorf("layout image %s, want %s", gd, wd)
	}
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || strings.Count(string(idx), wd.String()) != 1 {
		t.Errorf("index.json should list the image once: %s %v", idx, err)
	}
	if _, err := ImageFromLayout(dir, "2.0.0"); !errors.Is(err, ErrNoImage) {
		t.Errorf("missing ref: %v", err)
	}

	var a1, a2 bytes.Buffer
	if err := WriteArchive(&a1, got, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(&a2, got, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a1.Bytes(), a2.Bytes()) {
		t.Error("two OCI archives of one image differ")
	}
	names := untar(t, &a1).names
	if names[0] != "oci-layout" || names[1] != "index.json" || len(names) != 7 { // + 2 dirs, manifest, config, 1 layer
		t.Errorf("archive entries %v", names)
	}
}

func TestWriteRootfsRefusesWhiteouts(t *testing.T) {
	img, err := NewImage(testManifest(), "", []Layer{
		{Layer: layerOf(t, "b.tar.zst", baseEntries())},
		{Layer: layerOf(t, "w.tar.zst", []Entry{FileEntry("/etc/.wh.motd", 0o644, 0, 0, nil)})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRootfs(io.Discard, img); err == nil || !strings.Contains(err.Error(), "whiteout") {
		t.Errorf("whiteout: %v", err)
	}
}

type tarFiles struct {
	names   []string
	content map[string]string
}

func untarZst(t *testing.T, b []byte) tarFiles {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	return untar(t, zr)
}

func untar(t *testing.T, r io.Reader) tarFiles {
	t.Helper()
	out := tarFiles{content: map[string]string{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out.names = append(out.names, h.Name)
		out.content[h.Name] = string(b)
	}
}
