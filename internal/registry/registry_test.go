package registry

import (
	"context"
	"errors"
	"fmt"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/testenv"
)

const layerBytes = 256 << 10

func reasonOf(err error) signing.Reason {
	var re *signing.RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return 0
}

// TestPublishPullCached publishes through a counting proxy, pulls twice and
// checks the second pull transfers no blob.
func TestPublishPullCached(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(t)
	px := newProxy(t, reg.Host)
	src, digest := templateLayout(t, "2.5.0", layerBytes)
	key := testKey(t)
	dst := mustRef(t, px.Host+"/vikunja")

	pub, err := Publish(ctx, src, dst, PublishOptions{Key: key, Tags: TagOptions{Main: true}})
	if err != nil {
		t.Fatal(err)
	}
	if pub.Digest != digest {
		t.Errorf("published digest %s, layout has %s", pub.Digest, digest)
	}
	if want := []string{"2.5.0", "sha-0123456789ab", "main"}; !slices.Equal(pub.Tags, want) {
		t.Errorf("tags %v, want %v", pub.Tags, want)
	}

	px.reset()
	info, err := Inspect(ctx, mustRef(t, px.Host+"/vikunja:main"), Options{}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != digest || info.Manifest.Version != "2.5.0" || !info.Verified {
		t.Errorf("inspect: %+v", info)
	}
	// Config and signature payload only: the rootfs layers are not read.
	if n := px.totalBlobGETs(); n != 2 {
		t.Errorf("inspect made %d blob GETs, want 2 (config, signature payload)", n)
	}

	cache := filepath.Join(t.TempDir(), "cache")
	po := PullOptions{Cache: cache, Trusted: &key.PublicKey}
	px.reset()
	first, err := Pull(ctx, mustRef(t, px.Host+"/vikunja:2.5.0"), po)
	if err != nil {
		t.Fatal(err)
	}
	if first.Digest != digest || first.BlobsFetched != 3 || first.BlobsCached != 0 {
		t.Errorf("first pull: %+v", first)
	}
	if n := px.totalBlobGETs(); n != 5 {
		t.Errorf("first pull made %d blob GETs, want 5 (config, 2 layers, signature config and payload)", n)
	}
	px.reset()
	second, err := Pull(ctx, mustRef(t, px.Host+"/vikunja:main"), po)
	if err != nil {
		t.Fatal(err)
	}
	if n := px.totalBlobGETs(); n != 0 || second.BlobsFetched != 0 || second.BlobsCached != 3 {
		t.Errorf("second pull of the same digest: %d blob GETs, %+v", n, second)
	}
	assertCacheClean(t, cache, 1)

	// The cache is itself a layout that verifies with the same code.
	fromCache, err := Pull(ctx, mustRef(t, LayoutPrefix+cache+"@"+digest.String()), PullOptions{Cache: t.TempDir(), Trusted: &key.PublicKey})
	if err != nil {
		t.Fatalf("cache as a source: %v", err)
	}
	if fromCache.Digest != digest {
		t.Errorf("cache as a source: digest %s", fromCache.Digest)
	}
}

// TestPullResume drops the connection in the middle of every layer: the
// pull resumes with Range requests; and when the server ignores Range, it
// restarts each blob from the beginning.
func TestPullResume(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(t)
	px := newProxy(t, reg.Host)
	src, digest := templateLayout(t, "1.0.0", layerBytes)
	key := testKey(t)
	if _, err := Publish(ctx, src, mustRef(t, px.Host+"/vikunja"), PublishOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	for _, noRange := range []bool{false, true} {
		px.reset()
		px.mu.Lock()
		px.dropAfter, px.dropped, px.noRange = layerBytes/3, map[string]bool{}, noRange
		px.mu.Unlock()
		cache := t.TempDir()
		got, err := Pull(ctx, mustRef(t, px.Host+"/vikunja:1.0.0"), PullOptions{Cache: cache, Trusted: &key.PublicKey})
		if err != nil {
			t.Fatalf("noRange=%v: %v", noRange, err)
		}
		if got.Digest != digest {
			t.Errorf("digest %s", got.Digest)
		}
		px.mu.Lock()
		ranged, dropped := len(px.ranged), len(px.dropped)
		px.mu.Unlock()
		if dropped != 2 {
			t.Errorf("noRange=%v: proxy cut %d downloads, want 2", noRange, dropped)
		}
		if !noRange && ranged != 2 {
			t.Errorf("resume sent %d Range requests, want 2", ranged)
		}
		assertCacheClean(t, cache, 1)
	}
}

// flipBit flips the lowest bit of byte i of file (negative i counts from
// the end).
func flipBit(t *testing.T, file string, i int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 1
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tamperTarget is a published template whose stored bytes a test alters.
type tamperTarget struct {
	repo     Ref                        // repository or layout, without tag
	blobFile func(digest string) string // where the store keeps a blob or manifest
}

func (tt tamperTarget) digest(t *testing.T, tag string) string {
	t.Helper()
	st, err := openStore(context.Background(), tt.repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.resolve(context.Background(), tag)
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func (tt tamperTarget) manifest(t *testing.T, tag string) *v1.Manifest {
	t.Helper()
	b, err := os.ReadFile(tt.blobFile(tt.digest(t, tag)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (tt tamperTarget) sigTag(t *testing.T) string {
	h, _ := v1.NewHash(tt.digest(t, "1.0.0"))
	return signing.SignatureTag(h)
}

// TestPullTampered flips one bit in what a registry (and a layout) stores
// and checks the pull is refused, saying what was altered, with nothing left
// behind.
func TestPullTampered(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(t)
	key := testKey(t)
	cases := []struct {
		name   string
		tamper func(t *testing.T, tt tamperTarget)
		reason signing.Reason
		says   string
	}{
		{"layer blob", func(t *testing.T, tt tamperTarget) {
			flipBit(t, tt.blobFile(tt.manifest(t, "1.0.0").Layers[1].Digest.String()), 100)
		}, signing.Tampered, "blob digest mismatch"},
		{"config blob", func(t *testing.T, tt tamperTarget) {
			flipBit(t, tt.blobFile(tt.manifest(t, "1.0.0").Config.Digest.String()), 10)
		}, signing.Tampered, "blob digest mismatch"},
		{"image manifest", func(t *testing.T, tt tamperTarget) {
			flipBit(t, tt.blobFile(tt.digest(t, "1.0.0")), 20)
		}, signing.Tampered, "manifest digest mismatch"},
		{"signature payload", func(t *testing.T, tt tamperTarget) {
			flipBit(t, tt.blobFile(tt.manifest(t, tt.sigTag(t)).Layers[0].Digest.String()), 30)
		}, signing.Tampered, "signature payload blob digest mismatch"},
		{"signature", func(t *testing.T, tt tamperTarget) {
			file := tt.blobFile(tt.digest(t, tt.sigTag(t)))
			b, _ := os.ReadFile(file)
			i := strings.Index(string(b), signing.SignatureAnnotation+`":"`) + len(signing.SignatureAnnotation) + 3
			for b[i] < 'B' || b[i] > 'Y' { // a letter whose flipped bit is still base64
				i++
			}
			flipBit(t, file, i)
		}, signing.UntrustedKey, "does not verify with trusted key"},
	}
	for i, c := range cases {
		for _, backend := range []string{"registry", "layout"} {
			t.Run(c.name+" in "+backend, func(t *testing.T) {
				src, _ := templateLayout(t, "1.0.0", 4096)
				var tt tamperTarget
				if backend == "registry" {
					tt = tamperTarget{mustRef(t, fmt.Sprintf("%s/tamper%d", reg.Host, i)), reg.BlobPath}
				} else {
					dir := t.TempDir()
					tt = tamperTarget{LayoutRef(dir, ""), func(d string) string { return filepath.Join(dir, "blobs", "sha256", d[len("sha256:"):]) }}
				}
				if _, err := Publish(ctx, src, tt.repo, PublishOptions{Key: key}); err != nil {
					t.Fatal(err)
				}
				c.tamper(t, tt)
				cache := t.TempDir()
				ref := tt.repo
				ref.Tag = "1.0.0"
				_, err := Pull(ctx, ref, PullOptions{Cache: cache, Trusted: &key.PublicKey})
				if reasonOf(err) != c.reason || !strings.Contains(err.Error(), c.says) {
					t.Fatalf("got %v, want reason %d saying %q", err, c.reason, c.says)
				}
				assertCacheClean(t, cache, 0)
			})
		}
	}
}

// TestPullRefusesUnsignedAndForeign covers a layout source, which shares
// the verification path with registries.
func TestPullRefusesUnsignedAndForeign(t *testing.T) {
	ctx := context.Background()
	src, _ := templateLayout(t, "1.0.0", 4096)
	key, other := testKey(t), testKey(t)
	cache := t.TempDir()
	_, err := Pull(ctx, src, PullOptions{Cache: cache, Trusted: &key.PublicKey})
	if reasonOf(err) != signing.Unsigned || !strings.Contains(err.Error(), "no signatures found for "+LayoutPrefix) {
		t.Errorf("unsigned layout: %v", err)
	}
	signed := LayoutRef(t.TempDir(), "")
	if _, err := Publish(ctx, src, signed, PublishOptions{Key: other, Identity: "registry.example/vikunja"}); err != nil {
		t.Fatal(err)
	}
	signed.Tag = "1.0.0"
	_, err = Pull(ctx, signed, PullOptions{Cache: cache, Trusted: &key.PublicKey})
	if reasonOf(err) != signing.UntrustedKey || !strings.Contains(err.Error(), signing.Fingerprint(&key.PublicKey)) {
		t.Errorf("foreign key: %v", err)
	}
	if _, err := Pull(ctx, signed, PullOptions{Cache: cache, Trusted: &other.PublicKey}); err != nil {
		t.Errorf("signed layout: %v", err)
	}
	assertCacheClean(t, cache, 1)
}

// TestAuthTLS publishes to and pulls from a registry with HTTPS (custom
// CA) and basic auth, with credentials from a docker config.json file.
func TestAuthTLS(t *testing.T) {
	ctx := context.Background()
	reg := testenv.RegistryAuthTLS(t)
	src, digest := templateLayout(t, "3.0.0", 4096)
	key := testKey(t)
	dst := mustRef(t, reg.Host+"/vikunja")
	o := Options{AuthConfig: reg.AuthConfig, CAFile: reg.CAFile}
	if _, err := Publish(ctx, src, dst, PublishOptions{Options: o, Key: key}); err != nil {
		t.Fatal(err)
	}
	got, err := Pull(ctx, mustRef(t, reg.Host+"/vikunja:3.0.0"), PullOptions{Options: o, Cache: t.TempDir(), Trusted: &key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digest {
		t.Errorf("digest %s, want %s", got.Digest, digest)
	}
	env := Options{Username: reg.Username, Password: reg.Password, CAFile: reg.CAFile}
	if _, err := Inspect(ctx, mustRef(t, reg.Host+"/vikunja:3.0.0"), env, &key.PublicKey); err != nil {
		t.Errorf("username/password: %v", err)
	}
	bad := Options{Username: reg.Username, Password: "wrong", CAFile: reg.CAFile}
	if _, err := Inspect(ctx, mustRef(t, reg.Host+"/vikunja:3.0.0"), bad, nil); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("wrong password: %v", err)
	}
	noCA := Options{AuthConfig: reg.AuthConfig}
	if _, err := Inspect(ctx, mustRef(t, reg.Host+"/vikunja:3.0.0"), noCA, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v", err)
	}
}
