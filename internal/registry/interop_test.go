package registry

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vkimg/vkimg/internal/manifest"
	"github.com/vkimg/vkimg/internal/registry/registrytest"
	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/testenv"
)

// TestInterop checks that what Publish puts in a registry is read by the
// tools around it: skopeo (what Proxmox 9.1's OCI pull runs), crane and
// cosign.
func TestInterop(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(t)
	src, digest := templateLayout(t, "2.5.0", 64<<10)
	key := testKey(t)
	repo := reg.Host + "/vikunja"
	if _, err := Publish(ctx, src, mustRef(t, repo), PublishOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	checkInterop(t, repo, "2.5.0", digest, &key.PublicKey)
}

// checkInterop runs skopeo, crane and cosign against repo:tag, which must
// be a signed template with the given digest.
func checkInterop(t *testing.T, repo, tag string, digest v1.Hash, pub *ecdsa.PublicKey) {
	t.Helper()
	t.Run("skopeo", func(t *testing.T) {
		members, idx := registrytest.SkopeoArchive(t, repo+":"+tag)
		for _, want := range []string{"oci-layout", "index.json", "blobs", "blobs/sha256/" + digest.Hex} {
			if !members[want] {
				t.Errorf("archive lacks %s (has %v)", want, members)
			}
		}
		if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digest {
			t.Errorf("archive index %+v, want the manifest digest %s kept", idx.Manifests, digest)
		}
	})
	t.Run("crane", func(t *testing.T) {
		crane := testenv.NeedGoTool(t, "crane", "github.com/google/go-containerregistry/cmd/crane@v0.22.1")
		raw, err := exec.Command(crane, "manifest", repo+":"+tag).Output()
		if err != nil {
			t.Fatalf("crane manifest: %v", err)
		}
		if digestOf(raw) != digest {
			t.Errorf("crane manifest digest %s, want %s", digestOf(raw), digest)
		}
		cfg, err := exec.Command(crane, "config", repo+":"+tag).Output()
		if err != nil {
			t.Fatalf("crane config: %v", err)
		}
		var cf v1.ConfigFile
		if err := json.Unmarshal(cfg, &cf); err != nil {
			t.Fatal(err)
		}
		if _, err := manifest.Parse([]byte(cf.Config.Labels[manifest.LabelManifest])); err != nil || cf.Architecture != "amd64" || cf.OS != "linux" {
			t.Errorf("crane config: %s/%s, manifest label: %v", cf.OS, cf.Architecture, err)
		}
	})
	t.Run("cosign", func(t *testing.T) {
		cosign := testenv.NeedGoTool(t, "cosign", "github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5")
		dir := t.TempDir()
		pem, err := signing.MarshalPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "trusted.pub"), pem, 0o644)
		cmd := exec.Command(cosign, "verify", "--key", "trusted.pub", "--insecure-ignore-tlog", repo+"@"+digest.String())
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "TUF_ROOT="+filepath.Join(dir, "tuf"), "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cosign verify: %v\n%s", err, out)
		}
	})
}
