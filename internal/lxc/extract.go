package lxc

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/vkimg/vkimg/internal/hypervisor"
)

// layer is one tar stream to apply to the rootfs, in order.
type layer struct {
	name  string
	media types.MediaType
	open  func() (io.Reader, error) // the layer as stored (maybe compressed)
	// digest and diffID, when known, are checked after the layer is applied:
	// an OCI image whose blobs do not match its manifest is refused.
	digest, diffID v1.Hash
}

// templateLayers opens a template file: a plain rootfs tarball (tar, tar+gzip
// or tar+zstd) or an OCI image archive (oci-layout, index.json, blobs/).
func templateLayers(f *os.File) ([]layer, error) {
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	whole := func() (io.Reader, error) { return io.NewSectionReader(f, 0, 1<<62), nil }
	switch {
	case bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return []layer{{name: f.Name(), media: types.OCILayerZStd, open: whole}}, nil
	case magic[0] == 0x1f && magic[1] == 0x8b:
		return []layer{{name: f.Name(), media: types.OCILayer, open: whole}}, nil
	}
	entries, err := indexTar(f)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	if _, ok := entries["oci-layout"]; ok {
		return ociLayers(f, entries)
	}
	return []layer{{name: f.Name(), media: types.OCIUncompressedLayer, open: whole}}, nil
}

// tarEntry locates a regular file's data inside an uncompressed tar.
type tarEntry struct{ off, size int64 }

// indexTar maps the regular files of an uncompressed tar to their data, so
// an OCI archive's blobs can be read in place without unpacking it.
// tar.Reader seeks over file data and reads nothing ahead, so the file
// offset after Next is where the entry's data starts.
func indexTar(f *os.File) (map[string]tarEntry, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tr := tar.NewReader(f)
	out := map[string]tarEntry{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(path.Clean(hdr.Name), "./")] = tarEntry{off: off, size: hdr.Size}
	}
}

// ociLayers picks the linux/amd64 image of an OCI archive and returns its
// layers, accepting what Proxmox's OCI extractor accepts.
func ociLayers(f *os.File, entries map[string]tarEntry) ([]layer, error) {
	read := func(name string) ([]byte, error) {
		e, ok := entries[name]
		if !ok {
			return nil, fmt.Errorf("OCI archive has no %s", name)
		}
		return io.ReadAll(io.NewSectionReader(f, e.off, e.size))
	}
	blob := func(h v1.Hash) (tarEntry, error) {
		e, ok := entries["blobs/"+h.Algorithm+"/"+h.Hex]
		if !ok {
			return e, fmt.Errorf("OCI archive lacks blob %s", h)
		}
		return e, nil
	}
	readBlob := func(d v1.Descriptor) ([]byte, error) {
		e, err := blob(d.Digest)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.NewSectionReader(f, e.off, e.size))
		if err != nil {
			return nil, err
		}
		if got := sha256.Sum256(b); d.Digest.Algorithm != "sha256" || hex.EncodeToString(got[:]) != d.Digest.Hex {
			return nil, fmt.Errorf("blob %s does not match its digest", d.Digest)
		}
		return b, nil
	}

	raw, err := read("index.json")
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("OCI index.json: %w", err)
	}
	desc, err := pickManifest(idx, readBlob)
	if err != nil {
		return nil, err
	}
	raw, err = readBlob(desc)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("OCI manifest %s: %w", desc.Digest, err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		return nil, fmt.Errorf("OCI image config has media type %q, want %s", m.Config.MediaType, types.OCIConfigJSON)
	}
	raw, err = readBlob(m.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("OCI image config: %w", err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		return nil, fmt.Errorf("OCI image is %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("OCI image has %d layers but %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	var out []layer
	for i, l := range m.Layers {
		switch l.MediaType {
		case types.OCIUncompressedLayer, types.OCILayer, types.OCILayerZStd:
		default:
			return nil, fmt.Errorf("OCI layer %d has unsupported media type %q (tar, tar+gzip or tar+zstd only)", i+1, l.MediaType)
		}
		e, err := blob(l.Digest)
		if err != nil {
			return nil, err
		}
		if e.size != l.Size {
			return nil, fmt.Errorf("OCI layer %s is %d bytes, manifest says %d", l.Digest, e.size, l.Size)
		}
		out = append(out, layer{
			name:   fmt.Sprintf("OCI layer %d (%s)", i+1, l.Digest),
			media:  l.MediaType,
			open:   func() (io.Reader, error) { return io.NewSectionReader(f, e.off, e.size), nil },
			digest: l.Digest, diffID: cfg.RootFS.DiffIDs[i],
		})
	}
	return out, nil
}

// pickManifest finds the linux/amd64 image manifest in an index, descending
// into nested indexes as skopeo and crane may write them.
func pickManifest(idx *v1.IndexManifest, readBlob func(v1.Descriptor) ([]byte, error)) (v1.Descriptor, error) {
	for _, d := range idx.Manifests {
		if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != "amd64") {
			continue
		}
		switch d.MediaType {
		case types.OCIManifestSchema1:
			return d, nil
		case types.OCIImageIndex:
			raw, err := readBlob(d)
			if err != nil {
				return d, err
			}
			sub, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return d, fmt.Errorf("OCI index %s: %w", d.Digest, err)
			}
			return pickManifest(sub, readBlob)
		}
	}
	return v1.Descriptor{}, errors.New("OCI archive has no linux/amd64 image manifest")
}

// extract applies layers in order to rootfs, inside the container's user
// namespace (uids shifted by IDMapBase) the way pct create does. Entries are
// checked in Go and streamed into tar, which runs as the container's root:
// it cannot write host files even if a check were missed.
func extract(ctx context.Context, layers []layer, rootfs string) error {
	cmd := exec.CommandContext(ctx, "lxc-usernsexec",
		"-m", fmt.Sprintf("b:0:%d:%d", hypervisor.IDMapBase, hypervisor.IDMapRange), "--",
		"tar", "--numeric-owner", "-xpf", "-", "-C", rootfs,
		"--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
		"--warning=no-timestamp")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start tar in user namespace: %w", err)
	}
	err = streamLayers(stdin, layers)
	stdin.Close()
	werr := cmd.Wait()
	if err != nil {
		return fmt.Errorf("extract template: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("extract template: tar: %w: %s", werr, stderr.String())
	}
	return nil
}

// streamLayers writes layers, checked and filtered, as one tar stream to w;
// later entries replace earlier ones as they do when tar extracts them.
func streamLayers(w io.Writer, layers []layer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	f := &entryFilter{symlinks: map[string]bool{}}
	for _, l := range layers {
		if err := f.apply(tw, l); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// entryFilter refuses entries that would land outside the rootfs and drops
// what cannot exist in an unprivileged container.
type entryFilter struct {
	// symlinks are the archive's symlinks so far: an entry below one would
	// be written wherever the link points, so it is refused.
	symlinks map[string]bool
}

func (f *entryFilter) apply(tw *tar.Writer, l layer) error {
	r, err := l.open()
	if err != nil {
		return err
	}
	var dh, uh hash.Hash
	if l.digest.Hex != "" {
		dh = sha256.New()
		r = io.TeeReader(r, dh)
	}
	var plain io.Reader
	switch l.media {
	case types.OCILayerZStd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		plain = zr
	case types.OCILayer:
		gr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer gr.Close()
		plain = gr
	default:
		plain = r
	}
	if l.diffID.Hex != "" {
		uh = sha256.New()
		plain = io.TeeReader(plain, uh)
	}
	tr := tar.NewReader(plain)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		keep, err := f.check(hdr)
		if err != nil {
			return err
		}
		if !keep {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	// The tar end marker may be followed by padding that still counts
	// towards the digests.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return err
	}
	if dh != nil && hex.EncodeToString(dh.Sum(nil)) != l.digest.Hex {
		return fmt.Errorf("layer does not match its digest %s", l.digest)
	}
	if uh != nil && hex.EncodeToString(uh.Sum(nil)) != l.diffID.Hex {
		return fmt.Errorf("layer does not match its diff_id %s", l.diffID)
	}
	return nil
}

// check validates hdr and rewrites its names relative to the rootfs. It
// reports false for entries to leave out.
func (f *entryFilter) check(hdr *tar.Header) (bool, error) {
	name, err := rootfsPath(hdr.Name)
	if err != nil {
		return false, err
	}
	if strings.HasPrefix(path.Base(name), ".wh.") {
		return false, fmt.Errorf("%s: OCI whiteouts are not supported (layers may only add or replace files)", hdr.Name)
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		// Device nodes cannot be made in a user namespace; LXC populates /dev.
		return false, nil
	case tar.TypeXGlobalHeader:
		return false, nil
	}
	if strings.HasPrefix(name, "dev/") {
		return false, nil
	}
	if err := f.throughSymlink(name); err != nil {
		return false, fmt.Errorf("%s: %w", hdr.Name, err)
	}
	switch hdr.Typeflag {
	case tar.TypeLink:
		target, err := rootfsPath(hdr.Linkname)
		if err != nil {
			return false, fmt.Errorf("%s: hard link: %w", hdr.Name, err)
		}
		if err := f.throughSymlink(target); err != nil {
			return false, fmt.Errorf("%s: hard link: %w", hdr.Name, err)
		}
		hdr.Linkname = "./" + target
	case tar.TypeGNUSparse:
		// tar.Reader expands sparse files; write them back as plain files.
		hdr.Typeflag = tar.TypeReg
	}
	delete(f.symlinks, name)
	if hdr.Typeflag == tar.TypeSymlink {
		f.symlinks[name] = true
	}
	hdr.Name = "./" + name
	if name == "." {
		hdr.Name = "./"
	}
	// Let the writer pick a format that can hold every field it was given.
	hdr.Format = tar.FormatUnknown
	return true, nil
}

// throughSymlink reports an error when a parent directory of name is a
// symlink from the archive.
func (f *entryFilter) throughSymlink(name string) error {
	for p := path.Dir(name); p != "." && p != "/"; p = path.Dir(p) {
		if f.symlinks[p] {
			return fmt.Errorf("path goes through symlink %s", p)
		}
	}
	return nil
}

// rootfsPath cleans an archive path to one relative to the rootfs ("." is
// the rootfs itself), refusing absolute paths and "..".
func rootfsPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path %q", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q leaves the root", name)
		}
	}
	if name == "" {
		return "", errors.New("empty path")
	}
	return path.Clean(name), nil
}

// tailBuffer keeps the last few KB of a command's output for error messages.
type tailBuffer struct{ b []byte }

const tailMax = 4096

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = t.b[len(t.b)-tailMax:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
