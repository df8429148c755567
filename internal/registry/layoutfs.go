package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/vkimg/vkimg/internal/atomicfile"
)

// ensureLayout makes dir an empty OCI image layout unless it already is one.
func ensureLayout(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return fmt.Errorf("create layout %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); errors.Is(err, os.ErrNotExist) {
		if err := writeLayoutFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return fmt.Errorf("create layout %s: %w", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, os.ErrNotExist) {
		empty := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
		b, _ := json.Marshal(empty)
		if err := writeLayoutFile(filepath.Join(dir, "index.json"), b); err != nil {
			return fmt.Errorf("create layout %s: %w", dir, err)
		}
	}
	return nil
}

// updateIndex rewrites dir/index.json atomically: entries for which drop
// returns true are removed, then add is appended.
func updateIndex(dir string, drop func(v1.Descriptor) bool, add ...v1.Descriptor) error {
	path := filepath.Join(dir, "index.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read layout index: %w", err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("layout index %s: %w", path, err)
	}
	kept := idx.Manifests[:0]
	for _, d := range idx.Manifests {
		if !drop(d) {
			kept = append(kept, d)
		}
	}
	idx.Manifests = append(kept, add...)
	if idx.MediaType == "" {
		idx.MediaType = types.OCIImageIndex
	}
	out, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("encode layout index: %w", err)
	}
	if err := writeLayoutFile(path, out); err != nil {
		return fmt.Errorf("write layout index: %w", err)
	}
	return nil
}

func blobPath(dir string, d v1.Hash) string {
	return filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
}

// putBlob stores small, already verified bytes under their digest.
func putBlob(dir string, d v1.Hash, data []byte) error {
	if err := writeLayoutFile(blobPath(dir, d), data); err != nil {
		return fmt.Errorf("store blob %s: %w", d, err)
	}
	return nil
}

// hasBlob reports whether dir holds blob d with the right size and content.
// Cached bytes are re-hashed before every use: the cache is only as
// trustworthy as the disk it is on.
func hasBlob(dir string, d v1.Descriptor) (bool, error) {
	f, err := os.Open(blobPath(dir, d.Digest))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != d.Size {
		return false, err
	}
	h := newHasher()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("re-hash cached blob %s: %w", d.Digest, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)) == d.Digest.Hex, nil
}

// writeLayoutFile writes a layout file readable by other tools (skopeo,
// crane), which CreateTemp's 0600 would lock out.
func writeLayoutFile(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o644)
}
