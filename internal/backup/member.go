package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
)

// Members a restore on a node without the instance reads before deploying
// it: the instance configuration and Vikunja's (for the database password).
const (
	InstanceMember = configMember
	DataMember     = dataMember + "/"
)

// ReadManifest reads an archive's manifest from its trailer, as List does:
// what the archive says it is, before Verify or Restore checks that.
func ReadManifest(path string) (*Manifest, error) {
	a, err := openArchive(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer a.Close()
	return a.m, nil
}

// ReadMembers checks the whole archive against its manifest, as Verify
// does, and in the same pass keeps the named small members (up to 1 MB
// each): a restore reads a large archive once before extracting it.
func ReadMembers(ctx context.Context, path string, names ...string) (*Manifest, map[string][]byte, error) {
	a, err := openArchive(path)
	if err != nil {
		return nil, nil, fmt.Errorf("verify %s: %w", path, err)
	}
	defer a.Close()
	m := &memberSink{want: names, got: map[string]*bytes.Buffer{}}
	if err := a.scan(ctx, m); err != nil {
		return nil, nil, fmt.Errorf("verify %s: %w", path, err)
	}
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		b, ok := m.got[name]
		if !ok {
			return nil, nil, corruptf("%s has no member %s", path, name)
		}
		out[name] = b.Bytes()
	}
	return a.m, out, nil
}

// memberSink keeps the wanted members and discards the others.
type memberSink struct {
	discard
	want []string
	got  map[string]*bytes.Buffer
}

func (m *memberSink) file(e *Entry, hdr *tar.Header) (io.WriteCloser, error) {
	if !slices.Contains(m.want, e.Path) {
		return nopCloser{io.Discard}, nil
	}
	if e.Size > maxConfig {
		return nil, fmt.Errorf("member %s: %d bytes, more than the %d a configuration may have", e.Path, e.Size, maxConfig)
	}
	b := &bytes.Buffer{}
	m.got[e.Path] = b
	return nopCloser{b}, nil
}

// HumanSize is an archive's size as people read it.
func HumanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d kB", (n+1023)/1024)
}
