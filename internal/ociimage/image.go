package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vkimg/vkimg/internal/manifest"
)

// RefNameAnnotation tags an image in an OCI image layout's index.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Layer pairs a layer with the history line that says what it holds.
type Layer struct {
	Layer     v1.Layer
	CreatedBy string
}

// NewImage assembles a linux/amd64 OCI image whose init is /sbin/init and
// whose labels carry the template manifest. Every time in it is m.Created,
// so the same layers and manifest give the same digest.
func NewImage(m *manifest.Manifest, revision string, layers []Layer) (v1.Image, error) {
	created, err := time.Parse(time.RFC3339, m.Created)
	if err != nil {
		return nil, fmt.Errorf("image: manifest created %q: %w", m.Created, err)
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	labels := map[string]string{
		manifest.LabelManifest: string(mj),
		manifest.LabelVersion:  m.Version,
		manifest.LabelTitle:    m.Name,
		manifest.LabelCreated:  m.Created,
	}
	if revision != "" {
		labels[manifest.LabelRevision] = revision
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/sbin/init"},
			Labels:     labels,
			// systemd halts cleanly on SIGRTMIN+3, not on SIGTERM.
			StopSignal: "SIGRTMIN+3",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	for _, l := range layers {
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l.Layer,
			MediaType: types.OCILayerZStd,
			History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: l.CreatedBy},
		})
		if err != nil {
			return nil, fmt.Errorf("image: append layer: %w", err)
		}
	}
	return img, nil
}

// AppendToLayout stores img in the OCI image layout at dir (created if
// missing) tagged refName, replacing any image already tagged so.
func AppendToLayout(dir string, img v1.Image, refName string) error {
	p, err := openOrCreateLayout(dir)
	if err != nil {
		return err
	}
	err = p.ReplaceImage(img, match.Annotation(RefNameAnnotation, refName),
		layout.WithAnnotations(map[string]string{RefNameAnnotation: refName}))
	if err != nil {
		return fmt.Errorf("write image %s to %s: %w", refName, dir, err)
	}
	return nil
}

func openOrCreateLayout(dir string) (layout.Path, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		p, err := layout.FromPath(dir)
		if err != nil {
			return "", fmt.Errorf("open image layout %s: %w", dir, err)
		}
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create image layout: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", fmt.Errorf("create image layout %s: %w", dir, err)
	}
	return p, nil
}

// ErrNoImage is returned (wrapped) when a layout has no image of that name.
var ErrNoImage = errors.New("no such image in layout")

// ImageFromLayout finds the image tagged refName in the layout at dir.
func ImageFromLayout(dir, refName string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("open image layout %s: %w", dir, err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("open image layout %s: %w", dir, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("open image layout %s: %w", dir, err)
	}
	for _, d := range im.Manifests {
		if d.Annotations[RefNameAnnotation] == refName && d.MediaType.IsImage() {
			img, err := ii.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s in %s: %w", refName, dir, err)
			}
			return img, nil
		}
	}
	return nil, fmt.Errorf("%s in %s: %w", refName, dir, ErrNoImage)
}

// ManifestOf reads the template manifest from an image's label.
func ManifestOf(img v1.Image) (*manifest.Manifest, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	s, ok := cf.Config.Labels[manifest.LabelManifest]
	if !ok {
		return nil, fmt.Errorf("image has no %s label: not a vkimg template", manifest.LabelManifest)
	}
	return manifest.Parse([]byte(s))
}

// WriteRootfs flattens img's layers into one plain rootfs tar+zstd stream
// (what Proxmox 8 takes as a container template). Layers must be sorted
// by name, as this package writes them; a later layer's entry replaces an
// earlier one of the same name. The output is sorted too.
func WriteRootfs(w io.Writer, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	heads := make([]*layerStream, 0, len(layers))
	defer func() {
		for _, h := range heads {
			h.rc.Close()
		}
	}()
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return fmt.Errorf("rootfs: layer %d: %w", i, err)
		}
		s := &layerStream{rc: rc, tr: tar.NewReader(rc), n: i}
		heads = append(heads, s)
		if err := s.next(); err != nil {
			return err
		}
	}
	zw, err := newZstdWriter(w)
	if err != nil {
		return fmt.Errorf("rootfs: zstd: %w", err)
	}
	tw := tar.NewWriter(zw)
	for {
		// The smallest name wins; among equal names the last layer.
		var pick *layerStream
		for _, s := range heads {
			if s.h != nil && (pick == nil || s.h.Name <= pick.h.Name) {
				pick = s
			}
		}
		if pick == nil {
			break
		}
		if err := tw.WriteHeader(pick.h); err != nil {
			return fmt.Errorf("rootfs: %s: %w", pick.h.Name, err)
		}
		if _, err := io.Copy(tw, pick.tr); err != nil {
			return fmt.Errorf("rootfs: %s: %w", pick.h.Name, err)
		}
		name := pick.h.Name
		for _, s := range heads {
			if s.h != nil && s.h.Name == name {
				if err := s.next(); err != nil {
					return err
				}
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("rootfs: zstd: %w", err)
	}
	return nil
}

type layerStream struct {
	rc   io.ReadCloser
	tr   *tar.Reader
	h    *tar.Header
	last string
	n    int
}

func (s *layerStream) next() error {
	h, err := s.tr.Next()
	if errors.Is(err, io.EOF) {
		s.h = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("rootfs: layer %d: %w", s.n, err)
	}
	if strings.HasPrefix(filepath.Base(h.Name), ".wh.") {
		return fmt.Errorf("rootfs: layer %d: whiteout %s: templates only add files", s.n, h.Name)
	}
	if h.Name <= s.last {
		return fmt.Errorf("rootfs: layer %d: %s after %s: layer is not sorted", s.n, h.Name, s.last)
	}
	s.h, s.last = h, h.Name
	return nil
}

// WriteArchive writes img as an oci-archive (a tar of an OCI image layout
// holding only img, tagged refName): what skopeo makes and what Proxmox
// VE 9's pct create and the LXC backend take. Entries are in a fixed order
// with fixed times, so the archive is as reproducible as the image.
func WriteArchive(w io.Writer, img v1.Image, refName string) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	mt := cf.Created.Time.UTC()
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   types.OCIManifestSchema1,
			Size:        int64(len(rawManifest)),
			Digest:      digest,
			Platform:    &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{RefNameAnnotation: refName},
		}},
	})
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	tw := tar.NewWriter(w)
	file := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mt}); err != nil {
			return fmt.Errorf("oci archive: %s: %w", name, err)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("oci archive: %s: %w", name, err)
		}
		return nil
	}
	small := func(name string, b []byte) error { return file(name, int64(len(b)), bytes.NewReader(b)) }
	if err := small("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := small("index.json", index); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mt}); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
	}
	if err := small("blobs/sha256/"+digest.Hex, rawManifest); err != nil {
		return err
	}
	if err := small("blobs/sha256/"+cfgName.Hex, rawConfig); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("oci archive: layer %s: %w", d, err)
		}
		err = file("blobs/sha256/"+d.Hex, size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	return nil
}
