package signing

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vkimg/vkimg/internal/testenv"
)

func cosignBin(t *testing.T) string {
	return testenv.NeedGoTool(t, "cosign", "github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5")
}

type cosign struct {
	bin  string
	dir  string
	tuf  string
	pass string
}

func (c cosign) run(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "TUF_ROOT="+c.tuf, PasswordEnv+"="+c.pass, "HOME="+c.dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushRandom pushes a small random OCI image and returns repo and digest.
func pushRandom(t *testing.T, reg testenv.Registry, repoName string) (name.Repository, v1.Hash) {
	t.Helper()
	repo, err := name.NewRepository(reg.Host + "/" + repoName)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag("1.0.0"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return repo, d
}

// verifyRemote runs Verify against the signature tag in the registry.
func verifyRemote(repo name.Repository, d v1.Hash, pub *ecdsa.PublicKey) error {
	desc, err := remote.Get(repo.Tag(SignatureTag(d)))
	if err != nil {
		return fmt.Errorf("get signature: %w", err)
	}
	blob := func(_ context.Context, h v1.Hash) (io.ReadCloser, error) {
		l, err := remote.Layer(repo.Digest(h.String()))
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	return Verify(context.Background(), desc.Manifest, blob, pub, Expect{Digest: d, Repository: repo.Name(), Ref: repo.Name()})
}

func TestCosignInterop(t *testing.T) {
	bin := cosignBin(t)
	reg := testenv.RegistryPlain(t)
	dir := t.TempDir()
	c := cosign{bin: bin, dir: dir, tuf: filepath.Join(dir, "tuf"), pass: "s3cret"}

	// vkimg's key files, written where cosign expects them.
	priv, pubPEM, err := GenerateKeyPair([]byte(c.pass))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "vkimg.key"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "vkimg.pub"), pubPEM, 0o644)
	vkKey, err := ParsePrivateKey(priv, []byte(c.pass))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("cosign verifies what vkimg signs", func(t *testing.T) {
		repo, d := pushRandom(t, reg, "vkimg-signed")
		sig, err := Sign(vkKey, repo.Name(), d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(repo.Tag(SignatureTag(d)), sig); err != nil {
			t.Fatal(err)
		}
		ref := repo.Name() + "@" + d.String()
		if out, err := c.run("verify", "--key", "vkimg.pub", "--insecure-ignore-tlog", ref); err != nil {
			t.Fatalf("cosign verify: %v\n%s", err, out)
		}
		_, otherPub, err := GenerateKeyPair(nil)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "other.pub"), otherPub, 0o644)
		if out, err := c.run("verify", "--key", "other.pub", "--insecure-ignore-tlog", ref); err == nil {
			t.Fatalf("cosign verify accepted a signature with another key:\n%s", out)
		}
	})

	t.Run("vkimg verifies what cosign signs with a cosign key", func(t *testing.T) {
		if out, err := c.run("generate-key-pair"); err != nil {
			t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
		}
		t.Setenv(PasswordEnv, c.pass)
		cosKey, err := LoadPrivateKey(filepath.Join(dir, "cosign.key"))
		if err != nil {
			t.Fatalf("vkimg cannot load cosign's key: %v", err)
		}
		cosPub, err := LoadPublicKey(filepath.Join(dir, "cosign.pub"))
		if err != nil {
			t.Fatal(err)
		}
		if !cosPub.Equal(&cosKey.PublicKey) {
			t.Fatal("cosign.pub does not match cosign.key as vkimg reads them")
		}
		repo, d := pushRandom(t, reg, "cosign-signed")
		if out, err := c.run("sign", "--key", "cosign.key", "--tlog-upload=false", "-y", repo.Name()+"@"+d.String()); err != nil {
			t.Fatalf("cosign sign: %v\n%s", err, out)
		}
		if err := verifyRemote(repo, d, cosPub); err != nil {
			t.Errorf("vkimg refuses cosign's signature: %v", err)
		}
		if err := verifyRemote(repo, d, &vkKey.PublicKey); reasonOf(err) != UntrustedKey {
			t.Errorf("verify with another key: got %v, want UntrustedKey", err)
		}
	})

	t.Run("cosign signs with a vkimg key", func(t *testing.T) {
		repo, d := pushRandom(t, reg, "vkimg-key-cosign-signed")
		out, err := c.run("sign", "--key", "vkimg.key", "--tlog-upload=false", "-y", repo.Name()+"@"+d.String())
		if err != nil {
			t.Fatalf("cosign cannot sign with vkimg's key: %v\n%s", err, out)
		}
		if err := verifyRemote(repo, d, &vkKey.PublicKey); err != nil {
			t.Errorf("vkimg refuses: %v", err)
		}
	})
}
