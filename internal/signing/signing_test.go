package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

func mustKey(t *testing.T, password string) (*ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	priv, pub, err := GenerateKeyPair([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKey(priv, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	return key, priv, pub
}

// newKey makes a key without the file format's scrypt cost, for tests
// about signatures rather than key files.
func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestKeyPairRoundTrip(t *testing.T) {
	for _, pw := range []string{"", "correct horse"} {
		key, priv, pubPEM := mustKey(t, pw)
		if !bytes.HasPrefix(priv, []byte("-----BEGIN "+SigstorePrivateKeyType+"-----")) {
			t.Errorf("private key PEM starts %q", priv[:40])
		}
		pub, err := ParsePublicKey(pubPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Equal(&key.PublicKey) {
			t.Error("public key PEM does not match the private key")
		}
		if _, err := ParsePrivateKey(priv, []byte(pw+"x")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("wrong password: got %v, want ErrWrongPassword", err)
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadPrivateKey(filepath.Join(dir, "missing.key")); err == nil || !strings.Contains(err.Error(), "read private key") {
		t.Errorf("missing key: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, err := LoadPrivateKey(garbage); err == nil || !strings.Contains(err.Error(), "no PEM block") {
		t.Errorf("garbage key: %v", err)
	}
	_, _, pub := mustKey(t, "")
	pubAsPriv := filepath.Join(dir, "pub-as-priv.key")
	os.WriteFile(pubAsPriv, pub, 0o600)
	if _, err := LoadPrivateKey(pubAsPriv); err == nil || !strings.Contains(err.Error(), `"PUBLIC KEY"`) {
		t.Errorf("public key given as private key: %v", err)
	}
	if _, err := LoadPublicKey(garbage); err == nil {
		t.Error("garbage public key accepted")
	}
}

// fixture is a signed random image digest with its signature image's raw
// manifest and blobs held in memory, where tests tamper with them.
type fixture struct {
	key    *ecdsa.PrivateKey
	digest v1.Hash
	raw    []byte
	blobs  map[v1.Hash][]byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key := newKey(t)
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	sig, err := Sign(key, "registry.example:5000/vikunja", d, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{key: key, digest: d, blobs: map[v1.Hash][]byte{}}
	f.raw, _ = sig.RawManifest()
	layers, _ := sig.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		rc, _ := l.Compressed()
		f.blobs[ld], _ = io.ReadAll(rc)
	}
	return f
}

func (f *fixture) blob(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	b, ok := f.blobs[d]
	if !ok {
		return nil, errors.New("no such blob")
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fixture) verify(pub *ecdsa.PublicKey, want Expect) error {
	if want.Digest.Hex == "" {
		want.Digest = f.digest
	}
	want.Ref = "registry.example:5000/vikunja"
	return Verify(context.Background(), f.raw, f.blob, pub, want)
}

func reasonOf(err error) Reason {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return 0
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	good := Expect{Repository: "registry.example:5000/vikunja"}
	if err := f.verify(&f.key.PublicKey, good); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	if err := f.verify(&f.key.PublicKey, Expect{}); err != nil {
		t.Fatalf("layout (no repository check) refused: %v", err)
	}

	other := newKey(t)
	err := f.verify(&other.PublicKey, good)
	if reasonOf(err) != UntrustedKey || !strings.Contains(err.Error(), Fingerprint(&other.PublicKey)) {
		t.Errorf("wrong key: %v", err)
	}

	err = Verify(context.Background(), nil, f.blob, &f.key.PublicKey, Expect{Digest: f.digest, Ref: "r"})
	if reasonOf(err) != Unsigned || !strings.Contains(err.Error(), "no signatures found for r@"+f.digest.String()) {
		t.Errorf("unsigned: %v", err)
	}

	otherImg, _ := random.Image(64, 1)
	od, _ := otherImg.Digest()
	err = f.verify(&f.key.PublicKey, Expect{Digest: od, Repository: good.Repository})
	if reasonOf(err) != Tampered || !strings.Contains(err.Error(), "digest mismatch in signed payload") {
		t.Errorf("signature of another image: %v", err)
	}

	err = f.verify(&f.key.PublicKey, Expect{Repository: "evil.example/vikunja"})
	if reasonOf(err) != Tampered || !strings.Contains(err.Error(), "names repository") {
		t.Errorf("other repository: %v", err)
	}
}

func TestVerifyTampered(t *testing.T) {
	want := Expect{Repository: "registry.example:5000/vikunja"}
	t.Run("payload blob bit", func(t *testing.T) {
		f := newFixture(t)
		for d := range f.blobs {
			f.blobs[d][10] ^= 1
		}
		err := f.verify(&f.key.PublicKey, want)
		if reasonOf(err) != Tampered || !strings.Contains(err.Error(), "signature payload blob digest mismatch") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("signature bit", func(t *testing.T) {
		f := newFixture(t)
		var m map[string]any
		json.Unmarshal(f.raw, &m)
		layer := m["layers"].([]any)[0].(map[string]any)
		ann := layer["annotations"].(map[string]any)
		sig, _ := base64.StdEncoding.DecodeString(ann[SignatureAnnotation].(string))
		sig[len(sig)-1] ^= 1
		ann[SignatureAnnotation] = base64.StdEncoding.EncodeToString(sig)
		f.raw, _ = json.Marshal(m)
		err := f.verify(&f.key.PublicKey, want)
		if reasonOf(err) != UntrustedKey || !strings.Contains(err.Error(), "does not verify with trusted key") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("signature manifest garbage", func(t *testing.T) {
		f := newFixture(t)
		f.raw = f.raw[:len(f.raw)/2]
		if err := f.verify(&f.key.PublicKey, want); reasonOf(err) != Tampered {
			t.Errorf("got %v", err)
		}
	})
}

func TestSignAppends(t *testing.T) {
	key, other := newKey(t), newKey(t)
	img, _ := random.Image(64, 1)
	d, _ := img.Digest()
	first, err := Sign(other, "r.example/x", d, nil)
	if err != nil {
		t.Fatal(err)
	}
	both, err := Sign(key, "r.example/x", d, first)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := both.Layers()
	if len(layers) != 2 {
		t.Fatalf("signature image has %d layers, want 2", len(layers))
	}
	raw, _ := both.RawManifest()
	blob := func(_ context.Context, h v1.Hash) (io.ReadCloser, error) {
		l, err := both.LayerByDigest(h)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	if err := Verify(context.Background(), raw, blob, &key.PublicKey, Expect{Digest: d, Repository: "r.example/x", Ref: "r.example/x"}); err != nil {
		t.Errorf("second signature not found among two: %v", err)
	}
}
