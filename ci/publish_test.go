// Package ci holds the publishing pipeline (publish.sh, github/publish.yml);
// this test runs publish.sh unchanged against a loopback registry.
package ci

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/builder/buildertest"
	"github.com/vkimg/vkimg/internal/registry"
	"github.com/vkimg/vkimg/internal/registry/registrytest"
	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/testenv"
)

const commit = "c0ffee0123456789abcdef0123456789abcdef01"

func TestPublishScript(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.Need(t, "mmdebstrap", "mmdebstrap")
	reg := testenv.RegistryAuthTLS(t)
	dir := t.TempDir()
	// The builder's own tests keep Debian bases here too: share them.
	buildCache := buildertest.CacheDir()
	const password = "ci-secret-pw"
	priv, pubPEM, err := signing.GenerateKeyPair([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signing.ParsePublicKey(pubPEM)

	cmd := exec.Command("bash", "publish.sh")
	cmd.Env = append(os.Environ(),
		"VKIMG_REGISTRY="+reg.Host+"/vkimg",
		"VKIMG_SIGNING_KEY="+string(priv),
		"COSIGN_PASSWORD="+password,
		"VKIMG_REGISTRY_USERNAME="+reg.Username,
		"VKIMG_REGISTRY_PASSWORD="+reg.Password,
		"VKIMG_REGISTRY_CA="+reg.CAFile,
		"VKIMG_RECIPES=recipes/standin.yaml",
		"VKIMG_COMMIT="+commit,
		"VKIMG_BUILD_CACHE="+buildCache,
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(buildertest.Epoch.Unix(), 10),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("publish.sh: %v\n%s", err, stderr.String())
	}
	fields := strings.Fields(stdout.String())
	if len(fields) != 3 || fields[0] != "standin" || !strings.HasPrefix(fields[2], "sha256:") {
		t.Fatalf("publish.sh printed %q, want one line: standin VERSION DIGEST\n%s", stdout.String(), stderr.String())
	}
	version := fields[1]

	ctx := context.Background()
	o := registry.Options{Username: reg.Username, Password: reg.Password, CAFile: reg.CAFile}
	repo, err := registry.ParseRef(reg.Host + "/vkimg/standin")
	if err != nil {
		t.Fatal(err)
	}
	list, err := registry.List(ctx, repo, o)
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, tpl := range list {
		tags = append(tags, tpl.Tag)
	}
	if !slices.Equal(tags, []string{version, registry.MainTag}) {
		t.Errorf("channels %v, want [%s main]", tags, version)
	}
	ref := repo
	ref.Tag = "sha-" + commit[:12]
	pulled, err := registry.Pull(ctx, ref, registry.PullOptions{Options: o, Cache: filepath.Join(dir, "cache"), Trusted: pub})
	if err != nil {
		t.Fatalf("pull what publish.sh published: %v", err)
	}
	if pulled.Digest.String() != fields[2] {
		t.Errorf("sha- tag is %s, publish.sh reported %s", pulled.Digest, fields[2])
	}
	// What Proxmox VE 9.1 runs to pull an OCI template.
	members, idx := registrytest.SkopeoArchive(t, reg.Host+"/vkimg/standin:"+version, "--src-creds", reg.Username+":"+reg.Password)
	if !members["oci-layout"] || !members["index.json"] || !members["blobs"] || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != pulled.Digest {
		t.Errorf("skopeo oci-archive: members %v, index %+v; want the digest %s kept", members, idx.Manifests, pulled.Digest)
	}
	info, err := registry.Inspect(ctx, ref, o, pub)
	if err != nil {
		t.Fatal(err)
	}
	if info.Manifest.Name != "standin" || info.Labels["org.opencontainers.image.revision"] != commit {
		t.Errorf("published template: %s, revision %q", info.Manifest.Name, info.Labels["org.opencontainers.image.revision"])
	}
}
