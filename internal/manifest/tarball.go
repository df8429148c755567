package manifest

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/klauspost/compress/zstd"
)

// FromRootfsTarball reads the manifest a plain rootfs template (the
// Proxmox 8 .tar.zst) carries at PathInRootfs.
func FromRootfsTarball(file string) (*Manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read template manifest: %w", err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("read template manifest from %s: %w", file, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s holds no %s: not a vkimg template", file, PathInRootfs)
		}
		if err != nil {
			return nil, fmt.Errorf("read template manifest from %s: %w", file, err)
		}
		if path.Clean(h.Name) != PathInRootfs {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 16<<20))
		if err != nil {
			return nil, fmt.Errorf("read template manifest from %s: %w", file, err)
		}
		return Parse(b)
	}
}
