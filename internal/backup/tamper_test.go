package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
)

type member struct {
	hdr  *tar.Header
	data []byte
}

// unpack reads a valid archive into its members (without manifest.json)
// and its manifest.
func unpack(t *testing.T, path string) ([]member, *backup.Manifest) {
	t.Helper()
	compressed, raw, err := backup.SplitArchive(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zstd.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var ms []member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name != "manifest.json" {
			ms = append(ms, member{hdr, data})
		}
	}
	var m backup.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return ms, &m
}

// pack writes members, then inner as manifest.json, and trailer.
func pack(t *testing.T, path string, ms []member, inner, trailer []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	ms = append(ms, member{&tar.Header{Typeflag: tar.TypeReg, Name: "manifest.json", Mode: 0o600, Size: int64(len(inner))}, inner})
	for _, m := range ms {
		m.hdr.Size = int64(len(m.data))
		if err := tw.WriteHeader(m.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := backup.AppendTrailer(&buf, trailer); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func manifestJSON(t *testing.T, m *backup.Manifest) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// insert adds a file member (and, with listed, its manifest entry) right
// before the database dump.
func insert(ms []member, m *backup.Manifest, hdr *tar.Header, data []byte, listed bool) []member {
	i := slices.IndexFunc(ms, func(x member) bool { return x.hdr.Name == m.Database.Dump })
	ms = slices.Insert(ms, i, member{hdr, data})
	if listed {
		sum := sha256.Sum256(data)
		e := backup.Entry{Path: hdr.Name, Type: "file", Mode: uint32(hdr.Mode), UID: hdr.Uid, GID: hdr.Gid, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		m.Entries = slices.Insert(m.Entries, slices.IndexFunc(m.Entries, func(e backup.Entry) bool { return e.Path == m.Database.Dump }), e)
		m.Size += e.Size
	}
	return ms
}

func find(ms []member, name string) int {
	return slices.IndexFunc(ms, func(x member) bool { return x.hdr.Name == name })
}

// TestTamperedArchivesAreRefused: Verify and Restore refuse each damaged
// or hostile archive, and Restore changes nothing.
func TestTamperedArchivesAreRefused(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	info := in.create(t, backup.Options{})
	before := in.state(t)
	original, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	compressed, trailer, err := backup.SplitArchive(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	evil := []byte("owned")
	file := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Uid: 990, Gid: 990}
	}
	for _, tc := range []struct {
		name string
		want error
		// Either bytes of the archive file, or a change to its members
		// and manifest, repacked with that manifest inside and in the
		// trailer.
		bytes   func() []byte
		members func(ms []member, m *backup.Manifest) []member
	}{
		{name: "byte flipped in the middle", want: backup.ErrCorrupt, bytes: func() []byte {
			b := slices.Clone(original)
			b[len(compressed)/2] ^= 0x55
			return b
		}},
		{name: "truncated", want: backup.ErrCorrupt, bytes: func() []byte { return original[:len(original)/2] }},
		{name: "compressed stream cut, trailer kept", want: backup.ErrCorrupt, bytes: func() []byte {
			return append(slices.Clone(compressed[:len(compressed)-100]), original[len(compressed):]...)
		}},
		{name: "trailer differs from the manifest inside", want: backup.ErrCorrupt, bytes: func() []byte {
			var m backup.Manifest
			json.Unmarshal(trailer, &m)
			m.Instance = "other"
			var buf bytes.Buffer
			buf.Write(compressed)
			backup.AppendTrailer(&buf, manifestJSON(t, &m))
			return buf.Bytes()
		}},
		{name: "file changed, manifest kept", want: backup.ErrCorrupt, members: func(ms []member, m *backup.Manifest) []member {
			i := find(ms, "data/files/1")
			ms[i].data = slices.Clone(ms[i].data)
			ms[i].data[0] ^= 1
			return ms
		}},
		{name: "member not in the manifest", want: backup.ErrCorrupt, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, file("data/files/extra"), evil, false)
		}},
		{name: "member missing", want: backup.ErrCorrupt, members: func(ms []member, m *backup.Manifest) []member {
			return slices.Delete(ms, find(ms, "data/files/2"), find(ms, "data/files/2")+1)
		}},
		{name: "unknown format", want: backup.ErrCorrupt, members: func(ms []member, m *backup.Manifest) []member {
			m.Format = 2
			return ms
		}},
		{name: "live SQLite WAL beside the dump", want: backup.ErrCorrupt, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, file("data/db/vikunja.db-wal"), evil, true)
		}},
		{name: "dot-dot member", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, file("data/../../../escaped"), evil, false)
		}},
		{name: "dot-dot member in the manifest too", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, file("data/files/../../../escaped"), evil, true)
		}},
		{name: "absolute path", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, file("/tmp/vkimg-escaped"), evil, true)
		}},
		{name: "symlink", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, &tar.Header{Typeflag: tar.TypeSymlink, Name: "data/files/link", Linkname: "/etc/shadow"}, nil, false)
		}},
		{name: "hard link", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, &tar.Header{Typeflag: tar.TypeLink, Name: "data/files/link", Linkname: "instance.yaml"}, nil, false)
		}},
		{name: "device", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			return insert(ms, m, &tar.Header{Typeflag: tar.TypeChar, Name: "data/files/dev", Devmajor: 1, Devminor: 3}, nil, false)
		}},
		{name: "owner outside the container's ids", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			// -100000 would be the host's root after mapping.
			h := file("data/files/rootowned")
			h.Uid = -100000
			return insert(ms, m, h, evil, true)
		}},
		{name: "set-uid file", want: backup.ErrUnsafe, members: func(ms []member, m *backup.Manifest) []member {
			h := file("data/files/suid")
			h.Mode = 0o4755
			return insert(ms, m, h, evil, true)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tampered.tar.zst")
			if tc.bytes != nil {
				if err := os.WriteFile(p, tc.bytes(), 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				ms, m := unpack(t, info.Path)
				ms = tc.members(ms, m)
				raw := manifestJSON(t, m)
				pack(t, p, ms, raw, raw)
			}
			_, err := backup.Verify(context.Background(), p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			t.Logf("Verify: %v", err)
			_, err = backup.Restore(context.Background(), p, backup.Target{DataVolume: in.vol(), ConfigFile: in.src.ConfigFile})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Restore: %v, want %v", err, tc.want)
			}
			if after := in.state(t); after != before {
				t.Fatalf("a refused restore changed the instance:\n%s", diff(before, after))
			}
			entries, _ := os.ReadDir(filepath.Dir(in.vol()))
			if len(entries) != 2 {
				t.Fatalf("a refused restore left %v beside the data volume", entries)
			}
			if _, err := os.Stat("/tmp/vkimg-escaped"); err == nil {
				t.Fatal("a member escaped to /tmp")
			}
		})
	}

	// The untouched archive passes, so the refusals above are the tampering's.
	if _, err := backup.Verify(context.Background(), info.Path); err != nil {
		t.Fatalf("Verify of the original: %v", err)
	}
	ms, m := unpack(t, info.Path)
	raw := manifestJSON(t, m)
	repacked := filepath.Join(t.TempDir(), "repacked.tar.zst")
	pack(t, repacked, ms, raw, raw)
	if _, err := backup.Verify(context.Background(), repacked); err != nil {
		t.Fatalf("Verify of the original repacked: %v", err)
	}
}

// TestRestoreRefusesOtherDatabaseType: a SQLite archive cannot go into a
// PostgreSQL database; nothing changes.
func TestRestoreRefusesOtherDatabaseType(t *testing.T) {
	in := newInstance(t, datavol.Database{Type: datavol.SQLite})
	info := in.create(t, backup.Options{})
	before := in.state(t)
	pg := datavol.Database{Type: datavol.Postgres, Host: "127.0.0.1:1", Name: "v", User: "v"}
	_, err := backup.Restore(context.Background(), info.Path, backup.Target{DataVolume: in.vol(), Database: &pg})
	if err == nil || !strings.Contains(err.Error(), "sqlite database, the target is postgres") {
		t.Fatalf("err = %v, want a refusal naming both types", err)
	}
	if after := in.state(t); after != before {
		t.Fatalf("a refused restore changed the instance:\n%s", diff(before, after))
	}
}
