package lxc_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/lxc/lxctest"
)

type entry struct {
	name, link, body string
	typ              byte
}

func mkTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil && h.Size > 0 {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// filtered runs a template file through the backend's checks and returns
// the entries it would extract ("name" or "name=body" for files).
func filtered(t *testing.T, path string) ([]string, error) {
	t.Helper()
	var out bytes.Buffer
	if err := lxc.FilteredTemplate(path, &out); err != nil {
		return nil, err
	}
	tr := tar.NewReader(&out)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeReg {
			names = append(names, h.Name+"="+string(body))
		} else {
			names = append(names, h.Name)
		}
	}
}

func TestFilterKeepsRootfsAndDropsDevices(t *testing.T) {
	raw := mkTar(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "./dev/", typ: tar.TypeDir},
		entry{name: "./dev/null", typ: tar.TypeChar},
		entry{name: "./dev/pts/", typ: tar.TypeDir},
		entry{name: "./etc/", typ: tar.TypeDir},
		entry{name: "etc/hostname", body: "x"},
		entry{name: "./bin", link: "usr/bin", typ: tar.TypeSymlink},
		entry{name: "./etc/alt", link: "/usr/bin/mawk", typ: tar.TypeSymlink},
		entry{name: "./etc/hard", link: "./etc/hostname", typ: tar.TypeLink},
		entry{name: "./run/fifo", typ: tar.TypeFifo},
		entry{name: "./lib/blk", typ: tar.TypeBlock},
	)
	want := []string{"./", "./dev", "./etc", "./etc/hostname=x", "./bin", "./etc/alt", "./etc/hard", "./run/fifo"}
	var zbuf, gbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	gw := gzip.NewWriter(&gbuf)
	gw.Write(raw)
	gw.Close()
	for name, data := range map[string][]byte{"t.tar": raw, "t.tar.zst": zbuf.Bytes(), "t.tar.gz": gbuf.Bytes()} {
		got, err := filtered(t, writeFile(t, name, data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: extracted %q\nwant %q", name, got, want)
		}
	}
}

func TestFilterRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		reason  string
	}{
		{"absolute path", []entry{{name: "/etc/passwd", body: "x"}}, "absolute path"},
		{"dot-dot", []entry{{name: "./usr/../../etc/passwd", body: "x"}}, "leaves the root"},
		{"through symlink", []entry{
			{name: "./etc", link: "/", typ: tar.TypeSymlink},
			{name: "./etc/passwd", body: "x"},
		}, "goes through symlink etc"},
		{"through relative symlink", []entry{
			{name: "./a", link: "../../..", typ: tar.TypeSymlink},
			{name: "./a/b/c", body: "x"},
		}, "goes through symlink a"},
		{"hard link out", []entry{{name: "./h", link: "../../etc/shadow", typ: tar.TypeLink}}, "hard link"},
		{"absolute hard link", []entry{{name: "./h", link: "/etc/shadow", typ: tar.TypeLink}}, "hard link"},
		{"hard link through symlink", []entry{
			{name: "./s", link: "/etc", typ: tar.TypeSymlink},
			{name: "./h", link: "s/shadow", typ: tar.TypeLink},
		}, "goes through symlink s"},
		{"whiteout", []entry{{name: "./etc/.wh.passwd"}}, "whiteouts are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := filtered(t, writeFile(t, "t.tar", mkTar(t, tc.entries...)))
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error = %v, want one containing %q", err, tc.reason)
			}
		})
	}
}

func ociArchive(t *testing.T, img v1.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := lxctest.WriteOCIArchive(p, img); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOCIArchiveLayersInOrder(t *testing.T) {
	l1 := static.NewLayer(mkTar(t, entry{name: "./a", body: "one"}, entry{name: "./b", body: "one"}), types.OCIUncompressedLayer)
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(mkTar(t, entry{name: "./b", body: "two"}))
	gw.Close()
	l2 := gzipLayer(t, gz.Bytes())
	img, err := lxctest.OCIImage(l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := filtered(t, ociArchive(t, img))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"./a=one", "./b=one", "./b=two"}; !slices.Equal(got, want) {
		t.Errorf("entries %q, want %q (layer 2 after layer 1)", got, want)
	}
}

// gzipLayer is a tar+gzip layer whose diff_id is that of the tar inside.
func gzipLayer(t *testing.T, gz []byte) v1.Layer {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	diff, _, _ := v1.SHA256(bytes.NewReader(raw))
	return &diffLayer{Layer: static.NewLayer(gz, types.OCILayer), diff: diff}
}

type diffLayer struct {
	v1.Layer
	diff v1.Hash
}

func (l *diffLayer) DiffID() (v1.Hash, error) { return l.diff, nil }

func TestOCIArchiveRefusals(t *testing.T) {
	layerTar := mkTar(t, entry{name: "./etc/motd", body: "original-content"})
	good := static.NewLayer(layerTar, types.OCIUncompressedLayer)

	t.Run("unsupported layer media type", func(t *testing.T) {
		img, err := lxctest.OCIImage(static.NewLayer(layerTar, "application/vnd.oci.image.layer.v1.tar+bzip2"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = filtered(t, ociArchive(t, img))
		if err == nil || !strings.Contains(err.Error(), "unsupported media type") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("tampered layer", func(t *testing.T) {
		img, err := lxctest.OCIImage(good)
		if err != nil {
			t.Fatal(err)
		}
		p := ociArchive(t, img)
		raw, _ := os.ReadFile(p)
		raw = bytes.Replace(raw, []byte("original-content"), []byte("tampered-content"), 1)
		os.WriteFile(p, raw, 0o644)
		_, err = filtered(t, p)
		if err == nil || !strings.Contains(err.Error(), "does not match its digest") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("diff_id mismatch", func(t *testing.T) {
		img, err := lxctest.OCIImage(good)
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.RootFS.DiffIDs[0], _, _ = v1.SHA256(strings.NewReader("something else"))
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		_, err = filtered(t, ociArchive(t, img))
		if err == nil || !strings.Contains(err.Error(), "diff_id") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("wrong architecture", func(t *testing.T) {
		img, err := lxctest.OCIImage(good)
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Architecture = "arm64"
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		_, err = filtered(t, ociArchive(t, img))
		if err == nil || !strings.Contains(err.Error(), "linux/amd64") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("docker media types", func(t *testing.T) {
		img, err := lxctest.OCIImage(good)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
		_, err = filtered(t, ociArchive(t, img))
		if err == nil || !strings.Contains(err.Error(), "config has media type") {
			t.Fatalf("error = %v", err)
		}
	})
}

func TestUploadTemplateIsAtomic(t *testing.T) {
	b, err := lxc.New(lxc.Options{Root: t.TempDir(), Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dir := filepath.Join(b.Root(), "storage", "local", "template", "cache")
	if err := b.UploadTemplate(ctx, "local", "t.tar.zst", strings.NewReader("short"), 100); err == nil {
		t.Fatal("upload with a size mismatch succeeded")
	}
	if err := b.UploadTemplate(ctx, "local", "../escape.tar", strings.NewReader("x"), 1); err == nil {
		t.Fatal("upload with a path in the name succeeded")
	}
	if err := b.UploadTemplate(ctx, "elsewhere", "t.tar", strings.NewReader("x"), 1); err == nil {
		t.Fatal("upload to an unknown storage succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("failed uploads left %v", ents)
	}
	if ok, err := b.TemplateStored(ctx, "local", "t.tar.zst"); ok || err != nil {
		t.Fatalf("TemplateStored after failed upload = %v, %v", ok, err)
	}
	if err := b.UploadTemplate(ctx, "local", "t.tar.zst", strings.NewReader("content"), -1); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TemplateStored(ctx, "local", "t.tar.zst"); !ok || err != nil {
		t.Fatalf("TemplateStored after upload = %v, %v", ok, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("template dir holds %v, want only the template", ents)
	}
}
