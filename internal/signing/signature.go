package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// cosign's classic signature format.
const (
	SimpleSigningMediaType types.MediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation                    = "dev.cosignproject.cosign/signature"
	payloadType                            = "cosign container image signature"
	// maxPayload bounds what we read of a payload blob: real ones are ~250
	// bytes, and a hostile registry must not make us buffer gigabytes.
	maxPayload = 1 << 20
)

// SignatureTag is the tag cosign stores the signatures of digest under, in
// the signed image's repository.
func SignatureTag(digest v1.Hash) string {
	return digest.Algorithm + "-" + digest.Hex + ".sig"
}

// payload is cosign's simple-signing payload. Field order matches cosign's
// output so the bytes look the same.
type payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Payload is the simple-signing payload stating that digest is an image of
// repository (e.g. "registry.example:5000/vikunja").
func Payload(repository string, digest v1.Hash) ([]byte, error) {
	var p payload
	p.Critical.Identity.DockerReference = repository
	p.Critical.Image.DockerManifestDigest = digest.String()
	p.Critical.Type = payloadType
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode signature payload: %w", err)
	}
	return b, nil
}

// Sign signs digest as an image of repository and returns the signature
// image to store under SignatureTag(digest): existing (the image already
// under that tag, or nil) with one more signature layer, as cosign appends.
func Sign(key *ecdsa.PrivateKey, repository string, digest v1.Hash, existing v1.Image) (v1.Image, error) {
	body, err := Payload(repository, digest)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", digest, err)
	}
	base := existing
	if base == nil {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(body, SimpleSigningMediaType),
		Annotations: map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return nil, fmt.Errorf("build signature image for %s: %w", digest, err)
	}
	return img, nil
}

// Reason classifies a refused verification.
type Reason int

// Reasons a verification is refused.
const (
	Unsigned     Reason = iota + 1 // no signature at all
	UntrustedKey                   // signed, but not by the trusted key (or the signature was altered)
	Tampered                       // some byte does not match its digest or the signed digest
)

// RefusedError is a failed signature or integrity check: the image must not
// be used. Every such failure in vkimg is a *RefusedError, so commands can
// map them to one exit status.
type RefusedError struct {
	Reason Reason
	msg    string
}

func (e *RefusedError) Error() string { return e.msg }

// Refusedf makes a RefusedError.
func Refusedf(r Reason, format string, args ...any) error {
	return &RefusedError{Reason: r, msg: fmt.Sprintf(format, args...)}
}

// IsRefused reports whether err is (or wraps) a refused verification.
func IsRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

// Expect is what a signature must vouch for.
type Expect struct {
	Digest v1.Hash // the image manifest digest we are about to use
	// Repository is the docker-reference the payload must name, e.g.
	// "registry.example:5000/vikunja". Empty skips the check: an OCI layout
	// on disk has no repository name of its own (it is a copy of an image
	// signed for some registry), and the digest binding is what protects it.
	Repository string
	Ref        string // how to name the image in messages
}

// BlobFunc opens a blob of the signature image's repository. It must not
// verify the digest itself: Verify does, to say precisely what was altered.
type BlobFunc func(ctx context.Context, digest v1.Hash) (io.ReadCloser, error)

// Verify checks the signature image manifest sigManifest (nil when the
// repository has no SignatureTag for the digest) against the trusted key. It
// succeeds when at least one signature layer is valid.
func Verify(ctx context.Context, sigManifest []byte, blob BlobFunc, trusted *ecdsa.PublicKey, want Expect) error {
	if sigManifest == nil {
		return Refusedf(Unsigned, "no signatures found for %s@%s", want.Ref, want.Digest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(sigManifest))
	if err != nil {
		return Refusedf(Tampered, "signature manifest %s of %s is not a valid manifest: %v", SignatureTag(want.Digest), want.Ref, err)
	}
	var errs []error
	for i, layer := range m.Layers {
		if layer.MediaType != SimpleSigningMediaType {
			continue
		}
		err := verifyLayer(ctx, layer, blob, trusted, want)
		if err == nil {
			return nil
		}
		if !IsRefused(err) {
			return err // an I/O failure says nothing about the signature
		}
		errs = append(errs, fmt.Errorf("signature %d: %w", i+1, err))
	}
	switch len(errs) {
	case 0:
		return Refusedf(Unsigned, "no signatures found for %s@%s (the signature image has no cosign signature layer)", want.Ref, want.Digest)
	case 1:
		return errors.Unwrap(errs[0])
	}
	var re *RefusedError
	errors.As(errs[0], &re)
	return &RefusedError{Reason: re.Reason, msg: fmt.Sprintf("no valid signature for %s@%s: %v", want.Ref, want.Digest, errors.Join(errs...))}
}

func verifyLayer(ctx context.Context, layer v1.Descriptor, blob BlobFunc, trusted *ecdsa.PublicKey, want Expect) error {
	b64, ok := layer.Annotations[SignatureAnnotation]
	if !ok {
		return Refusedf(Tampered, "signature layer %s has no %s annotation", layer.Digest, SignatureAnnotation)
	}
	if layer.Size > maxPayload {
		return Refusedf(Tampered, "signature payload blob %s is %d bytes, more than any real payload", layer.Digest, layer.Size)
	}
	rc, err := blob(ctx, layer.Digest)
	if err != nil {
		return fmt.Errorf("fetch signature payload %s: %w", layer.Digest, err)
	}
	body, err := io.ReadAll(io.LimitReader(rc, maxPayload+1))
	rc.Close()
	if err != nil {
		return fmt.Errorf("read signature payload %s: %w", layer.Digest, err)
	}
	if got := sha256.Sum256(body); layer.Digest.Algorithm != "sha256" || fmt.Sprintf("%x", got) != layer.Digest.Hex {
		return Refusedf(Tampered, "signature payload blob digest mismatch: manifest says %s, content is sha256:%x", layer.Digest, got)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Refusedf(Tampered, "signature annotation is not base64 (altered?): %v", err)
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(trusted, sum[:], sig) {
		return Refusedf(UntrustedKey, "signature does not verify with trusted key %s (signed with another key, or the signature or payload was altered)", Fingerprint(trusted))
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return Refusedf(Tampered, "signed payload is not JSON: %v", err)
	}
	if p.Critical.Type != payloadType {
		return Refusedf(Tampered, "signed payload type is %q, want %q", p.Critical.Type, payloadType)
	}
	if p.Critical.Image.DockerManifestDigest != want.Digest.String() {
		return Refusedf(Tampered, "digest mismatch in signed payload: it vouches for %s, but the image is %s", p.Critical.Image.DockerManifestDigest, want.Digest)
	}
	if want.Repository != "" && p.Critical.Identity.DockerReference != want.Repository {
		return Refusedf(Tampered, "signed payload names repository %q, but the image comes from %q", p.Critical.Identity.DockerReference, want.Repository)
	}
	return nil
}
