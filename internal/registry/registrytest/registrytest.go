// Package registrytest makes template-shaped OCI images for tests of the
// packages that publish, pull and deploy templates.
package registrytest

import (
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vkimg/vkimg/internal/manifest"
)

// Commit is the revision label of the images made here.
const Commit = "0123456789abcdef0123456789abcdef01234567"

// TemplateImage makes an OCI image shaped like a vkimg template (two random
// layers of layerBytes, the manifest label, linux/amd64, /sbin/init).
func TemplateImage(t testing.TB, version string, layerBytes int64) v1.Image {
	t.Helper()
	m := manifest.Manifest{
		SchemaVersion: manifest.SchemaVersion, Name: "standin", Version: version,
		Components: []manifest.Component{{Name: "standin", Kind: manifest.KindBackend, Version: version, Source: "test"}},
		DataVolume: manifest.DataVolume{Path: "/data", UID: 990, GID: 990},
	}
	label, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range 2 {
		l, err := random.Layer(layerBytes, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/sbin/init"}
	cf.Config.Labels = map[string]string{
		manifest.LabelManifest: string(label),
		manifest.LabelVersion:  version,
		manifest.LabelRevision: Commit,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// TemplateLayout writes a TemplateImage into a fresh OCI layout in a test
// temporary directory, tagged with the version as the builder does.
func TemplateLayout(t testing.TB, version string, layerBytes int64) (string, v1.Hash) {
	t.Helper()
	dir := t.TempDir()
	img := TemplateImage(t, version, layerBytes)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version})); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dir, d
}
