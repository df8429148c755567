package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/vkimg/vkimg/internal/signing"
)

// sourceAnnotation records, on a cache index entry, where it was pulled from.
const sourceAnnotation = "io.vkimg.source"

// maxResumes bounds how often one blob download is resumed after the
// connection drops; each resume must have made progress.
const maxResumes = 5

// PullOptions configure Pull.
type PullOptions struct {
	Options
	Cache   string           // the cache layout directory (state.Root.Cache)
	Trusted *ecdsa.PublicKey // the pinned key the signature must verify with
}

// Pulled is a verified template in the cache.
type Pulled struct {
	Digest       v1.Hash
	Cache        string   // layout directory holding it
	Image        v1.Image // read from the cache
	BlobsFetched int      // blobs transferred by this pull
	BlobsCached  int      // blobs already in the cache (re-hashed, not transferred)
}

// Pull resolves ref, verifies its signature with the trusted key, then
// copies manifest, config and layers into the cache, checking every digest.
// Nothing reaches the cache's index before everything is verified; blobs are
// written to temporary files and renamed, so no failure leaves a partial file.
func Pull(ctx context.Context, ref Ref, o PullOptions) (*Pulled, error) {
	if o.Trusted == nil {
		return nil, errors.New("pull: no trusted public key")
	}
	st, err := openStore(ctx, ref, o.Options)
	if err != nil {
		return nil, err
	}
	if err := ensureLayout(o.Cache); err != nil {
		return nil, err
	}
	unlock, err := lockDir(o.Cache)
	if err != nil {
		return nil, err
	}
	defer unlock()

	digest, err := resolveRef(ctx, st, ref)
	if err != nil {
		return nil, err
	}
	sigRaw, err := st.signatures(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("fetch signatures of %s: %w", ref, err)
	}
	blob := memoize(cachedBlob(o.Cache, st))
	if err := signing.Verify(ctx, sigRaw, blob, o.Trusted, signing.Expect{Digest: digest, Repository: st.identity(), Ref: ref.Where()}); err != nil {
		return nil, err
	}
	raw, err := verifiedManifest(ctx, st, digest, ref)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, signing.Refusedf(signing.Tampered, "manifest %s of %s: %v", digest, ref, err)
	}
	out := &Pulled{Digest: digest, Cache: o.Cache}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		ok, err := hasBlob(o.Cache, d)
		if err != nil {
			return nil, err
		}
		if ok {
			out.BlobsCached++
			continue
		}
		if err := fetchBlob(ctx, st, d, o.Cache); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		out.BlobsFetched++
	}
	if err := keepSignature(ctx, o.Cache, digest, sigRaw, blob); err != nil {
		return nil, err
	}
	if err := putBlob(o.Cache, digest, raw); err != nil {
		return nil, err
	}
	desc := v1.Descriptor{MediaType: m.MediaType, Size: int64(len(raw)), Digest: digest,
		Annotations: map[string]string{sourceAnnotation: ref.String()}}
	if err := updateIndex(o.Cache, func(d v1.Descriptor) bool { return d.Digest == digest }, desc); err != nil {
		return nil, err
	}
	img, err := layout.Path(o.Cache).Image(digest)
	if err != nil {
		return nil, fmt.Errorf("open pulled image: %w", err)
	}
	out.Image = img
	return out, nil
}

func resolveRef(ctx context.Context, st store, ref Ref) (v1.Hash, error) {
	if ref.Digest != nil {
		return *ref.Digest, nil
	}
	d, err := st.resolve(ctx, ref.Tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	return d, nil
}

// verifiedManifest fetches the manifest stored under digest and checks that
// it is what the digest names.
func verifiedManifest(ctx context.Context, st store, digest v1.Hash, ref Ref) ([]byte, error) {
	raw, err := st.manifest(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest of %s: %w", ref, err)
	}
	if got := digestOf(raw); got != digest {
		return nil, signing.Refusedf(signing.Tampered, "manifest digest mismatch for %s: asked for %s, received content with digest %s", ref, digest, got)
	}
	return raw, nil
}

// cachedBlob reads a blob from the cache when it is there (a signature
// payload pulled before) and from the source otherwise. Callers verify.
func cachedBlob(cache string, st store) signing.BlobFunc {
	return func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
		if f, err := os.Open(blobPath(cache, d)); err == nil {
			return f, nil
		}
		rc, _, err := st.blob(ctx, d, 0)
		return rc, err
	}
}

// memoize keeps the bytes of blobs read through it, so that the signature
// payload read while verifying is not downloaded again to be cached.
func memoize(next signing.BlobFunc) signing.BlobFunc {
	seen := map[v1.Hash]*bytes.Buffer{}
	return func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
		if b, ok := seen[d]; ok {
			return io.NopCloser(bytes.NewReader(b.Bytes())), nil
		}
		rc, err := next(ctx, d)
		if err != nil {
			return nil, err
		}
		buf := &bytes.Buffer{}
		seen[d] = buf
		return struct {
			io.Reader
			io.Closer
		}{io.TeeReader(io.LimitReader(rc, maxManifest), buf), rc}, nil
	}
}

// keepSignature copies the (already verified) signature image into the
// cache under its tag, so the cache verifies like any other layout.
func keepSignature(ctx context.Context, cache string, digest v1.Hash, sigRaw []byte, blob signing.BlobFunc) error {
	m, err := parseManifest(sigRaw)
	if err != nil {
		return fmt.Errorf("signature manifest of %s: %w", digest, err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if ok, err := hasBlob(cache, d); err != nil || ok {
			if err != nil {
				return err
			}
			continue
		}
		rc, err := blob(ctx, d.Digest)
		if err != nil {
			return fmt.Errorf("fetch signature blob %s: %w", d.Digest, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
		rc.Close()
		if err != nil {
			return fmt.Errorf("fetch signature blob %s: %w", d.Digest, err)
		}
		if digestOf(b) != d.Digest {
			return signing.Refusedf(signing.Tampered, "signature blob %s digest mismatch", d.Digest)
		}
		if err := putBlob(cache, d.Digest, b); err != nil {
			return err
		}
	}
	sigDigest := digestOf(sigRaw)
	if err := putBlob(cache, sigDigest, sigRaw); err != nil {
		return err
	}
	tag := signing.SignatureTag(digest)
	desc := v1.Descriptor{MediaType: m.MediaType, Size: int64(len(sigRaw)), Digest: sigDigest,
		Annotations: map[string]string{refNameAnnotation: tag}}
	return updateIndex(cache, func(d v1.Descriptor) bool { return d.Annotations[refNameAnnotation] == tag }, desc)
}

// fetchBlob downloads d into the cache: to a temporary file, resuming with a
// Range request after a dropped connection (or restarting when the source
// ignores the range), then checks size and digest and renames it in place.
func fetchBlob(ctx context.Context, st store, d v1.Descriptor, cache string) (err error) {
	dir := filepath.Dir(blobPath(cache, d.Digest))
	tmp, err := os.CreateTemp(dir, ".partial-"+d.Digest.Hex+"-")
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := newHasher()
	var written int64
	for attempt := 0; ; attempt++ {
		rc, start, err := st.blob(ctx, d.Digest, written)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		if start != written {
			// The source ignored our Range: start over from byte 0.
			if err := restart(tmp); err != nil {
				rc.Close()
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			h.Reset()
			written = 0
		}
		// Read at most one byte more than declared, to notice oversize blobs
		// without letting a hostile source fill the disk.
		n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, d.Size-written+1))
		rc.Close()
		written += n
		if err == nil {
			break
		}
		if ctx.Err() != nil || n == 0 || attempt >= maxResumes {
			return describeNetErr(fmt.Errorf("blob %s: download failed after %d of %d bytes: %w", d.Digest, written, d.Size, err))
		}
	}
	if written != d.Size {
		return signing.Refusedf(signing.Tampered, "blob %s: size mismatch: manifest says %d bytes, received %d", d.Digest, d.Size, written)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != d.Digest.Hex {
		return signing.Refusedf(signing.Tampered, "blob digest mismatch: %s has content sha256:%s", d.Digest, got)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if err := os.Rename(tmp.Name(), blobPath(cache, d.Digest)); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return nil
}

func restart(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// lockDir serialises vkimg processes writing the same cache.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
