package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
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

// ReadMember returns one small member of an archive (up to 1 MB), after
// checking the whole archive against its manifest as Verify does.
func ReadMember(ctx context.Context, path, member string) ([]byte, error) {
	a, err := openArchive(path)
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", member, path, err)
	}
	defer a.Close()
	m := &memberSink{name: member}
	if err := a.scan(ctx, m); err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", member, path, err)
	}
	if !m.found {
		return nil, corruptf("%s has no member %s", path, member)
	}
	return m.buf.Bytes(), nil
}

// memberSink keeps one member and discards the others.
type memberSink struct {
	discard
	name  string
	found bool
	buf   bytes.Buffer
}

func (m *memberSink) file(e *Entry, hdr *tar.Header) (io.WriteCloser, error) {
	if e.Path != m.name {
		return nopCloser{io.Discard}, nil
	}
	if e.Size > maxConfig {
		return nil, fmt.Errorf("member %s: %d bytes, more than the %d a configuration may have", e.Path, e.Size, maxConfig)
	}
	m.found = true
	return nopCloser{&m.buf}, nil
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
